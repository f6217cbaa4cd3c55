//! Frames as the relay writes them (RFC 9113 4.1, 6), straight into a side's output
//! buffer, and header blocks in HPACK (RFC 7541) with literals only: no dynamic table and
//! no Huffman coding, both of which a decoder must accept and neither of which an encoder
//! must use. h2's encoder indexed and Huffman-coded every field, about a quarter of a
//! relayed call's instructions; on loopback the few more bytes cost nothing.

use super::super::request_head::{Field, Sink};
use bytes::{BufMut, BytesMut};
use http::{HeaderMap, HeaderName, Method, StatusCode};

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// SETTINGS identifiers (RFC 9113 6.5.2).
pub(super) const MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub(super) const INITIAL_WINDOW_SIZE: u16 = 0x4;
pub(super) const ENABLE_PUSH: u16 = 0x2;

fn head(out: &mut BytesMut, len: usize, kind: u8, flags: u8, id: u32) {
    out.put_uint(len as u64, 3);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(id & 0x7fff_ffff);
}

pub(super) fn data(out: &mut BytesMut, id: u32, payload: &[u8], end: bool) {
    head(
        out,
        payload.len(),
        DATA,
        if end { END_STREAM } else { 0 },
        id,
    );
    out.extend_from_slice(payload);
}

/// A header block as HEADERS and, past `max_frame`, CONTINUATION frames.
pub(super) fn headers(out: &mut BytesMut, id: u32, block: &[u8], end: bool, max_frame: usize) {
    let mut chunks = block.chunks(max_frame.max(1));
    let first = chunks.next().unwrap_or(&[]);
    let more = block.len() > first.len();
    let mut flags = if end { END_STREAM } else { 0 };
    if !more {
        flags |= END_HEADERS;
    }
    head(out, first.len(), HEADERS, flags, id);
    out.extend_from_slice(first);
    let mut rest = chunks.peekable();
    while let Some(chunk) = rest.next() {
        let last = rest.peek().is_none();
        head(
            out,
            chunk.len(),
            CONTINUATION,
            if last { END_HEADERS } else { 0 },
            id,
        );
        out.extend_from_slice(chunk);
    }
}

pub(super) fn settings(out: &mut BytesMut, values: &[(u16, u32)]) {
    head(out, values.len() * 6, SETTINGS, 0, 0);
    for &(k, v) in values {
        out.put_u16(k);
        out.put_u32(v);
    }
}

pub(super) fn settings_ack(out: &mut BytesMut) {
    head(out, 0, SETTINGS, ACK, 0);
}

pub(super) fn ping_ack(out: &mut BytesMut, payload: &[u8; 8]) {
    head(out, 8, PING, ACK, 0);
    out.extend_from_slice(payload);
}

pub(super) fn window_update(out: &mut BytesMut, id: u32, increment: u32) {
    head(out, 4, WINDOW_UPDATE, 0, id);
    out.put_u32(increment & 0x7fff_ffff);
}

pub(super) fn rst(out: &mut BytesMut, id: u32, code: u32) {
    head(out, 4, RST_STREAM, 0, id);
    out.put_u32(code);
}

pub(super) fn goaway(out: &mut BytesMut, last: u32, code: u32) {
    head(out, 8, GOAWAY, 0, 0);
    out.put_u32(last & 0x7fff_ffff);
    out.put_u32(code);
}

/// An HPACK integer with an `n`-bit prefix, the first byte's other bits `flags`.
fn int(out: &mut Vec<u8>, flags: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    int(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// A field, never indexed when its value is sensitive (RFC 7541 6.2.3).
fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8], sensitive: bool) {
    name_of(out, name, sensitive);
    string(out, value);
}

/// A literal field's representation up to its value: its name indexed in the static
/// table when it is there, else as a string.
fn name_of(out: &mut Vec<u8>, name: &[u8], sensitive: bool) {
    let flags = if sensitive { 0x10 } else { 0x00 };
    match static_name(name) {
        Some(i) => int(out, flags, 4, i),
        None => {
            out.push(flags);
            string(out, name);
        }
    }
}

/// The fully indexed entry (RFC 7541 6.1).
fn indexed(out: &mut Vec<u8>, i: usize) {
    int(out, 0x80, 7, i);
}

/// A header block being written.
pub(super) struct Block<'a> {
    out: &'a mut Vec<u8>,
    /// Where the length of the value being written goes (see [`Sink::begin`]).
    value_at: usize,
}

impl<'a> Block<'a> {
    pub(super) fn new(out: &'a mut Vec<u8>) -> Self {
        out.clear();
        Block { out, value_at: 0 }
    }

