//! `portok up`: the project's apps (`[apps.NAME]` in portok.toml) in one command. Each app
//! is its own `portok run --app NAME` child, so it is supervised, redeployed, logged and
//! routed exactly as when run alone; this process starts them in dependency order, each
//! once the apps it depends on are ready, merges their output into one stream with a
//! `name |` prefix per app, and stops them in reverse order.
//!
//! A detached `portok up -d` is this same process in its own session with its output in
//! a log file: the terminal closing does not reach it, and each `portok run` under it
//! starts the daemon again if the daemon dies. `portok down` signals it (see [`record`]).

pub mod record;

use crate::routes::{store, RouteState};
use crate::state::StateDir;
use crate::ui::say;
use anyhow::Context as _;
use record::{AppRecord, Record};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error(
        "{app} exited ({how}) before it was ready, so {waiting} did not start; its output is above"
    )]
    DependencyExited {
        app: String,
        how: String,
        waiting: String,
    },
    #[error("{app} was not ready within {secs}s, so {waiting} did not start; see its output above, or raise its ready_timeout")]
    DependencyTimeout {
        app: String,
        secs: u64,
        waiting: String,
    },
}

/// What to start, settled by cmd/up.rs: the apps in dependency order.
pub struct Plan {
    pub project: PathBuf,
    pub apps: Vec<AppPlan>,
    /// Detached (`up -d`): the output goes to this log, no colours.
    pub log: Option<PathBuf>,
}

pub struct AppPlan {
    /// The app's key in portok.toml.
    pub name: String,
    pub hostname: String,
    pub depends_on: Vec<String>,
    /// How long its dependents wait for it to be ready.
    pub ready_timeout: Duration,
    /// How long its `portok run` may take to stop (drain and kill timeout, and a margin).
    pub stop_timeout: Duration,
}

struct Running {
    app: usize,
    child: Child,
    pid: u32,
    exited: bool,
}

/// Start the apps, then wait for a signal (stop them all, in reverse order) or for every
/// app to end (each may be stopped alone by `portok down NAME`). Returns the exit code.
pub async fn up(plan: Plan, state: StateDir) -> anyhow::Result<i32> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigint = signal(SignalKind::interrupt()).context("installing signal handlers")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing signal handlers")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing signal handlers")?;
    let exe = std::env::current_exe().context("finding the portok executable")?;
    let prefix = Prefixes::new(&plan);
    let mut running: Vec<Running> = Vec::new();
    let mut record = Record {
        pid: std::process::id(),
        project: plan.project.clone(),
        apps: Vec::new(),
        log: plan.log.clone(),
    };
    let mut failure = None;
    'start: for (i, app) in plan.apps.iter().enumerate() {
        for dep in &app.depends_on {
            let Some(d) = plan.apps.iter().position(|a| &a.name == dep) else {
                continue;
            };
            let Some(r) = running.iter_mut().find(|r| r.app == d) else {
                continue;
            };
            let ready = wait_ready(&state, &plan.apps[d], &app.name, r);
            let code = tokio::select! {
                res = ready => match res {
                    Ok(()) => continue,
                    Err(e) => { failure = Some(e); break 'start; }
                },
                _ = sigint.recv() => 130,
                _ = sigterm.recv() => 143,
                _ = sighup.recv() => 129,
            };
            stop_all(&plan, &mut running).await;
            record::remove(&state, record.pid);
            return Ok(code);
        }
        let mut cmd = Command::new(&exe);
        cmd.args(["run", "--app", &app.name])
            .current_dir(&plan.project)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Ctrl-C reaches this process only; it stops the apps in order.
            .process_group(0);
        // Even if this process is killed, each app's `portok run` stops its app.
        crate::sys::die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting `portok run --app {}`", app.name))?;
        let pid = child.id().unwrap_or(0);
        for out in [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child.stderr.take().map(|o| Box::new(o) as _),
        ]
        .into_iter()
        .flatten()
        {
            tokio::spawn(forward(out, prefix.clone(), i));
        }
        running.push(Running {
            app: i,
            child,
            pid,
            exited: false,
        });
        record.apps.push(AppRecord {
            name: app.name.clone(),
            hostname: app.hostname.clone(),
            pid,
        });
        if let Err(e) = record::write(&state, &record) {
            say(&format!(
                "cannot write the record of this `portok up` (portok down will not find it): {e}"
            ));
        }
    }
    if let Some(e) = failure {
        say(&e.to_string());
        stop_all(&plan, &mut running).await;
        record::remove(&state, record.pid);
        return Ok(1);
    }
    let mut reap = tokio::time::interval(Duration::from_millis(200));
    let code = loop {
        tokio::select! {
            _ = sigint.recv() => break 130,
            _ = sigterm.recv() => break 143,
            _ = sighup.recv() => break 129,
            _ = reap.tick() => {}
        }
        let mut changed = false;
        for r in running.iter_mut().filter(|r| !r.exited) {
            if let Ok(Some(status)) = r.child.try_wait() {
                r.exited = true;
                changed = true;
                say(&format!(
                    "{} stopped ({})",
                    plan.apps[r.app].name,
                    crate::run::child::describe_exit(status)
                ));
                if let Some(a) = record.apps.iter_mut().find(|a| a.pid == r.pid) {
                    a.pid = 0;
                }
            }
        }
        if changed {
            let _ = record::write(&state, &record);
        }
        if running.iter().all(|r| r.exited) {
            break 0;
        }
    };
    stop_all(&plan, &mut running).await;
    record::remove(&state, record.pid);
    Ok(code)
}

