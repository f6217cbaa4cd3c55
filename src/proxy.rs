//! The proxy: accept loops on the daemon's listeners, one task per connection, TLS or
//! plain decided by the first byte, then hyper (HTTP/1.1 + HTTP/2, upgrades on).

pub mod forward;
pub mod handler;
pub mod pages;
pub mod reload;
pub mod sniff;
pub mod tls;

use crate::metrics::Metrics;
use crate::routes::{store, Backend, RouteTable};
use crate::state::{pid_alive, StateDir};
use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Limits and deadlines. Defaults are nginx/Caddy-like; `proxy start` may change them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// One deadline for sniffing the first byte, the ClientHello and the TLS handshake.
    pub handshake: Duration,
    /// Request headers must arrive within this (slowloris).
    pub header_read: Duration,
    /// Upstream connect timeout.
    pub connect: Duration,
    /// Largest request head; larger gets 431.
    pub max_header_bytes: usize,
    /// Open client connections at most; more are closed at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(30),
            connect: Duration::from_secs(5),
            max_header_bytes: 64 * 1024,
            max_connections: 4096,
        }
    }
}

/// Everything a connection task needs. Shared by all connections; the route table is
/// swapped as a whole so the hot path reads it without a lock.
pub struct Ctx {
    pub routes: ArcSwap<RouteTable>,
    /// Fires after every table swap; requests held for a starting app wait on it.
    pub changed: tokio::sync::Notify,
    /// Backends that left the table but may still have requests or tunnels in flight;
    /// drain asks about them. Pruned when they are idle and unreferenced.
    retired: Mutex<Vec<Arc<Backend>>>,
    /// Why a crashed app crashed (exit status, output tail), sent by its `portok run`.
    /// Read only when rendering the crash page.
    pub crashes: Mutex<HashMap<String, CrashInfo>>,
    pub metrics: Arc<Metrics>,
    /// `proxy start --no-metrics` turns per-request counting off (to measure its cost).
    pub metrics_enabled: bool,
    pub state: StateDir,
    pub started: std::time::Instant,
    /// The dashboard's mutating endpoints need this token (admin.token in the state dir).
    pub admin_token: String,
    /// Failed token attempts per client, for rate limiting.
    pub admin_failures: Mutex<HashMap<std::net::IpAddr, (u32, std::time::Instant)>>,
    /// Redeploy/switch/route events for the dashboard and live reload (server-sent events).
    pub events: tokio::sync::broadcast::Sender<AppEvent>,
    pub listening: Mutex<Vec<String>>,
    /// The last failed redeploy per host, replayed to live-reload pages that connect
    /// while the failure stands; cleared by the next success.
    pub last_failure: Mutex<HashMap<String, AppEvent>>,
    /// TCP routes' listeners and counters.
    pub tcp: crate::tcp::TcpRoutes,
    pub client: forward::Client,
    /// The port browsers use to reach us, for links on pages and X-Forwarded-Port.
    pub port: u16,
    pub limits: Limits,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// One permit per open client connection (`--max-connections`).
    pub conn_permits: Arc<tokio::sync::Semaphore>,
    /// `proxy start --redirect-https`: browsers' plain-HTTP navigations get a 308.
    pub redirect_https: bool,
    http: auto::Builder<TokioExecutor>,
}

impl Ctx {
    pub fn new(
        state: StateDir,
        port: u16,
        limits: Limits,
        tls: Option<Arc<rustls::ServerConfig>>,
        metrics: Arc<Metrics>,
        admin_token: String,
    ) -> Self {
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read)
            // The read buffer bounds the request head: hyper answers 431 beyond it.
            .max_buf_size(limits.max_header_bytes)
            .keep_alive(true);
        http.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(limits.max_header_bytes as u32)
            // Pings keep idle h2 connections honest; a dead peer is dropped.
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20))
            .enable_connect_protocol()
            .max_concurrent_streams(250)
            .max_pending_accept_reset_streams(50)
            .max_local_error_reset_streams(256);
        Ctx {
            routes: ArcSwap::from_pointee(RouteTable::default()),
            changed: tokio::sync::Notify::new(),
            retired: Mutex::new(Vec::new()),
            crashes: Mutex::new(HashMap::new()),
            metrics,
            metrics_enabled: true,
            state,
            started: std::time::Instant::now(),
            admin_token,
            admin_failures: Mutex::new(HashMap::new()),
            events: tokio::sync::broadcast::channel(256).0,
            listening: Mutex::new(Vec::new()),
            last_failure: Mutex::new(HashMap::new()),
            tcp: Default::default(),
            client: forward::client(limits.connect),
            port,
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            conn_permits: Arc::new(tokio::sync::Semaphore::new(limits.max_connections)),
            redirect_https: false,
            limits,
            http,
        }
    }
}