    /// A request's pseudo-header fields.
    pub(super) fn request(
        &mut self,
        method: &Method,
        scheme: &[u8],
        authority: &[u8],
        path: &[u8],
    ) {
        match *method {
            Method::GET => indexed(self.out, 2),
            Method::POST => indexed(self.out, 3),
            ref m => field(self.out, b":method", m.as_str().as_bytes(), false),
        }
        match scheme {
            b"http" => indexed(self.out, 6),
            b"https" => indexed(self.out, 7),
            s => field(self.out, b":scheme", s, false),
        }
        if !authority.is_empty() {
            field(self.out, b":authority", authority, false);
        }
        match path {
            b"/" => indexed(self.out, 4),
            p => field(self.out, b":path", p, false),
        }
    }

    pub(super) fn status(&mut self, status: StatusCode) {
        match status.as_u16() {
            200 => indexed(self.out, 8),
            _ => field(self.out, b":status", status.as_str().as_bytes(), false),
        }
    }

    pub(super) fn map(&mut self, fields: &HeaderMap) {
        for (name, value) in fields {
            self.keep((name, value));
        }
    }

    /// The value written since [`Sink::begin`].
    fn value(&self) -> &[u8] {
        &self.out[self.value_at + 1..]
    }
}

/// The request head for an HTTP/2 app, from the one writer of request heads.
impl Sink for Block<'_> {
    fn request_line(&mut self, method: &[u8], target: &[u8], host: &[u8]) {
        let method = Method::from_bytes(method).unwrap_or(Method::GET);
        let path: &[u8] = if target.is_empty() { b"/" } else { target };
        self.request(&method, b"http", host, path);
    }

    /// The value goes straight into the block, after a one-byte length that
    /// [`Sink::end_line`] fills in (and widens, for a value of 127 bytes or more).
    fn begin(&mut self, name: &HeaderName) -> &mut Vec<u8> {
        name_of(self.out, name.as_str().as_bytes(), false);
        self.value_at = self.out.len();
        self.out.push(0);
        self.out
    }

    fn end_line(&mut self) {
        let len = self.out.len() - self.value_at - 1;
        if len < 127 {
            self.out[self.value_at] = len as u8;
        } else {
            let mut prefix = Vec::with_capacity(4);
            int(&mut prefix, 0, 7, len);
            self.out.splice(self.value_at..self.value_at + 1, prefix);
        }
    }

    fn end_head(&mut self) {}

    fn line(&mut self, name: &HeaderName, value: &[u8]) {
        field(self.out, name.as_str().as_bytes(), value, false);
    }

    fn keep<'h>(&mut self, f: impl Field<'h>) {
        let sensitive = f.parsed().is_some_and(|(_, v)| v.is_sensitive());
        field(self.out, f.name(), f.value(), sensitive);
    }
}

/// The app's header block and the inspector's copy of the head, written alike.
pub(super) struct Both<'a, 'b> {
    block: &'a mut Block<'b>,
    text: &'a mut Vec<u8>,
    name: Option<HeaderName>,
}

impl<'a, 'b> Both<'a, 'b> {
    pub(super) fn new(block: &'a mut Block<'b>, text: &'a mut Vec<u8>) -> Self {
        Both {
            block,
            text,
            name: None,
        }
    }
}

impl Sink for Both<'_, '_> {
    fn request_line(&mut self, method: &[u8], target: &[u8], host: &[u8]) {
        self.block.request_line(method, target, host);
        self.text.request_line(method, target, host);
    }

    fn begin(&mut self, name: &HeaderName) -> &mut Vec<u8> {
        self.name = Some(name.clone());
        self.block.begin(name)
    }

    fn end_line(&mut self) {
        if let Some(name) = self.name.take() {
            self.text.line(&name, self.block.value());
        }
        self.block.end_line();
    }

    fn end_head(&mut self) {
        self.block.end_head();
        self.text.end_head();
    }

    fn line(&mut self, name: &HeaderName, value: &[u8]) {
        self.block.line(name, value);
        self.text.line(name, value);
    }

    fn fixed(&mut self, name: &HeaderName, value: &'static str) {
        self.block.fixed(name, value);
        self.text.fixed(name, value);
    }

    fn keep<'h>(&mut self, f: impl Field<'h>) {
        self.block.keep(f);
        self.text.keep(f);
    }
}

