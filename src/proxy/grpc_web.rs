//! gRPC-Web for apps that speak only gRPC, so a browser can call a tonic (or grpcio, or
//! grpc-go) server through portok with no Envoy and no tonic-web in the app:
//!
//! - a call (`application/grpc-web[-text][+proto]`, over HTTP/1.1 or h2) goes to the app as
//!   gRPC, a `-text` body decoded from base64 as it streams;
//! - the app's answer goes back as gRPC-Web: its trailers become the body's last frame
//!   (flag 0x80, then `name:value\r\n` lines), all of it in base64 for `-text`;
//! - the CORS preflight of such a call (it names `x-grpc-web`) is answered here, since the
//!   app cannot: for pages on this machine only (`*.localhost`, loopback, the names under
//!   the daemon's TLDs). A page elsewhere gets 403 with the reason.
//!
//! The answer is encoded after the inspector has seen it (in the handler), so the inspector
//! shows each call as gRPC: its status from the trailers, its messages counted. An answer
//! of portok's own (the app is down, the body was not base64) keeps its HTTP status and
//! text, with the CORS headers that let the page read them.

use super::body::{BodyError, ProxyBody};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

/// How a gRPC-Web call's answer is to be encoded: kept by the handler from the request's
/// translation until it has the answer.
#[derive(Debug)]
pub struct Answer {
    text: bool,
    /// Why the request's `-text` body did not decode, if it did not.
    failed: Arc<OnceLock<Base64Error>>,
    /// The page's origin, when it is one this machine serves: CORS lets it read the answer.
    origin: Option<HeaderValue>,
}

/// A gRPC-Web call, as the request's headers describe it.
pub struct Call {
    text: bool,
    /// The content-type the app receives (`application/grpc+proto` for `-web+proto`).
    grpc_type: HeaderValue,
    origin: Option<HeaderValue>,
}

/// The gRPC-Web call `req` is, if it is one.
pub fn call_of<B>(req: &Request<B>, tlds: &[String]) -> Option<Call> {
    let headers = req.headers();
    let web = crate::grpc::web_call(headers.get(header::CONTENT_TYPE)?.as_bytes())?;
    let mut grpc_type = b"application/grpc".to_vec();
    grpc_type.extend_from_slice(web.rest);
    let origin = headers
        .get(header::ORIGIN)
        .filter(|o| local_origin(o.as_bytes(), tlds))
        .cloned();
    Some(Call {
        text: web.text,
        grpc_type: HeaderValue::from_bytes(&grpc_type).ok()?,
        origin,
    })
}

impl Call {
    /// The call as the gRPC call the app receives, and how to answer it.
    pub fn into_grpc<B>(self, req: Request<B>) -> (Request<Decoded<B>>, Answer) {
        let (mut parts, body) = req.into_parts();
        parts.headers.insert(header::CONTENT_TYPE, self.grpc_type);
        if self.text {
            // Decoded, the body is shorter than the client said.
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        let failed = Arc::new(OnceLock::new());
        let body = Decoded {
            inner: body,
            text: self.text.then(BytesMut::new),
            failed: failed.clone(),
        };
        let answer = Answer {
            text: self.text,
            failed,
            origin: self.origin,
        };
        (Request::from_parts(parts, body), answer)
    }
}

impl Answer {
    /// Why the request's body did not decode, when it did not: the app saw its call reset.
    pub fn body_error(&self) -> Option<Box<dyn std::error::Error + Send + Sync>> {
        self.failed.get().map(|e| Box::new(e.clone()) as _)
    }
}

/// The answer to a CORS preflight for a gRPC-Web call (it asks to send `x-grpc-web`), or
/// None for any other request, which goes to the app as usual.
pub fn preflight<B>(req: &Request<B>, tlds: &[String]) -> Option<Response<ProxyBody>> {
    let headers = req.headers();
    if req.method() != Method::OPTIONS
        || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return None;
    }
    let asked = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS)?;
    let asks_grpc_web = asked
        .as_bytes()
        .split(|&b| b == b',')
        .any(|h| h.trim_ascii().eq_ignore_ascii_case(b"x-grpc-web"));
    if !asks_grpc_web {
        return None;
    }
    let origin = headers.get(header::ORIGIN)?;
    if !local_origin(origin.as_bytes(), tlds) {
        let why = format!(
            "portok: gRPC-Web from the page at {} is not answered: portok lets only pages on \
             this machine (*.localhost, loopback, its --tld names) call its apps. Serve the \
             page through portok, or add tonic-web (or your server's gRPC-Web layer) to the app.\n",
            String::from_utf8_lossy(origin.as_bytes())
        );
        let mut resp = Response::new(ProxyBody::full(why));
        *resp.status_mut() = StatusCode::FORBIDDEN;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return Some(resp);
    }
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    h.insert(header::VARY, HeaderValue::from_static("origin"));
    Some(resp)
}

