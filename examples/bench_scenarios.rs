//! The benchmark harness's scenarios beyond raw throughput (bench/run.sh calls them; each
//! prints one JSON object on stdout). Every connection goes to 127.0.0.1.
//!
//! ```text
//! bench_scenarios route-change  --portok BIN --port P [--iters 20]
//! bench_scenarios tls-handshake --port P [--iters 20]
//! bench_scenarios redeploy      --portok BIN --port P --app BIN [--redeploys 10] [--conns 50] [--drain 2]
//! bench_scenarios stream        --port P --direct-port B --host NAME.localhost --pid DAEMON [--bytes N] [--rounds 3]
//! bench_scenarios idle-conns    --port P --host NAME.localhost --pid DAEMON [--conns 1000] [--tls]
//! bench_scenarios tcp-backend   [--port 0]
//! bench_scenarios tcp-stream    --port LISTEN --direct-port B --pid DAEMON [--bytes N] [--rounds 3]
//!                               [--portok BIN --name ROUTE] [--backend-pid PID]
//! bench_scenarios tcp-echo      --port LISTEN --direct-port B --pid DAEMON [--conns 100]
//!                               [--sizes 64,16384] [--duration 5] [--warmup 1] [--rounds 3]
//!                               [--portok BIN --name ROUTE] [--backend-pid PID]
//! bench_scenarios proxy-start   --portok BIN [--iters 10]
//! bench_scenarios cmd-time      [--runs 30] [--warmup 3] -- CMD ARGS...
//! ```
//!
//! `portok` commands inherit PORTOK_STATE_DIR and PORTOK_PORT from the environment.
//!
//! `tcp-backend` is the app behind a TCP route (`portok alias NAME B --tcp LISTEN`): it prints
//! `PORT PID` on the first line of stdout and serves until killed. `tcp-stream` and `tcp-echo`
//! talk to it directly (port B) and through the route (port LISTEN); a scenario whose bytes
//! do not come back exactly as sent prints its JSON with `"ok": false` and exits 1.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, HOST};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

// ------------------------------------------------------------------ arguments

struct Args {
    flags: HashMap<String, String>,
    switches: Vec<String>,
    rest: Vec<String>,
}

impl Args {
    fn parse(raw: Vec<String>) -> Args {
        let mut a = Args {
            flags: HashMap::new(),
            switches: Vec::new(),
            rest: Vec::new(),
        };
        let mut it = raw.into_iter();
        while let Some(s) = it.next() {
            if s == "--" {
                a.rest = it.collect();
                break;
            }
            match s.strip_prefix("--") {
                Some(name) if matches!(name, "tls") => a.switches.push(name.into()),
                Some(name) => {
                    let v = it
                        .next()
                        .unwrap_or_else(|| die(&format!("--{name} needs a value")));
                    a.flags.insert(name.into(), v);
                }
                None => die(&format!("unexpected argument {s}")),
            }
        }
        a
    }
    /// A program path, made absolute (commands may run in another directory).
    fn program(&self, k: &str) -> String {
        let p = self.str(k);
        std::fs::canonicalize(&p)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or(p)
    }
    fn str(&self, k: &str) -> String {
        self.flags
            .get(k)
            .cloned()
            .unwrap_or_else(|| die(&format!("--{k} is required")))
    }
    fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> T {
        match self.flags.get(k) {
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| die(&format!("--{k}: bad number {v}"))),
            None => default,
        }
    }
    fn has(&self, k: &str) -> bool {
        self.switches.iter().any(|s| s == k)
    }
}

fn die(msg: &str) -> ! {
    eprintln!("bench_scenarios: {msg}");
    std::process::exit(2)
}

// ------------------------------------------------------------------ small helpers

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// median, p90, min, max, mean of a sample (milliseconds or whatever the caller uses).
fn summary(v: &[f64]) -> Value {
    if v.is_empty() {
        return json!({"n": 0});
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| s[(((p * s.len() as f64).ceil() as usize).clamp(1, s.len())) - 1];
    let median = if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    json!({
        "n": s.len(),
        "median": median,
        "p90": q(0.9),
        "min": s[0],
        "max": s[s.len() - 1],
        "mean": s.iter().sum::<f64>() / s.len() as f64,
    })
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples a process's RSS every 10 ms on its own thread; keeps the maximum.
struct RssSampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(rss_kib(pid)));
        let (s, m) = (stop.clone(), max.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                m.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssSampler {
            stop,
            max,
            thread: Some(thread),
        }
    }
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.max.load(Ordering::Relaxed)
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn h1_connect(port: u16) -> Result<SendRequest<Empty<Bytes>>, BoxError> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(send)
}

fn get(host: &str, path: &str) -> Request<Empty<Bytes>> {
    let mut req = Request::new(Empty::new());
    *req.uri_mut() = path.parse().expect("path");
    req.headers_mut()
        .insert(HOST, HeaderValue::from_str(host).expect("host"));
    req
}

/// One GET on a keep-alive connection: (status, x-port, x-gen, body length).
async fn fetch(
    send: &mut SendRequest<Empty<Bytes>>,
    host: &str,
    path: &str,
) -> Result<(u16, String, String, usize), BoxError> {
    send.ready().await?;
    let resp =
        tokio::time::timeout(Duration::from_secs(10), send.send_request(get(host, path))).await??;
    let status = resp.status().as_u16();
    let hdr = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (xport, xgen) = (hdr("x-port"), hdr("x-gen"));
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, xport, xgen, body.len()))
}

