//! `portok switch NAME PORT`: move an alias route (an app run outside portok, e.g. in a
//! container) to a new port only when the new port passes a health check; keep checking it
//! through the rollback window and switch back after `fail_threshold` consecutive
//! failures. In-flight requests to the old port finish on it (the proxy counts them).

use super::state::{AppEvent, DaemonState, EventKind};
use crate::metrics::{SwitchOutcome, SwitchRecord};
use crate::probe;
use crate::proxy::Ctx;
use crate::routes::unix_now;
use std::sync::Arc;
use std::time::Duration;

pub use crate::control::SwitchRequest;

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("no route named {0}; `portok list` shows the routes")]
    NoRoute(String),
    #[error(
        "{host} is run by `portok run` (pid {pid}); redeploy it with `portok restart` instead"
    )]
    App { host: String, pid: u32 },
    #[error("{host} already points at port {port}")]
    Same { host: String, port: u16 },
    #[error(
        "127.0.0.1:{port} failed the health check ({check}); the route still points at port {old}"
    )]
    Unhealthy { port: u16, check: String, old: u16 },
    #[error("{host} changed while it was being switched (another switch or `portok alias`); `portok list` shows where it points now")]
    Changed { host: String },
}

/// Check, switch, record; then watch the new port for the rollback window in the background.
pub async fn switch(
    d: &Arc<DaemonState>,
    host: &str,
    req: SwitchRequest,
) -> Result<String, SwitchError> {
    let ctx = &d.ctx;
    let current = ctx
        .routes
        .load()
        .lookup(host)
        .filter(|l| l.route.hostname == host)
        .map(|l| (l.route.port, l.route.pid, l.route.tcp.is_some()));
    let Some((old_port, pid, tcp)) = current else {
        return Err(SwitchError::NoRoute(host.into()));
    };
    if pid != 0 {
        return Err(SwitchError::App {
            host: host.into(),
            pid,
        });
    }
    if old_port == req.port {
        return Err(SwitchError::Same {
            host: host.into(),
            port: req.port,
        });
    }
    let stats = ctx.metrics.route(host);
    let id = ctx.metrics.next_switch_id();
    let reason = if req.reason.is_empty() {
        "portok switch".to_string()
    } else {
        req.reason.clone()
    };
    let check = match (&req.health, tcp) {
        (Some(h), _) => h.clone(),
        (None, true) => "a TCP connect".into(),
        (None, false) => "any HTTP answer on /".into(),
    };
    if !healthy(req.port, host, req.health.as_deref(), tcp).await {
        stats.record_switch(SwitchRecord {
            id,
            at: unix_now(),
            from_port: old_port,
            to_port: req.port,
            reason,
            outcome: SwitchOutcome::Refused,
            rollback: Some(format!("health check failed: {check}")),
        });
        return Err(SwitchError::Unhealthy {
            port: req.port,
            check,
            old: old_port,
        });
    }
    if !set_port(d, host, old_port, req.port).await {
        return Err(SwitchError::Changed { host: host.into() });
    }
    // Drain: new requests already go to the new port; wait (bounded) for the old one's.
    let drain_until =
        tokio::time::Instant::now() + Duration::from_secs_f64(req.drain_secs.max(0.0));
    let old_inflight = ctx.drained(old_port, drain_until).await;
    stats.record_switch(SwitchRecord {
        id,
        at: unix_now(),
        from_port: old_port,
        to_port: req.port,
        reason: reason.clone(),
        outcome: SwitchOutcome::Switched,
        rollback: None,
    });
    let _ = d.events.send(AppEvent {
        hostname: host.into(),
        kind: EventKind::Switched,
        generation: 0,
        message: format!("switch {id}: port {old_port} -> {}", req.port),
        tail: Vec::new(),
    });
    if req.rollback_secs > 0.0 {
        tokio::spawn(watch_new_port(
            d.clone(),
            host.to_string(),
            id,
            old_port,
            req,
            tcp,
        ));
    }
    Ok(format!(
        "switch {id}: {host} -> 127.0.0.1:{new} (was {old_port}; {old_inflight} request{s} still in flight there after the drain)",
        new = current_port(ctx, host).unwrap_or(0),
        s = if old_inflight == 1 { "" } else { "s" }
    ))
}

fn current_port(ctx: &Ctx, host: &str) -> Option<u16> {
    ctx.routes.load().lookup(host).map(|l| l.route.port)
}

/// A few quick probes, so a server that is just coming up is not refused on one miss.
async fn healthy(port: u16, host: &str, health: Option<&str>, tcp: bool) -> bool {
    for _ in 0..3 {
        if probe::ready(port, host, health, tcp).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Move the alias from `from` to `to` (only if it still points at `from`): at once in the
/// table, then in routes.json. Returns whether it moved.
async fn set_port(d: &Arc<DaemonState>, host: &str, from: u16, to: u16) -> bool {
    let host = host.to_string();
    d.change_routes(move |routes| {
        let alias = routes
            .iter_mut()
            .find(|r| r.hostname == host && r.pid == 0 && r.port == from);
        alias.map(|r| r.port = to).is_some()
    })
    .await
}

/// During the rollback window, probe the new port; after `fail_threshold` failures in a
/// row, go back to the old one and record why.
async fn watch_new_port(
    d: Arc<DaemonState>,
    host: String,
    id: u64,
    old: u16,
    req: SwitchRequest,
    tcp: bool,
) {
    let ctx = &d.ctx;
    let until = tokio::time::Instant::now() + Duration::from_secs_f64(req.rollback_secs);
    let mut failures = 0;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if current_port(ctx, &host) != Some(req.port) {
            return; // someone switched again; this watch is over
        }
        if probe::ready(req.port, &host, req.health.as_deref(), tcp).await {
            failures = 0;
            continue;
        }
        failures += 1;
        if failures < req.fail_threshold.max(1) {
            continue;
        }
        let why = format!(
            "{failures} health checks in a row failed on port {}; rolled back to port {old}",
            req.port
        );
        if set_port(&d, &host, req.port, old).await {
            tracing::warn!(host, id, "{why}");
            let stats = ctx.metrics.route(&host);
            stats.record_switch(SwitchRecord {
                id,
                at: unix_now(),
                from_port: req.port,
                to_port: old,
                reason: format!("rollback of switch {id}"),
                outcome: SwitchOutcome::RolledBack,
                rollback: Some(why.clone()),
            });
            let _ = d.events.send(AppEvent {
                hostname: host.clone(),
                kind: EventKind::RolledBack,
                generation: 0,
                message: why,
                tail: Vec::new(),
            });
        }
        return;
    }
}
