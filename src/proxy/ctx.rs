//! The proxy's shared vocabulary: [`Ctx`] (everything a connection task needs: the route
//! table, limits, TLS, the daemon's pages), [`Limits`], [`ConnInfo`] and [`ConnError`], and
//! the turns that bound how many exchanges open app connections at once. A leaf of the
//! proxy folder as far as the request path goes: the files on that path import it, it
//! imports none of them but the body type its daemon pages return and the TCP routes it
//! holds ([`super::tcp`] imports it back: a TCP relay picks its instance through `Ctx`).

use super::body::ProxyBody;
pub use super::conn_info::ConnInfo;
use super::streams;
use crate::metrics::Metrics;
use crate::routes::{Backend, RouteTable};
use crate::state::StateDir;
use crate::sync::LockExt as _;
use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioTimer;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Limits and deadlines. Defaults are nginx/Caddy-like; `proxy start` may change them, by
/// the flags of [`LIMIT_FLAGS`].
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// One deadline for sniffing the first byte, the ClientHello and the TLS handshake.
    pub handshake: Duration,
    /// Request headers must arrive within this from their first byte (slowloris).
    pub header_read: Duration,
    /// An HTTP keep-alive connection with no request in progress is closed after this.
    pub idle: Duration,
    /// Upstream connect timeout.
    pub connect: Duration,
    /// Largest request head; larger gets 431.
    pub max_header_bytes: usize,
    /// Open client connections at most; more are closed at once.
    pub max_connections: usize,
    /// Requests worked on at once at most; more wait their turn (0: no limit).
    pub max_inflight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(75),
            connect: Duration::from_secs(5),
            max_header_bytes: 64 * 1024,
            max_connections: 4096,
            max_inflight: 256,
        }
    }
}

/// One limit as a flag of `portok proxy start` (and of the daemon it starts).
pub struct LimitFlag {
    /// The long flag, without `--`.
    pub flag: &'static str,
    pub value_name: &'static str,
    pub help: &'static str,
    /// The limit as the flag writes it.
    pub get: fn(&Limits) -> String,
    /// Set the limit from the flag's text (raised to its least sensible value).
    pub set: fn(&mut Limits, &str) -> Result<(), String>,
}

/// Every limit's flag, once: the command line is built from this table, and the daemon is
/// handed the ones that differ from [`Limits::default`].
pub const LIMIT_FLAGS: [LimitFlag; 7] = [
    LimitFlag {
        flag: "handshake-timeout",
        value_name: "SECS",
        help: "Close a connection that has not sent its first byte and finished the TLS handshake within this many seconds",
        get: |l| secs(l.handshake),
        set: |l, v| {
            l.handshake = parse_secs(v)?;
            Ok(())
        },
    },
    LimitFlag {
        flag: "header-timeout",
        value_name: "SECS",
        help: "A request head (request line + headers) must be complete within this many seconds of its first byte (slowloris)",
        get: |l| secs(l.header_read),
        set: |l, v| {
            l.header_read = parse_secs(v)?;
            Ok(())
        },
    },
    LimitFlag {
        flag: "idle-timeout",
        value_name: "SECS",
        help: "Close a keep-alive connection that has had no request in progress for this many seconds",
        get: |l| secs(l.idle),
        set: |l, v| {
            l.idle = parse_secs(v)?;
            Ok(())
        },
    },
    LimitFlag {
        flag: "max-header-bytes",
        value_name: "BYTES",
        help: "Largest request head (request line + headers) accepted; larger gets 431",
        get: |l| l.max_header_bytes.to_string(),
        set: |l, v| {
            l.max_header_bytes = parse_count(v)?.max(8192);
            Ok(())
        },
    },
    LimitFlag {
        flag: "connect-timeout",
        value_name: "SECS",
        help: "Upstream connect timeout (then 502)",
        get: |l| secs(l.connect),
        set: |l, v| {
            l.connect = parse_secs(v)?;
            Ok(())
        },
    },
    LimitFlag {
        flag: "max-connections",
        value_name: "N",
        help: "Open client connections at most; more are refused (closed at once)",
        get: |l| l.max_connections.to_string(),
        set: |l, v| {
            l.max_connections = parse_count(v)?.max(1);
            Ok(())
        },
    },
    LimitFlag {
        flag: "max-inflight",
        value_name: "N",
        help: "Requests opening app connections worked on at once at most, across all apps; more wait their turn (a turn ends with the response head or after 1 s). Bounds memory under a burst; a request without a body over a kept connection takes none; 0: no limit",
        get: |l| l.max_inflight.to_string(),
        set: |l, v| {
            l.max_inflight = parse_count(v)?;
            Ok(())
        },
    },
];