fn portok(bin: &str, args: &[&str]) -> std::process::ExitStatus {
    Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| die(&format!("cannot run {bin}: {e}")))
}

/// A tiny in-process backend that answers every request with `x-port: PORT`.
async fn tagged_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    let mut r = Response::new(Full::new(Bytes::from_static(b"ok\n")));
                    r.headers_mut().insert("x-port", HeaderValue::from(port));
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    port
}

// ------------------------------------------------------------------ route change

/// `portok alias` returns -> the first request that the new route serves.
async fn route_change(a: &Args) -> Value {
    let bin = a.program("portok");
    let port: u16 = a.num("port", 0);
    let iters: usize = a.num("iters", 20);
    let (pa, pb) = (tagged_backend().await, tagged_backend().await);
    let tag = std::process::id();
    let name = format!("rc{tag}");
    let host = format!("{name}.localhost");
    let mut send = h1_connect(port).await.expect("connect to portok");
    if !portok(&bin, &["alias", &name, &pa.to_string()]).success() {
        die("portok alias failed");
    }
    let (mut change, mut fresh, mut cmd) = (Vec::new(), Vec::new(), Vec::new());
    let mut extra_tries = 0u64;
    for i in 0..iters {
        // Re-point an existing name.
        let target = if i % 2 == 0 { pb } else { pa };
        let c0 = Instant::now();
        let ok = portok(&bin, &["alias", &name, &target.to_string()]).success();
        let t0 = Instant::now();
        cmd.push(ms(t0 - c0));
        if !ok {
            die("portok alias failed");
        }
        loop {
            match fetch(&mut send, &host, "/").await {
                Ok((200, p, _, _)) if p == target.to_string() => break,
                Ok(_) => extra_tries += 1,
                Err(_) => {
                    extra_tries += 1;
                    send = h1_connect(port).await.expect("reconnect");
                }
            }
            if t0.elapsed() > Duration::from_secs(10) {
                die("route change never took effect");
            }
        }
        change.push(ms(t0.elapsed()));
        // A brand-new name.
        let fresh_name = format!("rcnew{tag}x{i}");
        let fresh_host = format!("{fresh_name}.localhost");
        let ok = portok(&bin, &["alias", &fresh_name, &target.to_string()]).success();
        let t0 = Instant::now();
        if !ok {
            die("portok alias failed");
        }
        loop {
            match fetch(&mut send, &fresh_host, "/").await {
                Ok((200, p, _, _)) if p == target.to_string() => break,
                Ok(_) => extra_tries += 1,
                Err(_) => {
                    extra_tries += 1;
                    send = h1_connect(port).await.expect("reconnect");
                }
            }
            if t0.elapsed() > Duration::from_secs(10) {
                die("new route never took effect");
            }
        }
        fresh.push(ms(t0.elapsed()));
        portok(&bin, &["alias", "--remove", &fresh_name]);
    }
    portok(&bin, &["alias", "--remove", &name]);
    json!({
        "scenario": "route-change",
        "route_change_ms": summary(&change),
        "new_route_ms": summary(&fresh),
        "alias_cmd_ms": summary(&cmd),
        "requests_before_routed": extra_tries,
    })
}

// ------------------------------------------------------------------ TLS handshake

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client that verifies nothing and never resumes: every handshake is a full one.
fn tls_connector() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

async fn tls_connect(
    c: &tokio_rustls::TlsConnector,
    port: u16,
    sni: &str,
) -> Result<Box<dyn Io>, BoxError> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(sni.to_string())?;
    let s = tokio::time::timeout(Duration::from_secs(10), c.connect(name, tcp)).await??;
    Ok(Box::new(s))
}

/// TCP connect + full TLS handshake for a name never seen (the leaf is issued) vs the
/// same name again (the leaf is cached; no session resumption).
async fn tls_handshake(a: &Args) -> Value {
    let port: u16 = a.num("port", 0);
    let iters: usize = a.num("iters", 20);
    let c = tls_connector();
    let tag = std::process::id();
    let (mut first, mut cached, mut failed) = (Vec::new(), Vec::new(), 0u64);
    // Warm the cached path once.
    let _ = tls_connect(&c, port, "warm.localhost").await;
    for i in 0..iters {
        let name = format!("tlsnew{tag}x{i}.localhost");
        let t = Instant::now();
        match tls_connect(&c, port, &name).await {
            Ok(_) => first.push(ms(t.elapsed())),
            Err(_) => failed += 1,
        }
        let t = Instant::now();
        match tls_connect(&c, port, &name).await {
            Ok(_) => cached.push(ms(t.elapsed())),
            Err(_) => failed += 1,
        }
    }
    let (f, k) = (summary(&first), summary(&cached));
    let extra = f["median"].as_f64().unwrap_or(0.0) - k["median"].as_f64().unwrap_or(0.0);
    json!({
        "scenario": "tls-handshake",
        "first_ms": f,
        "cached_ms": k,
        "first_minus_cached_ms": extra,
        "failed": failed,
    })
}

// ------------------------------------------------------------------ redeploy under load

#[derive(Default)]
struct LoadTally {
    ok: u64,
    non2xx: u64,
    errors: u64,
    reconnects: u64,
    /// generation -> unix nanos of the first response it served
    first_seen: HashMap<String, u128>,
}

