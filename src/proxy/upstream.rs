//! The app's side of an HTTP/1.1 exchange, for the fast path ([`super::fast`]) and for the
//! handler's bodiless requests ([`send`]): keep-alive connections kept per app instance, the
//! response head parsed in place (httparse), the body's framing, and the read buffers, which
//! are kept per thread and taken only when an answer is there.

use super::app_body::AppBody;
use super::app_conn::{Framing, ResponseHead, Upstream, CHUNK, MAX_RESPONSE_HEADERS};
use super::body::ProxyBody;
use super::capture;
use super::chunked::{push_chunk, ChunkDecoder};
use super::response_head::{self, Filter};
use crate::inspect::Record;
use crate::routes::{Backend, InflightGuard};
use bytes::{Bytes, BytesMut};
use std::cell::RefCell;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("connecting to the app failed: {0}")]
    Connect(io::Error),
    #[error("the app's HTTP exchange failed: {0}")]
    Exchange(Box<dyn std::error::Error + Send + Sync>),
    #[error("the client's request body is malformed or was cut off: {0}")]
    ClientBody(Box<dyn std::error::Error + Send + Sync>),
}

impl ForwardError {
    /// How the instance failed, when that is why the request failed.
    pub fn failed(&self) -> Option<Failed> {
        match self {
            ForwardError::Connect(_) => Some(Failed::Refused),
            ForwardError::Exchange(e) => e.downcast_ref::<HeadError>().and_then(HeadError::failed),
            ForwardError::ClientBody(_) => None,
        }
    }
}

const MAX_RESPONSE_HEAD: usize = 400 * 1024;
/// Read buffers kept per thread for the next requests (more are freed): enough for the
/// requests one thread has in flight at a time under a benchmark's load, little when idle.
const SPARE_PER_THREAD: usize = 4;

/// How an attempt on an instance failed, as far as sending the request again goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Failed {
    /// The connection was refused or timed out: nothing was sent.
    Refused,
    /// The instance took the request and closed or reset the connection before answering.
    Dropped,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum HeadError {
    #[error("the app closed the connection before answering")]
    Closed,
    #[error("reading the app's response: {0}")]
    Io(io::Error),
    #[error("the app's response head is malformed: {0}")]
    Malformed(&'static str),
}

impl HeadError {
    /// The instance went away holding the request (a malformed answer is still an answer).
    pub(super) fn failed(&self) -> Option<Failed> {
        matches!(self, HeadError::Closed | HeadError::Io(_)).then_some(Failed::Dropped)
    }
}

/// The one rule for sending a request again to the same instance: a kept connection the
/// app had closed meanwhile (RFC 9112 9.3.1) gets an idempotent request once more on a
/// fresh one. Other instances are [`super::decide::Resend`]'s.
pub(super) fn resend_fresh(up: &Upstream, idempotent: bool, err: &HeadError) -> bool {
    up.reused && idempotent && matches!(err, HeadError::Closed)
}

/// Read the app's response head (skipping 1xx interim responses) into `buf`.
///
/// The buffer is taken only once the app's answer is there to read: thousands of requests
/// waiting on slow apps hold none.
pub(super) async fn read_response_head(
    stream: &mut TcpStream,
    spare: &mut SpareBuf,
) -> Result<ResponseHead, HeadError> {
    read_head(stream, spare, false).await
}

/// [`read_response_head`], where `upgrade` says whether a 101 may answer the request.
async fn read_head(
    stream: &mut TcpStream,
    spare: &mut SpareBuf,
    upgrade: bool,
) -> Result<ResponseHead, HeadError> {
    let mut filled = 0;
    // Any byte from the app (an interim 1xx included) means it did answer: a failure after
    // that is no reason to send the request again.
    let mut answered = false;
    loop {
        if let Err(e) = stream.readable().await {
            return Err(if !answered {
                HeadError::Closed
            } else {
                HeadError::Io(e)
            });
        }
        let buf = spare.get();
        if filled == buf.len() {
            if filled >= MAX_RESPONSE_HEAD {
                return Err(HeadError::Malformed("head too long"));
            }
            buf.resize((buf.len() * 2).min(MAX_RESPONSE_HEAD), 0);
        }
        // A read (not try_read): a short one clears the readiness, so the next wait does
        // not start with a read that finds nothing.
        let n = match stream.read(&mut buf[filled..]).await {
            Ok(0) if !answered => return Err(HeadError::Closed),
            Ok(0) => {
                return Err(HeadError::Malformed(
                    "the app closed the connection mid-head",
                ))
            }
            Ok(n) => n,
            // Reset or refused before a byte came back: the app is gone.
            Err(_) if !answered => return Err(HeadError::Closed),
            Err(e) => return Err(HeadError::Io(e)),
        };
        filled += n;
        answered = true;
        loop {
            match parse_response_head(&buf[..filled])? {
                None => break,
                Some(mut head) if head.status == 101 && upgrade => {
                    head.filled = filled;
                    return Ok(head);
                }
                Some(head) if (100..200).contains(&head.status) => {
                    if head.status == 101 {
                        return Err(HeadError::Malformed("101 to a request without Upgrade"));
                    }
                    // An interim response (103 Early Hints): dropped, as hyper's client does.
                    buf.copy_within(head.len..filled, 0);
                    filled -= head.len;
                }
                Some(mut head) => {
                    head.filled = filled;
                    return Ok(head);
                }
            }
        }
    }
}

fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::Malformed("too many headers"))
        }
        Err(_) => return Err(HeadError::Malformed("not an HTTP/1 response head")),
    };
    let status = resp.code.ok_or(HeadError::Malformed("no status"))?;
    let mut keep_alive = resp.version == Some(1);
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(HeadError::Malformed("bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::Malformed("two different Content-Lengths"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for t in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if t.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && resp.version == Some(0) {
                    keep_alive = true;
                }
            }
        }
    }
    let framing = match (chunked, length) {
        (Some(true), _) => Framing::Chunked(ChunkDecoder::default()),
        (Some(false), _) => Framing::UntilClose,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::UntilClose,
    };
    Ok(Some(ResponseHead {
        status,
        len,
        filled: 0,
        framing,
        keep_alive,
    }))
}

