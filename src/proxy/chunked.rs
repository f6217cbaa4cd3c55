//! Chunked transfer coding (RFC 9112 7.1): where an app's chunked body ends and what its
//! data and trailers are, as the bytes pass through, and a chunk written out.

/// The trailer section kept for a client that asked for trailers, at most.
const MAX_TRAILERS: usize = 64 * 1024;

/// Finds where a chunked body ends (RFC 9112 7.1) as its bytes pass through.
#[derive(Debug, Default)]
pub(super) struct ChunkDecoder {
    state: Chunk,
    size: u64,
    digits: u8,
    /// The trailer section's bytes, when they are wanted ([`ChunkDecoder::keep_trailers`]).
    trailers: Option<Vec<u8>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Chunk {
    #[default]
    Size,
    /// Chunk extensions or whitespace after the size, up to the line end.
    SizeRest,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    TrailerLine,
    EndLf,
    Done,
}

impl ChunkDecoder {
    /// Feed body bytes; Some(n) when the body ends after the first n of them.
    pub(super) fn feed(&mut self, data: &[u8]) -> Result<Option<usize>, ()> {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            match self.state {
                Chunk::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        self.digits += 1;
                        if self.digits > 15 {
                            return Err(());
                        }
                        self.size = self.size * 16 + d;
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => self.state = Chunk::SizeRest,
                    b'\r' if self.digits > 0 => self.state = Chunk::SizeLf,
                    b'\n' if self.digits > 0 => self.size_line_done(),
                    _ => return Err(()),
                },
                Chunk::SizeRest => match b {
                    b'\r' => self.state = Chunk::SizeLf,
                    b'\n' => self.size_line_done(),
                    _ => {}
                },
                Chunk::SizeLf => {
                    if b != b'\n' {
                        return Err(());
                    }
                    self.size_line_done();
                }
                Chunk::Data => {
                    let take = (self.size).min((data.len() - i) as u64) as usize;
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = Chunk::DataCr;
                    }
                    continue;
                }
                Chunk::DataCr => match b {
                    b'\r' => self.state = Chunk::DataLf,
                    b'\n' => self.state = Chunk::Size,
                    _ => return Err(()),
                },
                Chunk::DataLf => {
                    if b != b'\n' {
                        return Err(());
                    }
                    self.state = Chunk::Size;
                }
                Chunk::TrailerStart => match b {
                    b'\r' => self.state = Chunk::EndLf,
                    b'\n' => {
                        self.state = Chunk::Done;
                        return Ok(Some(i + 1));
                    }
                    _ => {
                        self.keep(b);
                        self.state = Chunk::TrailerLine;
                    }
                },
                Chunk::TrailerLine => {
                    self.keep(b);
                    if b == b'\n' {
                        self.state = Chunk::TrailerStart;
                    }
                }
                Chunk::EndLf => {
                    if b != b'\n' {
                        return Err(());
                    }
                    self.state = Chunk::Done;
                    return Ok(Some(i + 1));
                }
                Chunk::Done => return Ok(Some(i)),
            }
            i += 1;
        }
        Ok(None)
    }

    /// Decode from the start of `buf`: (framing bytes to skip, data bytes that follow
    /// them). (n, 0) when `buf` holds no data after its first n bytes of framing.
    pub(super) fn decode(&mut self, buf: &[u8]) -> Result<(usize, usize), ()> {
        let mut i = 0;
        while i < buf.len() && self.state != Chunk::Done {
            if self.state == Chunk::Data {
                let n = self.size.min((buf.len() - i) as u64) as usize;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = Chunk::DataCr;
                }
                return Ok((i, n));
            }
            self.feed(&buf[i..i + 1])?;
            i += 1;
        }
        Ok((i, 0))
    }

    /// Trailer fields are kept and not yet taken.
    pub(super) fn holds_trailers(&self) -> bool {
        self.trailers.is_some()
    }

    pub(super) fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Keep the trailer section as it passes (for a client that asked for trailers).
    pub(super) fn keep_trailers(&mut self) {
        self.trailers = Some(Vec::new());
    }

    fn keep(&mut self, b: u8) {
        if let Some(t) = &mut self.trailers {
            if t.len() < MAX_TRAILERS {
                t.push(b);
            }
        }
    }

    /// The trailer fields the body ended with, once it has ended.
    pub(super) fn take_trailers(&mut self) -> Option<http::HeaderMap> {
        let raw = self.trailers.take().filter(|t| !t.is_empty())?;
        let mut raw = raw;
        raw.extend_from_slice(b"\r\n");
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let Ok(httparse::Status::Complete((_, fields))) =
            httparse::parse_headers(&raw, &mut fields)
        else {
            return None;
        };
        let mut map = http::HeaderMap::with_capacity(fields.len());
        for f in fields.iter() {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(f.name.as_bytes()),
                http::HeaderValue::from_bytes(f.value),
            ) {
                map.append(n, v);
            }
        }
        Some(map)
    }

    fn size_line_done(&mut self) {
        self.digits = 0;
        self.state = if self.size == 0 {
            Chunk::TrailerStart
        } else {
            Chunk::Data
        };
    }
}

/// One chunk of a chunked body (RFC 9112 7.1): its length in hex, the data, CRLF.
pub(super) fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    use std::io::Write as _;
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode_to_their_data_in_any_split() {
        let body = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nx-trailer: 1\r\n\r\n";
        for split in 0..body.len() {
            let mut d = ChunkDecoder::default();
            let (mut data, mut pending) = (Vec::new(), Vec::new());
            for piece in [&body[..split], &body[split..]] {
                pending.extend_from_slice(piece);
                loop {
                    let (skip, n) = d.decode(&pending).unwrap();
                    data.extend_from_slice(&pending[skip..skip + n]);
                    pending.drain(..skip + n);
                    if n == 0 {
                        break;
                    }
                }
            }
            assert!(d.is_done(), "split at {split}");
            assert_eq!(data, b"hello0123456789abcdef", "split at {split}");
            assert!(pending.is_empty(), "split at {split}");
        }
        assert!(ChunkDecoder::default().decode(b"zz\r\n").is_err());
    }

    #[test]
    fn chunked_bodies_end_where_they_end_in_any_split() {
        let body = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for split in 0..body.len() {
            let mut d = ChunkDecoder::default();
            let (a, b) = body.split_at(split);
            let got = match d.feed(a).unwrap() {
                Some(n) => n,
                None => split + d.feed(b).unwrap().unwrap(),
            };
            assert_eq!(got, end, "split at {split}");
        }
        let mut d = ChunkDecoder::default();
        assert_eq!(d.feed(b"0\r\n\r\n").unwrap(), Some(5));
        let mut d = ChunkDecoder::default();
        assert!(d.feed(b"zz\r\n").is_err());
        let mut d = ChunkDecoder::default();
        assert!(d.feed(b"3\r\nabcX").is_err());
    }
}
