//! A small app for trying portok: an HTTP server on $PORT with `/` (shows its generation),
//! `/health`, `/slow?ms=N` (a long request) and `/ws` (a WebSocket echo).
//! Edit GREETING and save to watch portok redeploy it with zero downtime:
//!
//! ```sh
//! portok hello cargo run --example hello
//! ```

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::time::{Duration, Instant};

const GREETING: &str = "Hello from portok's example app";

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let listener = match tokio::net::TcpListener::bind((host.as_str(), port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hello: cannot listen on {host}:{port}: {e}");
            std::process::exit(1);
        }
    };
    let started = Instant::now();
    eprintln!(
        "hello: listening on http://{host}:{port} (pid {})",
        std::process::id()
    );
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        term.recv().await;
    };
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => {
                eprintln!("hello: SIGTERM, bye");
                return;
            }
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
        };
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, started));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}

fn text(ctype: &'static str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .header("content-type", ctype)
        .header("x-hello-pid", std::process::id().to_string())
        .header(
            "x-hello-instance",
            std::env::var("PORTOK_INSTANCE").unwrap_or_else(|_| "0".into()),
        )
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn handle(
    mut req: Request<Incoming>,
    started: Instant,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let generation = std::env::var("PORTOK_GENERATION").unwrap_or_else(|_| "-".into());
    let version = std::env::var("HELLO_VERSION").unwrap_or_else(|_| "1".into());
    let path = req.uri().path().to_string();
    Ok(match path.as_str() {
        "/health" => text("text/plain", "ok\n".into()),
        "/slow" => {
            let ms: u64 = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text("text/plain", format!("slow done by generation {generation}\n"))
        }
        "/ws" => {
            use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
            let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
                return Ok(text("text/plain", "expected a WebSocket\n".into()));
            };
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                use futures_util::{SinkExt, StreamExt};
                let Ok(io) = upgrade.await else { return };
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(io),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_close() || ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
            Response::builder()
                .status(101)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
                .body(Full::new(Bytes::new()))
                .unwrap()
        }
        _ => text(
            "text/html; charset=utf-8",
            format!(
                "<!doctype html><title>hello</title><h1>{GREETING}</h1><p>version {version}, generation {generation}, pid {}, up {}s</p>\n",
                std::process::id(),
                started.elapsed().as_secs()
            ),
        ),
    })
}
