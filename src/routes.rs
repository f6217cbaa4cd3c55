//! Routes: what routes.json holds, and the in-memory table the proxy matches hosts against.
//!
//! routes.json is the durable registry (see `store`); the daemon's [`RouteTable`] is the
//! live truth, swapped as a whole on every change so the hot path never takes a lock.

pub mod store;

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// One entry of routes.json. The first three fields are portless's format; the rest are
/// portok's and optional, so a portless-written file loads and ours stays readable to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub hostname: String,
    pub port: u16,
    /// Owner process; 0 for an alias, which never goes stale.
    pub pid: u32,
    /// An app's state (aliases have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RouteState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Unix time the route was (re)registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// Process groups of the app's generations, so the daemon can stop an app whose
    /// `portok run` was killed with SIGKILL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pgids: Vec<i32>,
    /// Seconds a non-browser request waits for a starting app before a 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<u64>,
    /// Live reload: inject the reload script into this app's HTML pages.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reload: bool,
    /// A TCP route: the daemon listens on this loopback port and relays to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<u16>,
    /// TCP routes: send a PROXY protocol v1 header first, so the app sees the client.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proxy_protocol: bool,
    /// An instance pool (`portok run --instances N`): every instance in rotation, `port`
    /// being the first. Empty for a single instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// How many instances the pool runs when all are up (`--instances N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<u32>,
    /// A lazy app (`--lazy`): the daemon asks its `portok run` to stop it after this many
    /// seconds with no request, and to start it again on the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_stop: Option<u64>,
    /// The inspector keeps this app's request and response bodies (`--inspect-bodies`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inspect_bodies: bool,
    /// Reachable from the LAN when the daemon listens there (`portok share NAME`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub share: bool,
    /// How portok speaks to the app: HTTP/1.1 (the default) or HTTP/2 with prior knowledge
    /// (`"h2"`: gRPC and other HTTP/2-only servers).
    #[serde(default, skip_serializing_if = "Upstream::is_http1")]
    pub upstream: Upstream,
    /// A container the daemon follows in the Docker engine (`kind: container`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
}

/// Which container a route serves, as `list` and the dashboard show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image: String,
    /// The Compose project, for a Compose service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

impl Container {
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }
}

/// The protocol portok speaks to an app.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Upstream {
    #[default]
    #[serde(rename = "http1")]
    Http1,
    /// HTTP/2 with prior knowledge (h2c on loopback).
    H2,
}

impl Upstream {
    pub fn is_http1(&self) -> bool {
        *self == Upstream::Http1
    }

    /// `--upstream` and portok.toml's `upstream`: "h2" or "http1".
    pub fn parse(s: &str) -> Option<Upstream> {
        match s {
            "h2" | "http2" | "h2c" => Some(Upstream::H2),
            "http1" | "h1" | "http/1.1" => Some(Upstream::Http1),
            _ => None,
        }
    }

    /// As `list` and `--upstream` write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Upstream::Http1 => "http1",
            Upstream::H2 => "h2",
        }
    }
}

/// Where an app is: written by its `portok run`, read by the proxy (hold, crash page),
/// `portok list` and the dashboard. In routes.json as the lower-case word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteState {
    /// No generation answers yet: requests are held, browsers get a starting page.
    Starting,
    Live,
    /// Kept for routes.json files of earlier versions, which wrote it.
    Restarting,
    /// The app exited and nothing serves: the crash page.
    Crashed,
    /// A lazy app that is not running: the first request starts it (and is held meanwhile).
    Idle,
    /// A state a newer portok wrote: the route still loads (as if live).
    #[serde(other)]
    Unknown,
}

impl RouteState {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteState::Starting => "starting",
            RouteState::Live => "live",
            RouteState::Restarting => "restarting",
            RouteState::Crashed => "crashed",
            RouteState::Idle => "idle",
            RouteState::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for RouteState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Route {
    pub fn alias(hostname: String, port: u16) -> Self {
        Route {
            hostname,
            port,
            pid: 0,
            state: None,
            generation: None,
            since: Some(unix_now()),
            pgids: Vec::new(),
            hold: None,
            reload: false,
            tcp: None,
            proxy_protocol: false,
            ports: Vec::new(),
            instances: None,
            idle_stop: None,
            inspect_bodies: false,
            share: false,
            upstream: Upstream::Http1,
            container: None,
        }
    }

    /// No generation answers yet (starting, or a lazy app not started): requests are held.
    pub fn is_starting(&self) -> bool {
        matches!(self.state, Some(RouteState::Starting | RouteState::Idle))
    }

    pub fn is_idle(&self) -> bool {
        self.state == Some(RouteState::Idle)
    }

    pub fn is_crashed(&self) -> bool {
        self.state == Some(RouteState::Crashed)
    }

    /// The ports requests go to: the pool's instances, or the one port.
    pub fn upstream_ports(&self) -> Vec<u16> {
        if self.ports.is_empty() {
            vec![self.port]
        } else {
            self.ports.clone()
        }
    }

    pub fn kind(&self) -> &'static str {
        match (&self.container, self.pid) {
            (Some(_), _) => "container",
            (None, 0) => "alias",
            (None, _) => "app",
        }
    }
}

