//! portok's gRPC example: a tonic server with the standard health service, and the load
//! client bench/run.sh measures gRPC with.
//!
//! ```sh
//! cargo build --example grpc
//! portok api target/debug/examples/grpc      # serves echo.Echo at api.localhost:1355
//! grpc load http://127.0.0.1:1355 api.localhost:1355 -c 4 -m 50 -d 10s [--ca ca.pem]
//! ```
//!
//! The server listens on 127.0.0.1:$PORT and speaks only HTTP/2, as every gRPC server does;
//! portok finds that by itself. Its answers carry the version in `version.txt` (in the
//! folder it runs in), so an edit there shows which generation answered. The service is in
//! examples/grpc/echo.proto; its Rust code is generated and checked in (examples/grpc/echo.rs).
//! `GRPC_MAX_CONNECTION_AGE_MS=N` closes each connection (GOAWAY) once it is N ms old;
//! `GRPC_MAX_STREAMS=N` takes at most N calls at once on a connection.

#[path = "grpc/channel.rs"]
mod channel;
#[path = "grpc/echo.rs"]
#[allow(clippy::all)]
mod echo;

use channel::channel;
use echo::echo_client::EchoClient;
use echo::echo_server::{Echo, EchoServer};
use echo::{CountRequest, Msg, SlowRequest};
use futures_util::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::metadata::MetadataValue;
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};

/// Large enough for the 5 MiB messages of the tests (tonic's default is 4 MiB).
const MAX_MESSAGE: usize = 16 << 20;

type Answers = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

struct Service {
    version: String,
    cancelled: Arc<AtomicU32>,
}

fn msg(text: impl Into<String>) -> Msg {
    Msg {
        text: text.into(),
        blob: Vec::new(),
    }
}

/// Counts a Slow call dropped before it answers, or a Chat dropped before the client's
/// stream ended: the client went away.
struct Unfinished(Option<Arc<AtomicU32>>);

