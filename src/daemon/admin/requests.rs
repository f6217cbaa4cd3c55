//! The request inspector's views: the requests of a route as JSON (the API, the page and
//! `portok inspect`), live over SSE, one request in full, and replay. Heads are kept as
//! HTTP/1 text (see [`crate::inspect`]) and parsed here, when someone looks.

use super::{json_response, DaemonState};
use crate::inspect::{Body, Record, Ring};
use crate::proxy::body::ProxyBody;
use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// Header values hidden unless asked for.
const SECRET: &[&str] = &[
    "authorization",
    "cookie",
    "set-cookie",
    "proxy-authorization",
];

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("no route named {0}")]
    NoRoute(String),
    #[error("{0} has no request {1} (it was never made, or is older than the last ones kept)")]
    NoRequest(String, u64),
    #[error("{0} is not live ({1}); a replay goes to the live generation")]
    NotLive(String, String),
    #[error("the body of request {0} was not kept ({1}), so it cannot be sent again; turn body capture on (`portok run --inspect-bodies`, or the toggle on the inspector page) and make the request again")]
    BodyNotKept(u64, &'static str),
    #[error("the replay failed: {0}")]
    Failed(String),
}

impl InspectError {
    pub fn status(&self) -> StatusCode {
        match self {
            InspectError::NoRoute(_) | InspectError::NoRequest(..) => StatusCode::NOT_FOUND,
            InspectError::NotLive(..) | InspectError::BodyNotKept(..) => StatusCode::CONFLICT,
            InspectError::Failed(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

pub fn error_response(e: &InspectError) -> Response<ProxyBody> {
    json_response(e.status(), json!({"error": e.to_string()}))
}

/// The route's hostname and its ring (None: no request yet, or the inspector is off).
pub fn ring(
    d: &DaemonState,
    name: &str,
) -> Result<(String, Option<Arc<crate::metrics::RouteStats>>), InspectError> {
    let host = super::hostname_of(d, name).ok_or_else(|| InspectError::NoRoute(name.into()))?;
    let stats = d
        .ctx
        .metrics
        .existing(&host)
        .filter(|s| s.inspect.get().is_some());
    Ok((host, stats))
}

fn with_ring<T>(
    stats: &Option<Arc<crate::metrics::RouteStats>>,
    f: impl FnOnce(&Ring) -> T,
) -> Option<T> {
    stats.as_ref().and_then(|s| s.inspect.get()).map(f)
}

/// The requests after `after`, oldest first, as JSON.
pub fn list(
    d: &DaemonState,
    name: &str,
    after: u64,
    secrets: bool,
) -> Result<Vec<Value>, InspectError> {
    let (_, stats) = ring(d, name)?;
    let records = with_ring(&stats, |r| r.since(after)).unwrap_or_default();
    Ok(records.iter().map(|r| record_json(r, secrets)).collect())
}

pub fn one(d: &DaemonState, name: &str, id: u64, secrets: bool) -> Result<Value, InspectError> {
    let (_, stats) = ring(d, name)?;
    with_ring(&stats, |r| r.get(id))
        .flatten()
        .map(|r| record_json(&r, secrets))
        .ok_or_else(|| InspectError::NoRequest(name.into(), id))
}

/// Header lines of a kept head, after its first line.
fn header_lines(head: &[u8]) -> impl Iterator<Item = (&str, &str)> {
    let text = std::str::from_utf8(head).unwrap_or("");
    text.split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
}

fn first_line(head: &[u8]) -> &str {
    let text = std::str::from_utf8(head).unwrap_or("");
    text.split("\r\n").next().unwrap_or("")
}

fn headers_json(head: &[u8], secrets: bool) -> Value {
    Value::Array(
        header_lines(head)
            .map(|(k, v)| {
                let hidden = !secrets && SECRET.iter().any(|s| k.eq_ignore_ascii_case(s));
                let v = if hidden {
                    format!("(hidden, {} characters)", v.len())
                } else {
                    v.to_string()
                };
                json!([k, v])
            })
            .collect(),
    )
}

fn header<'a>(head: &'a [u8], name: &str) -> Option<&'a str> {
    header_lines(head)
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// A kept body as the views show it: text (JSON pretty-printed where it parses), or, for
/// compressed or binary bodies, its size and type only.
fn body_json(body: &Option<Body>, head: &[u8]) -> Value {
    let Some(b) = body else { return Value::Null };
    let kind = header(head, "content-type").unwrap_or("").to_string();
    let encoding = header(head, "content-encoding").filter(|e| !e.eq_ignore_ascii_case("identity"));
    let size = b.total.unwrap_or(b.bytes.len() as u64);
    let truncated = b.total.is_none_or(|t| t > b.bytes.len() as u64);
    let shown = if let Some(enc) = encoding {
        json!({"binary": true, "note": format!("{enc}-encoded, {size} bytes")})
    } else {
        match std::str::from_utf8(&b.bytes) {
            Ok(text) if !text.contains('\0') => {
                let pretty = kind
                    .contains("json")
                    .then(|| serde_json::from_str::<Value>(text).ok())
                    .flatten()
                    .and_then(|v| serde_json::to_string_pretty(&v).ok());
                json!({"text": pretty.unwrap_or_else(|| text.to_string()), "json": kind.contains("json")})
            }
            _ => json!({"binary": true, "note": format!("binary, {size} bytes")}),
        }
    };
    let mut v = json!({"size": size, "type": kind, "truncated": truncated});
    if let (Value::Object(m), Value::Object(s)) = (&mut v, shown) {
        m.extend(s);
    }
    v
}

pub fn record_json(r: &Record, secrets: bool) -> Value {
    let req = r.request_head();
    let resp = r.response_head();
    let mut line = first_line(req).splitn(3, ' ');
    let method = line.next().unwrap_or("");
    let path = line.next().unwrap_or("");
    json!({
        "id": r.id,
        "time": time_text(r.time_ms()),
        "time_ms": r.time_ms(),
        "method": method,
        "path": path,
        "status": r.status,
        "duration_ms": r.duration_us as f64 / 1000.0,
        "bytes_in": r.bytes_in,
        "bytes_out": r.bytes_out,
        "client": r.client.map(|c| c.to_string()),
        "version": r.version,
        "tls": r.tls,
        "generation": r.generation,
        "port": r.port,
        "request_headers": headers_json(req, secrets),
        "response_headers": headers_json(resp, secrets),
        "request_body": body_json(&r.request_body, req),
        "response_body": body_json(&r.response_body, resp),
        "grpc": r.grpc.as_ref().map(grpc_json),
    })
}

/// A gRPC call's status (null while it has none: the call was cut off) and its messages.
fn grpc_json(call: &crate::inspect::Grpc) -> Value {
    json!({
        "status": call.status,
        "status_name": call.status.map(crate::grpc::status_name),
        "message": call.message,
        "messages_in": call.messages_in.load(std::sync::atomic::Ordering::Relaxed),
        "messages_out": call.messages_out,
    })
}

/// Unix milliseconds as RFC 3339 UTC (`2026-12-04T23:45:21.123Z`).
pub fn time_text(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// `GET /api/routes/NAME/requests/stream`: what is kept, then each new request, as
/// `request` events. A viewer that reads slowly misses requests; the proxy never waits.
pub fn stream(
    d: &Arc<DaemonState>,
    name: &str,
    secrets: bool,
) -> Result<Response<ProxyBody>, InspectError> {
    let (host, _) = ring(d, name)?;
    let stats = d.ctx.metrics.route(&host);
    let ring_of = stats.clone();
    let capacity = d.ctx.inspect_capacity.max(1);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let ring = ring_of.inspect.get_or_init(capacity);
        ring.viewers.fetch_add(1, Relaxed);
        struct Viewer<'a>(&'a Ring);
        impl Drop for Viewer<'_> {
            fn drop(&mut self) {
                self.0.viewers.fetch_sub(1, Relaxed);
            }
        }
        let _viewer = Viewer(ring);
        let _ = tx.send(Bytes::from_static(b"retry: 1000\n\n")).await;
        let mut last = 0;
        loop {
            let pushed = ring.pushed.notified();
            tokio::pin!(pushed);
            pushed.as_mut().enable();
            for r in ring.since(last) {
                last = r.id;
                let data = serde_json::to_string(&record_json(&r, secrets)).unwrap_or_default();
                // A full channel: this viewer is behind, and loses the request.
                if let Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) =
                    tx.try_send(Bytes::from(format!("event: request\ndata: {data}\n\n")))
                {
                    return;
                }
            }
            tokio::select! {
                _ = pushed => {}
                _ = tokio::time::sleep(Duration::from_secs(15)) => {
                    if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
        }
    });
    Ok(super::sse_response(rx))
}

/// `POST .../requests/ID/replay`: the same request again, straight to the live generation
/// (not through the proxy, so it is not itself recorded), and both answers.
pub async fn replay(d: &Arc<DaemonState>, name: &str, id: u64) -> Result<Value, InspectError> {
    let (host, stats) = ring(d, name)?;
    let rec = with_ring(&stats, |r| r.get(id))
        .flatten()
        .ok_or_else(|| InspectError::NoRequest(name.into(), id))?;
    let backend = {
        let table = d.ctx.routes.load();
        let live = table
            .lookup(&host)
            .ok_or_else(|| InspectError::NoRoute(name.into()))?;
        if live.route.is_starting() || live.route.is_crashed() {
            let state = live.route.state.map_or("live", |s| s.as_str()).to_string();
            return Err(InspectError::NotLive(name.into(), state));
        }
        live.pick().clone()
    };
    let head = rec.request_head();
    let length: u64 = header(head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let chunked = header(head, "transfer-encoding").is_some();
    let body = match &rec.request_body {
        Some(b) if b.total == Some(b.bytes.len() as u64) => b.bytes.clone(),
        Some(_) => {
            return Err(InspectError::BodyNotKept(
                id,
                "it was longer than the 64 KiB kept",
            ))
        }
        None if length > 0 || chunked => {
            return Err(InspectError::BodyNotKept(id, "body capture was off"))
        }
        None => Vec::new(),
    };
    let started = std::time::Instant::now();
    let answer = send(backend.port, head, &body)
        .await
        .map_err(|e| InspectError::Failed(e.to_string()))?;
    Ok(json!({
        "original": record_json(&rec, false),
        "replay": {
            "status": answer.0,
            "headers": answer.1,
            "body": answer.2,
            "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
            "generation": backend.generation,
            "port": backend.port,
        },
    }))
}

/// Send a kept request head (with `body`) to 127.0.0.1:`port` and read the answer.
async fn send(port: u16, head: &[u8], body: &[u8]) -> anyhow::Result<(u16, Value, Value)> {
    use http_body_util::BodyExt as _;
    let mut lines = first_line(head).splitn(3, ' ');
    let method = lines.next().unwrap_or("GET");
    let path = lines.next().unwrap_or("/");
    let mut req = http::Request::builder().method(method).uri(path);
    for (k, v) in header_lines(head) {
        let skip = [
            "connection",
            "keep-alive",
            "transfer-encoding",
            "content-length",
            "upgrade",
        ];
        if !skip.iter().any(|s| k.eq_ignore_ascii_case(s)) {
            req = req.header(k, v);
        }
    }
    let req = req.body(http_body_util::Full::new(Bytes::copy_from_slice(body)))?;
    let stream = crate::proxy::app_conn::connect_loopback(port, Duration::from_secs(5)).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req)).await??;
    let status = resp.status().as_u16();
    let mut head_text = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in resp.headers() {
        head_text.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap_or("")));
    }
    let collected =
        tokio::time::timeout(Duration::from_secs(30), resp.into_body().collect()).await??;
    let bytes = collected.to_bytes();
    let kept = Body {
        bytes: bytes[..bytes.len().min(crate::inspect::BODY_CAP)].to_vec(),
        total: Some(bytes.len() as u64),
    };
    Ok((
        status,
        headers_json(head_text.as_bytes(), false),
        body_json(&Some(kept), head_text.as_bytes()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(time_text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(time_text(1_796_427_921_123), "2026-12-04T23:45:21.123Z");
    }

    #[test]
    fn secrets_are_hidden_and_binary_bodies_are_sizes() {
        let mut r = Record::default();
        r.heads.extend_from_slice(b"POST /login?x=1 HTTP/1.1\r\nhost: a\r\nauthorization: Bearer abc\r\ncontent-type: application/json\r\n\r\n");
        r.split = r.heads.len();
        r.heads.extend_from_slice(
            b"HTTP/1.1 200 OK\r\nset-cookie: s=1\r\ncontent-type: image/png\r\n\r\n",
        );
        r.request_body = Some(Body {
            bytes: br#"{"a":1}"#.to_vec(),
            total: Some(7),
        });
        r.response_body = Some(Body {
            bytes: vec![0x89, b'P', b'N', b'G', 0, 0xff],
            total: Some(6),
        });
        let v = record_json(&r, false);
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/login?x=1");
        assert_eq!(
            v["request_headers"][1],
            json!(["authorization", "(hidden, 10 characters)"])
        );
        assert_eq!(
            v["response_headers"][0],
            json!(["set-cookie", "(hidden, 3 characters)"])
        );
        assert_eq!(v["request_body"]["text"], "{\n  \"a\": 1\n}");
        assert_eq!(v["response_body"]["binary"], true);
        assert_eq!(v["response_body"]["note"], "binary, 6 bytes");
        let shown = record_json(&r, true);
        assert_eq!(
            shown["request_headers"][1],
            json!(["authorization", "Bearer abc"])
        );
    }
}