/// Wait until `dep` (run by `r`) serves: its route is live, or idle for a lazy app.
async fn wait_ready(
    state: &StateDir,
    dep: &AppPlan,
    waiting: &str,
    r: &mut Running,
) -> Result<(), UpError> {
    let until = Instant::now() + dep.ready_timeout + Duration::from_secs(5);
    loop {
        if let Ok(Some(status)) = r.child.try_wait() {
            r.exited = true;
            return Err(UpError::DependencyExited {
                app: dep.name.clone(),
                how: crate::run::child::describe_exit(status),
                waiting: waiting.into(),
            });
        }
        let (st, host, pid) = (state.clone(), dep.hostname.clone(), r.pid);
        let ready = tokio::task::spawn_blocking(move || {
            store::load(&st).ok().is_some_and(|routes| {
                routes.iter().any(|x| {
                    x.hostname == host
                        && x.pid == pid
                        && matches!(x.state, Some(RouteState::Live | RouteState::Idle))
                })
            })
        })
        .await
        .unwrap_or(false);
        if ready {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(UpError::DependencyTimeout {
                app: dep.name.clone(),
                secs: dep.ready_timeout.as_secs(),
                waiting: waiting.into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stop the apps still running, the last started first: SIGTERM to its `portok run`
/// (which drains and stops its app), SIGKILL after its stop timeout.
async fn stop_all(plan: &Plan, running: &mut [Running]) {
    for r in running.iter_mut() {
        if let Ok(Some(_)) = r.child.try_wait() {
            r.exited = true;
        }
    }
    for r in running.iter_mut().rev().filter(|r| !r.exited) {
        let app = &plan.apps[r.app];
        say(&format!("stopping {}", app.name));
        crate::sys::signal_pid(r.pid, crate::sys::Signal::Term);
        if tokio::time::timeout(app.stop_timeout, r.child.wait())
            .await
            .is_err()
        {
            say(&format!(
                "{} did not stop within {}s; killing it",
                app.name,
                app.stop_timeout.as_secs()
            ));
            let _ = r.child.kill().await;
        }
        r.exited = true;
    }
}

/// The `name |` in front of each app's lines, padded to the longest name, coloured on a
/// terminal.
#[derive(Clone)]
struct Prefixes {
    names: std::sync::Arc<Vec<String>>,
    width: usize,
    color: bool,
}

impl Prefixes {
    fn new(plan: &Plan) -> Self {
        use std::io::IsTerminal;
        Prefixes {
            names: std::sync::Arc::new(plan.apps.iter().map(|a| a.name.clone()).collect()),
            width: plan.apps.iter().map(|a| a.name.len()).max().unwrap_or(0),
            color: plan.log.is_none()
                && std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    /// One output line of app `i`; a pool instance's `[n] ` tag joins the name.
    fn line(&self, i: usize, text: &str) -> String {
        let (tag, text) = instance_tag(text);
        let name = format!("{}{tag}", self.names[i]);
        if self.color {
            const COLORS: [u8; 6] = [36, 33, 32, 35, 34, 31];
            let c = COLORS[i % COLORS.len()];
            format!("\x1b[{c}m{name:<w$} |\x1b[0m {text}\n", w = self.width)
        } else {
            format!("{name:<w$} | {text}\n", w = self.width)
        }
    }
}

/// `[2] listening` -> (`[2]`, `listening`): the tag `portok run` puts on a pool's lines.
fn instance_tag(text: &str) -> (&str, &str) {
    if let Some(rest) = text.strip_prefix('[') {
        if let Some(end) = rest.find("] ") {
            if end > 0 && rest[..end].bytes().all(|b| b.is_ascii_digit()) {
                return (&text[..end + 2], &rest[end + 2..]);
            }
        }
    }
    ("", text)
}

async fn forward(from: Box<dyn tokio::io::AsyncRead + Unpin + Send>, prefix: Prefixes, i: usize) {
    let mut lines = BufReader::new(from).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let text = prefix.line(i, line.trim_end_matches('\r'));
        // One write per line, so lines of different apps do not interleave.
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pool_instance_tag_joins_the_name() {
        assert_eq!(super::instance_tag("[2] listening"), ("[2]", "listening"));
        assert_eq!(super::instance_tag("[x] no"), ("", "[x] no"));
        assert_eq!(super::instance_tag("plain"), ("", "plain"));
        assert_eq!(super::instance_tag("[] x"), ("", "[] x"));
    }
}