pub use crate::sys::unix_now;

/// A live upstream: one port of one route. Counters are shared across table swaps for
/// the same (host, port), so in-flight counts survive a reload and drain can wait on them.
#[derive(Debug)]
pub struct Backend {
    pub port: u16,
    pub generation: u64,
    pub inflight: AtomicUsize,
    /// Of those, upgraded connections (WebSockets): long-lived by nature.
    pub tunnels: AtomicUsize,
    /// Someone waits for this instance to drain ([`Backend::drained`]): only then does the
    /// last request out wake them, so the hot path pays nothing otherwise.
    drain_watched: std::sync::atomic::AtomicBool,
    drained: tokio::sync::Notify,
    pub requests: AtomicU64,
    /// Until when (ms on [`clock_ms`]) a pool skips this instance: connecting to it was
    /// refused, so it died before its supervisor took it out of the route.
    down_until: AtomicU64,
    /// Idle keep-alive connections to this instance, for the HTTP/1 fast path. They close
    /// when the backend is dropped (its generation retired and drained).
    /// Each with when it went idle; the newest at the back.
    pub idle:
        std::sync::Mutex<std::collections::VecDeque<(tokio::net::TcpStream, std::time::Instant)>>,
    /// The proxy's HTTP/2 connections to this instance, of a type the proxy owns: kept
    /// here so they close when the instance has left the table and drained.
    pub h2_conns: std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>,
}

impl Backend {
    pub fn new(port: u16, generation: u64) -> Self {
        Backend {
            port,
            generation,
            inflight: AtomicUsize::new(0),
            tunnels: AtomicUsize::new(0),
            drain_watched: std::sync::atomic::AtomicBool::new(false),
            drained: tokio::sync::Notify::new(),
            requests: AtomicU64::new(0),
            down_until: AtomicU64::new(0),
            idle: std::sync::Mutex::new(std::collections::VecDeque::new()),
            h2_conns: std::sync::OnceLock::new(),
        }
    }

    /// Skip this instance for a second: it refused a connection. Its supervisor replaces
    /// the route within milliseconds, so this only covers that gap.
    pub fn mark_down(&self) {
        self.down_until
            .store(clock_ms() + DOWN_FOR_MS, Ordering::Relaxed);
    }

    fn is_down(&self, now_ms: u64) -> bool {
        self.down_until.load(Ordering::Relaxed) > now_ms
    }

    /// Count one request in flight until the guard drops (when the response body ends).
    pub fn enter(self: &Arc<Self>) -> InflightGuard {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.hold()
    }

    /// Wait until nothing is in flight here or `deadline` passes; what is still in flight.
    pub async fn drained(&self, deadline: tokio::time::Instant) -> usize {
        // SeqCst here and in the guard's drop: either the guard sees the flag, or this
        // sees the guard's decrement.
        self.drain_watched.store(true, Ordering::SeqCst);
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let n = self.inflight.load(Ordering::SeqCst);
            if n == 0 || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.inflight.load(Ordering::SeqCst);
            }
        }
    }

    /// Count as in flight without counting a request: one waiting for its turn to be sent
    /// here, so that a switch's drain does not stop this instance under it.
    pub fn hold(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(self.clone())
    }
}

const DOWN_FOR_MS: u64 = 1000;

/// Milliseconds on a monotonic clock that starts with the process.
fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// Decrements the backend's in-flight count on drop.
#[derive(Debug)]
pub struct InflightGuard(Arc<Backend>);

impl InflightGuard {
    /// The request became a tunnel (an upgrade): still in flight, and counted as a tunnel.
    pub fn into_tunnel(self) -> TunnelGuard {
        self.0.tunnels.fetch_add(1, Ordering::Relaxed);
        TunnelGuard(self)
    }
}

/// An [`InflightGuard`] of a tunnel.
#[derive(Debug)]
pub struct TunnelGuard(InflightGuard);

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.0 .0.tunnels.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        // A locked instruction either way on x86: SeqCst costs nothing more here.
        if self.0.inflight.fetch_sub(1, Ordering::SeqCst) == 1
            && self.0.drain_watched.load(Ordering::SeqCst)
        {
            self.0.drained.notify_waiters();
        }
    }
}

