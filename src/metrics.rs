//! Counting what the proxy does, cheaply: per-route atomics bumped on the hot path
//! (requests by status class, a latency histogram, upstream errors), per-daemon gauges, a
//! once-a-second sampler for rolling requests/s, redeploy and switch history, Prometheus
//! text, and persistence in `stats.json` so the numbers survive a daemon restart.

pub mod timeline;

use crate::sync::LockExt;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Histogram bucket upper bounds, in seconds (Prometheus `le`).
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Approximate quantile of a histogram over [`BUCKETS`] (linear within a bucket), in
/// seconds.
pub fn quantile_of(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        if c > 0 && (seen + c) as f64 >= rank {
            let lo = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
            let hi = BUCKETS
                .get(i)
                .copied()
                .unwrap_or(BUCKETS[BUCKETS.len() - 1] * 2.0);
            let within = (rank - seen as f64) / c as f64;
            return Some(lo + (hi - lo) * within.clamp(0.0, 1.0));
        }
        seen += c;
    }
    None
}

/// How many redeploy and switch records each route keeps.
const HISTORY: usize = 20;

/// One route's counters. Shared by every table that routes the host, so counts survive
/// route changes; bumped with relaxed atomics only.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// 1xx, 2xx, 3xx, 4xx, 5xx.
    pub by_class: [AtomicU64; 5],
    pub inflight: AtomicI64,
    pub upstream_errors: AtomicU64,
    /// Non-cumulative counts per bucket; the last slot is +Inf.
    pub buckets: [AtomicU64; BUCKETS.len() + 1],
    pub sum_micros: AtomicU64,
    /// Rolling requests per second (f64 bits), written by the sampler.
    pub rps_bits: AtomicU64,
    last_total: AtomicU64,
    pub history: Mutex<History>,
    /// Per second and per minute, taken by the sampler.
    pub timeline: Mutex<timeline::Timeline>,
    /// The inspector's last requests, made on the first one.
    pub inspect: crate::inspect::Slot,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct History {
    pub redeploys: VecDeque<RedeployRecord>,
    pub switches: VecDeque<SwitchRecord>,
    /// Redeploys by outcome ("ok", "failed", "rolled_back").
    pub redeploy_counts: HashMap<String, u64>,
}

/// How a redeploy ended. As a word in stats.json, the control protocol and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedeployOutcome {
    Ok,
    Failed,
    /// The new generation died in the rollback window; the previous one serves again.
    RolledBack,
    /// Written by a newer portok.
    #[serde(other)]
    Unknown,
}

impl RedeployOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RedeployOutcome::Ok => "ok",
            RedeployOutcome::Failed => "failed",
            RedeployOutcome::RolledBack => "rolled_back",
            RedeployOutcome::Unknown => "unknown",
        }
    }
}

/// How a switch of an alias route ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchOutcome {
    Switched,
    /// The new port was not healthy: nothing changed.
    Refused,
    RolledBack,
    #[serde(other)]
    Unknown,
}

impl SwitchOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchOutcome::Switched => "switched",
            SwitchOutcome::Refused => "refused",
            SwitchOutcome::RolledBack => "rolled_back",
            SwitchOutcome::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedeployRecord {
    pub at: u64,
    pub generation: u64,
    pub reason: String,
    pub outcome: RedeployOutcome,
    pub millis: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwitchRecord {
    pub id: u64,
    pub at: u64,
    pub from_port: u16,
    pub to_port: u16,
    pub reason: String,
    pub outcome: SwitchOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
}

/// Guards one request's in-flight count on the route; records its outcome when told.
pub struct RequestMeter {
    stats: Arc<RouteStats>,
    start: std::time::Instant,
}

impl RouteStats {
    pub fn start(self: &Arc<Self>) -> RequestMeter {
        self.inflight.fetch_add(1, Relaxed);
        RequestMeter {
            stats: self.clone(),
            start: std::time::Instant::now(),
        }
    }

    pub fn total(&self) -> u64 {
        self.by_class.iter().map(|c| c.load(Relaxed)).sum()
    }

    pub fn rps(&self) -> f64 {
        f64::from_bits(self.rps_bits.load(Relaxed))
    }

    /// Approximate quantile from the histogram (linear within a bucket), in seconds.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        quantile_of(&counts, q)
    }

    pub fn record_redeploy(&self, rec: RedeployRecord) {
        let mut h = self.history.locked();
        *h.redeploy_counts
            .entry(rec.outcome.as_str().to_string())
            .or_default() += 1;
        if h.redeploys.len() == HISTORY {
            h.redeploys.pop_front();
        }
        h.redeploys.push_back(rec);
    }

    pub fn record_switch(&self, rec: SwitchRecord) {
        let mut h = self.history.locked();
        if h.switches.len() == HISTORY {
            h.switches.pop_front();
        }
        h.switches.push_back(rec);
    }

    fn snapshot(&self) -> SavedRoute {
        SavedRoute {
            by_class: std::array::from_fn(|i| self.by_class[i].load(Relaxed)),
            upstream_errors: self.upstream_errors.load(Relaxed),
            buckets: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
            sum_micros: self.sum_micros.load(Relaxed),
            history: self.history.locked().clone(),
        }
    }

    fn restore(saved: &SavedRoute) -> Self {
        let s = RouteStats::default();
        for (i, v) in saved.by_class.iter().enumerate() {
            s.by_class[i].store(*v, Relaxed);
        }
        s.upstream_errors.store(saved.upstream_errors, Relaxed);
        for (i, v) in saved.buckets.iter().enumerate().take(s.buckets.len()) {
            s.buckets[i].store(*v, Relaxed);
        }
        s.sum_micros.store(saved.sum_micros, Relaxed);
        s.last_total.store(s.total(), Relaxed);
        *s.history.locked() = saved.history.clone();
        // The timeline counts what happens from now, not the restored totals.
        s.timeline.locked().start_at(&s);
        s
    }
}

