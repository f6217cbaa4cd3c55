//! The running daemon: binds the loopback listeners, serves the proxy, answers the control
//! socket, and keeps the route table in step with routes.json (control `reload`, a file
//! watcher as a safety net, and a sweep that drops routes whose owner died).

use super::state::{AppEvent, DaemonState, EventKind};
use crate::control::{DaemonStatus, Reply, Request};
use crate::metrics::Metrics;
use crate::proxy::{self, Ctx, Limits};
use crate::sync::LockExt;

use crate::state::StateDir;
use crate::sys::pid_alive;
use anyhow::Context as _;
use fs4::fs_std::FileExt;
use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub port: u16,
    pub limits: Limits,
    pub tls: TlsSource,
    pub redirect_https: bool,
    /// Per-request counting (on unless `--no-metrics`).
    pub metrics: bool,
    /// Requests the inspector keeps per route (0: `--no-inspect`).
    pub inspect_capacity: usize,
    /// Keep the hosts file's portok block in step with the routes, and remove it at
    /// shutdown (`--sync-hosts` / `PORTOK_SYNC_HOSTS=1`; see `crate::hosts`).
    pub sync_hosts: bool,
    /// Suffixes served besides .localhost (`--tld`, checked).
    pub tlds: Vec<String>,
    /// `--lan`: also listen on these interfaces' addresses (all when empty) for shared
    /// routes; None: loopback only.
    pub lan: Option<Vec<String>>,
    /// Follow the Docker engine and serve its containers (None: `--no-docker`).
    pub docker: Option<super::containers::Options>,
}

/// Where the daemon's certificates come from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// Leaves issued on demand by the local CA in the state dir.
    LocalCa,
    /// `proxy start --cert --key`.
    Files {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{addr} is already in use by another program; stop it, or run portok on another port with `portok proxy start --port N` (or PORTOK_PORT=N)")]
    PortInUse { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// Everything the daemon shares between its tasks.
struct Daemon {
    state: StateDir,
    ctx: Arc<Ctx>,
    /// The daemon's own facts (events, dashboard token, where it listens).
    shared: Arc<DaemonState>,
    shutdown: CancellationToken,
    /// How long requests in flight get to finish once the daemon stops.
    stop_grace: std::sync::Mutex<Duration>,
    /// The stop's outcome (requests cut at the deadline), for a `shutdown` request's reply.
    stopped: tokio::sync::watch::Sender<Option<usize>>,
    /// That reply was written, so the process may exit.
    stop_replied: tokio::sync::Notify,
    /// `--sync-hosts`: keep portok's block in the hosts file in step with the routes.
    sync_hosts: bool,
}

/// Entry point of `portok __daemon`. Prints `ready` (or `error: ...`) on stdout for the
/// starting CLI, then serves until told to stop.
pub fn main(state: StateDir, config: DaemonConfig) -> anyhow::Result<()> {
    crate::sys::raise_fd_limit();
    crate::sys::limit_malloc_arenas();
    // One worker per core we may run on (taskset is honoured), at most four: a dev proxy
    // should not take the machine.
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4);
    // On one core, the single-threaded scheduler: the multi-thread one's work-stealing
    // bookkeeping (a clock read and an average per batch of polls) buys nothing there.
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let rt = builder
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(state, config))
}

fn announce(line: &str) {
    let mut out = io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    // The CLI that started us stops reading after one line; later writes to the pipe
    // would fail, so point stdout at /dev/null.
    crate::sys::stdout_to_null();
}

