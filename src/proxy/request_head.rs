//! The one writer of the request heads portok sends to apps. Every path (the fast path's
//! heads from httparse, the handler's from a header map, upgrades, the HTTP/2 extended
//! CONNECT bridge, and requests to apps that speak only HTTP/2) describes its request as an
//! [`Outbound`] and a list of the client's header lines, and this writes the head by the
//! rules of "What the app receives" in docs/reference/routing.md:
//!
//! - the target in origin form (`/path?query`, or `*`), never absolute form;
//! - exactly one `Host`, the host portok routed on, as the client sent it;
//! - no hop-by-hop header and none the client's `Connection` names, no `HTTP2-Settings`;
//! - cookies on one line; framing (`Content-Length` or chunked) as the caller decided;
//! - X-Forwarded-For and Forwarded appended to earlier proxies', the X-Forwarded-* the
//!   client did not send, and the hop count.
//!
//! It writes to a [`Sink`]: bytes for an HTTP/1.1 head, or a header map ([`Map`]) for an
//! HTTP/2 request, whose request line and Host are its pseudo-headers.

use super::header::{push_header, HOPS_HEADER};
use http::{header, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Where [`write`] puts the head.
pub(super) trait Sink {
    /// The request line and Host (HTTP/1.1). An HTTP/2 request has its own pseudo-headers.
    fn request_line(&mut self, method: &[u8], target: &[u8], host: &[u8]);
    /// Begin a line of the writer's own: its value goes into the buffer given back, then
    /// [`Sink::end_line`].
    fn begin(&mut self, name: &HeaderName) -> &mut Vec<u8>;
    fn end_line(&mut self);
    fn end_head(&mut self);
    fn line(&mut self, name: &HeaderName, value: &[u8]) {
        self.begin(name).extend_from_slice(value);
        self.end_line();
    }
    /// A line of the writer's own whose value never changes: a header map takes it as it
    /// is, with no copy to allocate and free on each request.
    fn fixed(&mut self, name: &HeaderName, value: &'static str) {
        self.line(name, value.as_bytes());
    }
    /// A client's line that passes as it came.
    fn keep<'h>(&mut self, field: impl Field<'h>);
}

/// A client's header line as the writer reads it: from a header map, or as bytes httparse
/// found.
pub(super) trait Field<'h>: Copy {
    fn name(self) -> &'h [u8];
    fn value(self) -> &'h [u8];
    /// The field itself, when it comes from a header map: a [`Map`] keeps it as it is
    /// (a reference count), where parsing its name and copying its value again took about
    /// 1% of an HTTP/2 call's instructions in portok.
    fn parsed(self) -> Option<(&'h HeaderName, &'h HeaderValue)> {
        None
    }
}

impl<'h> Field<'h> for (&'h [u8], &'h [u8]) {
    fn name(self) -> &'h [u8] {
        self.0
    }
    fn value(self) -> &'h [u8] {
        self.1
    }
}

impl<'h> Field<'h> for (&'h HeaderName, &'h HeaderValue) {
    fn name(self) -> &'h [u8] {
        self.0.as_str().as_bytes()
    }
    fn value(self) -> &'h [u8] {
        self.1.as_bytes()
    }
    fn parsed(self) -> Option<(&'h HeaderName, &'h HeaderValue)> {
        Some(self)
    }
}

/// The HTTP/1.1 head, as bytes.
impl Sink for Vec<u8> {
    fn request_line(&mut self, method: &[u8], target: &[u8], host: &[u8]) {
        self.extend_from_slice(method);
        self.push(b' ');
        match target.first() {
            Some(b'/') => self.extend_from_slice(target),
            Some(b'*') if target.len() == 1 => self.push(b'*'),
            Some(_) => {
                self.push(b'/');
                self.extend_from_slice(target);
            }
            None => self.push(b'/'),
        }
        self.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        self.extend_from_slice(host);
        self.extend_from_slice(b"\r\n");
    }