impl RequestMeter {
    pub fn stats(&self) -> &Arc<RouteStats> {
        &self.stats
    }

    pub fn elapsed(&self) -> std::time::Duration {
        self.start.elapsed()
    }

    pub fn started(&self) -> std::time::Instant {
        self.start
    }

    /// The response (or error page) went out with this status.
    pub fn finish(self, status: u16, upstream_error: bool) {
        let took = self.start.elapsed();
        self.finish_after(status, upstream_error, took);
    }

    /// [`RequestMeter::finish`] with the time taken already read (the inspector reads it too).
    pub fn finish_after(self, status: u16, upstream_error: bool, took: std::time::Duration) {
        let s = &self.stats;
        let class = (status / 100).clamp(1, 5) as usize - 1;
        s.by_class[class].fetch_add(1, Relaxed);
        if upstream_error {
            s.upstream_errors.fetch_add(1, Relaxed);
        }
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        s.buckets[bucket].fetch_add(1, Relaxed);
        s.sum_micros.fetch_add((secs * 1e6) as u64, Relaxed);
        // `self` drops here and releases the in-flight count.
    }
}

impl Drop for RequestMeter {
    fn drop(&mut self) {
        self.stats.inflight.fetch_sub(1, Relaxed);
    }
}

/// Every route's stats plus daemon-wide gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    routes: Mutex<HashMap<String, Arc<RouteStats>>>,
    pub connections_open: AtomicI64,
    pub connections_total: AtomicU64,
    pub tls_handshakes: AtomicU64,
    next_switch_id: AtomicU64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SavedRoute {
    by_class: [u64; 5],
    upstream_errors: u64,
    buckets: Vec<u64>,
    sum_micros: u64,
    history: History,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    routes: HashMap<String, SavedRoute>,
    tls_handshakes: u64,
    connections_total: u64,
    next_switch_id: u64,
}

impl Metrics {
    /// The stats of a host, created on first use.
    pub fn route(&self, host: &str) -> Arc<RouteStats> {
        let mut routes = self.routes.locked();
        routes.entry(host.to_string()).or_default().clone()
    }

    pub fn existing(&self, host: &str) -> Option<Arc<RouteStats>> {
        self.routes.locked().get(host).cloned()
    }

