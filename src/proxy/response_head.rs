//! Every response head portok sends a client, decided in one place: which of the app's
//! header lines pass ([`Filter`]: none hop-by-hop, none its `Connection` names, not
//! portok's own tag, no `Content-Length` beside other framing), and what portok adds (its
//! `x-portok` tag, a `Date` when there is none, `Connection: close` when the connection
//! ends). The fast path writes heads as bytes here ([`write_app_head`], [`write_page`]);
//! hyper's front-end builds its header map through the same [`Filter`] and tags it with
//! [`tag`] (hyper adds the Date and the framing).

use super::app_conn::{Framing, ResponseHead, MAX_RESPONSE_HEADERS};
use super::body::ProxyBody;
use super::header::push_header;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use std::cell::RefCell;
use std::io::Write as _;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const TAG: HeaderName = HeaderName::from_static("x-portok");

/// portok's tag on a response hyper writes.
pub fn tag(headers: &mut HeaderMap) {
    headers.insert(TAG, HeaderValue::from_static(VERSION));
}

/// The app's response header lines as the client gets them, on both front-ends.
pub(super) struct Filter {
    /// The app's `Connection` names headers (rare; only then is each one checked).
    names: bool,
    /// The body is not delimited by its length, so a Content-Length is not its framing.
    drop_length: bool,
    /// A 101: its Upgrade line is the switch itself and passes (its Connection is
    /// written afresh, [`switch_lines`]).
    switching: bool,
}

impl Filter {
    pub(super) fn new(headers: &[httparse::Header<'_>], framing: &Framing) -> Self {
        Filter {
            names: names_headers(headers),
            drop_length: matches!(framing, Framing::Chunked(_) | Framing::UntilClose),
            switching: false,
        }
    }

    /// For the app's `101 Switching Protocols`.
    pub(super) fn switching(headers: &[httparse::Header<'_>]) -> Self {
        Filter {
            names: names_headers(headers),
            drop_length: false,
            switching: true,
        }
    }

    pub(super) fn passes(&self, headers: &[httparse::Header<'_>], name: &str) -> bool {
        if self.switching && name.eq_ignore_ascii_case("upgrade") {
            return true;
        }
        let length = name.eq_ignore_ascii_case("content-length");
        !(crate::proxy::header::is_hop_by_hop(name.as_bytes())
            || name.eq_ignore_ascii_case("x-portok")
            || (length && self.drop_length)
            // `Connection: content-length` must not unframe the body.
            || (self.names && !length && named_by_connection(headers, name)))
    }
}

/// portok's own line in a 101: the app's `Connection` may name headers the filter
/// dropped, and a WebSocket client wants exactly `upgrade` there (RFC 6455 4.1).
pub(super) fn switch_lines(headers: &mut HeaderMap) {
    headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
}

/// A `Connection` line of the message names some header (beyond close/keep-alive/upgrade).
fn names_headers(headers: &[httparse::Header<'_>]) -> bool {
    headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("connection")
            && h.value
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .any(crate::proxy::header::names_a_header)
    })
}

/// Whether a `Connection` header of the message names `name` (so it is hop-by-hop).
fn named_by_connection(headers: &[httparse::Header<'_>], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
}

/// The client's head for the app's response (parsed from `buf`): its status line, the
/// lines that pass, the framing portok sends, and portok's own lines.
pub(super) fn write_app_head(
    out: &mut Vec<u8>,
    head: &ResponseHead,
    buf: &[u8],
    framing: &Framing,
    close: bool,
) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    // Parsed before, so it parses again the same way.
    let _ = resp.parse(&buf[..head.len]);
    let filter = Filter::new(resp.headers, framing);
    let passes_te = matches!(framing, Framing::Chunked(_));
    let _ = write!(out, "HTTP/1.1 {} ", head.status);
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut dated = false;
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked passes through as the app framed it, codings and all.
            if passes_te {
                push_header(out, b"transfer-encoding", h.value);
            }
            continue;
        }
        if !filter.passes(resp.headers, name) {
            continue;
        }
        dated |= name.eq_ignore_ascii_case("date");
        push_header(out, name.as_bytes(), h.value);
    }
    if matches!(framing, Framing::UntilClose) {
        push_header(out, b"transfer-encoding", b"chunked");
    }
    finish(out, dated, close);
}

/// A whole page of portok's own (an error page) as HTTP/1.1 bytes.
pub(super) fn write_page(
    out: &mut Vec<u8>,
    page: http::Response<ProxyBody>,
    close: bool,
    head_method: bool,
) {
    let (parts, body) = page.into_parts();
    let body = match body {
        ProxyBody::Full(Some(b)) => b,
        _ => Bytes::new(),
    };
    let status = parts.status;
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in &parts.headers {
        push_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let _ = write!(out, "content-length: {}\r\n", body.len());
    finish(out, parts.headers.contains_key(http::header::DATE), close);
    if !head_method {
        out.extend_from_slice(&body);
    }
}

/// portok's own lines and the end of the head. As hyper's server does, a response without
/// a Date gets one.
fn finish(out: &mut Vec<u8>, dated: bool, close: bool) {
    if !dated {
        push_date(out);
    }
    push_header(out, b"x-portok", VERSION.as_bytes());
    if close {
        push_header(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}

/// `date: <IMF-fixdate>`, formatted once a second per thread.
fn push_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs || d.1.is_empty() {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        push_header(out, b"date", d.1.as_bytes());
    });
}
