//! The shared harness: a `Portok` per test (its own state dir, HOME and free port, the real
//! binary), a real backend on 127.0.0.1, and small HTTP/WebSocket clients.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

pub const BIN: &str = env!("CARGO_BIN_EXE_portok");

/// A port free on both 127.0.0.1 and ::1, reserved for this test process.
///
/// Ports come from below the kernel's ephemeral range (32768+), so no `bind(0)` and no
/// outgoing connection of a parallel test can take one between this check and the
/// daemon's bind. A lock file per port, held until the process exits, keeps two test
/// processes (nextest runs each test in its own) from picking the same one.
pub fn free_port() -> u16 {
    use fs4::fs_std::FileExt;
    use rand::Rng;
    let dir = std::env::temp_dir().join("portok-test-ports");
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = rand::rng();
    for _ in 0..500 {
        let port: u16 = rng.random_range(24000..32700);
        let file = std::fs::File::create(dir.join(port.to_string())).unwrap();
        if !matches!(file.try_lock_exclusive(), Ok(true)) {
            continue;
        }
        let v4 = StdListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok();
        if v4 && (!has_ipv6() || StdListener::bind(("::1", port)).is_ok()) {
            // Held (and so reserved) until this process exits.
            std::mem::forget(file);
            return port;
        }
    }
    panic!("no free port found in 24000-32699");
}

fn has_ipv6() -> bool {
    std::net::TcpListener::bind(("::1", 0)).is_ok()
}

/// One isolated portok installation: state dir, HOME and proxy port of its own.
pub struct Portok {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The Docker engine its daemon follows (None: PORTOK_DOCKER=0).
    pub docker: Option<String>,
}

impl Portok {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("portok-it")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        Portok {
            dir,
            port: free_port(),
            docker: None,
        }
    }

    /// A portok that follows the Docker engine at `host` (a test's own dockerd); every
    /// other test's daemon follows none.
    pub fn with_docker(host: &str) -> Self {
        let mut p = Portok::new();
        p.docker = Some(host.to_string());
        p
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("PORTOK_STATE_DIR", self.state())
            .env("HOME", self.home())
            .env("PORTOK_PORT", self.port.to_string())
            .env("NO_COLOR", "1")
            // `portok trust` in a test writes under this folder, never the real store.
            .env("PORTOK_TRUST_ROOT", self.dir.path().join("trust-root"))
            // Nothing in a test may write the real /etc/hosts.
            .env("PORTOK_HOSTS_FILE", self.hosts_file())
            .env_remove("PORTOK_SYNC_HOSTS")
            .env_remove("PORTOK_APP_PORT")
            .stdin(Stdio::null());
        match &self.docker {
            Some(host) => c.env("DOCKER_HOST", host).env("PORTOK_DOCKER", "1"),
            None => c.env_remove("DOCKER_HOST").env("PORTOK_DOCKER", "0"),
        };
        c
    }

    /// Run a command to completion (bounded by the commands' own timeouts).
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("running portok")
    }

    /// Run, assert success, return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "portok {args:?} failed ({:?})\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The hosts file portok manages in tests (PORTOK_HOSTS_FILE).
    pub fn hosts_file(&self) -> PathBuf {
        self.dir.path().join("hosts")
    }

    pub fn routes_json(&self) -> PathBuf {
        self.state().join("routes.json")
    }

    pub fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.state().join("proxy.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }
}

