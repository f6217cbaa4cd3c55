//! Forwarding to the app: dialing loopback, the body of every response, the header rules
//! both directions share (hop-by-hop names, the forwarding lines' pieces), and upgrades
//! (WebSocket), which become tunnels.

use super::upstream::{Failed, HeadError};
use crate::routes::Backend;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::io;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub const HOPS_HEADER: HeaderName = HeaderName::from_static("x-portok-hops");
pub const MAX_HOPS: u32 = 5;

/// Dials 127.0.0.1:PORT, then [::1]:PORT when refused (Vite binds ::1 only): portok never
/// connects off the machine.
pub async fn connect_loopback(port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    let attempt = |addr| async move {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect to {addr} timed out after {timeout:?}"),
            )),
        }
    };
    let stream = match attempt(v4).await {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => match attempt(v6).await {
            Ok(s) => s,
            Err(_) => return Err(e),
        },
        Err(e) => return Err(e),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The body of every response the proxy sends: the app's streamed body (holding the
/// backend's in-flight guard until it ends) or a small page of our own.
pub enum ProxyBody {
    Full(Option<Bytes>),
    /// A stream the daemon writes itself (server-sent events).
    Channel(tokio::sync::mpsc::Receiver<Bytes>),
    /// Read straight off the app's connection ([`super::upstream::send`]).
    App(super::app_body::AppBody),
    /// Any of these, with its first bytes kept for the inspector.
    Tee(Box<super::capture::Tee>),
}

impl ProxyBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(b.into()))
    }
    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }
}

/// Whatever ended a response body early: hyper's error, or an I/O error on the app's
/// connection ([`ProxyBody::App`]).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ProxyBody::App(body) => body
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(BodyError::from))),
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Channel(rx) => rx.poll_recv(cx).map(|d| d.map(|d| Ok(Frame::data(d)))),
            ProxyBody::Tee(tee) => Pin::new(&mut **tee).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(d) => d.is_none(),
            ProxyBody::Channel(_) => false,
            ProxyBody::App(body) => body.is_end_stream(),
            ProxyBody::Tee(tee) => tee.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Channel(_) | ProxyBody::App(_) => SizeHint::default(),
            ProxyBody::Tee(tee) => tee.size_hint(),
        }
    }
}

/// Headers that describe one hop, not the message (RFC 9110 7.6.1); any that the
/// Connection header names are hop-by-hop too.
pub const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether a header name (as sent, any case) is one of [`HOP_BY_HOP`].
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_str().as_bytes()))
}

/// Connection tokens that name no header to remove.
pub fn names_a_header(token: &[u8]) -> bool {
    !token.eq_ignore_ascii_case(b"upgrade")
        && !token.eq_ignore_ascii_case(b"keep-alive")
        && !token.eq_ignore_ascii_case(b"close")
        && !token.is_empty()
}

/// The element portok adds to `Forwarded` (RFC 7239): an IPv6 client is quoted and
/// bracketed, and a host with characters outside a token becomes a quoted string.
pub fn forwarded_element(out: &mut Vec<u8>, ip: IpAddr, host: &[u8], proto: &str) {
    match ip {
        IpAddr::V4(_) => {
            out.extend_from_slice(b"for=");
            push_ip(out, ip);
        }
        IpAddr::V6(_) => {
            out.extend_from_slice(b"for=\"[");
            push_ip(out, ip);
            out.extend_from_slice(b"]\"");
        }
    }
    let token = host
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || b".-_:[]".contains(c));
    out.extend_from_slice(b";host=");
    if token {
        out.extend_from_slice(host);
    } else {
        out.push(b'"');
        for &c in host {
            if c == b'"' || c == b'\\' {
                out.push(b'\\');
            }
            out.push(c);
        }
        out.push(b'"');
    }
    out.extend_from_slice(b";proto=");
    out.extend_from_slice(proto.as_bytes());
}

/// An address as `Display` writes it, without the formatting machinery for IPv4 (every
/// request writes the client's address twice).
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_decimal(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// A number in decimal, as `Display` writes it.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

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

/// An HTTP/1.1 Upgrade (WebSocket) or an HTTP/2 extended CONNECT (RFC 8441), sent to the
/// app as the HTTP/1.1 Upgrade `head` (written by [`super::request_head`]) on a fresh
/// connection. On the app's 101 the client is answered (101 on HTTP/1.1; 200 on HTTP/2,
/// with the negotiated subprotocol and extensions) and bytes are copied both ways until
/// either side closes; otherwise the app's answer is passed on.
pub async fn send_upgrade(
    mut req: Request<Incoming>,
    head: Vec<u8>,
    backend: &Arc<Backend>,
    connect_timeout: Duration,
) -> Result<Response<ProxyBody>, ForwardError> {
    let client = hyper::upgrade::on(&mut req);
    let h2 = req.version() == Version::HTTP_2;
    drop(req);
    let (headers, stream, early, guard) =
        match super::upstream::upgrade(&head, backend, connect_timeout).await? {
            super::upstream::Upgrade::Refused(resp) => return Ok(*resp),
            super::upstream::Upgrade::Switched {
                headers,
                stream,
                early,
                guard,
            } => (headers, stream, early, guard),
        };
    let mut resp = Response::new(ProxyBody::empty());
    if h2 {
        for name in [
            header::SEC_WEBSOCKET_PROTOCOL,
            header::SEC_WEBSOCKET_EXTENSIONS,
        ] {
            if let Some(v) = headers.get(&name) {
                resp.headers_mut().insert(name, v.clone());
            }
        }
    } else {
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *resp.headers_mut() = headers;
    }
    tokio::spawn(async move {
        // Long-lived by nature: a stopping daemon does not wait for it (drain does).
        let _guard = guard.into_tunnel();
        let Ok(client) = client.await else {
            return;
        };
        let mut client = TokioIo::new(client);
        let mut app = stream;
        if !early.is_empty() && client.write_all(&early).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut app).await;
    });
    Ok(resp)
}

/// A fresh Sec-WebSocket-Key: 16 random bytes, base64 (an HTTP/2 WebSocket has none, and
/// the app's HTTP/1.1 side needs one).
pub fn websocket_key() -> HeaderValue {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: [u8; 16] = rand::random();
    let mut out = String::with_capacity(24);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    HeaderValue::from_str(&out).expect("base64 is a valid header value")
}
