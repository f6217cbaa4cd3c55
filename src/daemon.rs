//! The daemon's life cycle as the CLI sees it: start it detached (and wait until it
//! accepts), stop it, ask its status, auto-start it for commands that need it.
//! The running daemon itself is [`runtime`].

pub mod admin;
pub mod containers;
mod lazy;
mod mdns;
mod route_sync;
pub mod runtime;
pub mod state;
pub mod status;
pub mod switch;

use crate::control::{self, ControlError, DaemonStatus, Request};
use crate::state::StateDir;
use crate::sys::pid_alive;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `proxy start` waits for the daemon to say it is accepting.
const START_WAIT: Duration = Duration::from_secs(15);

/// The word the daemon prints on stdout once it accepts connections.
pub const READY: &str = "ready";
/// The word it prints when another daemon already holds this state dir.
pub const ALREADY_RUNNING: &str = "already-running";

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot start the portok daemon: {0}")]
    Spawn(std::io::Error),
    #[error("the portok daemon did not start: {message} (log: {log})")]
    Failed { message: String, log: String },
    #[error("the portok daemon did not become ready within {0:?}; see {1}")]
    Timeout(Duration, String),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("the portok daemon (pid {pid}) did not stop within {waited:?}; it was killed")]
    Killed { pid: u32, waited: Duration },
}

/// Flags passed through to the daemon process.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    pub port: u16,
    pub extra_args: Vec<String>,
}

pub enum Started {
    Now(DaemonStatus),
    Already(DaemonStatus),
}

impl Started {
    pub fn status(&self) -> &DaemonStatus {
        match self {
            Started::Now(s) | Started::Already(s) => s,
        }
    }
}

/// Start the daemon unless it is running. Returns once it accepts connections.
pub fn start(state: &StateDir, opts: &StartOptions) -> Result<Started, DaemonError> {
    if let Some(status) = control::status(state) {
        return Ok(Started::Already(status));
    }
    state
        .ensure()
        .map_err(|e| DaemonError::Spawn(std::io::Error::other(e)))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.log_file())
        .map_err(DaemonError::Spawn)?;
    let exe = std::env::current_exe().map_err(DaemonError::Spawn)?;
    let mut cmd = Command::new(exe);
    cmd.arg("__daemon")
        .arg("--port")
        .arg(opts.port.to_string())
        .args(&opts.extra_args)
        .env("PORTOK_STATE_DIR", state.root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    crate::sys::detach_session(&mut cmd);
    let mut child = cmd.spawn().map_err(DaemonError::Spawn)?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    // Reap the child when it eventually exits so it never lingers as a zombie of a
    // long-running parent such as `portok run`.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    let log_path = state.log_file().display().to_string();
    let line = rx
        .recv_timeout(START_WAIT)
        .map_err(|_| DaemonError::Timeout(START_WAIT, log_path.clone()))?;
    let line = line.trim();
    if line == READY {
        let status = wait_for_status(state, Duration::from_secs(5))
            .ok_or_else(|| DaemonError::Timeout(START_WAIT, log_path.clone()))?;
        return Ok(Started::Now(status));
    }
    if line == ALREADY_RUNNING {
        // Another start won the race; wait for it to accept.
        let status = wait_for_status(state, START_WAIT)
            .ok_or_else(|| DaemonError::Timeout(START_WAIT, log_path.clone()))?;
        return Ok(Started::Already(status));
    }
    let message = line.strip_prefix("error: ").unwrap_or(line);
    Err(DaemonError::Failed {
        message: if message.is_empty() {
            "it exited without saying why".into()
        } else {
            message.into()
        },
        log: log_path,
    })
}

fn wait_for_status(state: &StateDir, wait: Duration) -> Option<DaemonStatus> {
    let start = Instant::now();
    loop {
        if let Some(s) = control::status(state) {
            return Some(s);
        }
        if start.elapsed() > wait {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Make sure a daemon is running, and that it has seen the latest routes.json.
pub fn ensure_and_reload(state: &StateDir, port: u16) -> Result<DaemonStatus, DaemonError> {
    match control::call(state, &Request::Reload, Duration::from_secs(5)) {
        Ok(_) => Ok(control::status(state).ok_or_else(|| {
            DaemonError::Timeout(
                Duration::from_secs(3),
                state.log_file().display().to_string(),
            )
        })?),
        Err(ControlError::NotRunning { .. }) => {
            let opts = StartOptions {
                port,
                ..Default::default()
            };
            // A freshly started daemon loads routes.json itself; an already-running one
            // (lost race) still needs the nudge.
            match start(state, &opts)? {
                Started::Now(s) => Ok(s),
                Started::Already(s) => {
                    control::call(state, &Request::Reload, Duration::from_secs(5))?;
                    Ok(s)
                }
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Tell a running daemon to re-read routes.json; nothing to do when none runs.
pub fn reload_if_running(state: &StateDir) -> Result<(), DaemonError> {
    match control::call(state, &Request::Reload, Duration::from_secs(5)) {
        Ok(_) | Err(ControlError::NotRunning { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Stop the daemon: it stops accepting, lets requests in flight finish for up to `grace`
/// (None: [`control::STOP_GRACE`]) and exits. None when no daemon ran; else how many
/// requests in flight it cut at the deadline.
pub fn stop(state: &StateDir, grace: Option<Duration>) -> Result<Option<usize>, DaemonError> {
    let Some(status) = control::status(state) else {
        return Ok(None);
    };
    let grace_for = grace.unwrap_or(control::STOP_GRACE);
    let req = Request::Shutdown {
        within_ms: grace.map(|g| g.as_millis() as u64),
    };
    let cut = control::call(state, &req, grace_for + Duration::from_secs(5))
        .ok()
        .and_then(|r| r.inflight)
        .unwrap_or(0);
    let waited = Duration::from_secs(10);
    let start = Instant::now();
    while pid_alive(status.pid) {
        if start.elapsed() > waited {
            crate::sys::signal_pid(status.pid, crate::sys::Signal::Kill);
            return Err(DaemonError::Killed {
                pid: status.pid,
                waited: grace_for + waited,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Some(cut))
}