/// The answer as gRPC-Web: CORS for the page, and, when it is the app's gRPC answer, the
/// content-type and the body with its trailers as the last frame. Any other answer (portok's
/// 502 when the app is down, its 400 for a body that is not base64) keeps its status and
/// text, which the page can then read.
pub fn encode(resp: &mut Response<ProxyBody>, answer: Answer) {
    let headers = resp.headers_mut();
    if let Some(origin) = answer.origin {
        // The page reads every header the answer has (grpc-status and grpc-message in a
        // trailers-only answer, the app's own metadata).
        let mut names = String::from("grpc-status, grpc-message, grpc-status-details-bin");
        for name in headers.keys() {
            if !name.as_str().starts_with("grpc-") {
                names.push_str(", ");
                names.push_str(name.as_str());
            }
        }
        if let Ok(names) = HeaderValue::from_str(&names) {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, names);
        }
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
    let rest = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| crate::grpc::call_suffix(v.as_bytes()))
        .map(<[u8]>::to_vec);
    let Some(rest) = rest else {
        return;
    };
    let mut web_type = if answer.text {
        b"application/grpc-web-text".to_vec()
    } else {
        b"application/grpc-web".to_vec()
    };
    web_type.extend_from_slice(&rest);
    if let Ok(v) = HeaderValue::from_bytes(&web_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.remove(header::CONTENT_LENGTH);
    let inner = std::mem::replace(resp.body_mut(), ProxyBody::empty());
    let body = Encoded {
        inner,
        text: answer.text.then(BytesMut::new),
        done: false,
    };
    *resp.body_mut() = ProxyBody::Stream(body.boxed_unsync());
}

/// Whether `origin` (`scheme://host[:port]`) is a page on this machine: a `.localhost`
/// name, loopback, or a name under one of the daemon's TLDs.
fn local_origin(origin: &[u8], tlds: &[String]) -> bool {
    let Some(host) = std::str::from_utf8(origin)
        .ok()
        .and_then(crate::names::origin_host)
    else {
        return false;
    };
    let host = host.to_ascii_lowercase();
    host == "localhost"
        || host == "127.0.0.1"
        || host == "[::1]"
        || crate::names::is_under(&host, "localhost")
        || tlds.iter().any(|tld| crate::names::is_under(&host, tld))
}

/// A gRPC-Web request body as the app receives it: as it came, or decoded from base64.
pub struct Decoded<B> {
    inner: B,
    /// `-text`: base64 not yet decoded (less than a group of four, carried to the next frame).
    text: Option<BytesMut>,
    failed: Arc<OnceLock<Base64Error>>,
}

impl<B> Decoded<B> {
    fn fail(&self, e: Base64Error) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let _ = self.failed.set(e.clone());
        Poll::Ready(Some(Err(Box::new(e))))
    }
}

impl<B> Body for Decoded<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BodyError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let me = &mut *self;
        loop {
            let frame = match ready!(Pin::new(&mut me.inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => {
                    let left = me.text.as_ref().map_or(0, BytesMut::len);
                    if left > 0 {
                        return me.fail(Base64Error::Truncated(left));
                    }
                    return Poll::Ready(None);
                }
            };
            let Some(pending) = me.text.as_mut() else {
                return Poll::Ready(Some(Ok(frame)));
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(other) => return Poll::Ready(Some(Ok(other))),
            };
            pending.extend_from_slice(&data);
            let whole = pending.len() / 4 * 4;
            if whole == 0 {
                continue;
            }
            let quads = pending.split_to(whole);
            return match decode_base64(&quads) {
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(data.into())))),
                Err(e) => me.fail(e),
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && self.text.as_ref().is_none_or(BytesMut::is_empty)
    }
}

/// Why a `-text` body did not decode.
#[derive(Clone, Debug)]
pub enum Base64Error {
    /// Not base64 at all.
    Invalid(base64::DecodeError),
    /// The body ended within a group of four characters.
    Truncated(usize),
}