#[derive(Debug)]
pub struct LiveRoute {
    pub route: Route,
    /// One per instance in rotation; never empty.
    pub backends: Vec<Arc<Backend>>,
    /// Where the next tie-break starts, so equal loads are served in turn.
    next: AtomicUsize,
    /// The host's counters, shared across table swaps (see [`crate::metrics`]).
    pub stats: Arc<crate::metrics::RouteStats>,
}

impl LiveRoute {
    /// The backend for a new request or connection: the fewest in flight first, ties
    /// broken in turn (so even one client's sequential requests spread evenly), skipping
    /// instances that just refused a connection unless every one did.
    pub fn pick(&self) -> &Arc<Backend> {
        self.pick_except(None)
    }

    /// The same, never `not` (a retry after `not` refused the connection); None when no
    /// other instance is up.
    pub fn pick_other(&self, not: &Arc<Backend>) -> Option<&Arc<Backend>> {
        let b = self.pick_except(Some(not));
        (!Arc::ptr_eq(b, not) && !b.is_down(clock_ms())).then_some(b)
    }

    fn pick_except(&self, not: Option<&Arc<Backend>>) -> &Arc<Backend> {
        let n = self.backends.len();
        if n == 1 {
            return &self.backends[0];
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = clock_ms();
        let mut best: Option<(&Arc<Backend>, usize)> = None;
        for i in 0..n {
            let b = &self.backends[(start + i) % n];
            if b.is_down(now) || not.is_some_and(|x| Arc::ptr_eq(x, b)) {
                continue;
            }
            let load = b.inflight.load(Ordering::Relaxed);
            if best.is_none_or(|(_, l)| load < l) {
                best = Some((b, load));
            }
        }
        best.map(|(b, _)| b).unwrap_or(&self.backends[start])
    }
}

/// The immutable snapshot the proxy reads. Lookups borrow the caller's host string.
#[derive(Debug, Default)]
pub struct RouteTable {
    by_host: HashMap<String, LiveRoute>,
}

impl RouteTable {
    /// Build a table from routes, reusing backends (and their counters) from `previous`.
    pub fn build(
        routes: Vec<Route>,
        previous: Option<&RouteTable>,
        metrics: &crate::metrics::Metrics,
    ) -> Self {
        let mut by_host = HashMap::with_capacity(routes.len());
        for route in routes {
            let generation = route.generation.unwrap_or(0);
            let pool = !route.ports.is_empty();
            let old = previous.and_then(|p| p.by_host.get(&route.hostname));
            let backends = route
                .upstream_ports()
                .into_iter()
                .map(|port| {
                    // A pool's instances keep their counters across a rolling redeploy
                    // (the route's generation moves while an instance's port stays); a
                    // single app's backend is new with each generation.
                    old.and_then(|o| {
                        o.backends
                            .iter()
                            .find(|b| b.port == port && (pool || b.generation == generation))
                    })
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Backend::new(port, generation)))
                })
                .collect();
            let stats = metrics.route(&route.hostname);
            by_host.insert(
                route.hostname.clone(),
                LiveRoute {
                    route,
                    backends,
                    next: AtomicUsize::new(0),
                    stats,
                },
            );
        }
        RouteTable { by_host }
    }

    /// Exact host first, else the longest registered parent (`t1.shop.localhost` ->
    /// `shop.localhost`).
    pub fn lookup(&self, host: &str) -> Option<&LiveRoute> {
        if let Some(r) = self.by_host.get(host) {
            return Some(r);
        }
        let mut rest = host;
        while let Some(i) = rest.find('.') {
            rest = &rest[i + 1..];
            if let Some(r) = self.by_host.get(rest) {
                return Some(r);
            }
        }
        None
    }

    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.by_host.values().flat_map(|l| l.backends.iter())
    }

    pub fn len(&self) -> usize {
        self.by_host.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }

    /// Routes sorted by host name, for pages and status.
    /// Every route's host name, in order.
    pub fn hostnames(&self) -> Vec<String> {
        let live = self.sorted();
        live.iter().map(|l| l.route.hostname.clone()).collect()
    }

    pub fn sorted(&self) -> Vec<&LiveRoute> {
        let mut v: Vec<_> = self.by_host.values().collect();
        v.sort_by(|a, b| a.route.hostname.cmp(&b.route.hostname));
        v
    }
}

#[cfg(test)]
mod tests {