impl Drop for Portok {
    fn drop(&mut self) {
        // Never leave a daemon behind, even when the test failed.
        if let Some(pid) = self.daemon_pid() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Poll `f` every 20 ms until it returns Some, or panic after `limit`.
pub async fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request to `addr` with the given Host header (connections to *.localhost
/// go to 127.0.0.1 directly: glibc may not resolve them).
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    get_or_cut(addr, host, path).await.expect("body")
}

/// A GET as a browser's navigation sends it (`Accept: text/html`).
pub async fn get_html(addr: SocketAddr, host: &str, path: &str) -> Reply {
    let req = Request::get(path)
        .header("host", host)
        .header("accept", "text/html")
        .body(Full::new(Bytes::new()))
        .unwrap();
    request(addr, req).await
}

pub async fn request(addr: SocketAddr, req: Request<Full<Bytes>>) -> Reply {
    request_or_cut(addr, req).await.expect("body")
}

/// [`get`], with an answer whose body was cut short (its head came) as an error; anything
/// that fails before the head still panics.
pub async fn get_or_cut(addr: SocketAddr, host: &str, path: &str) -> Result<Reply, String> {
    let req = Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    request_or_cut(addr, req).await
}

async fn request_or_cut(addr: SocketAddr, req: Request<Full<Bytes>>) -> Result<Reply, String> {
    let fut = async {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let resp = send.send_request(req).await.expect("request");
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("{e:?}"))?
            .to_bytes();
        Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("request timed out")
}

/// A backend that tests control: answers with what it saw, streams SSE on demand, echoes
/// WebSockets, and checksums uploads.
pub struct Backend {
    pub port: u16,
    /// Requests this backend has received.
    pub hits: Arc<std::sync::atomic::AtomicUsize>,
    pub sse_gate: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// FNV-1a over a byte stream: a checksum with no extra crate.
#[derive(Clone, Copy)]
pub struct Fnv(pub u64);
impl Fnv {
    pub fn new() -> Self {
        Fnv(0xcbf29ce484222325)
    }
    pub fn update(&mut self, data: &[u8]) {
        for b in data {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }
}

/// The bytes of the test pattern at offsets [start, start+len).
pub fn pattern(start: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| ((start + i) % 251) as u8).collect()
}

pub async fn backend(name: &'static str) -> Backend {
    backend_speaking(name, false).await
}

/// The same backend, speaking only HTTP/2 with prior knowledge (as a gRPC server does).
pub async fn backend_h2(name: &'static str) -> Backend {
    backend_speaking(name, true).await
}

async fn backend_speaking(name: &'static str, h2: bool) -> Backend {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sse_gate = Arc::new(tokio::sync::Notify::new());
    let gate = sse_gate.clone();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let gate = gate.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    serve(name, req, gate.clone())
                });
                let io = TokioIo::new(stream);
                let _ = if h2 {
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await
                } else {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .with_upgrades()
                        .await
                };
            });
        }
    });
    Backend {
        port,
        hits,
        sse_gate,
        task,
    }
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(s: impl Into<Bytes>) -> BoxBody {
    Full::new(s.into()).boxed()
}

async fn serve(
    name: &'static str,
    mut req: Request<Incoming>,
    gate: Arc<tokio::sync::Notify>,
) -> Result<Response<BoxBody>, Infallible> {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/ws" => {
            use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
            let key = req.headers().get("sec-websocket-key").cloned();
            let Some(key) = key else {
                return Ok(Response::builder()
                    .status(400)
                    .body(full("no key"))
                    .unwrap());
            };
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                use futures_util::{SinkExt, StreamExt};
                let Ok(up) = on_upgrade.await else { return };
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(up),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_close() {
                        break;
                    }
                    if ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
            Ok(Response::builder()
                .status(101)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
                .body(full(""))
                .unwrap())
        }
        "/sse" => {
            // Event 1 at once, event 2 only when the test opens the gate: proves streaming.
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                let _ = tx.send(Ok(Frame::data(Bytes::from("data: one\n\n")))).await;
                gate.notified().await;
                let _ = tx.send(Ok(Frame::data(Bytes::from("data: two\n\n")))).await;
            });
            let body = StreamBody::new(tokio_stream_from(rx));
            Ok(Response::builder()
                .header("content-type", "text/event-stream")
                .body(BodyExt::boxed(body))
                .unwrap())
        }
        "/upload" => {
            let mut sum = Fnv::new();
            let mut n = 0u64;
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    sum.update(&data);
                    n += data.len() as u64;
                }
            }
            Ok(Response::new(full(format!("{n} {:x}", sum.0))))
        }
        "/download" => {
            let total: u64 = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("n="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                let mut off = 0u64;
                while off < total {
                    let len = (total - off).min(256 * 1024) as usize;
                    let chunk = Bytes::from(pattern(off, len));
                    off += len as u64;
                    if tx.send(Ok(Frame::data(chunk))).await.is_err() {
                        return;
                    }
                }
            });
            Ok(Response::builder()
                .header("content-length", total.to_string())
                .body(BodyExt::boxed(StreamBody::new(tokio_stream_from(rx))))
                .unwrap())
        }
        "/html" | "/html-gzip" | "/json" | "/html404" => {
            let (status, ctype, enc, body): (u16, &str, Option<&str>, &str) = match path.as_str() {
                "/html" => (
                    200,
                    "text/html; charset=utf-8",
                    None,
                    "<!doctype html><html><body><h1>page</h1></body></html>",
                ),
                "/html-gzip" => (200, "text/html", Some("gzip"), "pretend-gzip-bytes"),
                "/json" => (200, "application/json", None, "{\"a\":1}"),
                _ => (404, "text/html", None, "<html><body>missing</body></html>"),
            };
            let mut b = Response::builder()
                .status(status)
                .header("content-type", ctype)
                .header("content-length", body.len().to_string())
                .header(
                    "x-seen-accept-encoding",
                    req.headers()
                        .get("accept-encoding")
                        .map(|v| v.to_str().unwrap_or(""))
                        .unwrap_or("-"),
                );
            if let Some(e) = enc {
                b = b.header("content-encoding", e);
            }
            Ok(b.body(full(body)).unwrap())
        }
        "/html-chunked" => {
            // Streamed in pieces with no Content-Length: chunked on the wire.
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                for part in [
                    "<!doctype html><html><body>",
                    "<p>streamed</p>",
                    "</body></html>",
                ] {
                    let _ = tx.send(Ok(Frame::data(Bytes::from(part)))).await;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            });
            Ok(Response::builder()
                .header("content-type", "text/html")
                .body(BodyExt::boxed(StreamBody::new(tokio_stream_from(rx))))
                .unwrap())
        }
        "/__portok/reload.js" => Ok(Response::new(full("the app's own file"))),
        p if p.starts_with("/status/") => {
            let code: u16 = p["/status/".len()..].parse().unwrap_or(500);
            Ok(Response::builder()
                .status(code)
                .header("x-backend", name)
                .body(full(format!("status {code}")))
                .unwrap())
        }
        _ => {
            let mut lines = vec![format!("backend={name}"), format!("path={}", req.uri())];
            for (k, v) in req.headers() {
                lines.push(format!("{k}={}", v.to_str().unwrap_or("?")));
            }
            Ok(Response::builder()
                .header("x-backend", name)
                .body(full(lines.join("\n")))
                .unwrap())
        }
    }
}

