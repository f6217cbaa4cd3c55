//! The daemon's status as one serde type: `GET /api/status` and `/api/routes/NAME`, the
//! dashboard (server-rendered and its SSE snapshots), the control socket's `detail`, and
//! `portok status`. Built in one place ([`crate::daemon::admin::status`]); its JSON is an
//! interface. The daemon's own facts are [`DaemonStatus`] (control.rs), flattened in, not
//! copied; the routes' part stays here because it carries the proxy's [`CrashInfo`], and
//! control.rs sits below the proxy.

use crate::control::DaemonStatus;
use crate::metrics::{RedeployRecord, SwitchRecord};
use crate::proxy::CrashInfo;
use crate::routes::RouteState;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The daemon's own facts, flattened: the JSON starts with them, as it always has.
    #[serde(flatten)]
    pub daemon: DaemonStatus,
    pub dashboard: String,
    pub totals: Totals,
    pub routes: Vec<RouteStatus>,
}

impl Status {
    /// The short form the control socket's `status` answers (`portok proxy status`).
    pub fn summary(&self) -> DaemonStatus {
        DaemonStatus {
            routes: Some(self.routes.len()),
            ..self.daemon.clone()
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
    /// `app`, `alias` or `container`.
    pub kind: String,
    /// A container's image, id and Compose project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<crate::routes::Container>,
    /// How portok speaks to the app: `http1`, or `h2` (an HTTP/2-only app such as gRPC).
    #[serde(default)]
    pub upstream: String,
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

#[cfg(test)]
mod tests {
    use super::Status;

    /// `GET /api/status` and `portok status --json` as they were when the daemon's facts
    /// were still written out here field by field: the flattened facts keep every byte.
    const FULL: &str = r#"{"version":"0.1.0","pid":42,"port":1355,"uptime_secs":7,"tls":true,"listening":["127.0.0.1:1355","[::1]:1355"],"tlds":["test"],"clean_urls":false,"dashboard":"http://portok.localhost:1355/","totals":{"requests":3,"inflight":0,"connections_open":1,"connections_total":2,"tls_handshakes":0},"routes":[{"name":"web","hostname":"web.localhost","url":"http://web.localhost:1355","https_url":"https://web.localhost:1355","kind":"app","upstream":"http1","state":"live","generation":1,"port":4000,"ports":[4000],"instances":null,"backends":[{"port":4000,"inflight":0,"requests":3}],"pid":9,"uptime_secs":5,"requests":3,"inflight":0,"responses":{"1xx":0,"2xx":3,"3xx":0,"4xx":0,"5xx":0},"upstream_errors":0,"rps":0.5,"p50_ms":1.5,"p99_ms":null,"last_redeploy":null,"redeploys":[],"redeploy_counts":{},"switches":[],"crash":null,"tcp":null,"shared":false}]}"#;

    /// The control socket's `status` reply (`portok proxy status --json`), likewise.
    const SUMMARY: &str = r#"{"version":"0.1.0","pid":42,"port":1355,"uptime_secs":7,"routes":1,"tls":true,"listening":["127.0.0.1:1355","[::1]:1355"],"tlds":["test"],"clean_urls":false}"#;

    #[test]
    fn the_status_json_is_what_it_was() {
        let status: Status = serde_json::from_str(FULL).unwrap();
        assert_eq!(status.daemon.routes, None);
        assert_eq!(serde_json::to_string(&status).unwrap(), FULL);
        assert_eq!(serde_json::to_string(&status.summary()).unwrap(), SUMMARY);
        let summary: crate::control::DaemonStatus = serde_json::from_str(SUMMARY).unwrap();
        assert_eq!(summary.route_count(), 1);
        assert_eq!(serde_json::to_string(&summary).unwrap(), SUMMARY);
    }
}
