//! gRPC as portok sees it in passing: which requests are calls, how many messages a body
//! carries (each is a 5-byte prefix, then that many bytes), and the names of status codes.
//! Nothing here decodes a message.

/// Whether a request with this content-type is a gRPC call (`application/grpc`,
/// `application/grpc+proto`, ...; gRPC-Web's `application/grpc-web` is not).
pub fn is_call(content_type: &[u8]) -> bool {
    call_suffix(content_type).is_some()
}

/// What follows `application/grpc` in a gRPC content-type (`+proto`, `;charset=...`, or
/// nothing); None for any other type.
pub fn call_suffix(content_type: &[u8]) -> Option<&[u8]> {
    suffix(content_type.strip_prefix(b"application/grpc")?)
}

fn suffix(rest: &[u8]) -> Option<&[u8]> {
    (rest.is_empty() || rest[0] == b'+' || rest[0] == b';').then_some(rest)
}

/// A gRPC-Web call's content-type (`application/grpc-web`, `-web+proto`, `-web-text`,
/// `-web-text+proto`), taken apart.
#[derive(Debug, PartialEq, Eq)]
pub struct WebCall<'a> {
    /// `-text`: the body is base64.
    pub text: bool,
    /// What follows (`+proto`, `;charset=...`, or nothing), the same in the gRPC type.
    pub rest: &'a [u8],
}

/// The gRPC-Web call this content-type says a request is, if any.
pub fn web_call(content_type: &[u8]) -> Option<WebCall<'_>> {
    let rest = content_type.strip_prefix(b"application/grpc-web")?;
    let (text, rest) = match rest.strip_prefix(b"-text") {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    Some(WebCall {
        text,
        rest: suffix(rest)?,
    })
}

/// `text` as a `grpc-message` carries it: percent-encoded, every byte outside printable
/// ASCII and `%` itself (the gRPC spec).
pub fn encode_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Counts the messages in a body fed to it frame by frame, however the frames cut them.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessageCounter {
    prefix: [u8; 5],
    have: u8,
    /// Bytes of the current message still to come.
    rest: u64,
}

impl MessageCounter {
    /// The messages that begin in `data`.
    pub fn feed(&mut self, mut data: &[u8]) -> u32 {
        let mut started = 0;
        while !data.is_empty() {
            if self.rest > 0 {
                let skip = self.rest.min(data.len() as u64);
                self.rest -= skip;
                data = &data[skip as usize..];
                continue;
            }
            let take = (5 - self.have as usize).min(data.len());
            self.prefix[self.have as usize..self.have as usize + take]
                .copy_from_slice(&data[..take]);
            self.have += take as u8;
            data = &data[take..];
            if self.have == 5 {
                started += 1;
                self.have = 0;
                let len = [
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ];
                self.rest = u32::from_be_bytes(len).into();
            }
        }
        started
    }
}

/// A `grpc-message` as text: the header is percent-encoded (the gRPC spec), so that any
/// text fits in a header; bytes that do not decode to UTF-8 are replaced.
pub fn decode_message(raw: &[u8], out: &mut String) {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            raw[i],
            raw.get(i + 1).and_then(|b| hex(*b)),
            raw.get(i + 2).and_then(|b| hex(*b)),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                bytes.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                bytes.push(b);
                i += 1;
            }
        }
    }
    out.push_str(&String::from_utf8_lossy(&bytes));
}

/// A status code's name as gRPC spells it (`NOT_FOUND`); `UNKNOWN(n)` codes past 16 are
/// named by number.
pub fn status_name(code: u16) -> std::borrow::Cow<'static, str> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    match NAMES.get(code as usize) {
        Some(name) => (*name).into(),
        None => format!("CODE_{code}").into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_told_by_content_type() {
        assert!(is_call(b"application/grpc"));
        assert!(is_call(b"application/grpc+proto"));
        assert!(is_call(b"application/grpc;charset=utf-8"));
        assert!(!is_call(b"application/grpc-web"));
        assert!(!is_call(b"application/json"));
    }

    #[test]
    fn web_calls_are_told_by_content_type() {
        let call = |text, rest| Some(WebCall { text, rest });
        assert_eq!(web_call(b"application/grpc-web"), call(false, &b""[..]));
        assert_eq!(
            web_call(b"application/grpc-web+proto"),
            call(false, &b"+proto"[..])
        );
        assert_eq!(web_call(b"application/grpc-web-text"), call(true, &b""[..]));
        assert_eq!(
            web_call(b"application/grpc-web-text+proto"),
            call(true, &b"+proto"[..])
        );
        assert_eq!(web_call(b"application/grpc"), None);
        assert_eq!(web_call(b"application/grpc-webx"), None);
    }

    #[test]
    fn messages_are_counted_however_frames_cut_them() {
        let mut body = Vec::new();
        for payload in [&b"hello"[..], b"", &[7u8; 300][..]] {
            body.push(0);
            body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            body.extend_from_slice(payload);
        }
        for cut in 1..body.len() {
            let mut c = MessageCounter::default();
            let n: u32 = body.chunks(cut).map(|chunk| c.feed(chunk)).sum();
            assert_eq!(n, 3, "chunks of {cut}");
        }
    }

    #[test]
    fn messages_are_percent_encoded_and_back() {
        let text = "no such thing \u{2713} 100%\r\n";
        let encoded = encode_message(text);
        assert_eq!(encoded, "no such thing %E2%9C%93 100%25%0D%0A");
        let mut back = String::new();
        decode_message(encoded.as_bytes(), &mut back);
        assert_eq!(back, text);
    }

    #[test]
    fn messages_are_percent_decoded() {
        let mut out = String::new();
        decode_message(b"no%20such%20thing %E2%9C%93 100%", &mut out);
        assert_eq!(out, "no such thing \u{2713} 100%");
    }

    #[test]
    fn statuses_have_their_names() {
        assert_eq!(status_name(0), "OK");
        assert_eq!(status_name(5), "NOT_FOUND");
        assert_eq!(status_name(16), "UNAUTHENTICATED");
        assert_eq!(status_name(99), "CODE_99");
    }
}