/// Something that happened to an app, streamed to dashboards and live-reload scripts.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AppEvent {
    pub hostname: String,
    /// "redeployed", "failed", "rolled_back", "crashed", "switched", "routes".
    pub kind: String,
    #[serde(default)]
    pub generation: u64,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tail: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CrashInfo {
    pub message: String,
    pub tail: Vec<String>,
}

impl Ctx {
    /// Re-read routes.json and swap the table. A corrupt file keeps the current table.
    pub async fn reload(&self) {
        let state = self.state.clone();
        match tokio::task::spawn_blocking(move || store::load(&state)).await {
            Ok(Ok(routes)) => {
                let previous = self.routes.load_full();
                // Whatever prompted this reload, an app whose `portok run` died without
                // cleaning up (SIGKILL) is stopped here, so it does not outlive it.
                for live in previous.sorted() {
                    if live.route.pid != 0 && !pid_alive(live.route.pid) {
                        for &pgid in &live.route.pgids {
                            crate::run::child::stop_orphan_group(pgid);
                        }
                    }
                }
                let table = RouteTable::build(routes, Some(&previous), &self.metrics);
                // A route that is no longer crashed no longer needs its crash report.
                {
                    let mut crashes = self.crashes.lock().unwrap_or_else(|e| e.into_inner());
                    crashes
                        .retain(|host, _| table.lookup(host).is_some_and(|l| l.route.is_crashed()));
                }
                self.install(table);
            }
            Ok(Err(e)) => tracing::error!(error = %e, "keeping the current routes"),
            Err(e) => tracing::error!(error = %e, "route reload task failed"),
        }
    }

    /// Swap in a new table, remember the backends it dropped, and wake held requests.
    pub fn install(&self, table: RouteTable) {
        let old = self.routes.swap(Arc::new(table));
        let new = self.routes.load();
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        for b in old.backends() {
            if !new.backends().any(|n| Arc::ptr_eq(n, b)) {
                retired.push(b.clone());
            }
        }
        // Keep only backends something else still holds or that still have work.
        retired.retain(|b| {
            Arc::strong_count(b) > 1 || b.inflight.load(std::sync::atomic::Ordering::Relaxed) > 0
        });
        drop(retired);
        self.changed.notify_waiters();
    }

    /// The backend for a new TCP connection to `host`'s route, and whether to send a PROXY
    /// header; None when the route is gone or its app is not ready.
    /// `not`: an instance that just refused, for a retry on another one of its pool.
    pub fn pick_tcp_backend(
        &self,
        host: &str,
        not: Option<&Arc<Backend>>,
    ) -> Option<(Arc<Backend>, bool)> {
        let table = self.routes.load();
        let live = table.lookup(host).filter(|l| l.route.hostname == host)?;
        if live.route.is_starting() || live.route.is_crashed() {
            return None;
        }
        let backend = match not {
            None => live.pick(),
            Some(not) => live.pick_other(not)?,
        };
        Some((backend.clone(), live.route.proxy_protocol))
    }

    /// Requests and tunnels in flight to `port`, live or retired.
    pub fn inflight(&self, port: u16) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        let table = self.routes.load();
        let live: usize = table
            .backends()
            .filter(|b| b.port == port)
            .map(|b| b.inflight.load(Relaxed))
            .sum();
        let retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        live + retired
            .iter()
            .filter(|b| b.port == port)
            .map(|b| b.inflight.load(Relaxed))
            .sum::<usize>()
    }
}