/// Zero-downtime redeploys: failed requests over N `portok restart`s under load, and how
/// long after a generation was ready (its first /health answer) it served a request.
async fn redeploy(a: &Args) -> Value {
    let bin = a.program("portok");
    let app = a.program("app");
    let port: u16 = a.num("port", 0);
    let redeploys: usize = a.num("redeploys", 10);
    let conns: usize = a.num("conns", 50);
    let drain: f64 = a.num("drain", 2.0);
    let dir = tempfile::tempdir().expect("tempdir");
    let app_dir = dir.path().join("app");
    std::fs::create_dir(&app_dir).expect("app dir");
    let ready_file = dir.path().join("ready.txt");
    let name = format!("rd{}", std::process::id());
    let host = format!("{name}.localhost");
    let mut run = tokio::process::Command::new(&bin)
        .args([
            "run",
            &name,
            "--health",
            "/health",
            "--rollback-window",
            "0",
            "--drain",
            &drain.to_string(),
            "--",
            &app,
        ])
        .current_dir(&app_dir)
        .env("BENCH_READY_FILE", &ready_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| die(&format!("cannot start portok run: {e}")));
    // Wait for the first generation.
    let t0 = Instant::now();
    loop {
        if let Ok(mut s) = h1_connect(port).await {
            if let Ok((200, _, g, _)) = fetch(&mut s, &host, "/").await {
                if g != "-" && !g.is_empty() {
                    break;
                }
            }
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = run.start_kill();
            die("the app never came up under portok run");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(LoadTally::default()));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (stop, tally, host) = (stop.clone(), tally.clone(), host.clone());
        load.spawn(async move {
            let mut local = LoadTally::default();
            'conn: while !stop.load(Ordering::Relaxed) {
                let mut send = match h1_connect(port).await {
                    Ok(s) => s,
                    Err(_) => {
                        local.errors += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    if send.ready().await.is_err() {
                        local.reconnects += 1; // closed between requests: not a failed request
                        continue 'conn;
                    }
                    let r = async {
                        let resp = tokio::time::timeout(
                            Duration::from_secs(10),
                            send.send_request(get(&host, "/")),
                        )
                        .await??;
                        let status = resp.status().as_u16();
                        let g = resp
                            .headers()
                            .get("x-gen")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        resp.into_body().collect().await?;
                        Ok::<_, BoxError>((status, g))
                    }
                    .await;
                    match r {
                        Ok((s, g)) if (200..300).contains(&s) => {
                            local.ok += 1;
                            let now = unix_nanos();
                            local.first_seen.entry(g).or_insert(now);
                        }
                        Ok(_) => local.non2xx += 1,
                        Err(_) => {
                            local.errors += 1;
                            continue 'conn;
                        }
                    }
                }
            }
            let mut t = tally.lock().expect("tally");
            t.ok += local.ok;
            t.non2xx += local.non2xx;
            t.errors += local.errors;
            t.reconnects += local.reconnects;
            for (g, at) in local.first_seen {
                let e = t.first_seen.entry(g).or_insert(at);
                *e = (*e).min(at);
            }
        });
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (mut restart_ms, mut restart_ok) = (Vec::new(), 0usize);
    for _ in 0..redeploys {
        let t = Instant::now();
        let st = tokio::process::Command::new(&bin)
            .args(["restart", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        restart_ms.push(ms(t.elapsed()));
        if matches!(st, Ok(s) if s.success()) {
            restart_ok += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    if let Some(pid) = run.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let _ = tokio::time::timeout(Duration::from_secs(15), run.wait()).await;
    let _ = run.start_kill();
    let t = tally.lock().expect("tally");
    let ready: HashMap<String, u128> = std::fs::read_to_string(&ready_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (g, ns) = l.split_once(' ')?;
            Some((g.to_string(), ns.trim().parse().ok()?))
        })
        .collect();
    let mut switch = Vec::new();
    let mut gens: Vec<&String> = ready.keys().collect();
    gens.sort_by_key(|g| g.parse::<u64>().unwrap_or(0));
    for g in gens.iter().skip(1) {
        if let (Some(r), Some(s)) = (ready.get(*g), t.first_seen.get(*g)) {
            switch.push((*s as f64 - *r as f64) / 1e6);
        }
    }
    let total = t.ok + t.non2xx;
    json!({
        "scenario": "redeploy",
        "redeploys": redeploys,
        "restart_ok": restart_ok,
        "conns": conns,
        "requests": total,
        "rps": total as f64 / elapsed.as_secs_f64(),
        "failed_requests": t.non2xx + t.errors,
        "non2xx": t.non2xx,
        "errors": t.errors,
        "reconnects": t.reconnects,
        "generations_seen": t.first_seen.len(),
        "switch_ms": summary(&switch),
        "restart_cmd_ms": summary(&restart_ms),
    })
}

// ------------------------------------------------------------------ large bodies

/// A request body of `left` bytes sent as clones of one 64 KiB chunk.
struct Upload {
    chunk: Bytes,
    left: u64,
}

impl Body for Upload {
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

/// Download N bytes (or upload them) once; MB/s (1 MB = 1e6 bytes).
async fn transfer(port: u16, host: &str, bytes: u64, upload: bool) -> Result<f64, BoxError> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let t = Instant::now();
    let mut got = 0u64;
    let resp = if upload {
        let mut req = Request::new(Upload {
            chunk: Bytes::from(vec![b'u'; 64 * 1024]),
            left: bytes,
        });
        *req.method_mut() = hyper::Method::POST;
        *req.uri_mut() = "/sink".parse()?;
        req.headers_mut().insert(HOST, HeaderValue::from_str(host)?);
        send.send_request(req).await?
    } else {
        let mut req = Request::new(Upload {
            chunk: Bytes::new(),
            left: 0,
        });
        *req.uri_mut() = format!("/bytes?n={bytes}").parse()?;
        req.headers_mut().insert(HOST, HeaderValue::from_str(host)?);
        send.send_request(req).await?
    };
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()).into());
    }
    let mut body: Incoming = resp.into_body();
    while let Some(f) = body.frame().await {
        if let Some(d) = f?.data_ref() {
            got += d.len() as u64;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    if upload {
        return Ok(bytes as f64 / secs / 1e6);
    }
    if got != bytes {
        return Err(format!("got {got} of {bytes} bytes").into());
    }
    Ok(got as f64 / secs / 1e6)
}

async fn stream(a: &Args) -> Value {
    let port: u16 = a.num("port", 0);
    let direct: u16 = a.num("direct-port", 0);
    let host = a.str("host");
    let pid: u32 = a.num("pid", 0);
    let bytes: u64 = a.num("bytes", 1u64 << 30);
    let rounds: usize = a.num("rounds", 3);
    let rss_before = rss_kib(pid);
    let mut out = serde_json::Map::new();
    for (dir, upload) in [("download", false), ("upload", true)] {
        let (mut d, mut p) = (Vec::new(), Vec::new());
        let sampler = RssSampler::start(pid);
        for _ in 0..rounds {
            match transfer(direct, &host, bytes, upload).await {
                Ok(v) => d.push(v),
                Err(e) => eprintln!("bench_scenarios: direct {dir}: {e}"),
            }
            match transfer(port, &host, bytes, upload).await {
                Ok(v) => p.push(v),
                Err(e) => eprintln!("bench_scenarios: portok {dir}: {e}"),
            }
        }
        let peak = sampler.finish();
        let (ds, ps) = (summary(&d), summary(&p));
        let ratio = ps["median"].as_f64().unwrap_or(0.0) / ds["median"].as_f64().unwrap_or(1.0);
        out.insert(
            dir.into(),
            json!({
                "direct_mb_s": ds,
                "portok_mb_s": ps,
                "share_of_direct": ratio,
                "daemon_rss_peak_kib": peak,
            }),
        );
    }
    json!({
        "scenario": "stream",
        "bytes": bytes,
        "rounds": rounds,
        "daemon_rss_before_kib": rss_before,
        "daemon_rss_after_kib": rss_kib(pid),
        "download": out["download"],
        "upload": out["upload"],
    })
}

// ------------------------------------------------------------------ idle connections

/// N keep-alive connections that each made one request and then sit idle: daemon RSS.
async fn idle_conns(a: &Args) -> Value {
    let port: u16 = a.num("port", 0);
    let host = a.str("host");
    let pid: u32 = a.num("pid", 0);
    let n: usize = a.num("conns", 1000);
    let tls = a.has("tls");
    let connector = tls_connector();
    let before = rss_kib(pid);
    let held = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(AtomicU64::new(0));
    let sem = Arc::new(tokio::sync::Semaphore::new(50));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (held, failed, sem, host, connector) = (
            held.clone(),
            failed.clone(),
            sem.clone(),
            host.clone(),
            connector.clone(),
        );
        set.spawn(async move {
            let _permit = sem.acquire().await;
            let r = async {
                let io: Box<dyn Io> = if tls {
                    tls_connect(&connector, port, &host).await?
                } else {
                    let t = TcpStream::connect(("127.0.0.1", port)).await?;
                    Box::new(t)
                };
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
                        .await?;
                tokio::spawn(conn);
                let resp = send.send_request(get(&host, "/")).await?;
                let ok = resp.status().is_success();
                resp.into_body().collect().await?;
                if !ok {
                    return Err::<_, BoxError>("non-2xx".into());
                }
                Ok(send)
            }
            .await;
            match r {
                Ok(s) => held.lock().expect("held").push(s),
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_secs(1)).await;
    let with = rss_kib(pid);
    let open = held.lock().expect("held").len();
    held.lock().expect("held").clear();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid);
    json!({
        "scenario": "idle-conns",
        "tls": tls,
        "conns": open,
        "failed": failed.load(Ordering::Relaxed),
        "daemon_rss_before_kib": before,
        "daemon_rss_with_conns_kib": with,
        "daemon_rss_after_close_kib": after,
        "kib_per_conn": if open > 0 { (with as f64 - before as f64) / open as f64 } else { 0.0 },
    })
}

// ------------------------------------------------------------------ TCP routes

/// Period of the test pattern: odd, so no power-of-two read or write size lines up with it.
const PATTERN_PERIOD: usize = (1 << 20) + 13;
/// Read and write size of the stream scenario (client and backend).
const TCP_CHUNK: usize = 256 * 1024;

/// PATTERN_PERIOD pseudo-random bytes followed by their first TCP_CHUNK again, so the bytes
/// at any stream offset are one contiguous slice (`pattern_at`).
fn pattern() -> &'static [u8] {
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    P.get_or_init(|| {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut v = Vec::with_capacity(PATTERN_PERIOD + TCP_CHUNK + 8);
        while v.len() < PATTERN_PERIOD {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.truncate(PATTERN_PERIOD);
        let head = v[..TCP_CHUNK].to_vec();
        v.extend_from_slice(&head);
        v
    })
}

/// The `n` (<= TCP_CHUNK) pattern bytes at stream offset `off`.
fn pattern_at(off: u64, n: usize) -> &'static [u8] {
    let o = (off % PATTERN_PERIOD as u64) as usize;
    &pattern()[o..o + n]
}

/// The stream offset of the first byte of `got` (received at offset `off`) that differs
/// from the pattern.
fn pattern_mismatch(off: u64, got: &[u8]) -> Option<u64> {
    let mut done = 0;
    while done < got.len() {
        let n = (got.len() - done).min(TCP_CHUNK);
        let (have, want) = (&got[done..done + n], pattern_at(off + done as u64, n));
        if have != want {
            let i = have.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
            return Some(off + (done + i) as u64);
        }
        done += n;
    }
    None
}

/// utime + stime of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

/// utime + stime of a process (all its threads), in seconds.
fn cpu_secs(pid: u32) -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    cpu_ticks(pid) as f64 / hz as f64
}

/// The whole machine's (busy, all) clock ticks from /proc/stat. Busy = user + nice + system +
/// irq + softirq: with tick accounting a process is charged (stime) for the softirq work
/// done while it runs, which /proc/stat counts as softirq.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let busy = [0, 1, 2, 5, 6].iter().filter_map(|&i| v.get(i)).sum();
    (busy, v.iter().sum())
}

/// CPU used by processes other than the benchmark's own (this client, the daemon, the
/// backend) over a run, in % of the whole machine: other work on a shared machine shows
/// here, and a run with much of it is not comparable.
struct OtherCpu {
    pids: Vec<u32>,
    busy: u64,
    total: u64,
    own: u64,
}

impl OtherCpu {
    fn start(pids: &[u32]) -> OtherCpu {
        let (busy, total) = machine_ticks();
        OtherCpu {
            pids: pids.to_vec(),
            busy,
            total,
            own: pids.iter().map(|&p| cpu_ticks(p)).sum(),
        }
    }
    fn pct(&self) -> f64 {
        let (busy, total) = machine_ticks();
        let own: u64 = self.pids.iter().map(|&p| cpu_ticks(p)).sum();
        let other = busy.saturating_sub(self.busy) as f64 - own.saturating_sub(self.own) as f64;
        if total > self.total {
            (other.max(0.0) * 100.0 / (total - self.total) as f64).min(100.0)
        } else {
            0.0
        }
    }
}

/// This process, the daemon (`--pid`) and the backend (`--backend-pid`, when given).
fn own_pids(a: &Args) -> Vec<u32> {
    let mut v = vec![std::process::id(), a.num("pid", 0)];
    if let Some(b) = a.flags.get("backend-pid").and_then(|p| p.parse().ok()) {
        v.push(b);
    }
    v.retain(|&p| p != 0);
    v
}

/// The backend of the TCP scenarios. The first byte a client sends picks what it does:
/// - `S` sink: reads to EOF, checks every byte against the pattern, answers 16 bytes
///   (bytes received, u64 LE; first wrong offset + 1, 0 when none);
/// - `G` + u64 LE N source: sends N pattern bytes, then closes its side;
/// - `E` echo: sends back whatever it reads until EOF.
async fn tcp_backend(a: &Args) {
    let port: u16 = a.num("port", 0);
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| {
            die(&format!(
                "tcp-backend: cannot listen on 127.0.0.1:{port}: {e}"
            ))
        });
    pattern();
    let port = listener.local_addr().expect("addr").port();
    println!("{port} {}", std::process::id());
    loop {
        let Ok((s, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            if let Err(e) = tcp_backend_conn(s).await {
                eprintln!("bench_scenarios tcp-backend: {e}");
            }
        });
    }
}

