//! The supervisor: one task owns every generation of one app. The watcher, the signal
//! handlers and `portok restart` send it events; it starts generation N+1 beside N,
//! switches the route when N+1 answers, keeps N for the rollback window, drains it, and
//! stops it. A generation that fails before it is ready is killed and N keeps serving.
//!
//! States: Starting(N) -> Live(N) -> Deploying(N, N+1) -> Live(N+1) with N in its
//! rollback window, then draining; or Crashed(N) until the next change.

use super::child::{describe_exit, Generation, Launch};
use super::daemon_link;
use super::ports::pick_port;
use crate::control::Request;
use crate::metrics::RedeployOutcome;
use crate::probe;
use crate::routes::RouteState;
use crate::state::StateDir;
use crate::ui::say;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone)]
pub struct Options {
    pub health: Option<String>,
    pub ready_timeout: Duration,
    pub hold: u64,
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
}

impl Options {
    /// The app's route with these options: ours, in `state`, for generation `n` on `port`.
    pub(super) fn route(
        &self,
        host: &str,
        port: u16,
        n: u64,
        state: RouteState,
        pgids: Vec<i32>,
    ) -> crate::routes::Route {
        crate::routes::Route {
            pgids,
            hold: Some(self.hold),
            reload: self.reload,
            tcp: self.tcp,
            proxy_protocol: self.proxy_protocol,
            ..super::app_route(host, port, n, state)
        }
    }
}

/// Requests from `portok restart` / `portok logs` (through the app's run socket).
pub enum Control {
    Restart(oneshot::Sender<Result<String, String>>),
    Logs(usize, oneshot::Sender<Vec<String>>),
}

struct Pending {
    gen: Generation,
    deadline: Instant,
    /// Why this generation started; None for the very first start.
    reason: Option<String>,
    waiters: Vec<oneshot::Sender<Result<String, String>>>,
}

struct Previous {
    gen: Generation,
    switched: Instant,
}

enum Event {
    Signal(i32),
    Changed(PathBuf),
    Control(Control),
    LiveExited(ExitStatus),
    PendingReady,
    /// Why, and the exit code when the process exited.
    PendingFailed(String, Option<i32>),
    RollbackWindowOver,
    /// Time to check that the daemon is still there.
    Watchdog,
}

pub struct Supervisor {
    pub launch: Launch,
    pub state: StateDir,
    pub opts: Options,
    pub first_port: u16,
    pub cwd: PathBuf,
    next_gen: u64,
    live: Option<Generation>,
    previous: Option<Previous>,
    pending: Option<Pending>,
    /// The output of the last generation that died, for `portok logs` while crashed.
    last_tail: Vec<String>,
    stopping: tokio::task::JoinSet<()>,
}

impl Supervisor {
    pub fn new(
        launch: Launch,
        state: StateDir,
        opts: Options,
        first_port: u16,
        cwd: PathBuf,
    ) -> Self {
        Supervisor {
            launch,
            state,
            opts,
            first_port,
            cwd,
            next_gen: 1,
            live: None,
            previous: None,
            pending: None,
            last_tail: Vec::new(),
            stopping: tokio::task::JoinSet::new(),
        }
    }

