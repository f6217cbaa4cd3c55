//! Readiness: does the generation answer HTTP on its own port? Probed directly, not
//! through the proxy, so a switch happens only when the app itself is ready.

use crate::routes::Upstream;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `--health grpc`: the standard gRPC health check, answered SERVING.
pub const GRPC_HEALTH: &str = "grpc";

/// The one readiness rule: a TCP route without a health path is ready when it accepts a
/// connection; anything else when it answers HTTP ([`ready_as`]).
pub async fn ready(port: u16, host: &str, health: Option<&str>, tcp: bool) -> bool {
    ready_as(port, host, health, tcp, None).await.is_some()
}

/// [`ready`], and in which protocol the app answered: HTTP/1.1, or HTTP/2 with prior
/// knowledge when it was `declared` so, or answered the HTTP/1.1 probe with HTTP/2 frames
/// (a SETTINGS frame, as grpcio does) or by closing, and then completes an HTTP/2
/// handshake and answers a request.
pub async fn ready_as(
    port: u16,
    host: &str,
    health: Option<&str>,
    tcp: bool,
    declared: Option<Upstream>,
) -> Option<Upstream> {
    if tcp && health.is_none() {
        return accepts(port).await.then_some(Upstream::Http1);
    }
    if declared == Some(Upstream::H2) || health == Some(GRPC_HEALTH) {
        return check_h2(port, host, health).await.then_some(Upstream::H2);
    }
    match check(port, host, health).await {
        Answer::Status(ok) => ok.then_some(Upstream::Http1),
        Answer::NotHttp1 if declared.is_none() => {
            check_h2(port, host, health).await.then_some(Upstream::H2)
        }
        Answer::NotHttp1 | Answer::Nothing => None,
    }
}

/// What portok says, once, on finding an app that speaks only HTTP/2.
pub fn h2_only_note(name: &str) -> String {
    format!("{name} speaks only HTTP/2 (it answered an HTTP/1.1 request with HTTP/2 frames), so portok reaches it over h2c; gRPC works over https:// and http:// (h2c)")
}

/// What an HTTP/1.1 probe got back.
enum Answer {
    /// A status line: whether it counts as ready.
    Status(bool),
    /// HTTP/2 frames, or a close with no answer: maybe an HTTP/2-only app.
    NotHttp1,
    /// No connection, or no answer in time.
    Nothing,
}

/// An HTTP/2 probe: any answer counts (even UNIMPLEMENTED), but a health path must answer
/// 2xx/3xx, and `--health grpc` must answer SERVING.
async fn check_h2(port: u16, host: &str, health: Option<&str>) -> bool {
    use http_body_util::BodyExt as _;
    // Without a health path the probe is a gRPC call to no method: a gRPC server answers
    // it (UNIMPLEMENTED) where it may reset a plain GET.
    let grpc = health.is_none() || health == Some(GRPC_HEALTH);
    let path = match health {
        Some(GRPC_HEALTH) => "/grpc.health.v1.Health/Check",
        Some(p) => p,
        None => "/portok.Probe/Ready",
    };
    let attempt = async {
        let resp = crate::proxy::h2_upstream::answers(port, host, path, grpc).await?;
        if health != Some(GRPC_HEALTH) {
            let ok = resp.status().is_success() || resp.status().is_redirection();
            return Some(health.is_none() || ok);
        }
        let collected = resp.into_body().collect().await.ok()?;
        let status_ok = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .is_some_and(|v| v == "0");
        // grpc.health.v1.HealthCheckResponse { status: SERVING (1) }, after the 5-byte prefix.
        let body = collected.to_bytes();
        Some(status_ok && body.get(5..) == Some(&[0x08, 0x01][..]))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
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
async fn check(port: u16, host: &str, health: Option<&str>) -> Answer {
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
        Ok::<_, std::io::Error>(match status_of(&buf[..got]) {
            Some(code) => Answer::Status(health.is_none() || (200..400).contains(&code)),
            None if got == 0 || http2_frame(&buf[..got]) => Answer::NotHttp1,
            None => Answer::Nothing,
        })
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Ok(answer)) => answer,
        _ => Answer::Nothing,
    }
}

/// An HTTP/2 frame header: 3 bytes of length, then the type, SETTINGS (4) or GOAWAY (7),
/// which is what an HTTP/2-only server sends a client that did not start with the preface.
fn http2_frame(b: &[u8]) -> bool {
    b.len() >= 9 && matches!(b[3], 0x04 | 0x07)
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
