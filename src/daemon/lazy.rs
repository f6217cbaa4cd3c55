//! Lazy apps (`portok run --lazy`, `lazy = true`): the daemon wakes an idle app's
//! `portok run` when a request arrives for it, and tells it to stop once the app has had
//! no request for its `idle_stop`. The `portok run` owns the processes; the daemon only
//! sees the requests, so it is the one that knows when to ask.

use super::state::DaemonState;
use crate::control::{self, AppRequest};
use crate::routes::RouteState;
use crate::sync::LockExt;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A wake is sent again only after this long (a request that finds the app still idle
/// then, e.g. because the `portok run` was busy, asks once more).
const WAKE_AGAIN: Duration = Duration::from_secs(2);

/// Ask the owner of the idle route `host` to start its app (at most once per
/// [`WAKE_AGAIN`]); returns at once.
pub fn wake(d: &DaemonState, host: &str) {
    {
        let mut woken = d.woken.locked();
        let now = Instant::now();
        if woken.get(host).is_some_and(|t| now < *t + WAKE_AGAIN) {
            return;
        }
        woken.insert(host.to_string(), now);
    }
    let (state, host) = (d.ctx.state.clone(), host.to_string());
    tokio::task::spawn_blocking(move || {
        if let Err(e) = control::ask_app(&state, &host, &AppRequest::Wake, Duration::from_secs(5)) {
            tracing::warn!(host, error = %e, "cannot wake the lazy app");
        }
    });
}

/// Every second: a live lazy app with nothing in flight and no request counted for its
/// `idle_stop` is asked to stop. Counting happens on the request path anyway; this only
/// reads the counters.
pub async fn idle_loop(d: Arc<DaemonState>, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // host -> (requests counted, when that count was first seen)
    let mut seen: HashMap<String, (u64, Instant)> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let table = d.ctx.routes.load();
        let now = Instant::now();
        let mut still = HashMap::new();
        for live in table.sorted() {
            let r = &live.route;
            let Some(idle_stop) = r.idle_stop else {
                continue;
            };
            if r.state != Some(RouteState::Live) {
                continue;
            }
            let (total, inflight) = match r.tcp {
                Some(_) => d
                    .ctx
                    .tcp
                    .existing_stats(&r.hostname)
                    .map_or((0, 0), |t| (t.total.load(Relaxed), t.open.load(Relaxed))),
                None => (live.stats.total(), live.stats.inflight.load(Relaxed)),
            };
            let since = match seen.get(&r.hostname) {
                Some(&(t, at)) if t == total && inflight <= 0 => at,
                _ => now,
            };
            if now.duration_since(since) >= Duration::from_secs(idle_stop) {
                ask_idle(&d, &r.hostname);
                continue; // counted afresh once it is live again
            }
            still.insert(r.hostname.clone(), (total, since));
        }
        seen = still;
    }
}

fn ask_idle(d: &DaemonState, host: &str) {
    let (state, host) = (d.ctx.state.clone(), host.to_string());
    tokio::task::spawn_blocking(move || {
        if let Err(e) = control::ask_app(&state, &host, &AppRequest::Idle, Duration::from_secs(5)) {
            tracing::warn!(host, error = %e, "cannot tell the lazy app to stop");
        }
    });
}
