//! An instance pool (`portok run NAME --instances N`): N copies of the app, each on its own
//! port with `PORTOK_INSTANCE` = 0..N-1, behind one route. The proxy spreads requests over
//! the instances in the route's `ports`; this supervisor keeps that list true:
//!
//! - an instance is added when it answers, and taken out the moment it exits (SIGCHLD),
//!   then started again, after a back-off that doubles while it keeps crashing;
//! - a redeploy is rolling: one instance at a time gets a replacement of the new
//!   generation, which joins the rotation when it answers; the one it replaces leaves the
//!   rotation then, drains, and is stopped. Capacity never drops below N-1, and a
//!   replacement that fails stops the rollout with the rest still serving.
//!
//! The single-instance supervisor ([`super::supervisor`]) keeps its rollback window; a pool
//! does not need one, since an instance that dies is restarted and the others serve.

mod slots;

use super::child::{describe_exit, Generation, Launch};
use super::daemon_link::{self, inflight, redeploy_request, revive_daemon, set_pgids, tell_daemon};
use super::ports::pick_port;
use super::supervisor::{exit_code, Control, Options};
use crate::metrics::RedeployOutcome;
use crate::routes::RouteState;
use crate::state::StateDir;
use crate::ui::say;
use slots::{backoff, probe_until, Instance, ProbeTask, Rollout, Slot, STABLE_AFTER};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

type Waiter = oneshot::Sender<Result<String, String>>;
type Probed = (u32, bool);

enum Event {
    Signal(i32),
    Changed(PathBuf),
    Control(Control),
    /// A child exited (or the periodic check): look at every instance.
    Reap,
    /// An instance's probe finished: (pid, answered in time).
    Probed(u32, bool),
    RestartDue,
    Watchdog,
}

pub struct Pool {
    launch: Launch,
    state: StateDir,
    opts: Options,
    cwd: PathBuf,
    slots: Vec<Slot>,
    /// The generation the pool runs (or is rolling out).
    gen: u64,
    rollout: Option<Rollout>,
    /// Set when the pool could not start at all: nothing runs until the next change.
    crashed: bool,
    /// Probe results: (pid, answered in time).
    probes: (mpsc::Sender<Probed>, mpsc::Receiver<Probed>),
    last_tail: Vec<String>,
    stopping: tokio::task::JoinSet<()>,
    /// What the route says now, so it is written only when it changes.
    written: Option<(Vec<u16>, RouteState)>,
    /// "ready: N instances" was said once.
    announced: bool,
}

impl Pool {
    pub fn new(launch: Launch, state: StateDir, opts: Options, n: usize, cwd: PathBuf) -> Self {
        Pool {
            launch,
            state,
            opts,
            cwd,
            slots: (0..n).map(|_| Slot::default()).collect(),
            gen: 1,
            rollout: None,
            crashed: false,
            probes: mpsc::channel(64),
            last_tail: Vec::new(),
            stopping: tokio::task::JoinSet::new(),
            written: None,
            announced: false,
        }
    }