/// The daemon's life in steps: take the state dir, listen, set up TLS and the proxy's
/// context, announce `ready` (a failure before that is announced instead), serve until
/// told to stop, then stop gracefully.
async fn run(state: StateDir, config: DaemonConfig) -> anyhow::Result<()> {
    let Some(pid_file) = lock_state_dir(&state)? else {
        announce(crate::daemon::ALREADY_RUNNING);
        return Ok(());
    };
    let (listeners, listening) =
        listen(&config).inspect_err(|e| announce(&format!("error: {e}")))?;
    let lan_ips = lan_ips(&listening);
    let tls =
        tls_config(&state, &config, &lan_ips).inspect_err(|e| announce(&format!("error: {e}")))?;
    let token = admin_token(&state).inspect_err(|e| announce(&format!("error: {e:#}")))?;
    let daemon = new_daemon(&state, &config, tls, token);
    daemon.reload().await;

    let sock_path = state.control_socket();
    let control = bind_control(&sock_path)?;
    info!(port = config.port, addrs = ?listening, "portok daemon listening");
    *daemon.shared.listening.locked() = listening;
    write_pid_files(&state, &pid_file, config.port)?;
    announce(crate::daemon::READY);

    let mut tasks = spawn_tasks(&daemon, listeners, control, lan_ips, config.port);
    if let Some(opts) = config.docker {
        let follow =
            super::containers::follow(daemon.shared.clone(), opts, daemon.shutdown.clone());
        tasks.spawn(follow);
    }
    daemon.shutdown.cancelled().await;
    stop(&daemon, tasks).await;
    let _ = std::fs::remove_file(&sock_path);
    let _ = std::fs::remove_file(state.port_file());
    let _ = pid_file.set_len(0);
    Ok(())
}

/// Make the state dir (a failure is announced), and take the lock on proxy.pid: one
/// daemon per state dir, whoever holds it. None: another daemon holds it.
fn lock_state_dir(state: &StateDir) -> anyhow::Result<Option<std::fs::File>> {
    state
        .ensure()
        .inspect_err(|e| announce(&format!("error: {e}")))?;
    for path in state.secure_files() {
        warn!(path = %path.display(), "a secret file was readable by others; made it 0600");
    }
    let pid_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(state.pid_file())
        .with_context(|| format!("opening {}", state.pid_file().display()))?;
    Ok(FileExt::try_lock_exclusive(&pid_file)
        .unwrap_or(false)
        .then_some(pid_file))
}

/// The loopback listeners (and with `--lan`, the machine's other addresses), with the
/// addresses they listen on.
fn listen(config: &DaemonConfig) -> Result<(Vec<TcpListener>, Vec<String>), StartError> {
    let mut listeners = bind_listeners(config.port)?;
    if let Some(interfaces) = &config.lan {
        listeners.extend(bind_lan(config.port, interfaces));
    }
    let listening = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect();
    Ok((listeners, listening))
}

/// The addresses of `listening` that are not loopback (`--lan`).
fn lan_ips(listening: &[String]) -> Vec<std::net::IpAddr> {
    listening
        .iter()
        .filter_map(|a| a.parse::<SocketAddr>().ok())
        .map(|a| a.ip())
        .filter(|ip| !crate::proxy::lan::is_local(*ip))
        .collect()
}

/// The TLS server config: leaves from the local CA (for .localhost, the TLDs, and on the
/// LAN .local and its addresses), or `--cert`/`--key`.
fn tls_config(
    state: &StateDir,
    config: &DaemonConfig,
    lan_ips: &[std::net::IpAddr],
) -> Result<Arc<rustls::ServerConfig>, crate::proxy::tls::TlsError> {
    match &config.tls {
        TlsSource::LocalCa => {
            // On the LAN, shared routes are also NAME.local: the CA covers .local then.
            let mut names = config.tlds.clone();
            if config.lan.is_some() {
                names.push(crate::names::LAN_TLD.to_string());
            }
            crate::proxy::tls::server_config(state.root(), &names, lan_ips)
        }
        TlsSource::Files { cert, key } => crate::proxy::tls::server_config_from_files(cert, key),
    }
}

