//! Readiness: does the generation answer HTTP on its own port? Probed directly, not
//! through the proxy, so a switch happens only when the app itself is ready.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The one readiness rule: a TCP route without a health path is ready when it accepts a
/// connection; anything else when it answers HTTP ([`check`]).
pub async fn ready(port: u16, host: &str, health: Option<&str>, tcp: bool) -> bool {
    if tcp && health.is_none() {
        accepts(port).await
    } else {
        check(port, host, health).await
    }
}

/// Something accepts connections on the port.
async fn accepts(port: u16) -> bool {
    crate::proxy::app_conn::connect_loopback(port, Duration::from_millis(500))
        .await
        .is_ok()
}

/// How long, and how much, of an answer's body a probe reads before it closes.
const DRAIN_FOR: Duration = Duration::from_millis(250);
const DRAIN_MAX: usize = 1 << 20;

/// One probe: connect, send a GET, read the status line. Without a health path any status
/// counts (the server is up); with one, only 2xx and 3xx do.
pub async fn check(port: u16, host: &str, health: Option<&str>) -> bool {
    let attempt = async {
        let mut stream =
            crate::proxy::app_conn::connect_loopback(port, Duration::from_millis(500)).await?;
        let path = health.unwrap_or("/");
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: portok-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < 12 {
            let n = stream.read(&mut buf[got..]).await?;
            if n == 0 {
                break;
            }
            got += n;
        }
        // The rest of the answer is read (briefly, and bounded) before closing: cut off by
        // a reset, a dev server prints its own error for a request it served fine.
        let drain = async {
            let mut sink = [0u8; 4096];
            let mut total = 0;
            while total < DRAIN_MAX {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_FOR, drain).await;
        Ok::<_, std::io::Error>(status_of(&buf[..got]))
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Ok(Some(code))) => health.is_none() || (200..400).contains(&code),
        _ => false,
    }
}

fn status_of(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/")?;
    let code = rest.split_whitespace().nth(1)?;
    code.get(..3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_status_lines() {
        assert_eq!(super::status_of(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(super::status_of(b"HTTP/1.0 500 x"), Some(500));
        assert_eq!(super::status_of(b"SSH-2.0-OpenSSH"), None);
    }
}