/// The upstream read buffer of a request in progress. Kept per thread between requests,
/// so an idle keep-alive connection holds none and a busy one allocates none.
pub(super) struct SpareBuf(pub(super) Vec<u8>);

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

impl SpareBuf {
    pub(super) fn new() -> Self {
        SpareBuf(Vec::new())
    }

    /// The buffer, taken from the thread's spares (or allocated) on first use.
    pub(super) fn get(&mut self) -> &mut Vec<u8> {
        if self.0.is_empty() {
            let spare = SPARE.with(|s| s.borrow_mut().pop());
            self.0 = spare.unwrap_or_else(|| vec![0; CHUNK]);
        }
        &mut self.0
    }
}

impl Drop for SpareBuf {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.0);
        if buf.is_empty() {
            return;
        }
        if buf.len() != CHUNK {
            buf.truncate(CHUNK);
            buf.shrink_to_fit();
        }
        SPARE.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < SPARE_PER_THREAD {
                s.push(buf);
            }
        });
    }
}

/// Send a bodiless request's head ([`super::request_head`]) to the app over `kept`, else a kept or
/// new connection, and answer with its response: what hyper's pooled client does, without its task per app
/// connection and the channels between it and the request. Used by the handler, whose
/// requests come mostly over HTTP/2 (HTTP/1.1 takes the fast path), where those hand-overs
/// were a good part of a request's cost. A body that came whole with the head is answered
/// at once and the connection goes back to the instance; a longer one streams
/// ([`AppBody`]).
pub(super) async fn send(
    head: &[u8],
    method: &http::Method,
    trailers: bool,
    backend: &Arc<Backend>,
    mut kept: Option<Upstream>,
    connect_timeout: Duration,
    rec: Option<&mut Record>,
) -> Result<http::Response<ProxyBody>, ForwardError> {
    let idempotent = method.is_idempotent();
    let asked = Asked {
        head_method: method == http::Method::HEAD,
        trailers,
    };
    let guard = backend.enter();
    let mut spare = SpareBuf::new();
    let mut fresh_only = false;
    let (up, parsed) = loop {
        let mut up = match kept.take() {
            Some(up) => up,
            None => Upstream::get(backend, fresh_only, connect_timeout)
                .await
                .map_err(ForwardError::Connect)?,
        };
        let answer = match up.stream.write_all(head).await {
            Ok(()) => read_response_head(&mut up.stream, &mut spare).await,
            Err(_) => Err(HeadError::Closed),
        };
        match answer {
            Ok(parsed) => break (up, parsed),
            Err(e) if resend_fresh(&up, idempotent, &e) => fresh_only = true,
            Err(e) => return Err(ForwardError::Exchange(Box::new(e))),
        }
    };
    respond(up, parsed, spare, asked, guard, rec)
}