async fn tcp_backend_conn(mut s: TcpStream) -> std::io::Result<()> {
    let mut op = [0u8; 1];
    s.read_exact(&mut op).await?;
    match op[0] {
        b'S' => {
            let mut buf = vec![0u8; TCP_CHUNK];
            let (mut got, mut bad) = (0u64, 0u64);
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                if bad == 0 {
                    if let Some(at) = pattern_mismatch(got, &buf[..n]) {
                        bad = at + 1;
                    }
                }
                got += n as u64;
            }
            let mut reply = [0u8; 16];
            reply[..8].copy_from_slice(&got.to_le_bytes());
            reply[8..].copy_from_slice(&bad.to_le_bytes());
            s.write_all(&reply).await?;
            s.shutdown().await
        }
        b'G' => {
            let mut n = [0u8; 8];
            s.read_exact(&mut n).await?;
            let total = u64::from_le_bytes(n);
            let mut off = 0u64;
            while off < total {
                let n = (total - off).min(TCP_CHUNK as u64) as usize;
                s.write_all(pattern_at(off, n)).await?;
                off += n as u64;
            }
            s.shutdown().await
        }
        b'E' => {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                s.write_all(&buf[..n]).await?;
            }
            s.shutdown().await
        }
        other => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unknown operation byte {other}"),
        )),
    }
}