/// The proxy's context (with the metrics saved last time) and the daemon's own state
/// around it.
fn new_daemon(
    state: &StateDir,
    config: &DaemonConfig,
    tls: Arc<rustls::ServerConfig>,
    token: String,
) -> Arc<Daemon> {
    let metrics = Arc::new(
        std::fs::read(state.stats_file())
            .map(|b| Metrics::from_json(&b))
            .unwrap_or_default(),
    );
    let mut ctx = Ctx::new(
        state.clone(),
        config.port,
        config.limits.clone(),
        Some(tls),
        metrics,
    );
    ctx.redirect_https = config.redirect_https;
    ctx.metrics_enabled = config.metrics;
    ctx.inspect_capacity = config.inspect_capacity;
    ctx.tlds = config.tlds.clone();
    let ctx = Arc::new(ctx);
    let shared = Arc::new(DaemonState::new(ctx.clone(), token, config.tlds.clone()));
    let _ = ctx
        .pages
        .set(Arc::new(crate::daemon::admin::Pages(shared.clone())));
    Arc::new(Daemon {
        state: state.clone(),
        ctx: ctx.clone(),
        shared,
        shutdown: ctx.stopping.clone(),
        stop_grace: std::sync::Mutex::new(crate::control::STOP_GRACE),
        stopped: tokio::sync::watch::channel(None).0,
        stop_replied: tokio::sync::Notify::new(),
        sync_hosts: config.sync_hosts,
    })
}

/// The control socket, mode 0600 (one left by a daemon that died is replaced).
fn bind_control(sock_path: &std::path::Path) -> anyhow::Result<UnixListener> {
    let _ = std::fs::remove_file(sock_path);
    let control = UnixListener::bind(sock_path)
        .with_context(|| format!("binding the control socket {}", sock_path.display()))?;
    std::fs::set_permissions(sock_path, std::fs::Permissions::from_mode(0o600))?;
    Ok(control)
}

/// The daemon's tasks: the proxy, the control socket, and the loops that keep routes,
/// ports, metrics, mDNS and lazy apps in step.
fn spawn_tasks(
    daemon: &Arc<Daemon>,
    listeners: Vec<TcpListener>,
    control: UnixListener,
    lan_ips: Vec<std::net::IpAddr>,
    port: u16,
) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let shutdown = &daemon.shutdown;
    tasks.spawn(proxy::serve(
        listeners,
        daemon.ctx.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(control_loop(control, daemon.clone()));
    tasks.spawn(sweep_loop(daemon.clone()));
    tasks.spawn(watch_loop(daemon.clone()));
    tasks.spawn(ports_loop(daemon.clone()));
    tasks.spawn(signal_loop(shutdown.clone()));
    tasks.spawn(metrics_loop(daemon.clone()));
    let state = daemon.state.clone();
    tasks.spawn(async move { ensure_added_owners(&state).await });
    let shared = &daemon.shared;
    tasks.spawn(super::mdns::announce_loop(
        shared.clone(),
        lan_ips,
        port,
        shutdown.clone(),
    ));
    tasks.spawn(super::lazy::idle_loop(shared.clone(), shutdown.clone()));
    tasks
}

/// The graceful stop, once told to: let requests in flight finish (up to the grace), reply
/// to a waiting `portok proxy stop`, end the tasks, and leave the hosts file and
/// stats.json as they should be.
async fn stop(daemon: &Daemon, mut tasks: tokio::task::JoinSet<()>) {
    let grace = *daemon.stop_grace.locked();
    info!(
        ?grace,
        "stopping: no new connections; letting requests in flight finish"
    );
    // The accept loops end (their listeners close) and each connection ends after the
    // requests it has in progress; wait for those, up to the grace.
    let cut = daemon
        .ctx
        .drain_all(tokio::time::Instant::now() + grace)
        .await;
    if cut > 0 {
        warn!(
            cut,
            ?grace,
            "stopped with requests still in flight: they were cut"
        );
    } else {
        info!("every request in flight finished");
    }
    let waiting = daemon.stopped.receiver_count() > 0;
    let _ = daemon.stopped.send(Some(cut));
    if waiting {
        // `portok proxy stop` waits for the reply; let it be written before exiting.
        let _ = tokio::time::timeout(Duration::from_secs(1), daemon.stop_replied.notified()).await;
    }
    tasks.abort_all();
    daemon.ctx.tcp.stop_all();
    if daemon.sync_hosts || !daemon.shared.tlds.is_empty() {
        if let Err(e) = crate::hosts::remove_block(&crate::hosts::hosts_path()) {
            warn!(error = %e, "cannot remove portok's hosts block");
        }
    }
    save_metrics(daemon);
}

fn write_pid_files(state: &StateDir, pid_file: &std::fs::File, port: u16) -> anyhow::Result<()> {
    pid_file.set_len(0)?;
    let mut f = pid_file;
    write!(f, "{}", std::process::id())?;
    std::fs::write(state.port_file(), format!("{port}\n"))
        .with_context(|| format!("writing {}", state.port_file().display()))?;
    Ok(())
}

/// `--lan`: the machine's other addresses (those of `interfaces` when named), each bound
/// on its own, never a wildcard. One that cannot be bound is logged and left out: loopback
/// keeps working whatever happens here.
fn bind_lan(port: u16, interfaces: &[String]) -> Vec<TcpListener> {
    let addrs: Vec<_> = crate::sys::interface_addresses()
        .into_iter()
        .filter(|(name, _)| interfaces.is_empty() || interfaces.contains(name))
        .collect();
    if addrs.is_empty() {
        warn!(
            ?interfaces,
            "--lan: no address besides loopback; serving loopback only"
        );
    }
    addrs
        .into_iter()
        .filter_map(|(name, ip)| match bind_one(SocketAddr::new(ip, port)) {
            Ok(l) => Some(l),
            Err(e) => {
                warn!(interface = name, error = %e, "--lan: cannot listen there");
                None
            }
        })
        .collect()
}

/// 127.0.0.1 always; ::1 too where the machine has IPv6. Never a wildcard address.
fn bind_listeners(port: u16) -> Result<Vec<TcpListener>, StartError> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut out = vec![bind_one(v4)?];
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    match bind_one(v6) {
        Ok(l) => out.push(l),
        Err(StartError::Bind { source, .. }) if crate::sys::no_ipv6(&source) => {}
        Err(e) => return Err(e),
    }
    Ok(out)
}

