//! What `portok run` does once the command line is settled ([`Plan`], from cmd/run.rs):
//! register the route, start the app with PORT injected, watch the source, and redeploy
//! with zero downtime. The instances themselves are owned by [`supervisor`]; this module
//! is what surrounds it: route ownership and the app's run socket (`portok restart`,
//! `portok logs`).

mod app_port;
pub mod child;
mod daemon_link;
mod flags;
mod loop_guard;
pub mod supervisor;
pub mod tool;
pub mod watch;

use crate::control::{self, AppReply, AppRequest};
use crate::daemon;
use crate::routes::{store, unix_now, Route, RouteState};
use crate::state::StateDir;
use crate::sys::pid_alive;
use crate::ui::say;
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::time::Duration;
use supervisor::{Control, Options, Supervisor};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{host} is already run by portok (pid {pid}{place}); stop that one, or pass --force to take it over")]
    Owned {
        host: String,
        pid: u32,
        /// ", in FOLDER": where the owner runs, so two projects with one name are told apart.
        place: String,
    },
    #[error("the running proxy does not serve .{tld} names: restart it with that TLD (`portok proxy stop && portok proxy start --tld {tld}`, or PORTOK_TLD={tld} in the environment of the first `portok run`)")]
    TldNotServed { tld: String },
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// What `portok run` was asked to do, settled by the command line and the project's
/// settings (cmd/run.rs).
pub struct Plan {
    /// The command, understood: the tool it runs and who restarts it.
    pub tool: tool::Understood,
    pub cwd: PathBuf,
    pub name: String,
    pub hostname: String,
    /// The custom TLD the name is under (None: .localhost); the daemon must serve it.
    pub tld: Option<String>,
    pub instances: usize,
    /// Take the name over from another live `portok run`.
    pub force: bool,
    /// What to watch for changes; None when the app is not redeployed on changes.
    pub watch: Option<WatchPlan>,
    pub opts: Options,
    pub env: Vec<(String, String)>,
}

pub struct WatchPlan {
    pub roots: Vec<PathBuf>,
    pub ignore: Vec<String>,
    pub debounce: Duration,
    /// Watch what apps and dev tools write too (`--watch-all`).
    pub all: bool,
}

/// `PORTOK=0`: run the command as is, no proxy.
pub fn run_plain(command: &[String]) -> anyhow::Result<i32> {
    let argv = child::argv(command);
    let status = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .status()
        .with_context(|| format!("cannot start `{}`", argv[0]))?;
    Ok(status.code().unwrap_or(1))
}