impl std::fmt::Display for Base64Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Base64Error::Invalid(e) => write!(f, "a grpc-web-text body is not base64: {e}"),
            Base64Error::Truncated(n) => write!(
                f,
                "a grpc-web-text body ended {n} characters into a group of four"
            ),
        }
    }
}

impl std::error::Error for Base64Error {}

/// Whole groups of four base64 characters. Each message may be encoded on its own, so
/// padding may end any group, not only the last.
fn decode_base64(quads: &[u8]) -> Result<Vec<u8>, Base64Error> {
    let mut out = Vec::with_capacity(quads.len() / 4 * 3);
    let mut rest = quads;
    while !rest.is_empty() {
        // Up to and including the first group with padding in it, or all of it.
        let end = rest
            .iter()
            .position(|&b| b == b'=')
            .map_or(rest.len(), |i| (i / 4 + 1) * 4);
        STANDARD
            .decode_vec(&rest[..end], &mut out)
            .map_err(Base64Error::Invalid)?;
        rest = &rest[end..];
    }
    Ok(out)
}

/// The app's gRPC body as gRPC-Web: data as it comes (in base64 for `-text`), then the
/// trailers as a frame of their own; never HTTP trailers.
struct Encoded {
    inner: ProxyBody,
    /// `-text`: up to two bytes not yet encoded (base64 encodes three at a time).
    text: Option<BytesMut>,
    done: bool,
}

impl Encoded {
    /// `data` as it goes to the client. `-text` holds back what does not fill a group of
    /// three bytes until `last`, or until the app pauses ([`Self::flush`]).
    fn out(&mut self, data: Bytes, last: bool) -> Bytes {
        let Some(pending) = self.text.as_mut() else {
            return data;
        };
        pending.extend_from_slice(&data);
        let whole = if last {
            pending.len()
        } else {
            pending.len() / 3 * 3
        };
        let raw = pending.split_to(whole);
        STANDARD.encode(&raw).into()
    }

    /// What `-text` holds back, padded: the app paused, and a message must not wait for the
    /// next one to reach the page (clients accept padding mid-stream).
    fn flush(&mut self) -> Option<Bytes> {
        let pending = self.text.as_mut().filter(|p| !p.is_empty())?;
        let raw = pending.split();
        Some(STANDARD.encode(&raw).into())
    }
}