    /// Drain waits for the last request out, not for a timer, and gives up at its deadline
    /// with what is still in flight.
    #[tokio::test]
    async fn drained_wakes_when_the_last_request_ends_and_not_before() {
        use tokio::time::{Duration, Instant};
        let b = Arc::new(Backend::new(4000, 1));
        assert_eq!(b.drained(Instant::now()).await, 0);
        let (one, two) = (b.enter(), b.enter());
        let early = Instant::now() + Duration::from_millis(50);
        assert_eq!(b.drained(early).await, 2);
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.drained(Instant::now() + Duration::from_secs(30)).await }
        });
        drop(one);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "one request is still in flight");
        let t = std::time::Instant::now();
        drop(two);
        let left = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by the last request")
            .unwrap();
        assert_eq!(left, 0);
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    /// The states are words in routes.json: each reads back as itself, and a word a newer
    /// portok may write still loads (the file is never set aside for it).
    #[test]
    fn route_states_are_stable_words_and_unknown_ones_load() {
        for (state, word) in [
            (RouteState::Starting, "starting"),
            (RouteState::Live, "live"),
            (RouteState::Restarting, "restarting"),
            (RouteState::Crashed, "crashed"),
            (RouteState::Idle, "idle"),
        ] {
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{word}\"")
            );
            assert_eq!(state.as_str(), word);
            let back: RouteState = serde_json::from_str(&format!("\"{word}\"")).unwrap();
            assert_eq!(back, state);
        }
        let r: Route = serde_json::from_str(
            r#"{"hostname": "a.localhost", "port": 4000, "pid": 1, "state": "paused"}"#,
        )
        .unwrap();
        assert_eq!(r.state, Some(RouteState::Unknown));
    }

    use super::*;

    fn table(hosts: &[(&str, u16)]) -> RouteTable {
        RouteTable::build(
            hosts
                .iter()
                .map(|(h, p)| Route::alias(h.to_string(), *p))
                .collect(),
            None,
            &Default::default(),
        )
    }

    #[test]
    fn exact_then_longest_parent() {
        let t = table(&[("shop.localhost", 1), ("api.shop.localhost", 2)]);
        assert_eq!(t.lookup("shop.localhost").unwrap().route.port, 1);
        assert_eq!(t.lookup("api.shop.localhost").unwrap().route.port, 2);
        assert_eq!(t.lookup("t1.api.shop.localhost").unwrap().route.port, 2);
        assert_eq!(t.lookup("t1.shop.localhost").unwrap().route.port, 1);
        assert!(t.lookup("other.localhost").is_none());
        assert!(t.lookup("localhost").is_none());
        assert!(t.lookup("evilshop.localhost").is_none());
    }

    #[test]
    fn reload_keeps_counters_for_same_port() {
        let t1 = table(&[("a.localhost", 1)]);
        let b1 = t1.lookup("a.localhost").unwrap().backends[0].clone();
        let _g = b1.enter();
        let m = crate::metrics::Metrics::default();
        let t2 = RouteTable::build(vec![Route::alias("a.localhost".into(), 1)], Some(&t1), &m);
        assert_eq!(
            t2.lookup("a.localhost").unwrap().backends[0]
                .inflight
                .load(Ordering::Relaxed),
            1
        );
        let t3 = RouteTable::build(vec![Route::alias("a.localhost".into(), 2)], Some(&t2), &m);
        assert_eq!(
            t3.lookup("a.localhost").unwrap().backends[0]
                .inflight
                .load(Ordering::Relaxed),
            0
        );
    }

    fn pool(ports: &[u16]) -> RouteTable {
        let route = Route {
            ports: ports.to_vec(),
            ..Route::alias("p.localhost".into(), ports[0])
        };
        RouteTable::build(vec![route], None, &Default::default())
    }

    #[test]
    fn pool_spreads_ties_in_turn_and_prefers_the_least_loaded() {
        let t = pool(&[1, 2, 3]);
        let live = t.lookup("p.localhost").unwrap();
        let mut seen = [0; 4];
        for _ in 0..30 {
            seen[live.pick().port as usize] += 1;
        }
        assert_eq!(&seen[1..], &[10, 10, 10]);
        // Two requests held by port 1 and one by port 2: port 3 wins until it catches up.
        let b = |p: u16| live.backends.iter().find(|b| b.port == p).unwrap().clone();
        let _g = [b(1).enter(), b(1).enter(), b(2).enter()];
        assert_eq!(live.pick().port, 3);
        let _h = b(3).enter();
        assert_eq!(live.pick().port, 2);
    }

    #[test]
    fn pool_skips_an_instance_that_refused_and_keeps_counters_across_swaps() {
        let t = pool(&[1, 2]);
        let live = t.lookup("p.localhost").unwrap();
        live.backends[0].mark_down();
        assert!((0..10).all(|_| live.pick().port == 2));
        assert!(live.pick_other(&live.backends[1].clone()).is_none());
        let _g = live.backends[1].enter();
        let m = crate::metrics::Metrics::default();
        let next = Route {
            ports: vec![2, 3],
            generation: Some(2),
            ..Route::alias("p.localhost".into(), 2)
        };
        let t2 = RouteTable::build(vec![next], Some(&t), &m);
        let b2 = &t2.lookup("p.localhost").unwrap().backends[0];
        assert_eq!(b2.port, 2);
        assert_eq!(b2.inflight.load(Ordering::Relaxed), 1);
    }
}
