//! The supervisor: one task owns every instance of one app, in N slots (`--instances N`,
//! 1 by default). The watcher, the signal handlers and `portok restart` send it events.
//!
//! - A redeploy starts generation N+1 beside N, switches the route when it answers, then
//!   drains N and stops it. A pool does this one slot at a time, so capacity never drops
//!   below N-1. A replacement that fails before it is ready is stopped and the rest keeps
//!   serving.
//! - A single instance keeps N for the rollback window: if N+1 dies in it, the route goes
//!   back to N. If its one instance crashes, the crash page is served until the next change.
//! - A pool's instance that crashes leaves the rotation at once and is started again after
//!   a back-off that doubles while it keeps crashing; the others serve meanwhile.
//! - With `--app-port` two generations cannot overlap: a redeploy stops, then starts.
//!
//! The deploy steps are in [`deploy`], what happens when an instance exits in [`exits`],
//! and what the route says in [`route`].

mod deploy;
mod discover;
mod exits;
mod lazy;
mod route;
mod slots;

use super::child::Launch;
use super::daemon_link;
use crate::control::Request;
use crate::state::StateDir;
use crate::ui::say;
use slots::{Rollout, Slot};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone)]
pub struct Options {
    pub health: Option<String>,
    pub ready_timeout: Duration,
    pub hold: u64,
    /// How long a single instance keeps the generation it switched away from.
    pub rollback_window: Duration,
    pub drain: Duration,
    pub kill_timeout: Duration,
    /// `--app-port`: generations cannot overlap, so redeploys stop then start.
    pub fixed_port: Option<u16>,
    pub watching: bool,
    /// `--reload`: the proxy injects the live-reload script into this app's pages.
    pub reload: bool,
    /// `--tcp LISTEN`: a TCP app; ready means it accepts a connection (unless --health).
    pub tcp: Option<u16>,
    pub proxy_protocol: bool,
    /// `--lazy`: start on the first request, stop after this long with none.
    pub idle_stop: Option<Duration>,
    /// An instance that crashes (or never answers) is started again after a back-off,
    /// single or pooled, with the crash page meanwhile: apps of `portok up` and lazy apps,
    /// which no terminal watches.
    pub restart_crashed: bool,
    /// `--inspect-bodies`: the inspector keeps this app's bodies.
    pub inspect_bodies: bool,
    /// `--share`: the route starts shared (`portok share`/`unshare` change it later).
    pub share: bool,
    /// How portok speaks to the app: declared (`--upstream`), or found by the probe
    /// (None until then: HTTP/1.1).
    pub upstream: Option<crate::routes::Upstream>,
}

impl Options {
    /// The app's route with these options: ours, in `state`, for generation `n` on `port`.
    pub(super) fn route(
        &self,
        host: &str,
        port: u16,
        n: u64,
        state: crate::routes::RouteState,
        pgids: Vec<i32>,
    ) -> crate::routes::Route {
        crate::routes::Route {
            pgids,
            hold: Some(self.hold),
            reload: self.reload,
            tcp: self.tcp,
            proxy_protocol: self.proxy_protocol,
            idle_stop: self.idle_stop.map(|d| d.as_secs().max(1)),
            inspect_bodies: self.inspect_bodies,
            share: self.share,
            upstream: self.upstream.unwrap_or_default(),
            ..super::app_route(host, port, n, state)
        }
    }
}

/// Why a start or a redeploy failed; what `portok restart` is told.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SuperviseError {
    #[error("{who}: {reason}")]
    NoPort { who: String, reason: String },
    #[error("{who}: {reason}")]
    Spawn { who: String, reason: String },
    #[error("{who} {why} before it was ready")]
    NotReady { who: String, why: String },
    #[error("cannot install signal handlers: {0}")]
    Signals(String),
    #[error("no earlier generation is kept to roll back to ({why})")]
    NothingKept { why: String },
}

pub type Waiter = oneshot::Sender<Result<String, SuperviseError>>;
/// A probe's result: (pid, answered in time).
pub(super) type Probed = (u32, slots::Probe);

