//! The control channel between the CLI and the daemon: a Unix socket in the state dir
//! (mode 0600), one JSON request per line, one JSON reply per line.
//!
//! Writers of routes.json send `reload` after writing and wait for the reply, so "the
//! command returned" means "the next request already uses the new route".

use crate::state::StateDir;
use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// How long a stopping daemon lets requests in flight finish, unless told otherwise.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Re-read routes.json now.
    Reload,
    /// Daemon facts: see [`DaemonStatus`].
    Status,
    /// Stop accepting, let what is in flight finish (for up to `within_ms`, else
    /// [`STOP_GRACE`]), exit. The reply comes once that is done, and says (in `inflight`)
    /// how many requests were still in flight at the deadline and cut.
    Shutdown {
        #[serde(default)]
        within_ms: Option<u64>,
    },
    /// Requests and tunnels in flight to a port (live or retired).
    Inflight { port: u16 },
    /// Answer once nothing is in flight to `port`, or after `within_ms`, with what still
    /// is: how a generation that left the route is drained before it is stopped.
    Drain { port: u16, within_ms: u64 },
    /// Why an app crashed, for its 502 page.
    Crash {
        hostname: String,
        message: String,
        tail: Vec<String>,
    },
    /// Every route with its counters, as `GET /api/status` gives them.
    Detail,
    /// A redeploy finished (from `portok run`): history, metrics, and an event for
    /// dashboards and live-reload pages.
    Redeploy {
        hostname: String,
        record: crate::metrics::RedeployRecord,
        #[serde(default)]
        tail: Vec<String>,
    },
    /// `portok switch`: health-gated switch of an alias route.
    Switch {
        hostname: String,
        request: SwitchRequest,
    },
    /// The inspector's requests of a route after id `after` (`portok inspect`).
    Requests {
        name: String,
        #[serde(default)]
        after: u64,
        #[serde(default)]
        secrets: bool,
    },
}

/// `portok switch` / `POST /api/routes/NAME/switch`: move an alias route to `port` once
/// it is healthy, drain the old one, and roll back if the new one fails in the window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwitchRequest {
    pub port: u16,
    #[serde(default)]
    pub health: Option<String>,
    #[serde(default = "default_drain")]
    pub drain_secs: f64,
    #[serde(default = "default_window")]
    pub rollback_secs: f64,
    #[serde(default = "default_threshold")]
    pub fail_threshold: u32,
    #[serde(default)]
    pub reason: String,
}

fn default_drain() -> f64 {
    10.0
}
fn default_window() -> f64 {
    30.0
}
fn default_threshold() -> u32 {
    3
}

/// The daemon's own facts: the control socket's `status` reply (`portok proxy status`),
/// and the head of the full status (`daemon::status::Status`, which flattens it) that
/// `GET /api/status`, the dashboard and `portok status` give. The one place they are
/// declared; the field order is the JSON's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub version: String,
    pub pid: u32,
    pub port: u16,
    pub uptime_secs: u64,
    /// How many routes it serves, in the `status` reply. None in the full status, which
    /// lists them instead (there `routes` is the list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<usize>,
    pub tls: bool,
    pub listening: Vec<String>,
    /// Suffixes served besides .localhost (`--tld`).
    #[serde(default)]
    pub tlds: Vec<String>,
    /// Loopback ports 80 and 443 reach this daemon (`portok ports enable`): URLs need no port.
    #[serde(default)]
    pub clean_urls: bool,
}

