//! The daemon's status as one serde type: `GET /api/status` and `/api/routes/NAME`, the
//! dashboard (server-rendered and its SSE snapshots), the control socket's `detail`, and
//! `portok status`. Built in one place ([`crate::daemon::admin::status`]); its JSON is an interface.

use crate::control::DaemonStatus;
use crate::metrics::{RedeployRecord, SwitchRecord};
use crate::proxy::CrashInfo;
use crate::routes::RouteState;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub port: u16,
    pub uptime_secs: u64,
    pub tls: bool,
    pub listening: Vec<String>,
    /// Suffixes served besides .localhost (`--tld`).
    #[serde(default)]
    pub tlds: Vec<String>,
    /// Loopback ports 80 and 443 reach this daemon (`portok ports enable`).
    #[serde(default)]
    pub clean_urls: bool,
    pub dashboard: String,
    pub totals: Totals,
    pub routes: Vec<RouteStatus>,
}

impl Status {
    /// The short form the control socket's `status` answers (`portok proxy status`).
    pub fn summary(&self) -> DaemonStatus {
        DaemonStatus {
            version: self.version.clone(),
            pid: self.pid,
            port: self.port,
            uptime_secs: self.uptime_secs,
            routes: self.routes.len(),
            tls: self.tls,
            listening: self.listening.clone(),
            tlds: self.tlds.clone(),
            clean_urls: self.clean_urls,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Totals {
    pub requests: u64,
    pub inflight: i64,
    pub connections_open: i64,
    pub connections_total: u64,
    pub tls_handshakes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteStatus {
    /// The name as given to `portok` (`api.shop` for `api.shop.localhost`).
    pub name: String,
    pub hostname: String,
    pub url: String,
    pub https_url: String,
    /// `app`, `alias` or `tcp`.
    pub kind: String,
    pub state: RouteState,
    pub generation: Option<u64>,
    pub port: u16,
    /// Every port in rotation (a pool's instances).
    pub ports: Vec<u16>,
    pub instances: Option<u32>,
    /// Each port in rotation with its own load.
    pub backends: Vec<BackendStatus>,
    pub pid: u32,
    pub uptime_secs: Option<u64>,
    pub requests: u64,
    pub inflight: i64,
    pub responses: Responses,
    pub upstream_errors: u64,
    pub rps: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub last_redeploy: Option<RedeployRecord>,
    pub redeploys: VecDeque<RedeployRecord>,
    pub redeploy_counts: HashMap<String, u64>,
    pub switches: VecDeque<SwitchRecord>,
    pub crash: Option<CrashInfo>,
    pub tcp: Option<TcpStatus>,
    /// A lazy app: stopped after this many seconds without a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_stop: Option<u64>,
    /// Reachable from other machines when the daemon listens on the LAN.
    #[serde(default)]
    pub shared: bool,
    /// Its URL on the LAN (`http://web.local:1355`), once announced over mDNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lan_url: Option<String>,
    /// What the request inspector holds for the route (None: no request yet, or off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspector: Option<InspectorStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InspectorStatus {
    pub requests: usize,
    pub capacity: usize,
    /// Bytes its kept requests and their buffers take, with the timeline's.
    pub memory_bytes: usize,
    pub bodies: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendStatus {
    pub port: u16,
    pub inflight: usize,
    pub requests: u64,
}

/// Answers by status class.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Responses {
    #[serde(rename = "1xx")]
    pub informational: u64,
    #[serde(rename = "2xx")]
    pub success: u64,
    #[serde(rename = "3xx")]
    pub redirect: u64,
    #[serde(rename = "4xx")]
    pub client_error: u64,
    #[serde(rename = "5xx")]
    pub server_error: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TcpStatus {
    pub listen: u16,
    pub target: u16,
    pub proxy_protocol: bool,
    pub connections_open: i64,
    pub connections_total: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub spliced: u64,
    pub copied: u64,
}