    fn begin(&mut self, name: &HeaderName) -> &mut Vec<u8> {
        self.extend_from_slice(name.as_str().as_bytes());
        self.extend_from_slice(b": ");
        self
    }

    fn end_line(&mut self) {
        self.extend_from_slice(b"\r\n");
    }

    fn end_head(&mut self) {
        self.extend_from_slice(b"\r\n");
    }

    fn line(&mut self, name: &HeaderName, value: &[u8]) {
        push_header(self, name.as_str().as_bytes(), value);
    }

    fn keep<'h>(&mut self, field: impl Field<'h>) {
        push_header(self, field.name(), field.value());
    }
}

/// The header fields of an HTTP/2 request (no Host: the request's `:authority` is it).
/// Every line comes from a valid header map or from the writer itself, so none should be
/// invalid; one that is would be left out.
pub(super) struct Map {
    map: HeaderMap,
    name: Option<HeaderName>,
    value: Vec<u8>,
}

impl Map {
    pub(super) fn with_capacity(fields: usize) -> Self {
        Map {
            map: HeaderMap::with_capacity(fields),
            name: None,
            // Room for the longest of the writer's own values (Forwarded, as a rule), so
            // it is not grown line by line.
            value: Vec::with_capacity(128),
        }
    }

    pub(super) fn into_map(self) -> HeaderMap {
        self.map
    }
}

impl Sink for Map {
    fn request_line(&mut self, _method: &[u8], _target: &[u8], _host: &[u8]) {}

    fn begin(&mut self, name: &HeaderName) -> &mut Vec<u8> {
        self.name = Some(name.clone());
        self.value.clear();
        &mut self.value
    }

    fn end_line(&mut self) {
        if let (Some(name), Ok(value)) = (self.name.take(), HeaderValue::from_bytes(&self.value)) {
            self.map.append(name, value);
        }
    }

    fn end_head(&mut self) {}

    fn line(&mut self, name: &HeaderName, value: &[u8]) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            self.map.append(name.clone(), value);
        }
    }

    fn fixed(&mut self, name: &HeaderName, value: &'static str) {
        self.map
            .append(name.clone(), HeaderValue::from_static(value));
    }

    fn keep<'h>(&mut self, field: impl Field<'h>) {
        if let Some((name, value)) = field.parsed() {
            self.map.append(name.clone(), value.clone());
        } else if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(field.name()),
            HeaderValue::from_bytes(field.value()),
        ) {
            self.map.append(name, value);
        }
    }
}

/// How the request's body reaches the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BodyFraming {
    /// No body: a `Content-Length: 0` the client sent passes as it is.
    None,
    Length(u64),
    Chunked,
}

/// What the writer needs to know about a request besides its header lines.
pub(super) struct Outbound<'a> {
    pub(super) method: &'a [u8],
    /// The path and query as received (`?a` from an h2 `:path` becomes `/?a`).
    pub(super) target: &'a [u8],
    /// The host portok routed on, as the client sent it.
    pub(super) host: &'a [u8],
    pub(super) framing: BodyFraming,
    /// Ask the app to switch to this protocol (WebSocket, from an HTTP/1.1 Upgrade or an
    /// HTTP/2 extended CONNECT).
    pub(super) upgrade: Option<&'a [u8]>,
    /// Lines to add (the Sec-WebSocket-Key an h2 WebSocket lacks).
    pub(super) extra: &'a [(HeaderName, &'a [u8])],
    /// The client sent a Connection header that may name headers to drop (never over h2;
    /// the fast path takes no such request): only then are the lines read for it first.
    pub(super) connection: bool,
    pub(super) hop: Hop,
}

/// This hop, as the forwarding lines describe it.
#[derive(Clone, Copy)]
pub(super) struct Hop {
    pub(super) ip: IpAddr,
    pub(super) tls: bool,
    /// The port the client reached portok on.
    pub(super) port: u16,
    /// `x-portok-hops` as the request came.
    pub(super) hops: u32,
}