/// An mpsc receiver as a futures Stream (avoids a tokio-stream dependency).
fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Header value of a response the backend echoed as `name=value` lines.
pub fn echoed<'a>(body: &'a str, header: &str) -> Option<&'a str> {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{header}=")))
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// The example app, built once.
pub fn hello_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| example_bin("hello")).clone()
}

/// An example's binary (cargo serialises concurrent builds; later ones are no-ops).
pub fn example_bin(name: &str) -> PathBuf {
    let exe = PathBuf::from(BIN);
    let target_profile = exe.parent().unwrap();
    let built = target_profile.join("examples").join(name);
    // `cargo nextest run` / `cargo test` build the examples with the tests; running cargo
    // again from inside a test would rebuild ring and rustls (its environment differs), and
    // the next test build would rebuild them back.
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.rs"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(b), Some(src)) = (modified(&built), modified(&source)) {
        if b >= src {
            return built;
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap_or_else(|e| panic!("running cargo build --example {name}: {e}"));
    assert!(status.success(), "building examples/{name} failed");
    assert!(built.exists(), "{} missing", built.display());
    built
}

/// A `portok run` (or `portok NAME CMD`) running in the background, its stderr collected.
pub struct RunningApp {
    pub child: std::process::Child,
    pub output: Arc<std::sync::Mutex<String>>,
}

impl Portok {
    /// Start `portok ARGS...` in `cwd`, collecting its output.
    pub fn spawn_app(&self, cwd: &Path, args: &[&str]) -> RunningApp {
        self.spawn_app_env(cwd, args, &[])
    }

    /// [`Portok::spawn_app`] with more environment for portok and so for the app.
    pub fn spawn_app_env(&self, cwd: &Path, args: &[&str], env: &[(&str, &Path)]) -> RunningApp {
        let mut child = self
            .command()
            .args(args)
            .envs(env.iter().copied())
            .current_dir(cwd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning portok run");
        let output = Arc::new(std::sync::Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    let mut o = output.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        RunningApp { child, output }
    }
}

impl Portok {
    /// [`Portok::spawn_app`] with portok's stdout and stderr redirected to `file`, as in
    /// `portok run ... > file 2>&1`; the output is read back from the file.
    pub fn spawn_app_into(&self, cwd: &Path, args: &[&str], file: &Path) -> RunningApp {
        let out = std::fs::File::create(file).unwrap();
        let child = self
            .command()
            .args(args)
            .current_dir(cwd)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawning portok run");
        let output = Arc::new(std::sync::Mutex::new(String::new()));
        let (keep, file) = (Arc::downgrade(&output), file.to_path_buf());
        std::thread::spawn(move || {
            // Until the RunningApp is dropped.
            while let Some(output) = keep.upgrade() {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                *output.lock().unwrap() = text;
                drop(output);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RunningApp { child, output }
    }
}

impl RunningApp {
    pub fn text(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Wait until the output contains `needle` `count` times.
    pub async fn wait_for_n(&self, needle: &str, count: usize, limit: Duration) {
        let start = Instant::now();
        loop {
            if self.text().matches(needle).count() >= count {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {needle:?} x{count}; output so far:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_for(&self, needle: &str, limit: Duration) {
        self.wait_for_n(needle, 1, limit).await
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Wait (bounded) for the process to exit; returns its exit code.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                start.elapsed() < limit,
                "portok run did not exit; output:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(libc::SIGTERM);
            let start = Instant::now();
            while self.child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = self.child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.wait();
        }
    }
}

/// A Python with the `zeroconf` package (an mDNS resolver portok does not write), in a
/// venv kept in the test cache; None when it cannot be made (no python3 or no PyPI).
pub fn zeroconf_python() -> Option<PathBuf> {
    python_venv("venv-zeroconf", &["zeroconf==0.154.0"], "import zeroconf")
}

/// Python with the dev servers that ignore PORT (Flask, uvicorn, Django), from PyPI.
pub fn dev_servers_python() -> Option<PathBuf> {
    python_venv(
        "venv-dev-servers",
        &["flask==3.1.3", "uvicorn==0.55.0", "django==5.2.19"],
        "import flask, uvicorn, django",
    )
}

/// Python with grpcio, for the gRPC server and client in tests/fixtures/grpc. The pin is in
/// that folder's requirements.txt, which bench/run.sh installs too.
pub fn grpc_python() -> Option<PathBuf> {
    let pins: Vec<&str> = include_str!("../fixtures/grpc/requirements.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    python_venv("venv-grpc", &pins, "import grpc")
}

/// A virtual environment in the test cache with `packages` installed, made once: under a
/// lock, since tests run as parallel processes. None when venv or pip fails.
fn python_venv(name: &str, packages: &[&str], check: &str) -> Option<PathBuf> {
    use fs4::fs_std::FileExt;
    let venv = test_cache().join(name);
    let python = venv.join("bin/python");
    let works = |p: &Path| {
        Command::new(p)
            .args(["-c", check])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    std::fs::create_dir_all(test_cache()).ok()?;
    let lock = std::fs::File::create(test_cache().join(format!("{name}.lock"))).ok()?;
    FileExt::lock_exclusive(&lock).ok()?;
    if works(&python) {
        return Some(python);
    }
    let _ = std::fs::remove_dir_all(&venv);
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(venv.join("bin/pip"))
            .args(["install", "-q"])
            .args(packages)
            .status()
            .is_ok_and(|s| s.success());
    (made && works(&python)).then_some(python)
}

/// A project folder for `portok run` tests: a version file the app reads at start.
pub fn project(p: &Portok) -> PathBuf {
    let dir = p.dir.path().join("project");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("version.txt"), "1").unwrap();
    dir.canonicalize().unwrap()
}

/// The app command: reads version.txt, fails like a broken build when `broken` exists.
pub fn app_script() -> String {
    format!(
        "if test -f broken; then echo 'error[E0308]: mismatched types' >&2; exit 101; fi; HELLO_VERSION=$(cat version.txt) exec {}",
        hello_bin().display()
    )
}

/// The routes.json entry for `host`, if any.
pub fn route_of(p: &Portok, host: &str) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(p.routes_json()).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.as_array()?
        .iter()
        .find(|r| r["hostname"] == host)
        .cloned()
}

/// GET on the daemon's own host (portok.localhost), with optional method and token.
pub async fn admin(p: &Portok, method: &str, path: &str, token: Option<&str>) -> Reply {
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "portok.localhost");
    if let Some(t) = token {
        b = b.header("x-portok-token", t);
    }
    request(p.addr(), b.body(Full::new(Bytes::new())).unwrap()).await
}

/// Run a command with a deadline: killed (and its output so far returned) when it overruns.
pub fn output_within(mut cmd: Command, limit: Duration) -> Output {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning command");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// The Chromium binary, if installed.
pub fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })
}

/// Whether this run is CI's (`CI` set): there a missing tool is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// A tool a test needs is missing: outside CI the test says SKIPPED and returns; in CI it
/// fails, naming what to install.
pub fn missing(what: &str, install: &str) {
    assert!(!in_ci(), "{what} is missing in CI: {install}");
    eprintln!("SKIPPED: {what} is missing ({install})");
}

/// An NSS database under `home/.pki/nssdb` that trusts `ca_pem` for TLS servers, as
/// `portok trust` sets up for Chromium; false when `certutil` (libnss3-tools) is missing.
pub fn nssdb_trusting(home: &Path, ca_pem: &Path) -> bool {
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).unwrap();
    let db_arg = format!("sql:{}", db.display());
    let run = |args: &[&str]| {
        Command::new("certutil")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    };
    let Ok(status) = run(&["-N", "-d", &db_arg, "--empty-password"]) else {
        return false;
    };
    assert!(status.success(), "certutil -N failed");
    let ca = ca_pem.to_str().unwrap();
    let status = run(&[
        "-A",
        "-d",
        &db_arg,
        "-n",
        "portok test CA",
        "-t",
        "C,,",
        "-i",
        ca,
    ])
    .unwrap();
    assert!(status.success(), "certutil -A failed");
    true
}

/// An npm project from `tests/fixtures/NAME` with its packages installed (`npm ci`), in a
/// cache folder kept between runs and keyed by the lock file, so the registry is asked once.
/// The fixture's own files are copied in afresh each time this is called (a copy's
/// caller leaves them alone). None when npm is missing.
pub fn npm_fixture(name: &str) -> Option<PathBuf> {
    npm_fixture_as(name, None)
}

/// [`npm_fixture`], in a folder of its own named `copy`, for a test that edits files while
/// another test runs the same fixture. Its node_modules are hard links to the first's.
pub fn npm_fixture_as(name: &str, copy: Option<&str>) -> Option<PathBuf> {
    use fs4::fs_std::FileExt;
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let lock = std::fs::read(src.join("package-lock.json")).expect("the fixture's lock file");
    let key = lock.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    let base = test_cache().join(format!("npm-{name}-{key:016x}"));
    std::fs::create_dir_all(&base).unwrap();
    // Tests run as parallel processes: one installs, the others wait.
    let guard = std::fs::File::create(base.with_extension("lock")).unwrap();
    FileExt::lock_exclusive(&guard).unwrap();
    let installed = base.join("node_modules/.package-lock.json").exists();
    // A test with a copy leaves the base's sources alone once installed: rewriting them
    // reverted another test's edit under its running dev server (two CI failures).
    if copy.is_none() || !installed {
        copy_tree(&src, &base);
    }
    if !installed {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&base)
            .stdin(Stdio::null())
            .status();
        match status {
            Err(_) => return None,
            Ok(s) => assert!(s.success(), "npm ci in {} failed", base.display()),
        }
    }
    let Some(copy) = copy else {
        return Some(base);
    };
    let dir = test_cache().join(format!("npm-{name}-{key:016x}-{copy}"));
    if !dir.join("node_modules/.package-lock.json").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let linked = Command::new("cp")
            .arg("-al")
            .arg(base.join("node_modules"))
            .arg(dir.join("node_modules"))
            .status()
            .unwrap();
        assert!(linked.success(), "cp -al into {}", dir.display());
        // The dev server's own caches stay each copy's own.
        let _ = std::fs::remove_dir_all(dir.join("node_modules/.vite"));
        let _ = std::fs::remove_dir_all(dir.join("node_modules/.cache"));
    }
    copy_tree(&src, &dir);
    Some(dir)
}

/// The folder with pnpm's command, installed from the npm registry into the test cache
/// once (under a lock). None when npm is missing.
pub fn pnpm_bin() -> Option<PathBuf> {
    use fs4::fs_std::FileExt;
    const VERSION: &str = "10.34.8";
    let prefix = test_cache().join(format!("pnpm-{VERSION}"));
    let bin = prefix.join("node_modules/.bin");
    std::fs::create_dir_all(test_cache()).ok()?;
    let guard = std::fs::File::create(prefix.with_extension("lock")).ok()?;
    FileExt::lock_exclusive(&guard).ok()?;
    if !bin.join("pnpm").exists() {
        let status = Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--prefix",
            ])
            .arg(&prefix)
            .arg(format!("pnpm@{VERSION}"))
            .stdin(Stdio::null())
            .status()
            .ok()?;
        assert!(status.success(), "npm install pnpm@{VERSION} failed");
    }
    Some(bin)
}

/// PATH with `dir` in front, as after installing a tool there.
pub fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Whether something listens on 127.0.0.1:`port` (from /proc/net/tcp).
pub fn listens_on_loopback(port: u16) -> bool {
    let listeners = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let loopback = format!("0100007F:{port:04X}");
    listeners
        .lines()
        .any(|l| l.contains(&loopback) && l.split_whitespace().nth(3) == Some("0A"))
}

/// Where tests keep what is slow to fetch or build between runs (npm packages, the axum
/// fixture's build): `PORTOK_TEST_CACHE`, else the user's cache folder.
pub fn test_cache() -> PathBuf {
    std::env::var_os("PORTOK_TEST_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("portok-tests"))
        })
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/portok-tests")))
        .expect("a cache folder: set PORTOK_TEST_CACHE")
}

