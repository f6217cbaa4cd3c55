//! The daemon's own facts, beside the proxy's context: when it started and where it
//! listens, the dashboard's token and its rate limit, and the events (redeploys, switches,
//! crashes) that dashboards and live-reload pages follow. The proxy never reads these.

use crate::proxy::Ctx;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub struct DaemonState {
    /// What the proxy's connections share.
    pub ctx: Arc<Ctx>,
    pub started: Instant,
    pub listening: Mutex<Vec<String>>,
    /// The dashboard's mutating endpoints need this token (admin.token in the state dir).
    pub admin_token: String,
    /// Failed token attempts per client, for rate limiting.
    pub admin_failures: Mutex<HashMap<std::net::IpAddr, (u32, Instant)>>,
    /// Redeploy/switch/crash events for the dashboard and live reload (server-sent events).
    pub events: tokio::sync::broadcast::Sender<AppEvent>,
    /// The last failed redeploy per host, replayed to live-reload pages that connect
    /// while the failure stands; cleared by the next success.
    pub last_failure: Mutex<HashMap<String, AppEvent>>,
    /// Which version of routes.json the table holds, and the daemon's own writes to it.
    pub route_sync: super::route_sync::RouteSync,
    /// Suffixes served besides .localhost (`--tld`).
    pub tlds: Vec<String>,
    /// Loopback ports 80 and 443 reach this daemon (checked every few seconds).
    pub clean_urls: std::sync::atomic::AtomicBool,
    /// Lazy apps asked to start, and when (see `lazy::wake`).
    pub woken: Mutex<HashMap<String, Instant>>,
    /// `--lan`: each shared route's name on the network (`web.local.`, or the one mDNS
    /// probing left it, `web-2.local.`).
    pub lan_names: Arc<Mutex<HashMap<String, String>>>,
    /// The Docker engine while the daemon follows one (see `containers`).
    pub docker: Mutex<Option<bollard::Docker>>,
}

impl DaemonState {
    pub fn new(ctx: Arc<Ctx>, admin_token: String, tlds: Vec<String>) -> Self {
        DaemonState {
            ctx,
            started: Instant::now(),
            listening: Mutex::new(Vec::new()),
            admin_token,
            admin_failures: Mutex::new(HashMap::new()),
            events: tokio::sync::broadcast::channel(256).0,
            last_failure: Mutex::new(HashMap::new()),
            route_sync: Default::default(),
            tlds,
            clean_urls: Default::default(),
            woken: Mutex::new(HashMap::new()),
            lan_names: Default::default(),
            docker: Mutex::new(None),
        }
    }

    /// An app or container crashed: its 502 page says why, and dashboards hear of it.
    pub fn record_crash(&self, hostname: String, message: String, tail: Vec<String>) {
        use crate::sync::LockExt;
        self.ctx.crashes.locked().insert(
            hostname.clone(),
            crate::proxy::CrashInfo {
                message: message.clone(),
                tail: tail.clone(),
            },
        );
        let _ = self.events.send(AppEvent {
            hostname,
            kind: EventKind::Crashed,
            generation: 0,
            message,
            tail,
        });
    }
}

/// What happened, as the SSE event name dashboards and live-reload scripts listen for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Redeployed,
    Failed,
    RolledBack,
    Crashed,
    Switched,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Redeployed => "redeployed",
            EventKind::Failed => "failed",
            EventKind::RolledBack => "rolled_back",
            EventKind::Crashed => "crashed",
            EventKind::Switched => "switched",
        }
    }
}

impl From<crate::metrics::RedeployOutcome> for EventKind {
    /// The event a redeploy's end sends (an unknown outcome reads as a failure).
    fn from(outcome: crate::metrics::RedeployOutcome) -> Self {
        use crate::metrics::RedeployOutcome as O;
        match outcome {
            O::Ok => EventKind::Redeployed,
            O::RolledBack => EventKind::RolledBack,
            O::Failed | O::Unknown => EventKind::Failed,
        }
    }
}

/// Something that happened to an app, streamed to dashboards and live-reload scripts.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AppEvent {
    pub hostname: String,
    pub kind: EventKind,
    #[serde(default)]
    pub generation: u64,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tail: Vec<String>,
}

impl DaemonState {
    /// How the daemon writes route URLs.
    pub fn url_base(&self) -> crate::names::UrlBase {
        crate::names::UrlBase {
            port: self.ctx.port,
            clean: self.clean_urls.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}