// The names of the writer's own lines: a header map takes them as they are, unparsed.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// What a client header line is to the writer.
#[derive(PartialEq, Eq)]
enum Line {
    Keep,
    Drop,
    Cookie,
    ForwardedFor,
    Forwarded,
    XfProto,
    XfHost,
    XfPort,
    Length,
}

fn classify(name: &[u8]) -> Line {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    // By length first: most names are compared with nothing here.
    match name.len() {
        4 if is("host") => Line::Drop,
        6 if is("cookie") => Line::Cookie,
        9 if is("forwarded") => Line::Forwarded,
        13 if is(HOPS_HEADER.as_str()) => Line::Drop,
        14 if is("content-length") => Line::Length,
        14 if is("http2-settings") => Line::Drop,
        15 if is("x-forwarded-for") => Line::ForwardedFor,
        16 if is("x-forwarded-host") => Line::XfHost,
        16 if is("x-forwarded-port") => Line::XfPort,
        17 if is("x-forwarded-proto") => Line::XfProto,
        _ if crate::proxy::header::is_hop_by_hop(name) => Line::Drop,
        _ => Line::Keep,
    }
}

/// Write the upstream head for `req` into `out`; `headers()` gives the client's header
/// lines (again, for each pass).
pub(super) fn write<'h, S, I, F, L>(out: &mut S, req: &Outbound<'_>, headers: F)
where
    S: Sink,
    F: Fn() -> I,
    I: Iterator<Item = L>,
    L: Field<'h>,
{
    out.request_line(req.method, req.target, req.host);
    // Headers the client's Connection names are hop-by-hop too (rare: only then listed).
    let mut named: Vec<&[u8]> = Vec::new();
    let lines = req.connection.then(&headers).into_iter().flatten();
    for field in lines.filter(|f| f.name().eq_ignore_ascii_case(b"connection")) {
        named.extend(
            field
                .value()
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .filter(|t| crate::proxy::header::names_a_header(t)),
        );
    }
    let (mut sent_proto, mut sent_host, mut sent_port) = (false, false, false);
    let (mut xff, mut fwd, mut cookie) = (false, false, false);
    for field in headers() {
        let name = field.name();
        let line = classify(name);
        if line == Line::Drop || named.iter().any(|t| t.eq_ignore_ascii_case(name)) {
            continue;
        }
        match line {
            Line::Keep => {}
            Line::Drop => unreachable!("skipped above"),
            Line::Cookie => {
                if !cookie {
                    cookie = true;
                    push_cookies(out.begin(&header::COOKIE), headers());
                    out.end_line();
                }
                continue;
            }
            Line::ForwardedFor => {
                xff = true;
                continue;
            }
            Line::Forwarded => {
                fwd = true;
                continue;
            }
            Line::XfProto => sent_proto = true,
            Line::XfHost => sent_host = true,
            Line::XfPort => sent_port = true,
            // The framing below replaces it when there is a body.
            Line::Length if req.framing != BodyFraming::None => continue,
            Line::Length => {}
        }
        out.keep(field);
    }
    match req.framing {
        BodyFraming::None => {}
        BodyFraming::Length(n) => {
            crate::proxy::header::push_decimal(out.begin(&header::CONTENT_LENGTH), n);
            out.end_line();
        }
        BodyFraming::Chunked => out.line(&header::TRANSFER_ENCODING, b"chunked"),
    }
    if let Some(proto) = req.upgrade {
        out.line(&header::CONNECTION, b"upgrade");
        out.line(&header::UPGRADE, proto);
    }
    for (name, value) in req.extra {
        out.line(name, value);
    }
    // What earlier proxies said, read again only when the client sent any.
    let earlier = |want: &'static [u8], sent: bool| {
        sent.then(&headers)
            .into_iter()
            .flatten()
            .filter(move |f| f.name().eq_ignore_ascii_case(want))
            .map(Field::value)
    };
    let hop = &req.hop;
    match crate::proxy::header::loopback_name(hop.ip) {
        Some(ip) if !xff => out.fixed(&X_FORWARDED_FOR, ip),
        _ => {
            let value = out.begin(&X_FORWARDED_FOR);
            for prev in earlier(b"x-forwarded-for", xff) {
                value.extend_from_slice(prev);
                value.extend_from_slice(b", ");
            }
            crate::proxy::header::push_ip(value, hop.ip);
            out.end_line();
        }
    }
    let value = out.begin(&header::FORWARDED);
    for prev in earlier(b"forwarded", fwd) {
        value.extend_from_slice(prev);
        value.extend_from_slice(b", ");
    }
    let proto = if hop.tls { "https" } else { "http" };
    crate::proxy::header::forwarded_element(value, hop.ip, req.host, proto);
    out.end_line();
    if !sent_proto {
        out.fixed(&X_FORWARDED_PROTO, proto);
    }
    if !sent_host {
        out.line(&X_FORWARDED_HOST, req.host);
    }
    if !sent_port {
        crate::proxy::header::push_decimal(out.begin(&X_FORWARDED_PORT), u64::from(hop.port));
        out.end_line();
    }
    if hop.hops == 0 {
        out.fixed(&HOPS_HEADER, "1");
    } else {
        let value = out.begin(&HOPS_HEADER);
        crate::proxy::header::push_decimal(value, u64::from(hop.hops) + 1);
        out.end_line();
    }
    out.end_head();
}

