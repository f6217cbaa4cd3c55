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
    /// starting | live | restarting | crashed (apps only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
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
        }
    }

    pub fn is_starting(&self) -> bool {
        self.state.as_deref() == Some("starting")
    }

    pub fn is_crashed(&self) -> bool {
        self.state.as_deref() == Some("crashed")
    }

    pub fn kind(&self) -> &'static str {
        if self.pid == 0 {
            "alias"
        } else {
            "app"
        }
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A live upstream: one port of one route. Counters are shared across table swaps for
/// the same (host, port), so in-flight counts survive a reload and drain can wait on them.
#[derive(Debug)]
pub struct Backend {
    pub port: u16,
    pub generation: u64,
    /// The upstream pool's key, built once so forwarding does not format a string per
    /// request. It names the generation as well as the port, so a pooled connection to a
    /// retired generation is never reused for a later one that got the same port.
    /// (The connector only ever dials loopback; the host part is never resolved.)
    pub authority: http::uri::Authority,
    pub inflight: AtomicUsize,
    pub requests: AtomicU64,
}

impl Backend {
    pub fn new(port: u16, generation: u64) -> Self {
        let authority = format!("g{generation}.localhost:{port}")
            .parse()
            .expect("a host name with a port is a valid authority");
        Backend {
            port,
            generation,
            authority,
            inflight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
        }
    }

    /// Count one request in flight until the guard drops (when the response body ends).
    pub fn enter(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InflightGuard(self.clone())
    }
}

/// Decrements the backend's in-flight count on drop.
#[derive(Debug)]
pub struct InflightGuard(Arc<Backend>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub struct LiveRoute {
    pub route: Route,
    pub backend: Arc<Backend>,
    /// The host's counters, shared across table swaps (see [`crate::metrics`]).
    pub stats: Arc<crate::metrics::RouteStats>,
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
            let backend = previous
                .and_then(|p| p.by_host.get(&route.hostname))
                .filter(|old| {
                    old.backend.port == route.port
                        && old.backend.generation == route.generation.unwrap_or(0)
                })
                .map(|old| old.backend.clone())
                .unwrap_or_else(|| {
                    Arc::new(Backend::new(route.port, route.generation.unwrap_or(0)))
                });
            let stats = metrics.route(&route.hostname);
            by_host.insert(
                route.hostname.clone(),
                LiveRoute {
                    route,
                    backend,
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
        self.by_host.values().map(|l| &l.backend)
    }

    pub fn len(&self) -> usize {
        self.by_host.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }

    /// Routes sorted by host name, for pages and status.
    pub fn sorted(&self) -> Vec<&LiveRoute> {
        let mut v: Vec<_> = self.by_host.values().collect();
        v.sort_by(|a, b| a.route.hostname.cmp(&b.route.hostname));
        v
    }
}

#[cfg(test)]
mod tests {
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
        let b1 = t1.lookup("a.localhost").unwrap().backend.clone();
        let _g = b1.enter();
        let m = crate::metrics::Metrics::default();
        let t2 = RouteTable::build(vec![Route::alias("a.localhost".into(), 1)], Some(&t1), &m);
        assert_eq!(
            t2.lookup("a.localhost")
                .unwrap()
                .backend
                .inflight
                .load(Ordering::Relaxed),
            1
        );
        let t3 = RouteTable::build(vec![Route::alias("a.localhost".into(), 2)], Some(&t2), &m);
        assert_eq!(
            t3.lookup("a.localhost")
                .unwrap()
                .backend
                .inflight
                .load(Ordering::Relaxed),
            0
        );
    }
}