/// Register the route, start the app and supervise it until a signal (or, without
/// watching, until it exits). Returns the exit code.
pub async fn run(plan: Plan, state: StateDir, proxy_port: u16) -> anyhow::Result<i32> {
    let Plan {
        tool,
        cwd,
        name,
        hostname,
        tld,
        instances,
        force,
        watch,
        opts,
        env,
    } = plan;
    let status = {
        let state = state.clone();
        // A daemon started here serves the TLD too.
        let extra_args = tld
            .iter()
            .flat_map(|t| ["--tld".into(), t.clone()])
            .collect();
        let opts = daemon::StartOptions {
            port: proxy_port,
            extra_args,
        };
        tokio::task::spawn_blocking(move || daemon::start(&state, &opts)).await??
    };
    if let Some(tld) = tld.filter(|t| !status.status().tlds.contains(t)) {
        return Err(RunError::TldNotServed { tld }.into());
    }
    let base = crate::names::UrlBase {
        port: status.status().port,
        clean: status.status().clean_urls,
    };
    // A TCP app is reached on its own port, not through a URL.
    let (url, also) = match opts.tcp {
        Some(listen) => (format!("tcp 127.0.0.1:{listen}"), "not HTTP"),
        None => (
            base.url(&hostname),
            if base.clean { "http too" } else { "https too" },
        ),
    };
    take_name(&state, &hostname, force, opts.kill_timeout).await?;

    let first_port = match opts.fixed_port {
        Some(p) => p,
        None => app_port::pick_port(&state, &[])?,
    };
    if let Some(listen) = opts.tcp {
        let (state, host) = (state.clone(), hostname.clone());
        tokio::task::spawn_blocking(move || {
            crate::proxy::tcp::check_listen_port(&state, &host, listen, proxy_port, first_port)
        })
        .await??;
    }
    // The watcher lives as long as this function. It is armed before "starting" is said, so
    // an edit made from then on is seen (before, one made at once could be missed).
    let learned = watch::Learned::default();
    let (changes, _watcher, guard) = match watch {
        Some(w) => {
            let filter =
                watch::Filter::new(&w.roots, &w.ignore, state.root(), w.all, learned.clone())?;
            let (watcher, rx) = watch::spawn(w.roots, filter, w.debounce)?;
            let guard = loop_guard::LoopGuard::new(w.debounce, learned);
            (Some(rx), Some(watcher), Some(guard))
        }
        None => (None, None, None),
    };
    // A pool registers its route itself, once it has picked its instances' ports.
    if instances == 1 {
        let state_now = if opts.idle_stop.is_some() {
            RouteState::Idle
        } else {
            RouteState::Starting
        };
        let route = opts.route(&hostname, first_port, 1, state_now, Vec::new());
        daemon_link::try_publish(&state, proxy_port, route, None).await?;
        match opts.idle_stop {
            Some(after) => say(&format!(
                "{name} -> {url} ({also}), lazy: starts on the first request, stops after {} without one",
                crate::ui::duration(after.as_secs())
            )),
            None => say(&format!(
                "{name} -> {url} ({also}), starting on port {first_port}..."
            )),
        }
    } else {
        say(&format!(
            "{name} -> {url} ({also}), a pool of {instances} instances"
        ));
    }
    if let Some(port) = opts.fixed_port {
        say(&format!(
            "--app-port {port}: two generations cannot share it, so redeploys stop the old generation before starting the new one"
        ));
    }
    let (control_tx, control_rx) = mpsc::channel(8);
    let sock_path = control::app_socket(&state, &hostname);
    let server = serve_run_socket(&sock_path, control_tx).await?;
    let ca = crate::ca::ca_pem_path(state.root());
    let launch = child::Launch {
        command: tool.command.clone(),
        tool,
        name,
        url: base.url(&hostname),
        hostname,
        proxy_port: base.port,
        ca_pem: ca.exists().then_some(ca),
        env,
    };
    // A pool picks its instances' ports as it starts them.
    let announced = (instances == 1).then_some(first_port);
    let sup = Supervisor::new(launch, state.clone(), opts, instances, announced, cwd);
    let code = sup.run(changes, guard, control_rx).await;
    server.abort();
    let _ = std::fs::remove_file(&sock_path);
    Ok(code)
}