/// The route's relay counters from `portok status NAME --json` (when --portok and --name
/// are given).
fn relay_counters(a: &Args) -> Option<Value> {
    let (bin, name) = (a.flags.get("portok")?, a.flags.get("name")?);
    let out = Command::new(bin)
        .args(["status", name, "--json"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get("tcp").cloned()
}

fn relay_delta(before: &Option<Value>, after: &Option<Value>) -> Value {
    let (Some(b), Some(a)) = (before, after) else {
        return Value::Null;
    };
    let mut m = serde_json::Map::new();
    for k in [
        "connections_total",
        "spliced",
        "copied",
        "bytes_in",
        "bytes_out",
    ] {
        let d = a[k].as_u64().unwrap_or(0) as i64 - b[k].as_u64().unwrap_or(0) as i64;
        m.insert(k.into(), json!(d));
    }
    Value::Object(m)
}

/// Median of the per-round ratios a[i] / b[i] (rounds where both succeeded).
fn ratio_median(a: &[Option<f64>], b: &[Option<f64>]) -> Value {
    let r: Vec<f64> = a
        .iter()
        .zip(b)
        .filter_map(|(x, y)| match (x, y) {
            (Some(x), Some(y)) if *y > 0.0 => Some(x / y),
            _ => None,
        })
        .collect();
    summary(&r)["median"].clone()
}

/// One connection: push `bytes` into the sink (upload) or pull them from the source
/// (download), every byte checked against the pattern; MB/s (1 MB = 1e6 bytes), timed from
/// the connection being open to the last byte confirmed.
async fn tcp_transfer(port: u16, bytes: u64, upload: bool) -> Result<f64, BoxError> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.set_nodelay(true)?;
    let t = Instant::now();
    if upload {
        s.write_all(b"S").await?;
        let mut off = 0u64;
        while off < bytes {
            let n = (bytes - off).min(TCP_CHUNK as u64) as usize;
            s.write_all(pattern_at(off, n)).await?;
            off += n as u64;
        }
        s.shutdown().await?;
        let mut reply = [0u8; 16];
        s.read_exact(&mut reply)
            .await
            .map_err(|e| format!("no answer from the sink: {e}"))?;
        let got = u64::from_le_bytes(reply[..8].try_into()?);
        let bad = u64::from_le_bytes(reply[8..].try_into()?);
        if got != bytes {
            return Err(format!("the sink got {got} of {bytes} bytes").into());
        }
        if bad != 0 {
            return Err(format!("the sink got a wrong byte at offset {}", bad - 1).into());
        }
    } else {
        let mut hdr = [0u8; 9];
        hdr[0] = b'G';
        hdr[1..].copy_from_slice(&bytes.to_le_bytes());
        s.write_all(&hdr).await?;
        let mut buf = vec![0u8; TCP_CHUNK];
        let mut got = 0u64;
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            if let Some(at) = pattern_mismatch(got, &buf[..n]) {
                return Err(format!("wrong byte at offset {at}").into());
            }
            got += n as u64;
            if got > bytes {
                return Err(format!("got more than the {bytes} bytes asked for").into());
            }
        }
        if got != bytes {
            return Err(format!("got {got} of {bytes} bytes").into());
        }
    }
    Ok(bytes as f64 / t.elapsed().as_secs_f64() / 1e6)
}