/// Per-connection facts the handler needs.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// Accept on every listener until `shutdown` fires. Accept errors (EMFILE, aborted
/// handshakes) back off and continue: one bad moment never stops the listener.
pub async fn serve(listeners: Vec<TcpListener>, ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        tasks.spawn(accept_loop(listener, ctx.clone(), shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                // Over the cap: refuse this one cleanly (close it) instead of running out
                // of file descriptors for everyone.
                let Ok(permit) = ctx.conn_permits.clone().try_acquire_owned() else {
                    warn!(%peer, max = ctx.limits.max_connections, "connection limit reached; refusing");
                    drop(stream);
                    continue;
                };
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(e) = serve_conn(stream, peer, ctx).await {
                        debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, ?backoff, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{phase} timed out")]
    Timeout { phase: &'static str },
    #[error("{phase}: {source}")]
    Io {
        phase: &'static str,
        source: std::io::Error,
    },
    #[error("TLS client hello on a proxy without TLS")]
    TlsDisabled,
    #[error("cut off: too many cancelled requests")]
    ResetFlood,
    #[error("serving HTTP: {0}")]
    Http(Box<dyn std::error::Error + Send + Sync>),
}

/// Counts a client connection as open until dropped.
struct ConnGauge(Arc<Ctx>);

impl Drop for ConnGauge {
    fn drop(&mut self) {
        self.0
            .metrics
            .connections_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn serve_conn(stream: TcpStream, peer: SocketAddr, ctx: Arc<Ctx>) -> Result<(), ConnError> {
    use std::sync::atomic::Ordering::Relaxed;
    ctx.metrics.connections_open.fetch_add(1, Relaxed);
    ctx.metrics.connections_total.fetch_add(1, Relaxed);
    let _gauge = ConnGauge(ctx.clone());
    let _ = stream.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + ctx.limits.handshake;
    let kind = tokio::time::timeout_at(deadline, sniff::sniff(&stream))
        .await
        .map_err(|_| ConnError::Timeout {
            phase: "waiting for the first byte",
        })?
        .map_err(|source| ConnError::Io {
            phase: "sniff",
            source,
        })?;
    match kind {
        sniff::Kind::Closed => Ok(()),
        sniff::Kind::Plain => {
            let info = ConnInfo { peer, tls: false };
            serve_http(TokioIo::new(stream), info, ctx).await
        }
        sniff::Kind::Tls => {
            let acceptor = ctx.tls.clone().ok_or(ConnError::TlsDisabled)?;
            let tls = tokio::time::timeout_at(deadline, acceptor.accept(stream))
                .await
                .map_err(|_| ConnError::Timeout {
                    phase: "TLS handshake",
                })?
                .map_err(|source| ConnError::Io {
                    phase: "TLS handshake",
                    source,
                })?;
            let info = ConnInfo { peer, tls: true };
            serve_http(TokioIo::new(tls), info, ctx).await
        }
    }
}

async fn serve_http<I>(io: TokioIo<I>, info: ConnInfo, ctx: Arc<Ctx>) -> Result<(), ConnError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let resets = Arc::new(ResetMeter::default());
    let svc_ctx = ctx.clone();
    let svc_resets = resets.clone();
    let svc = service_fn(move |req| {
        let watch = CancelWatch {
            meter: svc_resets.clone(),
            done: false,
        };
        let fut = handler::handle(svc_ctx.clone(), req, info);
        async move {
            let mut watch = watch;
            let resp = fut.await;
            watch.done = true;
            resp
        }
    });
    let conn = ctx.http.serve_connection_with_upgrades(io, svc);
    tokio::select! {
        r = conn => r.map_err(ConnError::Http),
        _ = resets.flood.notified() => {
            warn!(peer = %info.peer, "client cancels requests in a flood (HTTP/2 rapid reset?); closing its connection");
            Err(ConnError::ResetFlood)
        }
    }
}

/// Cancelled requests per connection. An HTTP/2 client that opens and resets streams in a
/// flood (CVE-2023-44487, "rapid reset") makes the proxy start upstream work it never
/// finishes; past [`RESET_FLOOD`] cancellations in a second the connection is cut off.
/// Other connections are unaffected.
#[derive(Default)]
struct ResetMeter {
    window: std::sync::Mutex<(Option<std::time::Instant>, u32)>,
    flood: tokio::sync::Notify,
}

const RESET_FLOOD: u32 = 200;

impl ResetMeter {
    fn cancelled(&self) {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        match w.0 {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => w.1 += 1,
            _ => *w = (Some(now), 1),
        }
        if w.1 > RESET_FLOOD {
            self.flood.notify_one();
        }
    }
}

/// Dropped before the response was ready: the client cancelled the request.
struct CancelWatch {
    meter: Arc<ResetMeter>,
    done: bool,
}

impl Drop for CancelWatch {
    fn drop(&mut self) {
        if !self.done {
            self.meter.cancelled();
        }
    }
}