/// A request whose body is too long to hold: `head` (with the body's first bytes, framed)
/// on a fresh connection, then the rest of the client's body as it comes, chunked when
/// `chunked`. Never resent: the body is gone once sent. A client body that breaks off or
/// is malformed ends the app connection mid-request ([`ForwardError::ClientBody`]).
pub(super) async fn send_streaming(
    head: Vec<u8>,
    mut body: hyper::body::Incoming,
    chunked: bool,
    asked: Asked,
    backend: &Arc<Backend>,
    connect_timeout: Duration,
    rec: Option<&mut Record>,
) -> Result<http::Response<ProxyBody>, ForwardError> {
    use http_body_util::BodyExt as _;
    let guard = backend.enter();
    let mut up = Upstream::get(backend, true, connect_timeout)
        .await
        .map_err(ForwardError::Connect)?;
    // An app may answer before it has read the whole body (413): then the answer is read.
    let mut writing = up.stream.write_all(&head).await.is_ok();
    let mut line = Vec::new();
    while writing {
        let data = match body.frame().await {
            None => break,
            Some(Err(e)) => return Err(ForwardError::ClientBody(Box::new(e))),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
        };
        writing = if chunked {
            line.clear();
            push_chunk(&mut line, &data);
            up.stream.write_all(&line).await.is_ok()
        } else {
            up.stream.write_all(&data).await.is_ok()
        };
    }
    if writing && chunked {
        let _ = up.stream.write_all(b"0\r\n\r\n").await;
    }
    let mut spare = SpareBuf::new();
    let parsed = read_response_head(&mut up.stream, &mut spare)
        .await
        .map_err(|e| ForwardError::Exchange(Box::new(e)))?;
    respond(up, parsed, spare, asked, guard, rec)
}

/// The app's switch to another protocol (WebSocket), or its answer when it did not switch.
pub(super) enum Upgrade {
    /// The app's 101 headers, its connection, and any bytes it sent after the head.
    Switched {
        headers: http::HeaderMap,
        stream: TcpStream,
        early: Bytes,
        /// The tunnel counts as in flight to the instance until it closes (drain).
        guard: InflightGuard,
    },
    Refused(Box<http::Response<ProxyBody>>),
}

/// Send an upgrade request's head on a fresh app connection (upgraded connections are
/// never kept) and read the answer.
pub(super) async fn upgrade(
    head: &[u8],
    backend: &Arc<Backend>,
    connect_timeout: Duration,
) -> Result<Upgrade, ForwardError> {
    let guard = backend.enter();
    let mut up = Upstream::get(backend, true, connect_timeout)
        .await
        .map_err(ForwardError::Connect)?;
    let mut spare = SpareBuf::new();
    let answer = match up.stream.write_all(head).await {
        Ok(()) => read_head(&mut up.stream, &mut spare, true).await,
        Err(_) => Err(HeadError::Closed),
    };
    let parsed = answer.map_err(|e| ForwardError::Exchange(Box::new(e)))?;
    if parsed.status != 101 {
        return respond(up, parsed, spare, Asked::default(), guard, None)
            .map(|r| Upgrade::Refused(Box::new(r)));
    }
    let buf = &spare.0;
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut r = httparse::Response::new(&mut headers);
    let _ = r.parse(&buf[..parsed.len]);
    let mut map = http::HeaderMap::with_capacity(r.headers.len());
    let filter = Filter::switching(r.headers);
    for h in r.headers.iter() {
        if !filter.passes(r.headers, h.name) {
            continue;
        }
        let name = http::HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|e| ForwardError::Exchange(e.into()))?;
        let value =
            http::HeaderValue::from_bytes(h.value).map_err(|e| ForwardError::Exchange(e.into()))?;
        map.append(name, value);
    }
    response_head::switch_lines(&mut map);
    Ok(Upgrade::Switched {
        headers: map,
        early: Bytes::copy_from_slice(&buf[parsed.len..parsed.filled]),
        stream: up.stream,
        guard,
    })
}

