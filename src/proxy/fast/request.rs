//! What the fast path reads from a request head: where it ends, whether its target is
//! plain, and what its headers say, in one pass; anything unusual is left to hyper.

use crate::proxy::header;

/// Where a request head ends (just past its blank line), looking from about `from`.
pub(super) fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let mut i = start;
    while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
        let at = i + off;
        // "\n\n" or "\n\r\n": an empty line.
        if buf.get(at + 1) == Some(&b'\n') {
            return Some(at + 2);
        }
        if buf.get(at + 1) == Some(&b'\r') && buf.get(at + 2) == Some(&b'\n') {
            return Some(at + 3);
        }
        i = at + 1;
    }
    None
}

/// Bytes the `http` crate takes in a path and query without question; anything else
/// (spaces, quotes, `#`, control or non-ASCII bytes) is left to hyper to judge.
pub(super) fn plain_uri_byte(b: u8) -> bool {
    matches!(b, b'!' | b'$'..=b';' | b'=' | b'?'..=b'_' | b'a'..=b'z' | b'{' | b'|' | b'}' | b'~')
}

/// What the request's headers say, gathered in one pass.
#[derive(Default)]
pub(super) struct RequestFacts<'b> {
    pub(super) host: Option<&'b [u8]>,
    /// The Content-Length, when the request has one.
    pub(super) length: Option<u64>,
    pub(super) close: bool,
    pub(super) hops: u32,
    pub(super) html: bool,
}

impl<'b> RequestFacts<'b> {
    /// None: a request this path leaves to hyper.
    pub(super) fn of(headers: &[httparse::Header<'b>]) -> Option<Self> {
        let mut f = RequestFacts::default();
        let (mut hops_seen, mut accept_seen) = (false, false);
        for h in headers {
            let (name, value) = (h.name, h.value);
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            if is("host") {
                // Two Host headers, or one hyper would not take as text: hyper decides.
                if f.host.is_some() || !value.iter().all(|&c| (0x20..0x7f).contains(&c)) {
                    return None;
                }
                f.host = Some(value);
            } else if is("content-length") {
                if f.length.is_some() || value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                f.length = Some(std::str::from_utf8(value).ok()?.parse().ok()?);
            } else if is("transfer-encoding")
                || is("upgrade")
                || is("expect")
                || is("http2-settings")
            {
                return None;
            } else if is("connection") {
                for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        f.close = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        return None;
                    } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                        // It names headers to drop (Connection: content-length would
                        // unframe the body): rare enough to leave to hyper.
                        return None;
                    }
                }
            } else if is(header::HOPS_HEADER.as_str()) && !hops_seen {
                hops_seen = true;
                f.hops = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
            } else if is("accept") && !accept_seen {
                accept_seen = true;
                f.html = value.windows(9).any(|w| w == b"text/html");
            }
        }
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_end_finds_the_blank_line_however_the_bytes_came() {
        let head = b"GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\nNEXT";
        assert_eq!(head_end(head, 0), Some(head.len() - 4));
        for split in 1..head.len() - 4 {
            assert_eq!(head_end(&head[..split], 0), None, "{split}");
            assert_eq!(head_end(head, split), Some(head.len() - 4), "{split}");
        }
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\n", 0), Some(24));
    }

    #[test]
    fn requests_with_anything_unusual_are_left_to_hyper() {
        let facts = |raw: &[u8]| {
            let mut h = [httparse::EMPTY_HEADER; 16];
            let mut r = httparse::Request::new(&mut h);
            r.parse(raw).unwrap();
            RequestFacts::of(r.headers).map(|f| (f.length.unwrap_or(0), f.close, f.hops, f.html))
        };
        assert_eq!(
            facts(b"GET / HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\nX-Portok-Hops: 2\r\n\r\n"),
            Some((0, false, 2, true))
        );
        assert_eq!(
            facts(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"),
            Some((5, true, 0, false))
        );
        for odd in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        ] {
            assert!(facts(odd).is_none(), "{}", String::from_utf8_lossy(odd));
        }
    }

    #[test]
    fn uri_bytes_outside_the_plain_set_go_to_hyper() {
        assert!(b"/a/b?c=d&e=%20f~[]{}|".iter().all(|&b| plain_uri_byte(b)));
        for b in [b' ', b'"', b'#', b'<', b'>', b'`', 0x7f, 0x80, 0] {
            assert!(!plain_uri_byte(b), "{}", b as char);
        }
    }
}