fn bind_one(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let bind_err = |source: io::Error| {
        if source.kind() == io::ErrorKind::AddrInUse {
            StartError::PortInUse { addr }
        } else {
            StartError::Bind { addr, source }
        }
    };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(bind_err)?;
    // A restarted daemon rebinds at once even with connections in TIME_WAIT.
    socket.set_reuseaddr(true).map_err(bind_err)?;
    socket.bind(addr).map_err(bind_err)?;
    socket.listen(1024).map_err(bind_err)
}

impl Daemon {
    /// Re-read routes.json and swap the table. A corrupt file keeps the current table.
    /// Re-read routes.json, then bind or release TCP listeners to match. Returns the TCP
    /// ports that could not be bound, for the writer that asked.
    async fn reload(&self) -> Vec<crate::proxy::tcp::TcpError> {
        self.shared.reload_routes().await;
        // Names under a custom TLD resolve only through the hosts file, so their entries
        // are kept in step without --sync-hosts (which adds every name).
        let tlds = &self.shared.tlds;
        if self.sync_hosts || !tlds.is_empty() {
            let mut names = self.ctx.routes.load().hostnames();
            if !self.sync_hosts {
                names.retain(|n| tlds.iter().any(|t| crate::names::is_under(n, t)));
            }
            let path = crate::hosts::hosts_path();
            // Writes only when the block changes; with no routes it removes the block.
            if let Ok(Err(e)) =
                tokio::task::spawn_blocking(move || crate::hosts::sync_routes(&path, &names)).await
            {
                warn!(error = %e, "cannot sync the hosts file");
            }
        }
        crate::proxy::tcp::TcpRoutes::reconcile(&self.ctx).await
    }

    fn status(&self) -> DaemonStatus {
        crate::daemon::admin::status(&self.shared).summary()
    }
}

async fn control_loop(listener: UnixListener, daemon: Arc<Daemon>) {
    loop {
        let stream = tokio::select! {
            _ = daemon.shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!(error = %e, "control accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let daemon = daemon.clone();
        tokio::spawn(async move {
            if let Err(e) = control_conn(stream, daemon).await {
                warn!(error = %e, "control connection failed");
            }
        });
    }
}

async fn control_conn(stream: UnixStream, daemon: Arc<Daemon>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let (reply, stop) = match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                let stop = matches!(req, Request::Shutdown { .. });
                (handle_control(req, &daemon).await, stop)
            }
            Err(e) => (Reply::error(format!("unknown request: {e}")), false),
        };
        write.write_all(&crate::control::encode(&reply)).await?;
        if stop {
            daemon.stop_replied.notify_one();
        }
    }
    Ok(())
}