/// The client's response from the app's parsed head: the head and a body that came whole
/// with it copied out at once, a longer body streamed off the connection ([`AppBody`]).
/// The app's head goes into `rec` as the app wrote it.
fn respond(
    up: Upstream,
    parsed: ResponseHead,
    spare: SpareBuf,
    asked: Asked,
    guard: InflightGuard,
    rec: Option<&mut Record>,
) -> Result<http::Response<ProxyBody>, ForwardError> {
    if let Some(rec) = rec {
        capture::response(rec, &spare.0[..parsed.len]);
    }
    let head_method = asked.head_method;
    let mut framing = if head_method || parsed.no_body() {
        Framing::None
    } else {
        parsed.framing
    };
    if let (Framing::Chunked(dec), true) = (&mut framing, asked.trailers) {
        dec.keep_trailers();
    }
    let buf = &spare.0;
    let first = &buf[parsed.len..parsed.filled];
    // The whole body came with the head (the common small response): done here.
    let whole = match &framing {
        Framing::None => Some(0),
        Framing::Length(n) if first.len() as u64 >= *n => Some(*n as usize),
        _ => None,
    };
    // The head (and a whole body) copied out of the read buffer in one piece, which the
    // header values and the body share: one allocation instead of one per header.
    let kept = Bytes::copy_from_slice(&buf[..parsed.len + whole.unwrap_or(0)]);
    let mut resp = http::Response::new(ProxyBody::empty());
    *resp.status_mut() =
        http::StatusCode::from_u16(parsed.status).map_err(|e| ForwardError::Exchange(e.into()))?;
    {
        let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let mut r = httparse::Response::new(&mut headers);
        // Parsed before, so it parses again the same way.
        let _ = r.parse(&kept[..parsed.len]);
        let map = resp.headers_mut();
        map.reserve(r.headers.len());
        // Left out here rather than removed from the map after.
        let filter = Filter::new(r.headers, &framing);
        for h in r.headers.iter() {
            if !filter.passes(r.headers, h.name) {
                continue;
            }
            // What hyper's client would refuse is a bad answer here too (502).
            let name = http::HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|e| ForwardError::Exchange(e.into()))?;
            let value = http::HeaderValue::from_maybe_shared(kept.slice_ref(h.value))
                .map_err(|e| ForwardError::Exchange(e.into()))?;
            map.append(name, value);
        }
    }
    if let Some(n) = whole {
        if n > 0 {
            *resp.body_mut() = ProxyBody::full(kept.slice(parsed.len..));
        }
        // Bytes past the body are not ours to pass on: that connection is not kept.
        if parsed.keep_alive && first.len() == n {
            up.release();
        }
        return Ok(resp);
    }
    let mut rest = BytesMut::with_capacity(CHUNK.max(first.len()));
    rest.extend_from_slice(first);
    *resp.body_mut() = ProxyBody::App(AppBody::new(up, rest, framing, parsed.keep_alive, guard));
    Ok(resp)
}

/// What the client asked that shapes the app's answer.
#[derive(Clone, Copy, Default)]
pub(super) struct Asked {
    /// A HEAD request: the answer has no body, whatever its headers say.
    pub(super) head_method: bool,
    /// `TE: trailers`: the chunked body's trailer fields are passed on.
    pub(super) trailers: bool,
}

#[cfg(test)]
mod tests {

    #[test]
    fn numbers_and_addresses_are_written_as_display_writes_them() {
        for n in [0u64, 7, 10, 255, 1355, 65535, u64::MAX] {
            let mut out = Vec::new();
            crate::proxy::header::push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.200.3.45",
            "255.255.255.255",
            "::1",
            "fe80::1:2",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            crate::proxy::header::push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().as_bytes());
        }
    }
}
