//! The header rules both directions share, in one leaf that imports nothing of the proxy
//! (as hyper keeps its shared header helpers in `src/headers.rs`): hop-by-hop names, the
//! pieces of the forwarding lines, one header line written, the hop count, and a
//! WebSocket key.

use http::header::{self, HeaderName, HeaderValue};
use std::io::Write as _;
use std::net::IpAddr;

pub const HOPS_HEADER: HeaderName = HeaderName::from_static("x-portok-hops");
pub const MAX_HOPS: u32 = 5;

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
        .all(|c| matches!(c, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b':' | b'[' | b']'));
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

/// The text of a loopback address as [`push_ip`] writes it, for the common client.
pub fn loopback_name(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) if v4 == std::net::Ipv4Addr::LOCALHOST => Some("127.0.0.1"),
        IpAddr::V6(v6) if v6 == std::net::Ipv6Addr::LOCALHOST => Some("::1"),
        _ => None,
    }
}

/// An address as `Display` writes it, without the formatting machinery for IPv4 (every
/// request writes the client's address twice).
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    if let Some(name) = loopback_name(ip) {
        out.extend_from_slice(name.as_bytes());
        return;
    }
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

/// One header line of an HTTP/1.1 head.
pub fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
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