fn secs(d: Duration) -> String {
    d.as_secs_f64().to_string()
}

/// Seconds, fractions allowed; at least 0.1 (a deadline of 0 would refuse everything).
fn parse_secs(v: &str) -> Result<Duration, String> {
    match v.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(Duration::from_secs_f64(s.max(0.1))),
        _ => Err(format!("{v:?} is not a number of seconds (e.g. 30 or 2.5)")),
    }
}

fn parse_count(v: &str) -> Result<usize, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a whole number"))
}

/// What the daemon serves itself through the proxy: the dashboard and admin API on
/// [`crate::names::ADMIN_HOST`], and an app's live-reload event stream. The daemon hands it
/// over once it has built its state around [`Ctx`], so the proxy needs nothing from the
/// layers above it.
pub trait DaemonPages: Send + Sync {
    fn admin(
        &self,
        req: http::Request<hyper::body::Incoming>,
        conn: ConnInfo,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = http::Response<ProxyBody>> + Send + '_>>;

    fn app_events(&self, host: &str) -> http::Response<ProxyBody>;

    /// How the daemon writes route URLs (no port once `portok ports enable` works).
    fn url_base(&self) -> crate::names::UrlBase;

    /// A request or connection arrived for the idle lazy app `host`: have it started.
    fn wake(&self, host: &str);
}

/// Everything a connection task needs. Shared by all connections; the route table is
/// swapped as a whole so the hot path reads it without a lock.
pub struct Ctx {
    pub routes: ArcSwap<RouteTable>,
    /// Fires after every table swap; requests held for a starting app wait on it.
    pub changed: tokio::sync::Notify,
    /// Backends that left the table but may still have requests or tunnels in flight;
    /// drain asks about them. Pruned when they are idle and unreferenced.
    pub(super) retired: Mutex<Vec<Arc<Backend>>>,
    /// Why a crashed app crashed (exit status, output tail), sent by its `portok run`.
    /// Read only when rendering the crash page.
    pub crashes: Mutex<HashMap<String, CrashInfo>>,
    pub metrics: Arc<Metrics>,
    /// `proxy start --no-metrics` turns per-request counting off (to measure its cost).
    pub metrics_enabled: bool,
    /// Requests the inspector keeps per route (0: the inspector is off, `--no-inspect`).
    pub inspect_capacity: usize,
    /// Suffixes served besides .localhost (`--tld`): a LAN client's `api.local` is `api.test`.
    pub tlds: Vec<String>,
    pub state: StateDir,
    /// TCP routes' listeners and counters.
    pub tcp: crate::proxy::tcp::TcpRoutes,
    /// The port browsers use to reach us, for links on pages and X-Forwarded-Port.
    pub port: u16,
    pub limits: Limits,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// One permit per open client connection (`--max-connections`).
    pub conn_permits: Arc<tokio::sync::Semaphore>,
    /// `proxy start --redirect-https`: browsers' plain-HTTP navigations get a 308.
    pub redirect_https: bool,
    /// Turns for exchanges that open app connections (`--max-inflight`), see [`Ctx::in_turn`].
    pub(super) turns: Option<tokio::sync::Semaphore>,
    /// Plain HTTP/1.1 requests take the [`fast`] path (off with `PORTOK_NO_FAST_PATH=1`).
    pub(super) fast_path: bool,
    /// The daemon's own pages; without them (a bare proxy) its host is an unknown one.
    /// Set once, after the daemon has built its state around this context.
    pub pages: std::sync::OnceLock<Arc<dyn DaemonPages>>,
    /// Fires when the daemon stops: the listeners close, and each connection ends after
    /// the requests it has in progress ([`Ctx::drain_all`] waits for them).
    pub stopping: CancellationToken,
    pub(super) h1: http1::Builder,
}

impl Ctx {
    pub fn new(
        state: StateDir,
        port: u16,
        limits: Limits,
        tls: Option<Arc<rustls::ServerConfig>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            // hyper would start this timer as soon as it waits for the next request, which
            // closes idle keep-alive connections at the header deadline too; [`conn::ConnWatch`]
            // keeps the two apart instead.
            .header_read_timeout(None)
            // A longer request head gets 431 however it was split into reads...
            .max_header_size(limits.max_header_bytes)
            // ...and the read buffer does not grow past it while a head is incomplete.
            .max_buf_size(limits.max_header_bytes)
            .keep_alive(true);
        Ctx {
            routes: ArcSwap::from_pointee(RouteTable::default()),
            changed: tokio::sync::Notify::new(),
            retired: Mutex::new(Vec::new()),
            crashes: Mutex::new(HashMap::new()),
            metrics,
            metrics_enabled: true,
            inspect_capacity: crate::inspect::DEFAULT_CAPACITY,
            tlds: Vec::new(),
            state,
            tcp: Default::default(),
            port,
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            conn_permits: Arc::new(tokio::sync::Semaphore::new(limits.max_connections)),
            redirect_https: false,
            turns: (limits.max_inflight > 0).then(|| {
                tokio::sync::Semaphore::new(
                    limits.max_inflight.min(tokio::sync::Semaphore::MAX_PERMITS),
                )
            }),
            limits,
            fast_path: std::env::var_os("PORTOK_NO_FAST_PATH").is_none(),
            pages: std::sync::OnceLock::new(),
            stopping: CancellationToken::new(),
            h1,
        }
    }

