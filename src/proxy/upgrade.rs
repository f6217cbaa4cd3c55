//! Upgrades: an HTTP/1.1 Upgrade (WebSocket) or an HTTP/2 extended CONNECT becomes a
//! tunnel to the app.

use super::body::ProxyBody;
use super::upstream::{self, ForwardError};
use crate::routes::Backend;
use http::header;
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// An HTTP/1.1 Upgrade (WebSocket) or an HTTP/2 extended CONNECT (RFC 8441), sent to the
/// app as the HTTP/1.1 Upgrade `head` (written by [`super::request_head`]) on a fresh
/// connection. On the app's 101 the client is answered (101 on HTTP/1.1; 200 on HTTP/2,
/// with the negotiated subprotocol and extensions) and bytes are copied both ways until
/// either side closes; otherwise the app's answer is passed on.
pub async fn send_upgrade(
    mut req: Request<Incoming>,
    head: Vec<u8>,
    backend: &Arc<Backend>,
    connect_timeout: Duration,
) -> Result<Response<ProxyBody>, ForwardError> {
    let client = hyper::upgrade::on(&mut req);
    let h2 = req.version() == Version::HTTP_2;
    drop(req);
    let (headers, stream, early, guard) =
        match upstream::upgrade(&head, backend, connect_timeout).await? {
            upstream::Upgrade::Refused(resp) => return Ok(*resp),
            upstream::Upgrade::Switched {
                headers,
                stream,
                early,
                guard,
            } => (headers, stream, early, guard),
        };
    let mut resp = Response::new(ProxyBody::empty());
    if h2 {
        for name in [
            header::SEC_WEBSOCKET_PROTOCOL,
            header::SEC_WEBSOCKET_EXTENSIONS,
        ] {
            if let Some(v) = headers.get(&name) {
                resp.headers_mut().insert(name, v.clone());
            }
        }
    } else {
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *resp.headers_mut() = headers;
    }
    tokio::spawn(async move {
        // Long-lived by nature: a stopping daemon does not wait for it (drain does).
        let _guard = guard.into_tunnel();
        let Ok(client) = client.await else {
            return;
        };
        let mut client = TokioIo::new(client);
        let mut app = stream;
        if !early.is_empty() && client.write_all(&early).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut app).await;
    });
    Ok(resp)
}