/// A fresh copy of the fixture `tests/fixtures/NAME` in `to`.
pub fn fixture_copy(name: &str, to: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let dir = to.join(name);
    copy_tree(&src, &dir);
    dir
}

/// Copy the files under `from` into `to`, folders and all, over what is there.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Flags for a quiet headless Chromium on a closed network.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

/// A headless Chromium driven over the DevTools protocol (a WebSocket), for tests that
/// need a real browser to run a page's scripts over time.
pub struct Browser {
    child: std::process::Child,
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    next_id: u64,
}

impl Browser {
    /// Open `url` in a fresh headless Chromium; None when Chromium is not installed.
    pub async fn open(profile: &Path, url: &str) -> Option<Browser> {
        Browser::open_with_home(profile, None, url).await
    }

    /// [`Browser::open`] with HOME set, so Chromium reads `HOME/.pki/nssdb` (the CA it
    /// trusts; see [`nssdb_trusting`]).
    pub async fn open_with_home(profile: &Path, home: Option<&Path>, url: &str) -> Option<Browser> {
        use std::io::BufRead;
        let chromium = chromium()?;
        let mut command = Command::new(chromium);
        if let Some(home) = home {
            command.env("HOME", home);
        }
        let mut child = command
            .args(CHROMIUM_FLAGS)
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let browser_ws = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium's DevTools URL");
        let port: u16 = browser_ws
            .trim_start_matches("ws://127.0.0.1:")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let devtools = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let target = request(
            devtools,
            Request::put(format!("/json/new?{url}"))
                .header("host", format!("127.0.0.1:{port}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
        let info: serde_json::Value = serde_json::from_slice(&target.body).expect("target JSON");
        let page_ws = info["webSocketDebuggerUrl"]
            .as_str()
            .expect("page websocket")
            .to_string();
        let stream = TcpStream::connect(devtools).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(page_ws, stream)
            .await
            .unwrap();
        Some(Browser {
            child,
            ws,
            next_id: 0,
        })
    }

    /// Evaluate a JavaScript expression in the page; its value as JSON (null on errors).
    pub async fn eval(&mut self, expr: &str) -> serde_json::Value {
        let params = serde_json::json!({"expression": expr, "returnByValue": true});
        self.call("Runtime.evaluate", params).await["result"]["value"].clone()
    }

    /// Load `url` in the page and wait until it has loaded.
    pub async fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", serde_json::json!({"url": url}))
            .await;
        self.wait_until(
            "document.readyState",
            Duration::from_secs(30),
            "the page to load",
            |v| v == "complete",
        )
        .await;
    }

    /// A PNG of the page as it is shown, `width` pixels wide.
    pub async fn screenshot(&mut self, width: u32, height: u32) -> Vec<u8> {
        use base64::Engine as _;
        let metrics = serde_json::json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false});
        self.call("Emulation.setDeviceMetricsOverride", metrics)
            .await;
        let shot = self
            .call(
                "Page.captureScreenshot",
                serde_json::json!({"format": "png"}),
            )
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or(""))
            .expect("a base64 screenshot")
    }

    /// One DevTools call; its result.
    pub async fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use futures_util::{SinkExt, StreamExt};
        self.next_id += 1;
        let id = self.next_id;
        let msg = serde_json::json!({"id": id, "method": method, "params": params});
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::text(
                msg.to_string(),
            ))
            .await
            .unwrap();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("devtools answer")
                .unwrap()
                .unwrap();
            let Ok(text) = frame.into_text() else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if v["id"] == id {
                return v["result"].clone();
            }
        }
    }

    /// Poll `expr` until `ok` accepts its value, or panic after `limit`.
    pub async fn wait_until(
        &mut self,
        expr: &str,
        limit: Duration,
        what: &str,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) {
        let start = Instant::now();
        loop {
            let v = self.eval(expr).await;
            if ok(&v) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "browser: timed out waiting for {what}; last value: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Like [`get`], but None instead of a panic when the connection fails.
pub async fn try_get(addr: SocketAddr, host: &str, path: &str) -> Option<Reply> {
    let fut = async {
        let stream = TcpStream::connect(addr).await.ok()?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .ok()?;
        let resp = send.send_request(req).await.ok()?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.ok()?.to_bytes();
        Some(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .ok()
        .flatten()
}

/// Send one request and return the response with its body still streaming (SSE, large
/// downloads); the headers must come within 30 s.
pub async fn open_stream(addr: SocketAddr, req: Request<Full<Bytes>>) -> Response<Incoming> {
    let fut = async {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.expect("request")
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("response headers timed out")
}

/// Clients sending GET / over keep-alive connections as fast as answers come, until
/// stopped. Counts 200s (by instance, x-hello-pid, for the hello app) and keeps every other
/// answer and error as a failure.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    by_pid: Arc<Mutex<HashMap<String, usize>>>,
    failures: Arc<Mutex<Vec<String>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: SocketAddr, host: &'static str, clients: usize) -> Load {
        let load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            ok: Arc::new(AtomicUsize::new(0)),
            by_pid: Arc::default(),
            failures: Arc::default(),
            clients: Vec::new(),
        };
        let mut handles = Vec::new();
        for _ in 0..clients {
            let (stop, ok, by_pid, failures) = (
                load.stop.clone(),
                load.ok.clone(),
                load.by_pid.clone(),
                load.failures.clone(),
            );
            handles.push(tokio::spawn(async move {
                let mut sender = None;
                while !stop.load(Ordering::Relaxed) {
                    if sender.is_none() {
                        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
                        let (send, conn) =
                            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
                                .await
                                .unwrap();
                        tokio::spawn(conn);
                        sender = Some(send);
                    }
                    let send = sender.as_mut().unwrap();
                    if send.ready().await.is_err() {
                        sender = None;
                        continue;
                    }
                    let req = hyper::Request::get("/")
                        .header("host", host)
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    let sent = tokio::time::timeout(Duration::from_secs(20), async {
                        let resp = send.send_request(req).await?;
                        let status = resp.status().as_u16();
                        let pid = resp
                            .headers()
                            .get("x-hello-pid")
                            .map(|v| v.to_str().unwrap_or("").to_string());
                        let body = resp.into_body().collect().await?.to_bytes();
                        Ok::<_, hyper::Error>((status, pid, body))
                    })
                    .await;
                    match sent {
                        // Any app's answer counts; the hello app's also names its instance.
                        Ok(Ok((200, pid, _))) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if let Some(pid) = pid {
                                *by_pid.lock().unwrap().entry(pid).or_default() += 1;
                            }
                        }
                        Ok(Ok((status, _, body))) => failures.lock().unwrap().push(format!(
                            "status {status}: {}",
                            String::from_utf8_lossy(&body)
                        )),
                        Ok(Err(e)) => failures.lock().unwrap().push(format!("error {e}")),
                        Err(_) => failures.lock().unwrap().push("timed out".into()),
                    }
                }
            }));
        }
        Load {
            clients: handles,
            ..load
        }
    }

    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    pub async fn stop(self) -> (usize, HashMap<String, usize>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.clients {
            tokio::time::timeout(Duration::from_secs(30), c)
                .await
                .expect("load client stops")
                .unwrap();
        }
        let by_pid = self.by_pid.lock().unwrap().clone();
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), by_pid, failures)
    }
}