    /// Run until a signal (or, without watching, until the app exits). Returns the exit code.
    pub async fn run(
        mut self,
        mut changes: Option<mpsc::Receiver<PathBuf>>,
        mut control: mpsc::Receiver<Control>,
    ) -> i32 {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut sigint), Ok(mut sigterm), Ok(mut sighup)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            say("cannot install signal handlers");
            return 1;
        };
        if let Err(e) = self.start_pending(self.first_port, Vec::new(), None).await {
            say(&e);
            daemon_link::withdraw(&self.state, &self.launch.hostname).await;
            return 1;
        }
        // The daemon is checked every second: if it died (kill -9, OOM), it is started again
        // with every route (they are in routes.json) within about a second.
        let mut watchdog = tokio::time::interval(Duration::from_secs(1));
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let window = self.opts.rollback_window;
            let event = tokio::select! {
                _ = sigint.recv() => Event::Signal(130),
                _ = sigterm.recv() => Event::Signal(143),
                _ = sighup.recv() => Event::Signal(129),
                Some(path) = super::watch::next_change(&mut changes) => Event::Changed(path),
                Some(c) = control.recv() => Event::Control(c),
                status = wait_gen(&mut self.live) => Event::LiveExited(status),
                outcome = pending_outcome(&mut self.pending, &self.launch.hostname, self.opts.health.as_deref(), self.opts.tcp.is_some()) => outcome,
                _ = window_over(&self.previous, window) => Event::RollbackWindowOver,
                Some(_) = self.stopping.join_next(), if !self.stopping.is_empty() => continue,
                _ = watchdog.tick() => Event::Watchdog,
            };
            match event {
                Event::Signal(code) => {
                    self.shutdown().await;
                    return code;
                }
                Event::Changed(path) => {
                    let shown = path
                        .strip_prefix(&self.cwd)
                        .unwrap_or(&path)
                        .display()
                        .to_string();
                    self.redeploy(&format!("change in {shown}"), Vec::new())
                        .await;
                }
                Event::Control(Control::Restart(reply)) => {
                    self.redeploy("restart requested", vec![reply]).await;
                }
                Event::Control(Control::Logs(n, reply)) => {
                    let lines = match (&self.live, &self.pending) {
                        (Some(g), _) | (None, Some(Pending { gen: g, .. })) => g.tail(n),
                        _ => self.last_tail.iter().rev().take(n).rev().cloned().collect(),
                    };
                    let _ = reply.send(lines);
                }
                Event::LiveExited(status) => {
                    if let Some(code) = self.live_exited(status).await {
                        self.shutdown().await;
                        return code;
                    }
                }
                Event::PendingReady => self.switch_to_pending().await,
                Event::PendingFailed(reason, code) => {
                    if let Some(code) = self.pending_failed(reason, code).await {
                        self.shutdown().await;
                        return code;
                    }
                }
                Event::RollbackWindowOver => {
                    if let Some(prev) = self.previous.take() {
                        self.retire(prev);
                    }
                }
                Event::Watchdog => self.check_daemon().await,
            }
        }
    }

    /// Start generation N+1 (or restart from a crash). A deploy still starting is
    /// cancelled: the latest source wins.
    async fn redeploy(
        &mut self,
        reason: &str,
        waiters: Vec<oneshot::Sender<Result<String, String>>>,
    ) {
        let mut waiters = waiters;
        if let Some(mut p) = self.pending.take() {
            say(&format!(
                "{reason} -> cancelling generation {} (still starting)",
                p.gen.n
            ));
            p.gen.stop(self.opts.kill_timeout).await;
            waiters.append(&mut p.waiters);
        }
        let port = match self.opts.fixed_port {
            Some(port) => {
                // Two generations cannot share a fixed port: stop, then start.
                if let Some(mut live) = self.live.take() {
                    say(&format!(
                        "{reason} -> stopping generation {} first (--app-port is fixed, so this redeploy is not zero-downtime)",
                        live.n
                    ));
                    self.write_route(port, live.n, RouteState::Starting).await;
                    live.stop(self.opts.kill_timeout).await;
                }
                port
            }
            None => match pick_port(&self.state, &self.ports_in_use()) {
                Ok(p) => p,
                Err(e) => {
                    say(&format!("{reason}: {e}"));
                    for w in waiters {
                        let _ = w.send(Err(e.to_string()));
                    }
                    return;
                }
            },
        };
        say(&format!(
            "{reason} -> starting generation {} on port {port}",
            self.next_gen
        ));
        if let Err(e) = self
            .start_pending(port, waiters, Some(reason.to_string()))
            .await
        {
            say(&e);
        }
    }

    async fn start_pending(
        &mut self,
        port: u16,
        waiters: Vec<oneshot::Sender<Result<String, String>>>,
        reason: Option<String>,
    ) -> Result<(), String> {
        let n = self.next_gen;
        self.next_gen += 1;
        match Generation::spawn(&self.launch, n, port, None) {
            Ok(gen) => {
                self.pending = Some(Pending {
                    gen,
                    deadline: Instant::now() + self.opts.ready_timeout,
                    reason,
                    waiters,
                });
                if self.live.is_none() {
                    self.write_route(port, n, RouteState::Starting).await;
                } else {
                    self.update_pgids().await;
                }
                Ok(())
            }
            Err(e) => {
                let msg = format!("generation {n}: {e}");
                for w in waiters {
                    let _ = w.send(Err(msg.clone()));
                }
                Err(msg)
            }
        }
    }

    /// N+1 answers: switch the route (acknowledged by the daemon before anything is
    /// signalled), then keep N for the rollback window.
    async fn switch_to_pending(&mut self) {
        let Some(p) = self.pending.take() else { return };
        let took = p.gen.started.elapsed();
        self.write_route_with(p.gen.port, p.gen.n, RouteState::Live, &[p.gen.pid as i32])
            .await;
        let msg = format!("generation {} live on port {}", p.gen.n, p.gen.port);
        match self.live.take() {
            Some(old) => {
                let inflight = daemon_link::inflight(&self.state, old.port).await;
                say(&format!(
                    "generation {} ready in {:.1}s; switched; draining generation {} ({inflight} request{} in flight)",
                    p.gen.n,
                    took.as_secs_f64(),
                    old.n,
                    if inflight == 1 { "" } else { "s" }
                ));
                if let Some(prev) = self.previous.take() {
                    self.retire(prev);
                }
                let prev = Previous {
                    gen: old,
                    switched: Instant::now(),
                };
                if self.opts.rollback_window.is_zero() {
                    self.retire(prev);
                } else {
                    self.previous = Some(prev);
                }
            }
            None => say(&format!(
                "{} ready in {:.1}s (generation {}, pid {})",
                self.launch.name,
                took.as_secs_f64(),
                p.gen.n,
                p.gen.pid
            )),
        }
        if let Some(reason) = &p.reason {
            self.report(RedeployOutcome::Ok, p.gen.n, reason, took, None, Vec::new())
                .await;
        }
        self.live = Some(p.gen);
        for w in p.waiters {
            let _ = w.send(Ok(msg.clone()));
        }
    }

    /// Tell the daemon how a redeploy ended: history, metrics, and an event that dashboards
    /// and live-reload pages listen to.
    async fn report(
        &self,
        outcome: RedeployOutcome,
        generation: u64,
        reason: &str,
        took: Duration,
        detail: Option<String>,
        tail: Vec<String>,
    ) {
        let req = daemon_link::redeploy_request(
            &self.launch.hostname,
            outcome,
            generation,
            reason,
            took,
            detail,
            tail,
        );
        daemon_link::tell_daemon(&self.state, req).await;
    }

    /// N+1 died or missed its readiness deadline: kill it; N keeps serving.
    async fn pending_failed(&mut self, reason: String, exit_code: Option<i32>) -> Option<i32> {
        let mut p = self.pending.take()?;
        p.gen.stop(self.opts.kill_timeout).await;
        p.gen.flush_output().await;
        let tail = p.gen.tail(50);
        let serving = match &self.live {
            Some(live) => format!("still serving generation {}", live.n),
            None => "nothing to serve yet".into(),
        };
        say(&format!(
            "generation {} {reason} before it was ready; {serving}",
            p.gen.n
        ));
        for line in tail.iter().skip(tail.len().saturating_sub(10)) {
            say(&format!("  | {line}"));
        }
        // Recorded before anyone waiting hears back, so `portok restart` returning means
        // the status already shows it.
        self.report(
            RedeployOutcome::Failed,
            p.gen.n,
            p.reason.as_deref().unwrap_or("first start"),
            p.gen.started.elapsed(),
            Some(format!(
                "generation {} {reason} before it was ready",
                p.gen.n
            )),
            tail.clone(),
        )
        .await;
        for w in p.waiters.drain(..) {
            let _ = w.send(Err(format!(
                "generation {} {reason} before it was ready",
                p.gen.n
            )));
        }
        self.last_tail = tail.clone();
        if self.live.is_some() {
            self.update_pgids().await;
            return None;
        }
        if !self.opts.watching {
            return Some(exit_code.filter(|c| *c != 0).unwrap_or(1));
        }
        self.mark_crashed(p.gen.port, p.gen.n, &reason, tail).await;
        None
    }

    /// The live generation exited on its own.
    async fn live_exited(&mut self, status: ExitStatus) -> Option<i32> {
        let mut dead = self.live.take()?;
        let what = describe_exit(status);
        dead.flush_output().await;
        let tail = dead.tail(50);
        self.last_tail = tail.clone();
        if let Some(prev) = self.previous.take() {
            // Inside the rollback window: go back to N at once.
            self.write_route(prev.gen.port, prev.gen.n, RouteState::Live)
                .await;
            say(&format!(
                "generation {} {what} within the rollback window; rolled back to generation {} (port {})",
                dead.n, prev.gen.n, prev.gen.port
            ));
            self.report(
                RedeployOutcome::RolledBack,
                dead.n,
                "new generation died in the rollback window",
                prev.switched.elapsed(),
                Some(format!(
                    "generation {} {what}; back to generation {}",
                    dead.n, prev.gen.n
                )),
                tail,
            )
            .await;
            self.live = Some(prev.gen);
            return None;
        }
        if !self.opts.watching {
            say(&format!("{} {what}", self.launch.name));
            return Some(exit_code(status));
        }
        say(&format!(
            "generation {} {what}; serving a crash page until the next change (or `portok restart {}`)",
            dead.n, self.launch.name
        ));
        dead.stop(self.opts.kill_timeout).await;
        self.mark_crashed(dead.port, dead.n, &what, tail).await;
        None
    }

    async fn mark_crashed(&mut self, port: u16, n: u64, why: &str, tail: Vec<String>) {
        self.write_route(port, n, RouteState::Crashed).await;
        let req = Request::Crash {
            hostname: self.launch.hostname.clone(),
            message: format!("generation {n} {why}"),
            tail,
        };
        daemon_link::tell_daemon(&self.state, req).await;
    }

    async fn check_daemon(&mut self) {
        // The crash page's details lived in the old daemon.
        if daemon_link::revive_daemon(&self.state, self.launch.proxy_port).await
            && self.live.is_none()
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

    /// Drain a generation that is no longer routed, then stop it, in the background.
    fn retire(&mut self, prev: Previous) {
        let state = self.state.clone();
        let drain_until = prev.switched + self.opts.drain;
        let kill_timeout = self.opts.kill_timeout;
        let mut gen = prev.gen;
        self.stopping.spawn(async move {
            daemon_link::drain(&state, gen.port, drain_until).await;
            gen.stop(kill_timeout).await;
            say(&format!("generation {} stopped", gen.n));
        });
    }

    fn ports_in_use(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.live.iter().map(|g| g.port).collect();
        v.extend(self.previous.iter().map(|p| p.gen.port));
        v.extend(self.pending.iter().map(|p| p.gen.port));
        v
    }

    fn pgids(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self.live.iter().map(|g| g.pid as i32).collect();
        v.extend(self.previous.iter().map(|p| p.gen.pid as i32));
        v.extend(self.pending.iter().map(|p| p.gen.pid as i32));
        v
    }

    async fn update_pgids(&self) {
        daemon_link::set_pgids(&self.state, &self.launch.hostname, self.pgids()).await;
    }

    /// Write our route and wait until the daemon has applied it.
    async fn write_route(&self, port: u16, n: u64, route_state: RouteState) {
        self.write_route_with(port, n, route_state, &[]).await
    }

    /// The same, recording `extra` process groups besides those the supervisor holds.
    async fn write_route_with(&self, port: u16, n: u64, route_state: RouteState, extra: &[i32]) {
        let mut pgids = self.pgids();
        pgids.extend_from_slice(extra);
        let route = self
            .opts
            .route(&self.launch.hostname, port, n, route_state, pgids);
        daemon_link::publish(&self.state, self.launch.proxy_port, route, None).await;
    }

    /// Stop every generation (SIGTERM to each group, SIGKILL after the timeout) and
    /// remove the route.
    async fn shutdown(&mut self) {
        let kill = self.opts.kill_timeout;
        let mut gens: Vec<Generation> = Vec::new();
        gens.extend(self.pending.take().map(|p| p.gen));
        gens.extend(self.live.take());
        gens.extend(self.previous.take().map(|p| p.gen));
        daemon_link::withdraw(&self.state, &self.launch.hostname).await;
        let stops = gens.iter_mut().map(|g| g.stop(kill));
        futures_util::future::join_all(stops).await;
        // Generations already draining: stop them now rather than waiting out the drain.
        self.stopping.abort_all();
        while self.stopping.join_next().await.is_some() {}
    }
}