impl Unfinished {
    fn finished(&mut self) {
        self.0 = None;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(count) = self.0.take() {
            count.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tonic::async_trait]
impl Echo for Service {
    async fn say(&self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        let m = req.into_inner();
        Ok(Response::new(Msg {
            text: format!("v{}: {}", self.version, m.text),
            blob: m.blob,
        }))
    }

    type CountStream = Answers;
    async fn count(&self, req: Request<CountRequest>) -> Result<Response<Answers>, Status> {
        let n = req.into_inner().n;
        let answers = futures_util::stream::iter((0..n).map(|i| Ok(msg(i.to_string()))));
        Ok(Response::new(Box::pin(answers)))
    }

    async fn collect(&self, req: Request<Streaming<Msg>>) -> Result<Response<Msg>, Status> {
        let mut texts = Vec::new();
        let mut stream = req.into_inner();
        while let Some(m) = stream.next().await {
            texts.push(m?.text);
        }
        Ok(Response::new(msg(format!(
            "{}:{}",
            texts.len(),
            texts.join(",")
        ))))
    }

    type ChatStream = Answers;
    async fn chat(&self, req: Request<Streaming<Msg>>) -> Result<Response<Answers>, Status> {
        // Each message is answered as it comes, blob and all; nothing waits for the end of
        // the stream. An answer that cannot go holds the next message back (flow control).
        let mut unfinished = Unfinished(Some(self.cancelled.clone()));
        let end = futures_util::stream::poll_fn(move |_| {
            unfinished.finished();
            std::task::Poll::Ready(None)
        });
        let answers = req.into_inner().chain(end);
        Ok(Response::new(Box::pin(answers)))
    }

    async fn find(&self, _req: Request<Msg>) -> Result<Response<Msg>, Status> {
        let mut status = Status::not_found("no such thing");
        status
            .metadata_mut()
            .insert("x-why", MetadataValue::from_static("testing"));
        Err(status)
    }

    async fn slow(&self, req: Request<SlowRequest>) -> Result<Response<Msg>, Status> {
        let timeout = req
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_string();
        let mut unfinished = Unfinished(Some(self.cancelled.clone()));
        tokio::time::sleep(Duration::from_millis(req.into_inner().ms.into())).await;
        unfinished.finished();
        Ok(Response::new(msg(format!("grpc-timeout={timeout}"))))
    }

    async fn cancelled(
        &self,
        _req: Request<CountRequest>,
    ) -> Result<Response<CountRequest>, Status> {
        let n = self.cancelled.load(Ordering::SeqCst);
        Ok(Response::new(CountRequest { n }))
    }
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT")
        .map_err(|_| "PORT is not set: run me under portok (portok api grpc), or set PORT")?
        .parse()
        .map_err(|e| format!("PORT is not a port number: {e}"))?;
    let version = std::fs::read_to_string("version.txt")
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|_| "1".into());
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<EchoServer<Service>>().await;
    let service = Service {
        version: version.clone(),
        cancelled: Arc::default(),
    };
    let echo = EchoServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    println!("grpc example v{version} on 127.0.0.1:{port}");
    let mut server = Server::builder();
    // As grpc-go's MaxConnectionAge: each connection is told to go (GOAWAY) once this old.
    if let Some(ms) = std::env::var("GRPC_MAX_CONNECTION_AGE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        server = server.max_connection_age(std::time::Duration::from_millis(ms));
    }
    // At most this many calls at once on one connection (its SETTINGS say so).
    if let Some(n) = std::env::var("GRPC_MAX_STREAMS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        server = server.max_concurrent_streams(n);
    }
    server
        .add_service(health)
        .add_service(echo)
        .serve(([127, 0, 0, 1], port).into())
        .await?;
    Ok(())
}

struct LoadOpts {
    addr: String,
    authority: String,
    ca: Option<String>,
    conns: usize,
    streams: usize,
    duration: Duration,
}

fn load_opts(args: &[String]) -> Result<LoadOpts, String> {
    let usage = "usage: grpc load ADDR AUTHORITY [-c CONNS] [-m STREAMS] [-d SECS] [--ca CA]";
    let (addr, authority) = match args {
        [a, b, ..] => (a.clone(), b.clone()),
        _ => return Err(usage.into()),
    };
    let mut o = LoadOpts {
        addr,
        authority,
        ca: None,
        conns: 1,
        streams: 50,
        duration: Duration::from_secs(10),
    };
    let mut rest = args[2..].iter();
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .ok_or(format!("{flag} needs a value; {usage}"))?;
        let bad = |e: std::num::ParseIntError| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "-c" => o.conns = value.parse().map_err(bad)?,
            "-m" => o.streams = value.parse().map_err(bad)?,
            "-d" => {
                let secs: f64 = value
                    .trim_end_matches('s')
                    .parse()
                    .map_err(|e| format!("-d {value}: {e}"))?;
                o.duration = Duration::from_secs_f64(secs);
            }
            "--ca" => o.ca = Some(value.clone()),
            _ => return Err(format!("unknown flag {flag}; {usage}")),
        }
    }
    Ok(o)
}

/// Unary Say calls from `conns` channels with `streams` calls in flight on each, for the
/// duration; one JSON line in bench_load's shape (requests, rps, p50_ms, p99_ms, errors).
async fn load(o: LoadOpts) -> Result<(), Box<dyn std::error::Error>> {
    let errors = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    let start = Instant::now();
    let end = start + o.duration;
    for _ in 0..o.conns {
        let chan = channel(&o.addr, &o.authority, o.ca.as_deref()).await?;
        for _ in 0..o.streams {
            let mut client = EchoClient::new(chan.clone());
            let errors = errors.clone();
            workers.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < end {
                    let t = Instant::now();
                    match client.say(msg("hi")).await {
                        Ok(_) => lat.push(t.elapsed().as_nanos() as u64),
                        Err(_) => _ = errors.fetch_add(1, Ordering::Relaxed),
                    }
                }
                lat
            }));
        }
    }
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.await?);
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| {
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len().max(1)) - 1;
        lat.get(i).map_or(0.0, |ns| *ns as f64 / 1e6)
    };
    println!(
        "{{\"requests\":{},\"rps\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"non2xx\":0,\"errors\":{}}}",
        lat.len(),
        lat.len() as f64 / secs,
        pct(0.50),
        pct(0.99),
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("load") => match load_opts(&args[1..]) {
            Ok(o) => load(o).await,
            Err(e) => Err(e.into()),
        },
        None | Some("serve") => serve().await,
        Some(other) => {
            Err(format!("unknown command {other:?}: grpc [serve] | grpc load ...").into())
        }
    };
    if let Err(e) = result {
        eprintln!("grpc: {e}");
        std::process::exit(1);
    }
}