/// One TCP connection pushing `--bytes` each way, direct vs through the route, rounds
/// interleaved; MB/s medians and the per-round ratio.
async fn tcp_stream(a: &Args) -> Value {
    let port: u16 = a.num("port", 0);
    let direct: u16 = a.num("direct-port", 0);
    let pid: u32 = a.num("pid", 0);
    let bytes: u64 = a.num("bytes", 1u64 << 30);
    let rounds: usize = a.num("rounds", 3);
    pattern();
    let own = own_pids(a);
    let mut others = Vec::new();
    let relay_before = relay_counters(a);
    let rss_before = rss_kib(pid);
    let mut failures = Vec::new();
    let mut out = serde_json::Map::new();
    for (dir, upload) in [("upload", true), ("download", false)] {
        let (mut d, mut p) = (Vec::new(), Vec::new());
        let (mut cpu, mut ok_bytes) = (0.0, 0u64);
        let sampler = RssSampler::start(pid);
        for round in 1..=rounds {
            let oc = OtherCpu::start(&own);
            let r = tcp_transfer(direct, bytes, upload).await;
            others.push(oc.pct());
            if let Err(e) = &r {
                failures.push(format!("round {round} direct {dir}: {e}"));
            }
            d.push(r.ok());
            let (c0, oc) = (cpu_secs(pid), OtherCpu::start(&own));
            let r = tcp_transfer(port, bytes, upload).await;
            cpu += cpu_secs(pid) - c0;
            others.push(oc.pct());
            match &r {
                Ok(_) => ok_bytes += bytes,
                Err(e) => failures.push(format!("round {round} portok {dir}: {e}")),
            }
            p.push(r.ok());
        }
        let peak = sampler.finish();
        let all = |v: &[Option<f64>]| v.iter().flatten().copied().collect::<Vec<f64>>();
        out.insert(
            dir.into(),
            json!({
                "direct_mb_s": summary(&all(&d)),
                "portok_mb_s": summary(&all(&p)),
                "share_of_direct": ratio_median(&p, &d),
                "direct_rounds_mb_s": d,
                "portok_rounds_mb_s": p,
                "daemon_cpu_s_per_gib": if ok_bytes > 0 {
                    json!(cpu / (ok_bytes as f64 / (1u64 << 30) as f64))
                } else {
                    Value::Null
                },
                "daemon_rss_peak_kib": peak,
            }),
        );
    }
    let relay = relay_delta(&relay_before, &relay_counters(a));
    // What the daemon should have counted: per upload 1 + bytes in and 16 out; per download
    // 9 in and bytes out.
    let r = rounds as i64;
    let counters_match = relay.is_object().then(|| {
        relay["bytes_in"] == json!(r * (1 + bytes as i64) + r * 9)
            && relay["bytes_out"] == json!(r * 16 + r * bytes as i64)
    });
    for e in &failures {
        eprintln!("bench_scenarios tcp-stream: {e}");
    }
    json!({
        "scenario": "tcp-stream",
        "ok": failures.is_empty(),
        "failures": failures,
        "bytes": bytes,
        "rounds": rounds,
        "chunk_bytes": TCP_CHUNK,
        "daemon_rss_before_kib": rss_before,
        "daemon_rss_after_kib": rss_kib(pid),
        "upload": out["upload"],
        "download": out["download"],
        "relay": relay,
        "relay_counters_match": counters_match,
        "others_cpu_pct": summary(&others),
    })
}

