//! The dashboard's buttons and log, which reach an app's `portok run` over its run socket:
//! restart, roll back, stop, and the log tail that follows.

use super::{json_response, DaemonState};
use crate::control::{self, AppReply, AppRequest};
use crate::proxy::body::ProxyBody;
use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Ask the app's `portok run` for `req` and answer as the API does: 200 with its message,
/// 409 with why it could not.
pub async fn action(d: &DaemonState, host: String, req: AppRequest) -> Response<ProxyBody> {
    let state = d.ctx.state.clone();
    let answer = tokio::task::spawn_blocking(move || {
        control::ask_app(&state, &host, &req, Duration::from_secs(3600))
    })
    .await;
    match answer {
        Ok(Ok(AppReply::Redeployed { message })) => {
            json_response(StatusCode::OK, json!({"ok": true, "message": message}))
        }
        Ok(Ok(AppReply::Failed { message })) => {
            json_response(StatusCode::CONFLICT, json!({"ok": false, "error": message}))
        }
        Ok(Ok(other)) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"ok": false, "error": format!("the app's portok run answered with {other:?}")}),
        ),
        Ok(Err(e)) => json_response(
            StatusCode::CONFLICT,
            json!({"ok": false, "error": format!("{e:#}")}),
        ),
        Err(e) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"ok": false, "error": e.to_string()}),
        ),
    }
}

/// The app's last `n` lines (empty when no `portok run` answers: an alias).
pub async fn tail(d: &DaemonState, host: &str, n: usize) -> Vec<String> {
    let (state, host) = (d.ctx.state.clone(), host.to_string());
    tokio::task::spawn_blocking(move || {
        match control::ask_app(
            &state,
            &host,
            &AppRequest::Logs { lines: n },
            Duration::from_secs(5),
        ) {
            Ok(AppReply::Logs { lines }) => lines,
            _ => Vec::new(),
        }
    })
    .await
    .unwrap_or_default()
}

/// `GET /api/routes/NAME/logs`: each new line of the app's output as a `log` event (the
/// run socket is asked once a second; lines already sent are not sent again).
pub fn follow(d: &Arc<DaemonState>, host: String) -> Response<ProxyBody> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let d = d.clone();
    tokio::spawn(async move {
        let _ = tx.send(Bytes::from_static(b"retry: 1000\n\n")).await;
        let mut last: Vec<String> = tail(&d, &host, control::LOG_LINES).await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = tx.closed() => return,
            }
            let now = tail(&d, &host, control::LOG_LINES).await;
            // What follows the last line sent (the buffer slides).
            let start = match last.last() {
                Some(l) => now.iter().rposition(|x| x == l).map_or(0, |i| i + 1),
                None => 0,
            };
            for line in &now[start..] {
                let data = serde_json::to_string(line).unwrap_or_default();
                if tx
                    .send(Bytes::from(format!("event: log\ndata: {data}\n\n")))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            last = now;
        }
    });
    super::sse_response(rx)
}