    pub async fn run(
        mut self,
        mut changes: Option<mpsc::Receiver<PathBuf>>,
        mut control: mpsc::Receiver<Control>,
    ) -> i32 {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut sigint), Ok(mut sigterm), Ok(mut sighup), Ok(mut sigchld)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
            signal(SignalKind::child()),
        ) else {
            say("cannot install signal handlers");
            return 1;
        };
        if let Err(e) = self.start_all().await {
            say(&e);
            self.shutdown().await;
            return 1;
        }
        // SIGCHLD is the fast path; the tick catches an exit whose signal was merged.
        let mut reap = tokio::time::interval(Duration::from_millis(250));
        let mut watchdog = tokio::time::interval(Duration::from_secs(1));
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let restart_at = self.slots.iter().filter_map(|s| s.restart_at).min();
            let event = tokio::select! {
                _ = sigint.recv() => Event::Signal(130),
                _ = sigterm.recv() => Event::Signal(143),
                _ = sighup.recv() => Event::Signal(129),
                Some(path) = super::watch::next_change(&mut changes) => Event::Changed(path),
                Some(c) = control.recv() => Event::Control(c),
                _ = sigchld.recv() => Event::Reap,
                _ = reap.tick() => Event::Reap,
                Some((pid, ok)) = self.probes.1.recv() => Event::Probed(pid, ok),
                _ = sleep_until(restart_at) => Event::RestartDue,
                Some(_) = self.stopping.join_next(), if !self.stopping.is_empty() => continue,
                _ = watchdog.tick() => Event::Watchdog,
            };
            match event {
                Event::Signal(code) => {
                    self.shutdown().await;
                    return code;
                }
                Event::Changed(path) => {
                    let shown = path.strip_prefix(&self.cwd).unwrap_or(&path).display();
                    let reason = format!("change in {shown}");
                    self.redeploy(reason, Vec::new()).await;
                }
                Event::Control(Control::Restart(reply)) => {
                    self.redeploy("restart requested".into(), vec![reply]).await;
                }
                Event::Control(Control::Logs(n, reply)) => {
                    let _ = reply.send(self.tail(n));
                }
                Event::Reap => {
                    if let Some(code) = self.reap().await {
                        self.shutdown().await;
                        return code;
                    }
                }
                Event::Probed(pid, ok) => {
                    if let Some(code) = self.probed(pid, ok).await {
                        self.shutdown().await;
                        return code;
                    }
                }
                Event::RestartDue => self.restart_due().await,
                Event::Watchdog => self.check_daemon().await,
            }
        }
    }

    /// Start every slot with the current generation.
    async fn start_all(&mut self) -> Result<(), String> {
        self.crashed = false;
        for i in 0..self.slots.len() {
            let inst = self.spawn(i, self.gen)?;
            self.slots[i] = Slot {
                running: Some(inst),
                ..Slot::default()
            };
        }
        say(&format!(
            "starting {} instances on ports {}",
            self.slots.len(),
            join_ports(&self.slot_ports())
        ));
        self.sync_route().await;
        Ok(())
    }

    fn spawn(&mut self, index: usize, gen: u64) -> Result<Instance, String> {
        let port = pick_port(&self.state, &self.ports_in_use())
            .map_err(|e| format!("instance {index}: {e}"))?;
        let g = Generation::spawn(&self.launch, gen, port, Some(index))
            .map_err(|e| format!("instance {index} (generation {gen}): {e}"))?;
        let probe = tokio::spawn(probe_until(
            g.pid,
            port,
            self.launch.hostname.clone(),
            self.opts.health.clone(),
            self.opts.tcp.is_some(),
            Instant::now() + self.opts.ready_timeout,
            self.probes.0.clone(),
        ));
        Ok(Instance {
            gen: g,
            ready: false,
            _probe: ProbeTask(probe),
        })
    }

    /// A change or `portok restart`: roll the new generation out, one slot at a time. A
    /// rollout already under way starts over with the newer generation.
    async fn redeploy(&mut self, reason: String, mut waiters: Vec<Waiter>) {
        if self.crashed || self.slots.iter().all(|s| s.running.is_none()) {
            self.gen += 1;
            say(&format!(
                "{reason} -> starting generation {} ({} instances)",
                self.gen,
                self.slots.len()
            ));
            match self.start_all().await {
                Ok(()) => self.rollout = Some(Rollout::new(self.gen, reason, waiters)),
                Err(e) => {
                    say(&e);
                    for w in waiters {
                        let _ = w.send(Err(e.clone()));
                    }
                }
            }
            return;
        }
        if let Some(mut old) = self.rollout.take() {
            if let Some((slot, mut inst)) = old.next.take() {
                say(&format!(
                    "{reason} -> cancelling instance {slot}'s generation {} (still starting)",
                    inst.gen.n
                ));
                inst.gen.stop(self.opts.kill_timeout).await;
            }
            waiters.append(&mut old.waiters);
        }
        self.gen += 1;
        say(&format!(
            "{reason} -> rolling out generation {} over {} instances, one at a time",
            self.gen,
            self.slots.len()
        ));
        self.rollout = Some(Rollout::new(self.gen, reason, waiters));
        self.advance().await;
    }

    /// Start the replacement for the next slot still on an older generation, or finish.
    async fn advance(&mut self) {
        let Some(r) = &self.rollout else { return };
        if r.next.is_some() {
            return;
        }
        let target = r.gen;
        let slot = self.slots.iter().position(|s| {
            s.running
                .as_ref()
                .is_some_and(|i| i.gen.n < target && i.ready)
        });
        // Slots not running (crashed, waiting to restart) come back on the new generation.
        let Some(slot) = slot else {
            let waiting = self.slots.iter().any(|s| {
                s.running
                    .as_ref()
                    .is_some_and(|i| !i.ready || i.gen.n < target)
            });
            if !waiting {
                self.finish_rollout().await;
            }
            return;
        };
        match self.spawn(slot, target) {
            Ok(inst) => {
                say(&format!(
                    "instance {slot}: starting generation {target} on port {}",
                    inst.gen.port
                ));
                if let Some(r) = &mut self.rollout {
                    r.next = Some((slot, inst));
                }
                self.update_pgids().await;
            }
            Err(e) => self.fail_rollout(e, Vec::new()).await,
        }
    }

    async fn finish_rollout(&mut self) {
        let Some(r) = self.rollout.take() else { return };
        let took = r.started.elapsed();
        let msg = format!(
            "generation {} live on {} instances (ports {})",
            r.gen,
            self.slots.len(),
            join_ports(&self.ready_ports())
        );
        say(&format!("{msg}; rolled out in {:.1}s", took.as_secs_f64()));
        self.report(
            RedeployOutcome::Ok,
            r.gen,
            &r.reason,
            took,
            None,
            Vec::new(),
        )
        .await;
        for w in r.waiters {
            let _ = w.send(Ok(msg.clone()));
        }
    }

    /// The replacement failed: stop the rollout; the instances still running keep serving.
    async fn fail_rollout(&mut self, why: String, tail: Vec<String>) {
        let Some(r) = self.rollout.take() else { return };
        let on_old = self
            .slots
            .iter()
            .filter(|s| s.running.as_ref().is_some_and(|i| i.gen.n < r.gen))
            .count();
        say(&format!(
            "{why}; rollout of generation {} stopped ({on_old} of {} instances still on the previous generation, all serving)",
            r.gen,
            self.slots.len()
        ));
        for line in tail.iter().skip(tail.len().saturating_sub(10)) {
            say(&format!("  | {line}"));
        }
        self.report(
            RedeployOutcome::Failed,
            r.gen,
            &r.reason,
            r.started.elapsed(),
            Some(why.clone()),
            tail.clone(),
        )
        .await;
        self.last_tail = tail;
        for w in r.waiters {
            let _ = w.send(Err(why.clone()));
        }
    }

    /// A probe finished for the instance with this pid.
    async fn probed(&mut self, pid: u32, ok: bool) -> Option<i32> {
        // The rollout's replacement?
        let is_next = self
            .rollout
            .as_ref()
            .and_then(|r| r.next.as_ref())
            .is_some_and(|(_, i)| i.gen.pid == pid);
        if is_next {
            let r = self.rollout.as_mut()?;
            let (slot, mut inst) = r.next.take()?;
            if !ok {
                inst.gen.stop(self.opts.kill_timeout).await;
                inst.gen.flush_output().await;
                let tail = inst.gen.tail(50);
                let why = format!(
                    "instance {slot}'s generation {} did not answer within the ready timeout",
                    inst.gen.n
                );
                self.fail_rollout(why, tail).await;
                self.update_pgids().await;
                return None;
            }
            inst.ready = true;
            let new_port = inst.gen.port;
            let old = self.slots[slot].running.replace(inst);
            // The slot is filled again: a restart pending for its crashed instance is moot.
            self.slots[slot].crashes = 0;
            self.slots[slot].restart_at = None;
            self.sync_route().await;
            if let Some(old) = old {
                let n = inflight(&self.state, old.gen.port).await;
                say(&format!(
                    "instance {slot}: generation {} ready on port {new_port}; draining generation {} ({n} in flight)",
                    self.gen, old.gen.n
                ));
                self.retire(old);
            }
            self.advance().await;
            return None;
        }
        let slot = self.slot_of(pid)?;
        let inst = self.slots[slot].running.as_mut()?;
        if ok {
            inst.ready = true;
            let (port, n, took) = (inst.gen.port, inst.gen.n, inst.gen.started.elapsed());
            say(&format!(
                "instance {slot} ready on port {port} in {:.1}s (generation {n})",
                took.as_secs_f64()
            ));
            self.sync_route().await;
            let all = self.ready_ports();
            if self.rollout.is_none() && all.len() == self.slots.len() && !self.announced {
                self.announced = true;
                say(&format!(
                    "{} ready: {} instances on ports {}",
                    self.launch.name,
                    all.len(),
                    join_ports(&all)
                ));
            }
            // A fresh start (or a restart from crashed) completes when every slot answers.
            self.advance().await;
            return None;
        }
        let why = format!(
            "did not answer{} within the ready timeout",
            self.opts
                .health
                .as_deref()
                .map(|h| format!(" {h} with 2xx/3xx"))
                .unwrap_or_default()
        );
        let mut inst = self.slots[slot].running.take()?;
        inst.gen.stop(self.opts.kill_timeout).await;
        self.instance_down(slot, inst, why, None).await
    }

    /// Look for instances that exited.
    async fn reap(&mut self) -> Option<i32> {
        let next_exit = self.rollout.as_mut().and_then(|r| {
            let (_, i) = r.next.as_mut()?;
            i.gen.exited()
        });
        if let Some(status) = next_exit {
            let (slot, mut inst) = self.rollout.as_mut()?.next.take()?;
            inst.gen.flush_output().await;
            let why = format!(
                "instance {slot}'s generation {} {} before it was ready",
                inst.gen.n,
                describe_exit(status)
            );
            let tail = inst.gen.tail(50);
            self.fail_rollout(why, tail).await;
            self.update_pgids().await;
        }
        for slot in 0..self.slots.len() {
            let exited = self.slots[slot]
                .running
                .as_mut()
                .and_then(|i| i.gen.exited());
            let Some(status) = exited else { continue };
            let inst = self.slots[slot].running.take()?;
            if let Some(code) = self
                .instance_down(slot, inst, describe_exit(status), Some(status))
                .await
            {
                return Some(code);
            }
        }
        None
    }

    /// An instance exited or never answered: out of the rotation at once, then started
    /// again after a back-off. When the pool never got going at all, it is a failed start.
    async fn instance_down(
        &mut self,
        slot: usize,
        mut inst: Instance,
        why: String,
        status: Option<ExitStatus>,
    ) -> Option<i32> {
        self.sync_route().await;
        inst.gen.flush_output().await;
        let tail = inst.gen.tail(50);
        let up_for = inst.gen.started.elapsed();
        let was_ready = inst.ready;
        // Whatever is left of its process group.
        inst.gen.stop(self.opts.kill_timeout).await;
        let anyone_ready = !self.ready_ports().is_empty();
        if !was_ready && !anyone_ready && !self.any_ever_ready() {
            return self.start_failed(slot, inst.gen.n, why, status, tail).await;
        }
        let s = &mut self.slots[slot];
        if up_for >= STABLE_AFTER {
            s.crashes = 0;
        }
        let delay = backoff(s.crashes);
        s.crashes += 1;
        s.restart_at = Some(Instant::now() + delay);
        say(&format!(
            "instance {slot} (port {}, generation {}) {why}; out of rotation, starting it again in {:.1}s ({} serving)",
            inst.gen.port,
            inst.gen.n,
            delay.as_secs_f64(),
            self.ready_ports().len()
        ));
        for line in tail.iter().skip(tail.len().saturating_sub(5)) {
            say(&format!("  | {line}"));
        }
        self.last_tail = tail;
        None
    }

    fn any_ever_ready(&self) -> bool {
        // A slot that crashed before is waiting to restart: the pool has run before.
        self.slots.iter().any(|s| s.restart_at.is_some())
            || self
                .slots
                .iter()
                .any(|s| s.running.as_ref().is_some_and(|i| i.ready))
    }

    /// No instance ever answered: stop the others and show the crash page (or, without
    /// watching, exit), like a single app whose first start fails.
    async fn start_failed(
        &mut self,
        slot: usize,
        n: u64,
        why: String,
        status: Option<ExitStatus>,
        tail: Vec<String>,
    ) -> Option<i32> {
        say(&format!(
            "instance {slot} (generation {n}) {why} before it was ready; stopping the pool"
        ));
        for line in tail.iter().skip(tail.len().saturating_sub(10)) {
            say(&format!("  | {line}"));
        }
        let mut gens: Vec<Generation> = Vec::new();
        for s in &mut self.slots {
            s.restart_at = None;
            if let Some(i) = s.running.take() {
                gens.push(i.gen);
            }
        }
        let kill = self.opts.kill_timeout;
        futures_util::future::join_all(gens.iter_mut().map(|g| g.stop(kill))).await;
        if let Some(mut r) = self.rollout.take() {
            for w in r.waiters.drain(..) {
                let _ = w.send(Err(format!("instance {slot} {why} before it was ready")));
            }
        }
        self.report(
            RedeployOutcome::Failed,
            n,
            "first start",
            Duration::ZERO,
            Some(format!("instance {slot} {why} before it was ready")),
            tail.clone(),
        )
        .await;
        self.last_tail = tail.clone();
        if !self.opts.watching {
            return Some(status.map(exit_code).filter(|c| *c != 0).unwrap_or(1));
        }
        self.crashed = true;
        self.write_route(
            Vec::new(),
            RouteState::Crashed,
            Some(format!("instance {slot} {why}")),
            tail,
        )
        .await;
        None
    }

    /// Start the slots whose back-off is over, on the pool's current generation.
    async fn restart_due(&mut self) {
        let now = Instant::now();
        for slot in 0..self.slots.len() {
            if self.slots[slot].restart_at.is_none_or(|t| t > now) {
                continue;
            }
            self.slots[slot].restart_at = None;
            if self.slots[slot].running.is_some() {
                continue;
            }
            match self.spawn(slot, self.gen) {
                Ok(inst) => {
                    say(&format!(
                        "instance {slot}: started again on port {} (generation {})",
                        inst.gen.port, self.gen
                    ));
                    self.slots[slot].running = Some(inst);
                }
                Err(e) => {
                    say(&e);
                    let s = &mut self.slots[slot];
                    s.restart_at = Some(now + backoff(s.crashes));
                    s.crashes += 1;
                }
            }
        }
        self.update_pgids().await;
    }

    /// Drain an instance that left the rotation, then stop it, in the background.
    fn retire(&mut self, inst: Instance) {
        let state = self.state.clone();
        let drain_until = Instant::now() + self.opts.drain;
        let kill_timeout = self.opts.kill_timeout;
        let mut gen = inst.gen;
        self.stopping.spawn(async move {
            daemon_link::drain(&state, gen.port, drain_until).await;
            gen.stop(kill_timeout).await;
        });
    }

    fn slot_of(&self, pid: u32) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.running.as_ref().is_some_and(|i| i.gen.pid == pid))
    }

    /// Ports in rotation: the ready instances, in slot order.
    fn ready_ports(&self) -> Vec<u16> {
        self.slots
            .iter()
            .filter_map(|s| s.running.as_ref().filter(|i| i.ready))
            .map(|i| i.gen.port)
            .collect()
    }

    fn slot_ports(&self) -> Vec<u16> {
        self.slots
            .iter()
            .filter_map(|s| s.running.as_ref().map(|i| i.gen.port))
            .collect()
    }

    fn ports_in_use(&self) -> Vec<u16> {
        let mut v = self.slot_ports();
        if let Some((_, i)) = self.rollout.as_ref().and_then(|r| r.next.as_ref()) {
            v.push(i.gen.port);
        }
        v
    }

    fn pgids(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self
            .slots
            .iter()
            .filter_map(|s| s.running.as_ref().map(|i| i.gen.pid as i32))
            .collect();
        if let Some((_, i)) = self.rollout.as_ref().and_then(|r| r.next.as_ref()) {
            v.push(i.gen.pid as i32);
        }
        v
    }

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

    /// Make the route match the ready instances: live with their ports, or starting.
    async fn sync_route(&mut self) {
        let ports = self.ready_ports();
        let state = if ports.is_empty() {
            RouteState::Starting
        } else {
            RouteState::Live
        };
        if self.written.as_ref() == Some(&(ports.clone(), state)) {
            self.update_pgids().await;
            return;
        }
        self.write_route(ports, state, None, Vec::new()).await;
    }

    async fn write_route(
        &mut self,
        ports: Vec<u16>,
        route_state: RouteState,
        crash: Option<String>,
        tail: Vec<String>,
    ) {
        self.written = Some((ports.clone(), route_state));
        let first = ports
            .first()
            .copied()
            .or_else(|| self.slot_ports().first().copied())
            .unwrap_or(0);
        let route = crate::routes::Route {
            instances: Some(self.slots.len() as u32),
            ports,
            ..self.opts.route(
                &self.launch.hostname,
                first,
                self.gen,
                route_state,
                self.pgids(),
            )
        };
        let crash = crash.map(|message| (message, tail));
        daemon_link::publish(&self.state, self.launch.proxy_port, route, crash).await;
    }

    async fn update_pgids(&self) {
        set_pgids(&self.state, &self.launch.hostname, self.pgids()).await;
    }

    async fn report(
        &self,
        outcome: RedeployOutcome,
        generation: u64,
        reason: &str,
        took: Duration,
        detail: Option<String>,
        tail: Vec<String>,
    ) {
        let req = redeploy_request(
            &self.launch.hostname,
            outcome,
            generation,
            reason,
            took,
            detail,
            tail,
        );
        tell_daemon(&self.state, req).await;
    }

    async fn check_daemon(&mut self) {
        revive_daemon(&self.state, self.launch.proxy_port).await;
    }

    /// Stop every instance (SIGTERM, SIGKILL after the timeout) and remove the route.
    async fn shutdown(&mut self) {
        let mut gens: Vec<Generation> = Vec::new();
        if let Some(mut r) = self.rollout.take() {
            gens.extend(r.next.take().map(|(_, i)| i.gen));
        }
        for s in &mut self.slots {
            gens.extend(s.running.take().map(|i| i.gen));
        }
        daemon_link::withdraw(&self.state, &self.launch.hostname).await;
        let kill = self.opts.kill_timeout;
        futures_util::future::join_all(gens.iter_mut().map(|g| g.stop(kill))).await;
        self.stopping.abort_all();
        while self.stopping.join_next().await.is_some() {}
    }
}

fn join_ports(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