/// Refuse a name another live `portok run` owns, or (with --force) stop that owner first.
async fn take_name(
    state: &StateDir,
    hostname: &str,
    force: bool,
    kill_timeout: Duration,
) -> anyhow::Result<()> {
    let me = std::process::id();
    let owner = store::load(state)?
        .into_iter()
        .find(|r| r.hostname == hostname && r.pid != 0 && r.pid != me && pid_alive(r.pid));
    let Some(owner) = owner else { return Ok(()) };
    if !force {
        return Err(owned(hostname, owner.pid).into());
    }
    say(&format!(
        "--force: stopping the portok run (pid {}) that owns {hostname}",
        owner.pid
    ));
    // The owner stops its app and removes its route.
    crate::sys::signal_pid(owner.pid, crate::sys::Signal::Term);
    let deadline = std::time::Instant::now() + kill_timeout + Duration::from_secs(5);
    while pid_alive(owner.pid) {
        if std::time::Instant::now() > deadline {
            crate::sys::signal_pid(owner.pid, crate::sys::Signal::Kill);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The error for `host` owned by the `portok run` `pid`, naming where that one runs.
pub fn owned(host: &str, pid: u32) -> RunError {
    let place = crate::sys::process(pid)
        .and_then(|p| p.cwd)
        .map(|d| format!(", in {}", d.display()))
        .unwrap_or_default();
    RunError::Owned {
        host: host.into(),
        pid,
        place,
    }
}

/// Write (or update) this process's route (`route.pid` is ours), keeping its `since`.
pub fn register(state: &StateDir, mut route: Route) -> Result<(), RunError> {
    let me = route.pid;
    store::update(state, |routes| {
        if let Some(r) = routes
            .iter()
            .find(|r| r.hostname == route.hostname && r.pid != me && r.pid != 0 && pid_alive(r.pid))
        {
            return Err(owned(&route.hostname, r.pid));
        }
        let mine = routes
            .iter()
            .find(|r| r.hostname == route.hostname && r.pid == me);
        route.since = mine.and_then(|r| r.since).or_else(|| Some(unix_now()));
        // `portok share` / `unshare` since the first registration win over --share.
        if let Some(r) = mine {
            route.share = r.share;
        }
        routes.retain(|r| r.hostname != route.hostname);
        routes.push(route);
        Ok(())
    })?;
    Ok(())
}

/// The route `portok run` writes for one generation.
pub fn app_route(hostname: &str, port: u16, generation: u64, state: RouteState) -> Route {
    Route {
        pid: std::process::id(),
        state: Some(state),
        generation: Some(generation),
        ..Route::alias(hostname.into(), port)
    }
}

/// Remove our route (only if it is still ours) and tell the daemon.
pub fn unregister(state: &StateDir, hostname: &str) -> anyhow::Result<()> {
    let me = std::process::id();
    store::update::<_, store::StoreError>(state, |routes| {
        routes.retain(|r| !(r.hostname == hostname && r.pid == me));
        Ok(())
    })?;
    daemon::reload_if_running(state)?;
    Ok(())
}

/// Listen on the app's run socket: `restart` waits for the redeploy's outcome, `logs N`
/// returns the last N lines.
async fn serve_run_socket(
    path: &Path,
    tx: mpsc::Sender<Control>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    // A socket left by a `portok run` that was killed; we own the name now.
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = tokio::io::BufReader::new(read).lines();
                let Ok(Some(line)) = lines.next_line().await else {
                    return;
                };
                let reply = answer(&line, &tx).await;
                let _ = write.write_all(&control::encode(&reply)).await;
            });
        }
    }))
}

/// Send `make(waiter)` to the supervisor and answer with how it went (`abandoned`: what
/// is said when the supervisor drops the waiter).
async fn outcome(
    tx: &mpsc::Sender<Control>,
    make: fn(supervisor::Waiter) -> Control,
    abandoned: &str,
) -> AppReply {
    let (rtx, rrx) = oneshot::channel();
    if tx.send(make(rtx)).await.is_err() {
        return AppReply::Failed {
            message: "the app is shutting down".into(),
        };
    }
    match rrx.await {
        Ok(Ok(message)) => AppReply::Redeployed { message },
        Ok(Err(e)) => AppReply::Failed {
            message: e.to_string(),
        },
        Err(_) => AppReply::Failed {
            message: abandoned.into(),
        },
    }
}

async fn answer(line: &str, tx: &mpsc::Sender<Control>) -> AppReply {
    const ABANDONED: &str = "the request was abandoned";
    let failed = |message: &str| AppReply::Failed {
        message: message.into(),
    };
    match serde_json::from_str::<AppRequest>(line) {
        Ok(AppRequest::Restart) => {
            outcome(tx, Control::Restart, "the redeploy was abandoned").await
        }
        Ok(AppRequest::Logs { lines }) => {
            let (rtx, rrx) = oneshot::channel();
            if tx.send(Control::Logs(lines, rtx)).await.is_err() {
                return AppReply::Logs { lines: Vec::new() };
            }
            AppReply::Logs {
                lines: rrx.await.unwrap_or_default(),
            }
        }
        Ok(AppRequest::Rollback) => outcome(tx, Control::Rollback, ABANDONED).await,
        Ok(AppRequest::Stop) => outcome(tx, Control::Stop, ABANDONED).await,
        Ok(AppRequest::Wake) => {
            let _ = tx.send(Control::Wake).await;
            AppReply::Noted
        }
        Ok(AppRequest::Idle) => {
            let _ = tx.send(Control::Idle).await;
            AppReply::Noted
        }
        Err(e) => failed(&format!("not a request portok run understands: {e}")),
    }
}