    /// The h2 server for one connection: its streams run in the connection's task (see
    /// [`streams`]), so each connection needs an executor of its own.
    pub(super) fn h2(&self, exec: streams::LocalStreams) -> http2::Builder<streams::LocalStreams> {
        let mut h2 = http2::Builder::new(exec);
        // No h2 pings: a client that is gone is dropped by TCP's (`conn::drop_when_gone`).
        h2.timer(TokioTimer::new())
            .max_header_list_size(self.limits.max_header_bytes as u32)
            .enable_connect_protocol()
            .max_concurrent_streams(250)
            .max_pending_accept_reset_streams(50)
            .max_local_error_reset_streams(256);
        h2
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CrashInfo {
    pub message: String,
    pub tail: Vec<String>,
}

impl Ctx {
    /// Have the idle lazy app `host` started (the daemon asks its `portok run`).
    pub fn wake(&self, host: &str) {
        if let Some(pages) = self.pages.get() {
            pages.wake(host);
        }
    }

    /// Swap in a new table, remember the backends it dropped, and wake held requests.
    pub fn install(&self, table: RouteTable) {
        // A route that is no longer crashed no longer needs its crash report.
        {
            let mut crashes = self.crashes.locked();
            crashes.retain(|host, _| table.lookup(host).is_some_and(|l| l.route.is_crashed()));
        }
        if self.inspect_capacity > 0 {
            for live in table.sorted().iter().filter(|l| l.route.inspect_bodies) {
                let ring = live.stats.inspect.get_or_init(self.inspect_capacity);
                ring.bodies
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let old = self.routes.swap(Arc::new(table));
        let new = self.routes.load();
        let mut retired = self.retired.locked();
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

    /// Wait until nothing is in flight to `port` (live or retired instances) or `deadline`
    /// passes; what is still in flight then.
    pub async fn drained(&self, port: u16, deadline: tokio::time::Instant) -> usize {
        let mut on_port = self.every_backend();
        on_port.retain(|b| b.port == port);
        // A retired instance gets no new requests, so each reaching zero in turn is all of
        // them at zero.
        for b in &on_port {
            b.drained(deadline).await;
        }
        self.inflight(port)
    }

    /// Wait until no request is in flight to any app or `deadline` passes (the daemon is
    /// stopping); how many were still in flight then. Tunnels (WebSockets) are not waited
    /// for: they last as long as their page.
    pub async fn drain_all(&self, deadline: tokio::time::Instant) -> usize {
        use std::sync::atomic::Ordering::SeqCst;
        loop {
            let backends = self.every_backend();
            let left: usize = backends
                .iter()
                .map(|b| {
                    let tunnels = b.tunnels.load(SeqCst);
                    b.inflight.load(SeqCst).saturating_sub(tunnels)
                })
                .sum();
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return left;
            }
            // Look again shortly: a connection may still start a request as it closes, and
            // an instance with a tunnel open never reaches zero.
            let soon = deadline.min(tokio::time::Instant::now() + Duration::from_millis(100));
            for b in &backends {
                b.drained(soon).await;
            }
        }
    }

    /// Requests and tunnels in flight to `port`, live or retired.
    pub fn inflight(&self, port: u16) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        self.every_backend()
            .iter()
            .filter(|b| b.port == port)
            .map(|b| b.inflight.load(Relaxed))
            .sum()
    }

    /// Every instance that may have requests in flight: those in the route table and the
    /// retired ones still draining.
    fn every_backend(&self) -> Vec<Arc<Backend>> {
        let mut all: Vec<Arc<Backend>> = self.routes.load().backends().cloned().collect();
        all.extend(self.retired.locked().iter().cloned());
        all
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

/// How long an exchange keeps its turn (see [`Ctx::in_turn`]).
const TURN: Duration = Duration::from_secs(1);

impl Ctx {
    /// Run an exchange with `backend` in its turn. At most `--max-inflight` exchanges that
    /// open app connections (across all apps) are worked on at once; the others wait in
    /// line, on the client's connection, without an upstream connection of their own. Each
    /// of hyper's upstream connections costs some 30 KiB, and every new one a socket, so a
    /// burst of thousands of requests would otherwise mean thousands of them. A bodiless
    /// request that finds a kept app connection takes no turn (see `handler::send_raw`), as
    /// plain HTTP/1.1 on the fast path never did: a turn costs a timer.
    ///
    /// An exchange gives its turn up when its response head is ready or after [`TURN`],
    /// whichever is first, so long polls, slow apps and an app calling another through
    /// portok never hold the line up for more than that. While it waits it counts as in
    /// flight to `backend`, which was picked before: a switch drains it like a request.
    pub async fn in_turn<F: std::future::Future>(
        &self,
        backend: &Arc<crate::routes::Backend>,
        exchange: F,
    ) -> F::Output {
        let Some(turns) = &self.turns else {
            return exchange.await;
        };
        let waiting = backend.hold();
        let turn = turns.acquire().await.ok();
        tokio::pin!(exchange);
        // The exchange counts itself in flight when it starts: the wait's count ends there.
        let started = std::future::poll_fn(|cx| match exchange.as_mut().poll(cx) {
            std::task::Poll::Ready(out) => std::task::Poll::Ready(Some(out)),
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        })
        .await;
        drop(waiting);
        if let Some(out) = started {
            return out;
        }
        let Some(turn) = turn else {
            return exchange.await;
        };
        tokio::select! {
            biased;
            r = &mut exchange => r,
            _ = tokio::time::sleep(TURN) => {
                drop(turn);
                exchange.await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// A request waiting for its turn was sent to an instance picked before the wait, so it
    /// counts as in flight there (a switch's drain waits for it) until its exchange starts
    /// and counts itself.
    #[tokio::test]
    async fn waiting_for_a_turn_counts_as_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_inflight: 1,
            ..Limits::default()
        };
        let ctx = Arc::new(Ctx::new(
            crate::state::StateDir::at(dir.path().to_path_buf()),
            0,
            limits,
            None,
            Arc::new(crate::metrics::Metrics::default()),
        ));
        let b = Arc::new(crate::routes::Backend::new(1, 1));
        let inflight = |b: &crate::routes::Backend| b.inflight.load(Ordering::SeqCst);
        let wait = |b: Arc<crate::routes::Backend>, n: usize| async move {
            tokio::time::timeout(Duration::from_secs(5), async {
                while b.inflight.load(Ordering::SeqCst) != n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("in flight never became {n}"));
        };
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let first = tokio::spawn({
            let (ctx, b) = (ctx.clone(), b.clone());
            async move {
                let exchange = async {
                    let _counted = b.enter();
                    let _ = held.await;
                };
                ctx.in_turn(&b, exchange).await
            }
        });
        wait(b.clone(), 1).await;
        let second = tokio::spawn({
            let (ctx, b) = (ctx.clone(), b.clone());
            async move {
                let exchange = async {
                    let _counted = b.enter();
                };
                ctx.in_turn(&b, exchange).await
            }
        });
        // The second waits for the turn the first holds, and counts meanwhile.
        wait(b.clone(), 2).await;
        release.send(()).unwrap();
        first.await.unwrap();
        second.await.unwrap();
        assert_eq!(inflight(&b), 0, "a count outlived its request");
        assert_eq!(
            b.requests.load(Ordering::SeqCst),
            2,
            "waiting counted a request"
        );
    }
}
