//! What a `portok run` tells the daemon: its route (registered, then withdrawn), its
//! process groups, how each redeploy ended, and the in-flight count drain waits on; and the
//! watchdog that starts a daemon that died. Each call runs off the async threads, and a
//! daemon that is not there is not an error for the app.

use crate::control::{self, Request};
use crate::routes::{store, Route};
use crate::state::StateDir;
use crate::ui::say;
use std::time::Duration;

/// Register `route` (ours) and make sure the daemon serves it; `crash` (why, and the
/// output's last lines) is sent after it for the crash page. A failure is said: the app
/// keeps running either way.
pub(super) async fn publish(
    state: &StateDir,
    proxy_port: u16,
    route: Route,
    crash: Option<(String, Vec<String>)>,
) {
    if let Err(e) = try_publish(state, proxy_port, route, crash).await {
        say(&format!("updating the route failed: {e:#}"));
    }
}

/// [`publish`], with the failure returned: the first registration (run.rs) ends
/// `portok run` on one (a name taken meanwhile, a daemon that cannot start).
pub(super) async fn try_publish(
    state: &StateDir,
    proxy_port: u16,
    route: Route,
    crash: Option<(String, Vec<String>)>,
) -> anyhow::Result<()> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let host = route.hostname.clone();
        super::register(&state, route)?;
        crate::daemon::ensure_and_reload(&state, proxy_port)?;
        if let Some((message, tail)) = crash {
            let req = Request::Crash {
                hostname: host,
                message,
                tail,
            };
            let _ = control::call(&state, &req, Duration::from_secs(5));
        }
        Ok(())
    })
    .await?
}

/// Remove our route (only if it is still ours).
pub(super) async fn withdraw(state: &StateDir, hostname: &str) {
    let (state, host) = (state.clone(), hostname.to_string());
    let _ = tokio::task::spawn_blocking(move || super::unregister(&state, &host)).await;
}

/// The daemon's record of how a redeploy ended: history, metrics, and an event that
/// dashboards and live-reload pages listen to.
pub(super) fn redeploy_request(
    hostname: &str,
    outcome: crate::metrics::RedeployOutcome,
    generation: u64,
    reason: &str,
    took: Duration,
    detail: Option<String>,
    tail: Vec<String>,
) -> Request {
    Request::Redeploy {
        hostname: hostname.to_string(),
        record: crate::metrics::RedeployRecord {
            at: crate::routes::unix_now(),
            generation,
            reason: reason.to_string(),
            outcome,
            millis: took.as_millis() as u64,
            detail,
        },
        tail,
    }
}

/// Send one control request to the daemon, off the async thread; a daemon that is not
/// there is ignored (the watchdog brings it back).
pub(super) async fn tell_daemon(state: &StateDir, req: Request) {
    let state = state.clone();
    let _ =
        tokio::task::spawn_blocking(move || control::call(&state, &req, Duration::from_secs(5)))
            .await;
}

/// Record the app's process groups in its route (ours: this process's pid), so the daemon
/// can stop them if `portok run` dies.
pub(super) async fn set_pgids(state: &StateDir, hostname: &str, pgids: Vec<i32>) {
    let (state, host) = (state.clone(), hostname.to_string());
    let me = std::process::id();
    let _ = tokio::task::spawn_blocking(move || {
        store::update::<_, store::StoreError>(&state, |routes| {
            if let Some(r) = routes
                .iter_mut()
                .find(|r| r.hostname == host && r.pid == me)
            {
                r.pgids = pgids;
            }
            Ok(())
        })
    })
    .await;
}

/// The watchdog: if the daemon died (kill -9, OOM), start it again with every route (they
/// are in routes.json). True when it was restarted.
pub(super) async fn revive_daemon(state: &StateDir, proxy_port: u16) -> bool {
    let state = state.clone();
    let restarted = tokio::task::spawn_blocking(move || {
        if control::status(&state).is_some() {
            return Ok(false);
        }
        crate::daemon::ensure_and_reload(&state, proxy_port).map(|_| true)
    })
    .await;
    match restarted {
        Ok(Ok(true)) => {
            say("the portok daemon was gone; started it again with every route");
            true
        }
        Ok(Err(e)) => {
            say(&format!(
                "the portok daemon is gone and could not be restarted: {e}"
            ));
            false
        }
        _ => false,
    }
}

/// Wait (bounded by `until`) for the daemon to say nothing is in flight to `port` any
/// more. A daemon that is not there has nothing in flight.
pub(super) async fn drain(state: &StateDir, port: u16, until: std::time::Instant) {
    let within = until.saturating_duration_since(std::time::Instant::now());
    let state = state.clone();
    let req = Request::Drain {
        port,
        within_ms: within.as_millis() as u64,
    };
    let _ = tokio::task::spawn_blocking(move || {
        control::call(&state, &req, within + Duration::from_secs(5))
    })
    .await;
}

pub(super) async fn inflight(state: &StateDir, port: u16) -> usize {
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        control::call(&state, &Request::Inflight { port }, Duration::from_secs(2))
            .ok()
            .and_then(|r| r.inflight)
            .unwrap_or(0)
    })
    .await
    .unwrap_or(0)
}