async fn handle_control(req: Request, daemon: &Daemon) -> Reply {
    match req {
        Request::Reload => {
            let errors = daemon.reload().await;
            if errors.is_empty() {
                Reply::ok()
            } else {
                let msgs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                Reply::error(msgs.join("; "))
            }
        }
        Request::Status => Reply {
            status: Some(daemon.status()),
            ..Reply::ok()
        },
        Request::Shutdown { within_ms } => {
            if let Some(ms) = within_ms {
                *daemon.stop_grace.locked() = Duration::from_millis(ms);
            }
            let mut stopped = daemon.stopped.subscribe();
            daemon.shutdown.cancel();
            let cut = match stopped.wait_for(Option::is_some).await {
                Ok(cut) => *cut,
                Err(_) => None,
            };
            Reply {
                inflight: cut,
                ..Reply::ok()
            }
        }
        Request::Inflight { port } => Reply {
            inflight: Some(daemon.ctx.inflight(port)),
            ..Reply::ok()
        },
        Request::Drain { port, within_ms } => {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(within_ms);
            Reply {
                inflight: Some(daemon.ctx.drained(port, deadline).await),
                ..Reply::ok()
            }
        }
        Request::Crash {
            hostname,
            message,
            tail,
        } => {
            daemon.shared.record_crash(hostname, message, tail);
            Reply::ok()
        }
        Request::Requests {
            name,
            after,
            secrets,
        } => match crate::daemon::admin::requests::list(&daemon.shared, &name, after, secrets) {
            Ok(list) => Reply {
                data: Some(serde_json::Value::Array(list)),
                ..Reply::ok()
            },
            Err(e) => Reply::error(e.to_string()),
        },
        Request::Detail => Reply {
            data: serde_json::to_value(crate::daemon::admin::status(&daemon.shared)).ok(),
            ..Reply::ok()
        },
        Request::Redeploy {
            hostname,
            record,
            tail,
        } => {
            let kind = EventKind::from(record.outcome);
            let event = AppEvent {
                hostname: hostname.clone(),
                kind,
                generation: record.generation,
                message: record
                    .detail
                    .clone()
                    .unwrap_or_else(|| record.reason.clone()),
                tail,
            };
            {
                let mut standing = daemon.shared.last_failure.locked();
                if event.kind == EventKind::Failed {
                    standing.insert(hostname.clone(), event.clone());
                } else if event.kind == EventKind::Redeployed {
                    standing.remove(&hostname);
                }
            }
            let _ = daemon.shared.events.send(event);
            daemon.ctx.metrics.route(&hostname).record_redeploy(record);
            Reply::ok()
        }
        Request::Switch { hostname, request } => {
            match crate::daemon::switch::switch(&daemon.shared, &hostname, request).await {
                Ok(msg) => Reply {
                    message: Some(msg),
                    ..Reply::ok()
                },
                Err(e) => Reply::error(e.to_string()),
            }
        }
    }
}

/// Drop routes whose owning process died (a `portok run` killed with SIGKILL).
async fn sweep_loop(daemon: Arc<Daemon>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = daemon.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let dead = daemon
            .ctx
            .routes
            .load()
            .sorted()
            .iter()
            .any(|l| l.route.pid != 0 && !pid_alive(l.route.pid));
        if dead {
            // reload() stops the dead owner's app and drops its route.
            daemon.reload().await;
            ensure_added_owners(&daemon.state).await;
        }
    }
}

/// Apps added with `portok add` whose `portok run` is gone (at the daemon's start, or
/// killed) get a new one.
async fn ensure_added_owners(state: &StateDir) {
    let state = state.clone();
    match tokio::task::spawn_blocking(move || crate::added::ensure_owners(&state)).await {
        Ok(Ok(started)) if !started.is_empty() => {
            info!(apps = ?started, "started the portok run of added apps")
        }
        Ok(Err(e)) => warn!(error = %e, "cannot start the added apps"),
        _ => {}
    }
}

