//! Tell TLS from plain HTTP by the first byte, without consuming it: a TLS record starts
//! with 0x16 (handshake); HTTP/1.x starts with a method letter and h2c with "PRI".

use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tls,
    Plain,
    /// The client closed before sending anything.
    Closed,
}

/// Classify a first byte. Separate from the socket so it can be fuzzed and unit-tested.
pub fn classify(first: Option<u8>) -> Kind {
    match first {
        None => Kind::Closed,
        Some(0x16) => Kind::Tls,
        Some(_) => Kind::Plain,
    }
}

/// Peek one byte. The caller bounds this with its handshake deadline.
pub async fn sniff(stream: &TcpStream) -> std::io::Result<Kind> {
    let mut b = [0u8; 1];
    let n = stream.peek(&mut b).await?;
    Ok(classify((n == 1).then_some(b[0])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert_eq!(classify(Some(0x16)), Kind::Tls);
        assert_eq!(classify(Some(b'G')), Kind::Plain);
        assert_eq!(classify(Some(b'P')), Kind::Plain);
        assert_eq!(classify(None), Kind::Closed);
    }
}
