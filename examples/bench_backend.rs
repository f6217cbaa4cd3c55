//! A fast backend for portok's benchmark harness (bench/run.sh, bench/guard.sh), used when
//! nginx is not installed and for the scenarios that need a scriptable app.
//!
//! One thread (like nginx `worker_processes 1`), HTTP/1.1 keep-alive, on 127.0.0.1:$PORT
//! (or `--port N`):
//! - any path: 200 with the same 100-byte body as bench/run.sh's nginx backend;
//! - `/bytes?n=N`: N bytes, streamed in 64 KiB chunks (large-body scenario);
//! - `/sink`: reads the request body and answers with its length;
//! - `/health`: `ok`. When `$BENCH_READY_FILE` is set, the first `/health` answer of this
//!   process appends `GEN UNIX_NANOS` to that file (GEN = `$PORTOK_GENERATION`), which is
//!   "the generation is ready" for the redeploy scenario.
//!
//! Every response carries `x-gen: $PORTOK_GENERATION` and `x-port: PORT`.
//!
//! ```sh
//! cargo run --release --example bench_backend -- --port 18080
//! ```

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

/// Exactly the body bench/run.sh's nginx backend returns.
const BODY: &[u8; 100] =
    b"hello world 01234567890123456789012345678901234567890123456789012345678901234567890123456789abcdefgh";
const CHUNK: usize = 64 * 1024;

struct Shared {
    gen: HeaderValue,
    port: HeaderValue,
    chunk: Bytes,
    ready_file: Option<String>,
    ready_written: AtomicBool,
}

/// A body of `left` bytes, sent as clones of one shared 64 KiB chunk (no copying).
struct Stream {
    chunk: Bytes,
    left: u64,
}

impl Body for Stream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

enum Reply {
    Full(Full<Bytes>),
    Stream(Stream),
}

impl Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Reply::Full(b) => Pin::new(b).poll_frame(cx),
            Reply::Stream(s) => Pin::new(s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Reply::Full(b) => b.is_end_stream(),
            Reply::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Reply::Full(b) => b.size_hint(),
            Reply::Stream(s) => s.size_hint(),
        }
    }
}

fn query_n(query: Option<&str>) -> u64 {
    query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("n="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

async fn handle(sh: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Reply>, Infallible> {
    let body = match req.uri().path() {
        "/bytes" => Reply::Stream(Stream {
            chunk: sh.chunk.clone(),
            left: query_n(req.uri().query()),
        }),
        "/sink" => {
            let mut body = req.into_body();
            let mut total: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => total += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => break,
                }
            }
            Reply::Full(Full::new(Bytes::from(format!("{total}\n"))))
        }
        "/health" => {
            if let Some(path) = &sh.ready_file {
                if !sh.ready_written.swap(true, Ordering::Relaxed) {
                    let line = format!("{} {}\n", sh.gen.to_str().unwrap_or("-"), unix_nanos());
                    if let Ok(mut f) = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                    {
                        let _ = f.write_all(line.as_bytes());
                    }
                }
            }
            Reply::Full(Full::new(Bytes::from_static(b"ok\n")))
        }
        _ => Reply::Full(Full::new(Bytes::from_static(BODY))),
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    h.insert(HeaderName::from_static("x-gen"), sh.gen.clone());
    h.insert(HeaderName::from_static("x-port"), sh.port.clone());
    Ok(resp)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut port: Option<u16> = std::env::var("PORT").ok().and_then(|p| p.parse().ok());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next().and_then(|p| p.parse().ok()),
            "-h" | "--help" => {
                eprintln!("usage: bench_backend [--port N]   (default: $PORT, else 18080)");
                return;
            }
            other => {
                eprintln!("bench_backend: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let port = port.unwrap_or(18080);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(serve(port));
}

async fn serve(port: u16) {
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bench_backend: cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    let gen = std::env::var("PORTOK_GENERATION").unwrap_or_else(|_| "-".into());
    let sh = Arc::new(Shared {
        gen: HeaderValue::from_str(&gen).unwrap_or(HeaderValue::from_static("-")),
        port: HeaderValue::from(port),
        chunk: Bytes::from(vec![b'x'; CHUNK]),
        ready_file: std::env::var("BENCH_READY_FILE")
            .ok()
            .filter(|s| !s.is_empty()),
        ready_written: AtomicBool::new(false),
    });
    eprintln!(
        "bench_backend: listening on http://127.0.0.1:{port} (pid {}, generation {gen})",
        std::process::id()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    loop {
        let stream = tokio::select! {
            _ = term.recv() => return,
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let sh = sh.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(sh.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