impl Body for Encoded {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let me = &mut *self;
        loop {
            if me.done {
                return Poll::Ready(None);
            }
            let polled = match Pin::new(&mut me.inner).poll_frame(cx) {
                Poll::Ready(polled) => polled,
                Poll::Pending => {
                    return match me.flush() {
                        Some(out) => Poll::Ready(Some(Ok(Frame::data(out)))),
                        None => Poll::Pending,
                    }
                }
            };
            match polled {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let out = me.out(data, false);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => {
                        let Ok(trailers) = frame.into_trailers() else {
                            continue;
                        };
                        me.done = true;
                        let out = me.out(trailer_frame(&trailers), true);
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                },
                Some(Err(e)) => {
                    // The page gets a status, not a cut connection.
                    me.done = true;
                    let why = format!("portok: the app's answer broke off: {e}");
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", HeaderValue::from_static("14"));
                    if let Ok(m) = HeaderValue::from_str(&crate::grpc::encode_message(&why)) {
                        trailers.insert("grpc-message", m);
                    }
                    let out = me.out(trailer_frame(&trailers), true);
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                None => {
                    // A trailers-only answer (its status in the headers), or an app that
                    // ended without trailers: what is left, padded.
                    me.done = true;
                    let out = me.out(Bytes::new(), true);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// gRPC-Web's last frame: flag 0x80, the length, then the trailers as `name:value\r\n`
/// lines (names in lower case, as HTTP/2 has them).
fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let mut lines = Vec::with_capacity(64);
    for (name, value) in trailers {
        lines.extend_from_slice(name.as_str().as_bytes());
        lines.push(b':');
        lines.extend_from_slice(value.as_bytes());
        lines.extend_from_slice(b"\r\n");
    }
    let mut frame = BytesMut::with_capacity(5 + lines.len());
    frame.extend_from_slice(&[0x80]);
    frame.extend_from_slice(&(lines.len() as u32).to_be_bytes());
    frame.extend_from_slice(&lines);
    frame.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    type Frames = futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BodyError>>>;

    fn chunks(parts: &[&[u8]]) -> StreamBody<Frames> {
        let frames: Vec<Result<Frame<Bytes>, BodyError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::copy_from_slice(p))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn text_bodies_decode_however_frames_cut_them() {
        // Two messages each encoded on its own (padding in the middle), cut everywhere.
        let body = b"AAAAAAJoaQ==AAAAAANhYmM=";
        let want = b"\0\0\0\0\x02hi\0\0\0\0\x03abc".to_vec();
        for cut in 1..body.len() {
            let parts: Vec<&[u8]> = body.chunks(cut).collect();
            let decoded = Decoded {
                inner: chunks(&parts),
                text: Some(BytesMut::new()),
                failed: Default::default(),
            };
            let got = decoded.collect().await.unwrap().to_bytes();
            assert_eq!(got.as_ref(), &want[..], "chunks of {cut}");
        }
    }

    #[tokio::test]
    async fn a_text_body_that_is_not_base64_is_an_error() {
        for bad in [&b"AAA*AAJo"[..], b"AAAAA"] {
            let failed = Arc::new(OnceLock::new());
            let decoded = Decoded {
                inner: chunks(&[bad]),
                text: Some(BytesMut::new()),
                failed: failed.clone(),
            };
            assert!(decoded.collect().await.is_err(), "{bad:?}");
            assert!(failed.get().is_some(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn answers_end_with_their_trailers_as_a_frame() {
        for text in [false, true] {
            let app = StreamBody::new(futures_util::stream::iter(vec![
                Ok::<_, BodyError>(Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))),
                Ok(Frame::trailers({
                    let mut t = HeaderMap::new();
                    t.insert("grpc-status", HeaderValue::from_static("5"));
                    t.insert("x-why", HeaderValue::from_static("gone"));
                    t
                })),
            ]));
            let body = Encoded {
                inner: ProxyBody::Stream(app.boxed_unsync()),
                text: text.then(BytesMut::new),
                done: false,
            };
            let collected = body.collect().await.unwrap();
            assert!(collected.trailers().is_none());
            let bytes = collected.to_bytes();
            let raw = if text {
                decode_base64(&bytes).unwrap()
            } else {
                bytes.to_vec()
            };
            let lines = b"grpc-status:5\r\nx-why:gone\r\n";
            let mut want = b"\0\0\0\0\x02hi\x80".to_vec();
            want.extend_from_slice(&(lines.len() as u32).to_be_bytes());
            want.extend_from_slice(lines);
            assert_eq!(raw, want, "text {text}");
        }
    }

    #[tokio::test]
    async fn text_reaches_the_page_whole_when_the_app_pauses() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut body = Encoded {
            inner: ProxyBody::Channel(rx),
            text: Some(BytesMut::new()),
            done: false,
        };
        // Seven bytes: six encode at once, and the seventh must not wait for more.
        tx.send(Bytes::from_static(b"\0\0\0\0\x02hi"))
            .await
            .unwrap();
        let mut got = Vec::new();
        for _ in 0..2 {
            let frame =
                futures_util::poll!(std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)));
            match frame {
                Poll::Ready(Some(Ok(f))) => got.extend_from_slice(f.data_ref().unwrap()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            got,
            b"AAAAAAJo"
                .iter()
                .chain(b"aQ==")
                .copied()
                .collect::<Vec<u8>>()
        );
        assert_eq!(decode_base64(&got).unwrap(), b"\0\0\0\0\x02hi");
        drop(tx);
    }

    #[tokio::test]
    async fn an_app_that_breaks_off_gives_the_page_a_status() {
        let app = StreamBody::new(futures_util::stream::iter(vec![
            Ok::<_, BodyError>(Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))),
            Err("reset".into()),
        ]));
        let body = Encoded {
            inner: ProxyBody::Stream(app.boxed_unsync()),
            text: None,
            done: false,
        };
        let bytes = body.collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("grpc-status:14\r\n"), "{text:?}");
        assert!(
            text.contains("grpc-message:portok: the app's answer broke off: reset"),
            "{text:?}"
        );
    }

    #[test]
    fn only_pages_on_this_machine_are_local() {
        let tlds = vec!["test".to_string()];
        for ok in [
            "http://web.localhost:1355",
            "https://a.b.localhost",
            "http://localhost:5173",
            "http://127.0.0.1:8080",
            "http://[::1]:3000",
            "https://app.test:1355",
        ] {
            assert!(local_origin(ok.as_bytes(), &tlds), "{ok}");
        }
        for bad in [
            "https://evil.example",
            "http://localhost.evil.example",
            "null",
            "http://test",
            "file://",
        ] {
            assert!(!local_origin(bad.as_bytes(), &tlds), "{bad}");
        }
    }
}