impl DaemonStatus {
    /// How many routes it serves (0 where the reply did not say).
    pub fn route_count(&self) -> usize {
        self.routes.unwrap_or(0)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DaemonStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inflight: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Reply {
    pub fn ok() -> Self {
        Reply {
            ok: true,
            error: None,
            status: None,
            inflight: None,
            data: None,
            message: None,
        }
    }
    pub fn error(msg: impl Into<String>) -> Self {
        Reply {
            ok: false,
            error: Some(msg.into()),
            status: None,
            inflight: None,
            data: None,
            message: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the portok daemon is not running (no answer on {path})")]
    NotRunning { path: PathBuf },
    #[error("talking to the portok daemon over {path} failed: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{host} is not run by `portok run` here (no {path}); `portok list` shows what runs")]
    AppNotRunning { host: String, path: PathBuf },
    #[error("the reply over the control socket is not valid: {source}")]
    BadReply { source: serde_json::Error },
    #[error("the portok daemon refused the request: {message}")]
    Refused { message: String },
}

/// Send one request and wait (bounded) for the reply. Blocking: the CLI is short-lived and
/// a runtime would cost more than the call.
pub fn call(state: &StateDir, req: &Request, timeout: Duration) -> Result<Reply, ControlError> {
    let path = state.control_socket();
    let reply: Reply = match round_trip(&path, req, timeout)? {
        Some(reply) => reply,
        None => return Err(ControlError::NotRunning { path }),
    };
    if !reply.ok {
        return Err(ControlError::Refused {
            message: reply.error.unwrap_or_default(),
        });
    }
    Ok(reply)
}

/// What the CLI and the dashboard ask an app's `portok run` over its run socket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum AppRequest {
    /// Redeploy now; the reply comes when the new generation serves or has failed.
    Restart,
    /// The app's last output lines.
    Logs { lines: usize },
    /// From the daemon: a request arrived for this lazy app, which is idle; start it.
    Wake,
    /// From the daemon: this lazy app had no request for its idle_stop; stop it.
    Idle,
    /// Serve the generation kept for the rollback window again.
    Rollback,
    /// Stop the app and end its `portok run`.
    Stop,
}

/// A `portok run`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AppReply {
    Redeployed {
        message: String,
    },
    Failed {
        message: String,
    },
    Logs {
        lines: Vec<String>,
    },
    /// A `wake` or `idle` was taken in.
    Noted,
}

/// How many lines of output a `portok run` keeps per generation (what `logs` can give).
pub const LOG_LINES: usize = 200;

/// The app's run socket, where `portok restart` and `portok logs` reach its supervisor.
pub fn app_socket(state: &StateDir, hostname: &str) -> PathBuf {
    state.root().join("run").join(format!("{hostname}.sock"))
}

/// Ask the `portok run` of `hostname` (blocking, bounded by `timeout`).
pub fn ask_app(
    state: &StateDir,
    hostname: &str,
    req: &AppRequest,
    timeout: Duration,
) -> Result<AppReply, ControlError> {
    let path = app_socket(state, hostname);
    match round_trip(&path, req, timeout)? {
        Some(reply) => Ok(reply),
        None => Err(ControlError::AppNotRunning {
            host: hostname.into(),
            path,
        }),
    }
}

/// The one codec of both sockets: a JSON request on one line, a JSON reply on one line.
/// None: nothing listens on `path`.
fn round_trip<Q: Serialize, R: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    req: &Q,
    timeout: Duration,
) -> Result<Option<R>, ControlError> {
    let stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(source) => {
            return Err(ControlError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let io_err = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    (&stream).write_all(&encode(req)).map_err(io_err)?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(io_err)?;
    if reply.is_empty() {
        return Err(io_err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the other side closed the connection without a reply",
        )));
    }
    serde_json::from_str(&reply)
        .map(Some)
        .map_err(|source| ControlError::BadReply { source })
}

/// One message as it goes over a socket: JSON and a newline.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Our own types always serialize.
    let mut line = serde_json::to_vec(msg).unwrap_or_default();
    line.push(b'\n');
    line
}

/// The running daemon's status, or `None` when no daemon answers.
pub fn status(state: &StateDir) -> Option<DaemonStatus> {
    call(state, &Request::Status, Duration::from_secs(3))
        .ok()
        .and_then(|r| r.status)
}