/// A safety net for writers that do not send `reload`: watch the state dir for routes.json.
async fn watch_loop(daemon: Arc<Daemon>) {
    use notify::{RecursiveMode, Watcher};
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let routes_name = std::ffi::OsString::from("routes.json");
    let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            // Opening or reading routes.json (every `portok list`) is not a change.
            use notify::event::{AccessKind, AccessMode, EventKind};
            if matches!(ev.kind, EventKind::Access(k) if k != AccessKind::Close(AccessMode::Write))
            {
                return;
            }
            if ev.paths.iter().any(|p| p.file_name() == Some(&routes_name)) {
                let _ = tx.try_send(());
            }
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "cannot watch the state dir; routes update via the control socket only");
            return;
        }
    };
    if let Err(e) = watcher.watch(daemon.state.root(), RecursiveMode::NonRecursive) {
        warn!(error = %e, "cannot watch the state dir");
        return;
    }
    loop {
        tokio::select! {
            _ = daemon.shutdown.cancelled() => return,
            got = rx.recv() => if got.is_none() { return },
        }
        // Let a burst of events settle, then read once, unless the table already holds
        // this version (the daemon's own write, or one a writer asked it to reload).
        tokio::time::sleep(Duration::from_millis(20)).await;
        while rx.try_recv().is_ok() {}
        if daemon.shared.routes_changed_on_disk() {
            daemon.reload().await;
        }
    }
}

/// Whether loopback ports 80 and 443 reach this daemon (`portok ports enable`), checked at
/// start and every few seconds while the rules are installed, so route URLs drop the port
/// exactly while that works.
async fn ports_loop(daemon: Arc<Daemon>) {
    let paths = crate::clean_urls::Paths::system();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = daemon.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let port = daemon.ctx.port;
        let installed = tokio::task::spawn_blocking({
            let paths = paths.clone();
            move || crate::clean_urls::state(&paths, port, || true) == crate::clean_urls::State::On
        })
        .await
        .unwrap_or(false);
        let on = installed && reaches_me(80).await;
        daemon
            .shared
            .clean_urls
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Does a request to 127.0.0.1:`port` for the daemon's own host reach this process?
async fn reaches_me(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let req = format!(
            "GET /api/status HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            crate::names::ADMIN_HOST
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        (&mut s).take(1 << 20).read_to_end(&mut buf).await.ok()?;
        let at = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let v: serde_json::Value = serde_json::from_slice(&buf[at + 4..]).ok()?;
        Some(v["pid"] == std::process::id())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
}

async fn signal_loop(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = shutdown.cancelled() => return,
    }
    shutdown.cancel();
}

/// The dashboard's admin token: made on first start (0600), reused after.
fn admin_token(state: &StateDir) -> anyhow::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = state.admin_token_file();
    if let Ok(t) = std::fs::read_to_string(&path) {
        if !t.trim().is_empty() {
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
            return Ok(t.trim().to_string());
        }
    }
    let bytes: [u8; 24] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(token.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

/// Rolling requests/s once a second; counters saved to stats.json every few seconds.
async fn metrics_loop(daemon: Arc<Daemon>) {
    let period = Duration::from_secs(1);
    let mut tick = tokio::time::interval(period);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = daemon.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        daemon.ctx.metrics.sample(period);
        n += 1;
        if n.is_multiple_of(5) {
            let d = daemon.clone();
            let _ = tokio::task::spawn_blocking(move || {
                save_metrics(&d);
                crate::sys::trim_memory();
            })
            .await;
        }
    }
}

/// Write stats.json atomically; a failure only costs history, so it is logged.
fn save_metrics(daemon: &Daemon) {
    let path = daemon.state.stats_file();
    let bytes = daemon.ctx.metrics.to_json();
    if let Err(e) = crate::fsutil::write_atomic(&path, &bytes, 0o600) {
        warn!(error = %e, path = %path.display(), "cannot save metrics");
    }
}