/// Requests from `portok restart` / `portok logs` (through the app's run socket).
pub enum Control {
    Restart(Waiter),
    Logs(usize, oneshot::Sender<Vec<String>>),
    /// Serve the kept generation again (the dashboard's button).
    Rollback(Waiter),
    /// Stop everything and end (the dashboard's button).
    Stop(Waiter),
    /// A lazy app got a request while idle (from the daemon).
    Wake,
    /// A lazy app had no request for its idle_stop (from the daemon).
    Idle,
}

enum Event {
    Signal(i32),
    Changed(Vec<PathBuf>),
    Control(Control),
    /// A child exited (or the periodic check): look at every instance.
    Reap,
    /// An instance's probe found something: (pid, what).
    Probed(u32, slots::Probe),
    RestartDue,
    RollbackWindowOver,
    /// Time to check that the daemon is still there.
    Watchdog,
}

pub struct Supervisor {
    launch: Launch,
    state: StateDir,
    opts: Options,
    cwd: PathBuf,
    slots: Vec<Slot>,
    /// The newest generation: the one running, or the one a redeploy moves to.
    gen: u64,
    /// The port run.rs announced for the first start.
    first_port: Option<u16>,
    rollout: Option<Rollout>,
    /// Set when nothing could be kept running: the crash page shows until the next change.
    crashed: bool,
    probes: (mpsc::Sender<Probed>, mpsc::Receiver<Probed>),
    /// The output of the last instance that died, for `portok logs` and the crash page.
    last_tail: Vec<String>,
    stopping: tokio::task::JoinSet<()>,
    /// What the route says now, so it is written only when it changes.
    written: Option<(Vec<u16>, crate::routes::RouteState)>,
    /// A pool's "ready: N instances" was said once.
    announced: bool,
    /// A lazy app with nothing running: the route is idle until a request wakes it.
    idle: bool,
    /// A fixed-port redeploy stopped this serving generation to free the port: if the one
    /// started in its place fails, the command is started once more.
    stopped_in_place: Option<u64>,
}

impl Supervisor {
    /// `first_port`: where the first instance listens (already in its route); later ports
    /// are picked as instances start.
    pub fn new(
        launch: Launch,
        state: StateDir,
        opts: Options,
        instances: usize,
        first_port: Option<u16>,
        cwd: PathBuf,
    ) -> Self {
        Supervisor {
            launch,
            state,
            opts,
            cwd,
            slots: (0..instances.max(1)).map(|_| Slot::default()).collect(),
            gen: 1,
            first_port,
            rollout: None,
            crashed: false,
            probes: mpsc::channel(64),
            last_tail: Vec::new(),
            stopping: tokio::task::JoinSet::new(),
            written: None,
            announced: false,
            idle: false,
            stopped_in_place: None,
        }
    }

    /// One instance: no pool wording, a rollback window, and a crash page on a crash.
    fn single(&self) -> bool {
        self.slots.len() == 1
    }