/// The header lines of a header map, for [`write`].
pub(super) fn map_lines<'h>(
    map: &'h http::HeaderMap,
) -> impl Fn() -> http::header::Iter<'h, HeaderValue> + 'h {
    move || map.iter()
}

/// The header lines httparse found, for [`write`].
pub(super) fn parsed_lines<'h>(
    headers: &'h [httparse::Header<'h>],
) -> impl Fn() -> ParsedLines<'h> + 'h {
    move || headers.iter().map(|h| (h.name.as_bytes(), h.value))
}

type ParsedLines<'h> = std::iter::Map<
    std::slice::Iter<'h, httparse::Header<'h>>,
    fn(&'h httparse::Header<'h>) -> (&'h [u8], &'h [u8]),
>;

/// The request's cookies as one value, joined with "; " (RFC 9113 8.2.3: an HTTP/2 client
/// may split them into fields of their own, and many apps read only one Cookie line).
fn push_cookies<'h, L: Field<'h>>(out: &mut Vec<u8>, headers: impl Iterator<Item = L>) {
    let cookies = headers.filter(|f| f.name().eq_ignore_ascii_case(b"cookie"));
    for (i, field) in cookies.enumerate() {
        if i > 0 {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(field.value());
    }
}

/// The head for a request hyper parsed (HTTP/1.1 or HTTP/2), sent as `method` (an HTTP/2
/// WebSocket's CONNECT goes to the app as a GET).
pub(super) fn of_request<B>(
    req: &http::Request<B>,
    method: &[u8],
    host: &[u8],
    framing: BodyFraming,
    upgrade: Option<&[u8]>,
    extra: &[(HeaderName, &[u8])],
    hop: Hop,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let outbound = outbound(req, method, host, framing, upgrade, extra, hop);
    write(&mut out, &outbound, map_lines(req.headers()));
    out
}

/// The head of an HTTP/2 request as the inspector records it, from the fields [`write`]
/// put in a [`Map`] (the app gets the same lines, as HTTP/2 headers).
pub(super) fn record(method: &[u8], target: &[u8], host: &[u8], headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.request_line(method, target, host);
    for field in headers {
        out.keep(field);
    }
    out.end_head();
    out
}

/// What [`write`] needs of a request hyper parsed, besides its header map.
pub(super) fn outbound<'a, B>(
    req: &'a http::Request<B>,
    method: &'a [u8],
    host: &'a [u8],
    framing: BodyFraming,
    upgrade: Option<&'a [u8]>,
    extra: &'a [(HeaderName, &'a [u8])],
    hop: Hop,
) -> Outbound<'a> {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    Outbound {
        method,
        target: target.as_bytes(),
        host,
        framing,
        upgrade,
        extra,
        connection: req.headers().contains_key(http::header::CONNECTION),
        hop,
    }
}
