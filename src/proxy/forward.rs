//! Forwarding to the app: a pooled HTTP/1.1 upstream client that only ever dials loopback,
//! header rewriting (hop-by-hop removal, X-Forwarded-*, the hop counter), a response body
//! that streams and keeps the backend's in-flight count, and upgrades (WebSocket).

use crate::routes::{Backend, InflightGuard};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
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

pub type Client = legacy::Client<LoopbackConnector, UpstreamBody>;

/// A request body on its way to the app: the client's, or none (a bodiless request that a
/// pool replays to another instance when the first refused the connection).
pub enum UpstreamBody {
    Client(Incoming),
    Empty,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Client(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Client(b) => b.is_end_stream(),
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Client(b) => b.size_hint(),
            UpstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}

pub fn client(connect_timeout: Duration) -> Client {
    legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        // We forward the client's Host; the URI's authority is only the pool key.
        .set_host(false)
        .build(LoopbackConnector { connect_timeout })
}

/// Dials 127.0.0.1:PORT, then [::1]:PORT when refused (Vite binds ::1 only). Whatever the
/// URI says, only the port is used: portok never connects off the machine.
#[derive(Clone, Debug)]
pub struct LoopbackConnector {
    connect_timeout: Duration,
}

impl tower_service::Service<Uri> for LoopbackConnector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let timeout = self.connect_timeout;
        Box::pin(async move {
            let port = uri
                .port_u16()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no port"))?;
            connect_loopback(port, timeout).await.map(TokioIo::new)
        })
    }
}

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
    Upstream {
        body: Incoming,
        guard: Option<InflightGuard>,
        /// Bytes to send after the app's body ends (the live-reload script tag).
        append: Option<Bytes>,
    },
    Full(Option<Bytes>),
    /// A stream the daemon writes itself (server-sent events).
    Channel(tokio::sync::mpsc::Receiver<Bytes>),
    /// Read straight off a kept app connection ([`super::upstream::send`]).
    App(super::upstream::AppBody),
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
                .poll_data(cx)
                .map(|d| d.map(|d| d.map(Frame::data).map_err(BodyError::from))),
            ProxyBody::Upstream {
                body,
                guard,
                append,
            } => {
                if body.is_end_stream() {
                    guard.take();
                    return Poll::Ready(append.take().map(|a| Ok(Frame::data(a))));
                }
                let polled = Pin::new(body).poll_frame(cx);
                match &polled {
                    // Append before trailers or at the end, never after.
                    Poll::Ready(None) if append.is_some() => {
                        guard.take();
                        return Poll::Ready(append.take().map(|a| Ok(Frame::data(a))));
                    }
                    Poll::Ready(Some(Ok(f))) if f.is_trailers() && append.is_some() => {
                        // Rare: trailers after an HTML body. Send the tag now and drop the
                        // trailers rather than reorder frames.
                        return Poll::Ready(append.take().map(|a| Ok(Frame::data(a))));
                    }
                    _ => {}
                }
                if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
                    // The exchange is over: stop counting it as in flight now rather
                    // than when hyper gets round to dropping the body.
                    guard.take();
                }
                polled.map(|f| f.map(|r| r.map_err(BodyError::from)))
            }
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Channel(rx) => rx.poll_recv(cx).map(|d| d.map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, append, .. } => append.is_none() && body.is_end_stream(),
            ProxyBody::Full(d) => d.is_none(),
            ProxyBody::Channel(_) => false,
            ProxyBody::App(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, append, .. } => {
                let h = body.size_hint();
                let Some(a) = append else { return h };
                // Shift both bounds by the appended bytes (upper first: set_lower panics
                // if it would exceed the upper bound).
                let n = a.len() as u64;
                let mut shifted = SizeHint::new();
                if let Some(u) = h.upper() {
                    shifted.set_upper(u + n);
                }
                shifted.set_lower(h.lower() + n);
                shifted
            }
            ProxyBody::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Channel(_) | ProxyBody::App(_) => SizeHint::default(),
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
pub fn names_a_header(token: &str) -> bool {
    !token.eq_ignore_ascii_case("upgrade")
        && !token.eq_ignore_ascii_case("keep-alive")
        && !token.eq_ignore_ascii_case("close")
        && !token.is_empty()
}

pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Only allocate when Connection names extra headers, which is rare. Every Connection
    // line counts: repeated, they make one list (RFC 9110 5.3).
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|list| list.split(','))
            .map(str::trim)
            .filter(|t| names_a_header(t))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    // Most messages have none of them (HTTP/2 has none by rule): one pass comparing names
    // (cheap for these standard ones) instead of a hash lookup for each of the nine.
    if headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        for h in &HOP_BY_HOP {
            headers.remove(h);
        }
    }
}

/// An HTTP/2 client may send each cookie as a field of its own (RFC 9113 8.2.3); the app
/// gets them on one line, joined with "; ", as HTTP/1.1 has them (many apps read only one).
fn join_cookies(headers: &mut HeaderMap) {
    let mut all = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (all.next(), all.next()) else {
        return;
    };
    let mut line = first.as_bytes().to_vec();
    for v in headers.get_all(header::COOKIE).iter().skip(1) {
        line.extend_from_slice(b"; ");
        line.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(line)) {
        headers.insert(header::COOKIE, v);
    }
}

/// Facts about the incoming request that forwarding records in headers.
pub struct Origin<'a> {
    pub peer: SocketAddr,
    pub tls: bool,
    pub host: &'a HeaderValue,
    pub proxy_port: u16,
    pub hops: u32,
}

/// Rewrite a client request into the upstream HTTP/1.1 request for `backend`.
pub fn prepare_request<B>(req: &mut Request<B>, backend: &Backend, origin: &Origin<'_>) {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(backend.authority.clone());
    parts.path_and_query = Some(
        req.uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    *req.uri_mut() = Uri::from_parts(parts).expect("scheme, authority and path make a URI");
    *req.version_mut() = Version::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    join_cookies(headers);
    // Room for the headers added below in one step: a request with few headers would
    // otherwise grow (and rehash) the map more than once.
    headers.reserve(7);
    // HTTP/2 carries the host in :authority; the app needs it as Host.
    if !headers.contains_key(header::HOST) {
        headers.insert(header::HOST, origin.host.clone());
    }
    append_forwarded_for(headers, origin.peer);
    let proto = if origin.tls { "https" } else { "http" };
    append_forwarded(headers, origin, proto);
    headers
        .entry("x-forwarded-proto")
        .or_insert(HeaderValue::from_static(proto));
    headers
        .entry("x-forwarded-host")
        .or_insert_with(|| origin.host.clone());
    headers
        .entry("x-forwarded-port")
        .or_insert_with(|| HeaderValue::from(origin.proxy_port));
    headers.insert(HOPS_HEADER, HeaderValue::from(origin.hops + 1));
}

fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let mut value = Vec::with_capacity(64);
    for prev in headers.get_all("x-forwarded-for") {
        value.extend_from_slice(prev.as_bytes());
        value.extend_from_slice(b", ");
    }
    push_ip(&mut value, peer.ip());
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(value)) {
        headers.insert("x-forwarded-for", v);
    }
}

/// RFC 7239 `Forwarded: for=...;host=...;proto=...`, appended to any the client sent.
fn append_forwarded(headers: &mut HeaderMap, origin: &Origin<'_>, proto: &str) {
    let mut value = Vec::with_capacity(origin.host.len() + 64);
    for prev in headers.get_all(header::FORWARDED) {
        value.extend_from_slice(prev.as_bytes());
        value.extend_from_slice(b", ");
    }
    forwarded_element(&mut value, origin.peer.ip(), origin.host.as_bytes(), proto);
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(value)) {
        headers.insert(header::FORWARDED, v);
    }
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
}

/// Send through the pool and wrap the response body so it streams with the guard held.
pub async fn send(
    client: &Client,
    req: Request<UpstreamBody>,
    backend: &Arc<Backend>,
) -> Result<Response<ProxyBody>, ForwardError> {
    let guard = backend.enter();
    let resp = client.request(req).await.map_err(|e| {
        if e.is_connect() {
            let src = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<io::Error>())
                .map(|io| io::Error::new(io.kind(), io.to_string()))
                .unwrap_or_else(|| io::Error::other(e.to_string()));
            ForwardError::Connect(src)
        } else {
            ForwardError::Exchange(Box::new(e))
        }
    })?;
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // We speak HTTP/1.1 (or h2) to the client whatever the app spoke to us.
    parts.version = Version::HTTP_11;
    Ok(Response::from_parts(
        parts,
        ProxyBody::Upstream {
            body,
            guard: Some(guard),
            append: None,
        },
    ))
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
            super::upstream::Upgrade::Refused(resp) => return Ok(resp),
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
        let _guard = guard;
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