async fn wait_gen(gen: &mut Option<Generation>) -> ExitStatus {
    match gen {
        Some(g) => g.wait().await,
        None => std::future::pending().await,
    }
}

async fn window_over(prev: &Option<Previous>, window: Duration) {
    match prev {
        Some(p) => tokio::time::sleep_until((p.switched + window).into()).await,
        None => std::future::pending().await,
    }
}

/// Ready when the app answers; failed when it exits first or misses its deadline.
async fn pending_outcome(
    pending: &mut Option<Pending>,
    host: &str,
    health: Option<&str>,
    tcp: bool,
) -> Event {
    let Some(p) = pending else {
        return std::future::pending().await;
    };
    let deadline = p.deadline;
    let port = p.gen.port;
    let probe = probe::until_ready(port, host, health, tcp, deadline);
    tokio::select! {
        status = p.gen.wait() => Event::PendingFailed(describe_exit(status), Some(exit_code(status))),
        ready = probe => if ready {
            Event::PendingReady
        } else {
            Event::PendingFailed(format!("did not answer{} within the ready timeout", health.map(|h| format!(" {h} with 2xx/3xx")).unwrap_or_default()), None)
        },
    }
}

/// A shell-style exit code: the status, or 128 + the signal.
pub(super) fn exit_code(status: ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
    })
}