#[derive(Default)]
struct EchoRun {
    /// Round trips started inside the measured window, and their latencies (ns).
    lat_ns: Vec<u64>,
    /// All round trips, warm-up included.
    total: u64,
    mismatches: u64,
    errors: Vec<String>,
}

/// `conns` connections in `E` mode, each sending `size` bytes and reading them back, in a
/// loop, for `warmup` + `dur`; round trips started in the last `dur` are measured.
async fn echo_run(
    port: u16,
    conns: usize,
    size: usize,
    warmup: Duration,
    dur: Duration,
) -> EchoRun {
    let mut run = EchoRun::default();
    let mut streams = Vec::with_capacity(conns);
    for _ in 0..conns {
        let s = async {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
            s.set_nodelay(true)?;
            s.write_all(b"E").await?;
            Ok::<_, BoxError>(s)
        };
        match s.await {
            Ok(s) => streams.push(s),
            Err(e) => run.errors.push(format!("connect: {e}")),
        }
    }
    let from = Instant::now() + warmup;
    let end = from + dur;
    let mut set = tokio::task::JoinSet::new();
    for (i, mut s) in streams.into_iter().enumerate() {
        set.spawn(async move {
            let mut r = EchoRun::default();
            let mut buf = vec![0u8; size];
            // Every connection and every round trip sends different bytes.
            let mut off = i as u64 * 7919;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let payload = pattern_at(off, size);
                off += size as u64 + 1;
                let (mut rd, mut wr) = s.split();
                let trip =
                    async { tokio::try_join!(wr.write_all(payload), rd.read_exact(&mut buf)) };
                match tokio::time::timeout(Duration::from_secs(10), trip).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        r.errors.push(format!("conn {i}: {e}"));
                        break;
                    }
                    Err(_) => {
                        r.errors.push(format!("conn {i}: no echo within 10 s"));
                        break;
                    }
                }
                let t1 = Instant::now();
                if buf != payload {
                    r.mismatches += 1;
                    r.errors
                        .push(format!("conn {i}: echoed bytes differ from those sent"));
                    break;
                }
                r.total += 1;
                if t0 >= from {
                    r.lat_ns.push((t1 - t0).as_nanos() as u64);
                }
            }
            let _ = s.shutdown().await;
            r
        });
    }
    while let Some(r) = set.join_next().await {
        match r {
            Ok(r) => {
                run.lat_ns.extend(r.lat_ns);
                run.total += r.total;
                run.mismatches += r.mismatches;
                run.errors.extend(r.errors);
            }
            Err(e) => run.errors.push(format!("task: {e}")),
        }
    }
    run
}

/// Round trips/s and latency percentiles of one echo run.
fn echo_figures(run: &mut EchoRun, dur: Duration) -> (f64, f64, f64) {
    run.lat_ns.sort_unstable();
    let n = run.lat_ns.len();
    let q = |p: f64| {
        if n == 0 {
            0.0
        } else {
            run.lat_ns[((p * n as f64).ceil() as usize).clamp(1, n) - 1] as f64 / 1e6
        }
    };
    (n as f64 / dur.as_secs_f64(), q(0.5), q(0.99))
}

/// `--conns` connections doing echo round trips of each `--sizes` payload for `--duration`
/// seconds, direct vs through the route, rounds interleaved.
async fn tcp_echo(a: &Args) -> Value {
    let port: u16 = a.num("port", 0);
    let direct: u16 = a.num("direct-port", 0);
    let pid: u32 = a.num("pid", 0);
    let conns: usize = a.num("conns", 100);
    let rounds: usize = a.num("rounds", 3);
    let dur = Duration::from_secs_f64(a.num("duration", 5.0));
    let warmup = Duration::from_secs_f64(a.num("warmup", 1.0));
    let sizes: Vec<usize> = a
        .flags
        .get("sizes")
        .map(String::as_str)
        .unwrap_or("64,16384")
        .split(',')
        .map(|v| {
            v.trim()
                .parse()
                .ok()
                .filter(|&n| n > 0 && n <= TCP_CHUNK)
                .unwrap_or_else(|| die(&format!("--sizes: bad size {v} (1..={TCP_CHUNK})")))
        })
        .collect();
    pattern();
    let own = own_pids(a);
    let mut others = Vec::new();
    let relay_before = relay_counters(a);
    let rss_before = rss_kib(pid);
    let mut failures: Vec<String> = Vec::new();
    let mut per_size = Vec::new();
    for &size in &sizes {
        let mut figs: HashMap<&str, [Vec<Option<f64>>; 3]> = HashMap::new();
        let (mut cpu, mut trips) = (0.0, 0u64);
        let sampler = RssSampler::start(pid);
        for round in 1..=rounds {
            for (target, p) in [("direct", direct), ("portok", port)] {
                let (c0, oc) = (cpu_secs(pid), OtherCpu::start(&own));
                let mut run = echo_run(p, conns, size, warmup, dur).await;
                others.push(oc.pct());
                if target == "portok" {
                    cpu += cpu_secs(pid) - c0;
                    trips += run.total;
                }
                let (rps, p50, p99) = echo_figures(&mut run, dur);
                let ok = run.errors.is_empty() && run.mismatches == 0 && !run.lat_ns.is_empty();
                if !ok {
                    let first = run
                        .errors
                        .first()
                        .cloned()
                        .unwrap_or_else(|| "no round trip completed".into());
                    failures.push(format!(
                        "size {size} round {round} {target}: {} errors, {} mismatches; {first}",
                        run.errors.len(),
                        run.mismatches
                    ));
                }
                let f = figs.entry(target).or_default();
                for (i, v) in [rps, p50, p99].into_iter().enumerate() {
                    f[i].push(ok.then_some(v));
                }
            }
        }
        let peak = sampler.finish();
        let all = |v: &[Option<f64>]| v.iter().flatten().copied().collect::<Vec<f64>>();
        let (d, p) = (&figs["direct"], &figs["portok"]);
        per_size.push(json!({
            "size": size,
            "direct_rps": summary(&all(&d[0])),
            "portok_rps": summary(&all(&p[0])),
            "share_of_direct": ratio_median(&p[0], &d[0]),
            "direct_p50_ms": summary(&all(&d[1])),
            "portok_p50_ms": summary(&all(&p[1])),
            "direct_p99_ms": summary(&all(&d[2])),
            "portok_p99_ms": summary(&all(&p[2])),
            "direct_rounds_rps": d[0],
            "portok_rounds_rps": p[0],
            "daemon_cpu_us_per_round_trip": if trips > 0 { json!(cpu * 1e6 / trips as f64) } else { Value::Null },
            "daemon_rss_peak_kib": peak,
        }));
    }
    for e in &failures {
        eprintln!("bench_scenarios tcp-echo: {e}");
    }
    json!({
        "scenario": "tcp-echo",
        "ok": failures.is_empty(),
        "failures": failures,
        "conns": conns,
        "rounds": rounds,
        "duration_s": dur.as_secs_f64(),
        "warmup_s": warmup.as_secs_f64(),
        "daemon_rss_before_kib": rss_before,
        "daemon_rss_after_kib": rss_kib(pid),
        "sizes": per_size,
        "relay": relay_delta(&relay_before, &relay_counters(a)),
        "others_cpu_pct": summary(&others),
    })
}