    pub fn all(&self) -> Vec<(String, Arc<RouteStats>)> {
        let routes = self.routes.locked();
        let mut v: Vec<_> = routes.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub fn next_switch_id(&self) -> u64 {
        self.next_switch_id.fetch_add(1, Relaxed) + 1
    }

    /// Update every route's rolling requests/s and its timeline; called once per
    /// `interval` (a second).
    pub fn sample(&self, interval: Duration) {
        let now = crate::sys::unix_now();
        for (_, s) in self.all() {
            let total = s.total();
            let last = s.last_total.swap(total, Relaxed);
            let rps = total.saturating_sub(last) as f64 / interval.as_secs_f64();
            s.rps_bits.store(rps.to_bits(), Relaxed);
            s.timeline.locked().sample(&s, now);
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let saved = Saved {
            routes: self
                .all()
                .into_iter()
                .map(|(h, s)| (h, s.snapshot()))
                .collect(),
            tls_handshakes: self.tls_handshakes.load(Relaxed),
            connections_total: self.connections_total.load(Relaxed),
            next_switch_id: self.next_switch_id.load(Relaxed),
        };
        serde_json::to_vec(&saved).unwrap_or_default()
    }

    /// Restore from `stats.json`; anything unreadable starts from zero.
    pub fn from_json(bytes: &[u8]) -> Self {
        let Ok(saved) = serde_json::from_slice::<Saved>(bytes) else {
            return Metrics::default();
        };
        let m = Metrics::default();
        {
            let mut routes = m.routes.locked();
            for (h, r) in &saved.routes {
                routes.insert(h.clone(), Arc::new(RouteStats::restore(r)));
            }
        }
        m.tls_handshakes.store(saved.tls_handshakes, Relaxed);
        m.connections_total.store(saved.connections_total, Relaxed);
        m.next_switch_id.store(saved.next_switch_id, Relaxed);
        m
    }

    /// Prometheus text exposition format.
    pub fn prometheus(&self, live_hosts: &[String]) -> String {
        let mut out = String::with_capacity(4096);
        let routes: Vec<_> = self
            .all()
            .into_iter()
            .filter(|(h, _)| live_hosts.contains(h))
            .collect();
        let label = |h: &str| crate::names::short_name(h).replace(['\\', '"', '\n'], "_");
        out.push_str("# HELP portok_requests_total Requests answered per route and status class.\n# TYPE portok_requests_total counter\n");
        for (h, s) in &routes {
            for (i, c) in s.by_class.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "portok_requests_total{{route=\"{}\",code_class=\"{}xx\"}} {}",
                    label(h),
                    i + 1,
                    c.load(Relaxed)
                );
            }
        }
        out.push_str("# HELP portok_inflight_requests Requests in flight per route.\n# TYPE portok_inflight_requests gauge\n");
        for (h, s) in &routes {
            let _ = writeln!(
                out,
                "portok_inflight_requests{{route=\"{}\"}} {}",
                label(h),
                s.inflight.load(Relaxed).max(0)
            );
        }
        out.push_str("# HELP portok_request_duration_seconds Time to the response headers.\n# TYPE portok_request_duration_seconds histogram\n");
        for (h, s) in &routes {
            let mut cum = 0u64;
            for (i, b) in s.buckets.iter().enumerate() {
                cum += b.load(Relaxed);
                let le = BUCKETS
                    .get(i)
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "+Inf".into());
                let _ = writeln!(
                    out,
                    "portok_request_duration_seconds_bucket{{route=\"{}\",le=\"{le}\"}} {cum}",
                    label(h)
                );
            }
            let _ = writeln!(
                out,
                "portok_request_duration_seconds_sum{{route=\"{}\"}} {}",
                label(h),
                s.sum_micros.load(Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "portok_request_duration_seconds_count{{route=\"{}\"}} {cum}",
                label(h)
            );
        }
        out.push_str("# HELP portok_redeploys_total Redeploys per route and outcome.\n# TYPE portok_redeploys_total counter\n");
        for (h, s) in &routes {
            let hist = s.history.locked();
            let mut outcomes: Vec<_> = hist.redeploy_counts.iter().collect();
            outcomes.sort();
            for (outcome, n) in outcomes {
                let _ = writeln!(
                    out,
                    "portok_redeploys_total{{route=\"{}\",outcome=\"{outcome}\"}} {n}",
                    label(h)
                );
            }
        }
        out.push_str("# HELP portok_upstream_errors_total Requests the app did not answer.\n# TYPE portok_upstream_errors_total counter\n");
        for (h, s) in &routes {
            let _ = writeln!(
                out,
                "portok_upstream_errors_total{{route=\"{}\"}} {}",
                label(h),
                s.upstream_errors.load(Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP portok_connections_open Client connections open.\n# TYPE portok_connections_open gauge\nportok_connections_open {}", self.connections_open.load(Relaxed).max(0));
        let _ = writeln!(out, "# HELP portok_tls_handshakes_total Completed TLS handshakes.\n# TYPE portok_tls_handshakes_total counter\nportok_tls_handshakes_total {}", self.tls_handshakes.load(Relaxed));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_classes_histogram_and_quantiles() {
        let m = Metrics::default();
        let s = m.route("a.localhost");
        for status in [200, 204, 404, 502, 101] {
            s.start().finish(status, status == 502);
        }
        assert_eq!(s.total(), 5);
        assert_eq!(s.by_class[1].load(Relaxed), 2);
        assert_eq!(s.upstream_errors.load(Relaxed), 1);
        assert_eq!(s.inflight.load(Relaxed), 0);
        assert!(s.quantile(0.5).unwrap() <= 0.0005);
        let text = m.prometheus(&["a.localhost".into()]);
        assert!(text.contains("portok_requests_total{route=\"a\",code_class=\"2xx\"} 2"));
        assert!(text.contains("portok_request_duration_seconds_count{route=\"a\"} 5"));
    }

    #[test]
    fn survives_a_round_trip_through_json() {
        let m = Metrics::default();
        let s = m.route("a.localhost");
        s.start().finish(200, false);
        s.record_redeploy(RedeployRecord {
            at: 1,
            generation: 2,
            reason: "change".into(),
            outcome: RedeployOutcome::Ok,
            millis: 10,
            detail: None,
        });
        let back = Metrics::from_json(&m.to_json());
        let s2 = back.route("a.localhost");
        assert_eq!(s2.total(), 1);
        assert_eq!(s2.history.lock().unwrap().redeploys.len(), 1);
    }
}