    /// Run until a signal (or, without watching, until the app exits). Returns the exit code.
    pub async fn run(
        mut self,
        mut changes: Option<mpsc::Receiver<Vec<PathBuf>>>,
        mut guard: Option<super::loop_guard::LoopGuard>,
        mut control: mpsc::Receiver<Control>,
    ) -> i32 {
        use tokio::signal::unix::{signal, SignalKind};
        let signals = (|| {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
                signal(SignalKind::hangup())?,
                signal(SignalKind::child())?,
            ))
        })();
        let (mut sigint, mut sigterm, mut sighup, mut sigchld) = match signals {
            Ok(s) => s,
            Err(e) => {
                say(&SuperviseError::Signals(e.to_string()).to_string());
                return 1;
            }
        };
        if self.opts.idle_stop.is_some() {
            self.go_idle(None).await;
        } else if let Err(e) = self.start_all(None).await {
            say(&e.to_string());
            self.shutdown().await;
            return 1;
        }
        // SIGCHLD is the fast path; the tick catches an exit whose signal was merged.
        let mut reap = tokio::time::interval(Duration::from_millis(250));
        // The daemon is checked every second: if it died (kill -9, OOM), it is started again
        // with every route (they are in routes.json) within about a second.
        let mut watchdog = tokio::time::interval(Duration::from_secs(1));
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let restart_at = self.slots.iter().filter_map(|s| s.restart_at).min();
            let window = self.opts.rollback_window;
            let window_ends = self
                .slots
                .iter()
                .filter_map(|s| s.window_ends(window))
                .min();
            let event = tokio::select! {
                _ = sigint.recv() => Event::Signal(130),
                _ = sigterm.recv() => Event::Signal(143),
                _ = sighup.recv() => Event::Signal(129),
                Some(paths) = super::watch::next_change(&mut changes) => Event::Changed(paths),
                Some(c) = control.recv() => Event::Control(c),
                _ = sigchld.recv() => Event::Reap,
                _ = reap.tick() => Event::Reap,
                Some((pid, found)) = self.probes.1.recv() => Event::Probed(pid, found),
                _ = sleep_until(restart_at) => Event::RestartDue,
                _ = sleep_until(window_ends) => Event::RollbackWindowOver,
                Some(_) = self.stopping.join_next(), if !self.stopping.is_empty() => continue,
                _ = watchdog.tick() => Event::Watchdog,
            };
            let exit = self.handle(event, &mut guard).await;
            if let Some(code) = exit {
                self.shutdown().await;
                return code;
            }
        }
    }

    /// Act on one event; Some(exit code) when the supervisor is to stop.
    async fn handle(
        &mut self,
        event: Event,
        guard: &mut Option<super::loop_guard::LoopGuard>,
    ) -> Option<i32> {
        match event {
            Event::Signal(code) => Some(code),
            // An idle app starts from the current source when it is woken.
            Event::Changed(_) if self.idle => None,
            Event::Changed(paths) => {
                self.changed(paths, guard).await;
                None
            }
            Event::Control(c) => self.control(c).await,
            Event::Reap => self.reap().await,
            Event::Probed(pid, found) => self.found(pid, found).await,
            Event::RestartDue => {
                self.restart_due().await;
                None
            }
            Event::RollbackWindowOver => {
                self.window_over();
                None
            }
            Event::Watchdog => {
                self.check_daemon().await;
                None
            }
        }
    }

    /// Files changed: redeploy, and tell the loop guard (which may find that the app
    /// writes what is watched on every start).
    async fn changed(
        &mut self,
        paths: Vec<PathBuf>,
        guard: &mut Option<super::loop_guard::LoopGuard>,
    ) {
        // Judged before the redeploy: the generation it starts writes at once.
        let since_start = self.newest_start().map(|t| t.elapsed());
        let caught = guard
            .as_mut()
            .and_then(|g| g.redeployed(&paths, since_start));
        let reason = format!("change in {}", self.shown(&paths));
        self.redeploy(reason, Vec::new()).await;
        if let Some(caught) = caught {
            self.caught_loop(&caught);
        }
    }

    /// A request over the run socket (`portok restart`, `logs`, the dashboard's buttons, the
    /// daemon's wake and idle); Some(exit code) for a stop.
    async fn control(&mut self, c: Control) -> Option<i32> {
        match c {
            Control::Restart(reply) if self.idle => {
                let _ = reply.send(
                    self.wake("restart requested")
                        .await
                        .map(|_| "the app was idle; it is starting".to_string()),
                );
            }
            Control::Rollback(reply) => {
                let _ = reply.send(self.roll_back_now().await);
            }
            Control::Stop(reply) => {
                let _ = reply.send(Ok(format!("stopping {}", self.launch.name)));
                say("stop requested from the dashboard");
                return Some(0);
            }
            Control::Wake => {
                if self.idle {
                    let _ = self.wake("a request arrived").await;
                }
            }
            Control::Idle => self.go_idle(Some(Instant::now())).await,
            Control::Restart(reply) => self.redeploy("restart requested".into(), vec![reply]).await,
            Control::Logs(n, reply) => {
                let _ = reply.send(self.tail(n));
            }
        }
        None
    }

    /// When the newest generation started (a rollout's new one, else the running one).
    fn newest_start(&self) -> Option<Instant> {
        let next = self
            .rollout
            .as_ref()
            .and_then(|r| r.next.as_ref())
            .map(|(_, i)| i.gen.started);
        let running = self
            .slots
            .iter()
            .filter_map(|s| s.running.as_ref())
            .map(|i| i.gen.started);
        next.into_iter().chain(running).max()
    }

    /// Changed paths as the user knows them: relative to the project, the first few.
    /// Files an editor or `sed -i` wrote and renamed away in the burst are left out while
    /// any changed file is still there.
    fn shown(&self, paths: &[PathBuf]) -> String {
        let there: Vec<&PathBuf> = paths.iter().filter(|p| p.exists()).collect();
        let paths: Vec<&PathBuf> = if there.is_empty() {
            paths.iter().collect()
        } else {
            there
        };
        let rel: Vec<String> = paths
            .iter()
            .take(3)
            .map(|p| p.strip_prefix(&self.cwd).unwrap_or(p).display().to_string())
            .collect();
        match paths.len() {
            n if n > 3 => format!("{} and {} more", rel.join(", "), n - 3),
            _ => rel.join(", "),
        }
    }

    fn caught_loop(&self, paths: &[PathBuf]) {
        let ignores: Vec<String> = paths
            .iter()
            .map(|p| {
                format!(
                    "--ignore {:?}",
                    p.strip_prefix(&self.cwd).unwrap_or(p).display().to_string()
                )
            })
            .collect();
        say(&format!(
            "{} changed within {}s of each of the last {} starts, so the app writes it itself: portok no longer redeploys for it (to make this permanent, pass {})",
            self.shown(paths),
            super::loop_guard::WITHIN.as_secs(),
            super::loop_guard::TRIPS,
            ignores.join(" ")
        ));
    }

    /// The last `n` lines the app wrote: the running instances', or the last dead one's.
    fn tail(&self, n: usize) -> Vec<String> {
        let mut lines: Vec<String> = self
            .slots
            .iter()
            .filter_map(|s| s.running.as_ref())
            .flat_map(|i| i.gen.tail(n))
            .collect();
        if lines.is_empty() {
            lines = self.last_tail.clone();
        }
        lines.split_off(lines.len().saturating_sub(n))
    }

    async fn check_daemon(&mut self) {
        // The crash page's details lived in the old daemon.
        if daemon_link::revive_daemon(&self.state, self.launch.proxy_port).await
            && self.crashed
            && !self.last_tail.is_empty()
        {
            let req = Request::Crash {
                hostname: self.launch.hostname.clone(),
                message: "the app is not running".into(),
                tail: self.last_tail.clone(),
            };
            daemon_link::tell_daemon(&self.state, req).await;
        }
    }

    /// Stop every instance (SIGTERM to each group, SIGKILL after the timeout) and remove
    /// the route.
    async fn shutdown(&mut self) {
        let mut gens = Vec::new();
        if let Some(mut r) = self.rollout.take() {
            gens.extend(r.next.take().map(|(_, i)| i.gen));
        }
        for s in &mut self.slots {
            gens.extend(s.running.take().map(|i| i.gen));
            gens.extend(s.kept.take().map(|k| k.inst.gen));
        }
        daemon_link::withdraw(&self.state, &self.launch.hostname).await;
        let kill = self.opts.kill_timeout;
        futures_util::future::join_all(gens.iter_mut().map(|g| g.stop(kill))).await;
        // Generations already draining: stop them now rather than waiting out the drain.
        self.stopping.abort_all();
        while self.stopping.join_next().await.is_some() {}
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// A shell-style exit code: the status, or 128 + the signal.
fn exit_code(status: ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
    })
}

fn join_ports(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