/// The index of a field name in HPACK's static table (RFC 7541 Appendix A).
fn static_name(name: &[u8]) -> Option<usize> {
    Some(match name {
        b":authority" => 1,
        b":method" => 2,
        b":path" => 4,
        b":scheme" => 6,
        b":status" => 8,
        b"accept-charset" => 15,
        b"accept-encoding" => 16,
        b"accept-language" => 17,
        b"accept-ranges" => 18,
        b"accept" => 19,
        b"access-control-allow-origin" => 20,
        b"age" => 21,
        b"allow" => 22,
        b"authorization" => 23,
        b"cache-control" => 24,
        b"content-disposition" => 25,
        b"content-encoding" => 26,
        b"content-language" => 27,
        b"content-length" => 28,
        b"content-location" => 29,
        b"content-range" => 30,
        b"content-type" => 31,
        b"cookie" => 32,
        b"date" => 33,
        b"etag" => 34,
        b"expect" => 35,
        b"expires" => 36,
        b"from" => 37,
        b"host" => 38,
        b"if-match" => 39,
        b"if-modified-since" => 40,
        b"if-none-match" => 41,
        b"if-range" => 42,
        b"if-unmodified-since" => 43,
        b"last-modified" => 44,
        b"link" => 45,
        b"location" => 46,
        b"max-forwards" => 47,
        b"proxy-authenticate" => 48,
        b"proxy-authorization" => 49,
        b"range" => 50,
        b"referer" => 51,
        b"refresh" => 52,
        b"retry-after" => 53,
        b"server" => 54,
        b"set-cookie" => 55,
        b"strict-transport-security" => 56,
        b"transfer-encoding" => 57,
        b"user-agent" => 58,
        b"vary" => 59,
        b"via" => 60,
        b"www-authenticate" => 61,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// What h2's own decoder reads from a block written here.
    fn decoded(block: &[u8]) -> (h2::frame::Pseudo, HeaderMap) {
        use futures_util::StreamExt as _;
        use tokio::io::AsyncWriteExt as _;
        let mut wire = BytesMut::new();
        headers(&mut wire, 1, block, true, 16_384);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let frame = rt.block_on(async {
            let (mut ours, theirs) = tokio::io::duplex(1 << 20);
            ours.write_all(&wire).await.unwrap();
            let mut codec: h2::Codec<_, bytes::Bytes> = h2::Codec::new(theirs);
            codec.next().await.expect("a frame").expect("it decodes")
        });
        match frame {
            h2::frame::Frame::Headers(h) => h.into_parts(),
            other => panic!("not HEADERS: {other:?}"),
        }
    }

    #[test]
    fn a_request_block_reads_back_as_written() {
        let mut buf = Vec::new();
        let mut b = Block::new(&mut buf);
        b.request(
            &Method::POST,
            b"http",
            b"api.localhost:1355",
            b"/echo.Echo/Say",
        );
        b.line(
            &HeaderName::from_static("content-type"),
            b"application/grpc",
        );
        b.line(&HeaderName::from_static("x-long"), &[b'a'; 300]);
        let mut secret = HeaderValue::from_static("Bearer x");
        secret.set_sensitive(true);
        b.keep((&http::header::AUTHORIZATION, &secret));
        let (pseudo, fields) = decoded(&buf);
        assert_eq!(pseudo.method, Some(Method::POST));
        assert_eq!(pseudo.scheme.as_deref(), Some("http"));
        assert_eq!(pseudo.authority.as_deref(), Some("api.localhost:1355"));
        assert_eq!(pseudo.path.as_deref(), Some("/echo.Echo/Say"));
        assert_eq!(fields["content-type"], "application/grpc");
        assert_eq!(fields["x-long"].len(), 300);
        assert_eq!(fields["authorization"], "Bearer x");
        // Never indexed (0001 and a 4-bit prefix), name 23 of the static table.
        assert!(buf.windows(2).any(|w| w == [0x1f, 23 - 15]));
    }

    #[test]
    fn a_value_written_in_place_gets_its_length_however_long() {
        let mut buf = Vec::new();
        let mut b = Block::new(&mut buf);
        b.status(StatusCode::OK);
        for len in [0, 5, 126, 127, 128, 300, 20_000] {
            let name = HeaderName::from_bytes(format!("x-len-{len}").as_bytes()).unwrap();
            b.begin(&name).extend(std::iter::repeat_n(b'v', len));
            b.end_line();
        }
        let (_, fields) = decoded(&buf);
        for len in [0, 5, 126, 127, 128, 300, 20_000] {
            assert_eq!(fields[format!("x-len-{len}").as_str()].len(), len);
        }
    }

    #[test]
    fn a_block_longer_than_a_frame_goes_on_in_continuations() {
        let mut buf = Vec::new();
        let mut b = Block::new(&mut buf);
        b.status(StatusCode::NOT_FOUND);
        for i in 0..100 {
            b.line(
                &HeaderName::from_static("x-field"),
                format!("{i:0>200}").as_bytes(),
            );
        }
        assert!(buf.len() > 16_384);
        let (pseudo, fields) = decoded(&buf);
        assert_eq!(pseudo.status, Some(StatusCode::NOT_FOUND));
        assert_eq!(fields.get_all("x-field").iter().count(), 100);
    }
}