// ------------------------------------------------------------------ CLI

/// `portok proxy start` until it returns, and until the first request is answered.
async fn proxy_start(a: &Args) -> Value {
    let bin = a.program("portok");
    let iters: usize = a.num("iters", 10);
    let port: u16 = std::env::var("PORTOK_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| die("PORTOK_PORT must be set"));
    let answered = || async {
        let mut s = h1_connect(port).await?;
        fetch(&mut s, "nothing.localhost", "/").await
    };
    portok(&bin, &["proxy", "stop"]);
    let t = Instant::now();
    if !portok(&bin, &["proxy", "start"]).success() {
        die("portok proxy start failed");
    }
    let first_cmd = ms(t.elapsed());
    let first_ok = answered().await.is_ok();
    let first_answer = ms(t.elapsed());
    let (mut cmd, mut ans, mut stop, mut failed) = (Vec::new(), Vec::new(), Vec::new(), 0u64);
    for _ in 0..iters {
        let t = Instant::now();
        portok(&bin, &["proxy", "stop"]);
        stop.push(ms(t.elapsed()));
        let t = Instant::now();
        let ok = portok(&bin, &["proxy", "start"]).success();
        cmd.push(ms(t.elapsed()));
        if ok && answered().await.is_ok() {
            ans.push(ms(t.elapsed()));
        } else {
            failed += 1;
        }
    }
    json!({
        "scenario": "proxy-start",
        "first_start_cmd_ms": first_cmd,
        "first_start_answered_ms": if first_ok { json!(first_answer) } else { Value::Null },
        "start_cmd_ms": summary(&cmd),
        "start_answered_ms": summary(&ans),
        "stop_cmd_ms": summary(&stop),
        "failed": failed,
    })
}

/// A hyperfine stand-in: wall time of a command, run `runs` times after `warmup`.
fn cmd_time(a: &Args) -> Value {
    let runs: usize = a.num("runs", 30);
    let warmup: usize = a.num("warmup", 3);
    let Some((prog, args)) = a.rest.split_first() else {
        die("cmd-time needs -- CMD ...")
    };
    let mut v = Vec::new();
    let mut failed = 0u64;
    for i in 0..warmup + runs {
        let t = Instant::now();
        let ok = Command::new(prog)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        let d = ms(t.elapsed());
        if !ok {
            failed += 1;
        }
        if i >= warmup {
            v.push(d);
        }
    }
    json!({"scenario": "cmd-time", "command": a.rest.join(" "), "ms": summary(&v), "failed": failed})
}

fn main() {
    let mut raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.is_empty() {
        die("usage: bench_scenarios SCENARIO [--flag value]... (see the source header)");
    }
    let scenario = raw.remove(0);
    let a = Args::parse(raw);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let out = match scenario.as_str() {
        "route-change" => rt.block_on(route_change(&a)),
        "tls-handshake" => rt.block_on(tls_handshake(&a)),
        "redeploy" => rt.block_on(redeploy(&a)),
        "stream" => rt.block_on(stream(&a)),
        "idle-conns" => rt.block_on(idle_conns(&a)),
        "tcp-backend" => {
            rt.block_on(tcp_backend(&a));
            return;
        }
        "tcp-stream" => rt.block_on(tcp_stream(&a)),
        "tcp-echo" => rt.block_on(tcp_echo(&a)),
        "proxy-start" => rt.block_on(proxy_start(&a)),
        "cmd-time" => cmd_time(&a),
        other => die(&format!("unknown scenario {other}")),
    };
    println!("{out}");
    if out.get("ok") == Some(&Value::Bool(false)) {
        std::process::exit(1);
    }
}
