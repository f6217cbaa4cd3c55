//! Starting instances and moving them to a new generation: the first start, a redeploy
//! (rolling, one slot at a time), a replacement that answers or fails, and retiring the
//! instance it replaced.

use super::super::child::Generation;
use super::super::daemon_link;
use super::slots::{probe_until, Instance, Kept, ProbeTask, Rollout, Slot};
use super::{join_ports, SuperviseError, Supervisor, Waiter};
use crate::metrics::RedeployOutcome;
use crate::run::app_port::{pick_port, taken};
use crate::ui::say;
use std::time::Instant;

impl Supervisor {
    /// How an instance is named in messages: "generation 2" for a single instance,
    /// "instance 1 (generation 2)" in a pool.
    pub(super) fn who(&self, slot: usize, n: u64) -> String {
        if self.single() {
            format!("generation {n}")
        } else {
            format!("instance {slot} (generation {n})")
        }
    }

    /// How a replacement is named: "generation 3", or "instance 1's generation 3".
    fn who_next(&self, slot: usize, n: u64) -> String {
        if self.single() {
            format!("generation {n}")
        } else {
            format!("instance {slot}'s generation {n}")
        }
    }

    /// Why a probe gave up.
    pub(super) fn not_ready_why(&self) -> String {
        let health = self.opts.health.as_deref();
        let health = health.map(|h| format!(" {h} with 2xx/3xx"));
        let what = match (self.opts.tcp, health) {
            (Some(_), None) => "accept a connection".to_string(),
            (_, health) => format!("answer HTTP{}", health.unwrap_or_default()),
        };
        format!(
            "did not {what} within {}s (--ready-timeout; its last output is below)",
            self.opts.ready_timeout.as_secs()
        )
    }

    /// Start every slot with the current generation: the first start, or a restart after
    /// nothing could be kept running. `reason` is None for the first start.
    pub(super) async fn start_all(&mut self, reason: Option<&str>) -> Result<(), SuperviseError> {
        self.crashed = false;
        for i in 0..self.slots.len() {
            let inst = self.spawn(i, self.gen)?;
            self.slots[i] = Slot {
                running: Some(inst),
                ..Slot::default()
            };
        }
        let ports = self.slot_ports();
        match reason {
            Some(reason) if self.single() => say(&format!(
                "{reason} -> starting generation {} on port {}",
                self.gen,
                join_ports(&ports)
            )),
            _ if self.single() => {}
            _ => say(&format!(
                "starting {} instances on ports {}",
                self.slots.len(),
                join_ports(&ports)
            )),
        }
        self.sync_route().await;
        Ok(())
    }

    /// Start generation `gen` for slot `index`, with its readiness probe.
    pub(super) fn spawn(&mut self, index: usize, gen: u64) -> Result<Instance, SuperviseError> {
        let who = self.who(index, gen);
        let port = match (self.opts.fixed_port, self.first_port.take()) {
            (Some(port), _) => {
                // Named before the app fails on it with a bare "address in use".
                if let Some(t) = taken(&self.state, port, &self.launch.hostname) {
                    return Err(SuperviseError::NoPort {
                        who,
                        reason: t.to_string(),
                    });
                }
                port
            }
            (None, Some(port)) => port,
            (None, None) => pick_port(&self.state, &self.ports_in_use()).map_err(|e| {
                SuperviseError::NoPort {
                    who: who.clone(),
                    reason: e.to_string(),
                }
            })?,
        };
        let tag = (!self.single()).then_some(index);
        let g =
            Generation::spawn(&self.launch, gen, port, tag).map_err(|e| SuperviseError::Spawn {
                who,
                reason: e.to_string(),
            })?;
        let probe = tokio::spawn(probe_until(
            g.pid,
            port,
            self.launch.hostname.clone(),
            self.launch.url.clone(),
            self.opts.health.clone(),
            self.opts.tcp.is_some(),
            self.opts.upstream,
            // A pool's instances cannot share one port an app chose itself.
            self.single(),
            Instant::now() + self.opts.ready_timeout,
            self.probes.0.clone(),
        ));
        Ok(Instance {
            gen: g,
            ready: false,
            _probe: ProbeTask(probe),
        })
    }

    /// Another portok's app answers on the port instance `pid` was given (see
    /// [`Probe::Taken`](super::slots::Probe::Taken)): it starts again on another port. A
    /// fixed port cannot move: its probe goes on, and the app fails to listen or the port
    /// frees.
    pub(super) async fn port_taken(&mut self, pid: u32, port: u16) -> Option<i32> {
        let is_next = self.is_next(pid);
        let (slot, mut inst) = if is_next {
            self.rollout.as_mut()?.next.take()?
        } else {
            let slot = self.slot_of(pid)?;
            (slot, self.slots[slot].running.take()?)
        };
        let who = self.who(slot, inst.gen.n);
        let why = format!("another portok app answers on port {port}, which it was given too");
        if self.opts.fixed_port.is_some() {
            say(&format!("{who}: {why}"));
            match is_next {
                true => self.rollout.as_mut()?.next = Some((slot, inst)),
                false => self.slots[slot].running = Some(inst),
            }
            return None;
        }
        inst.gen.stop(self.opts.kill_timeout).await;
        let started = self.spawn(slot, inst.gen.n);
        if let Ok(new) = &started {
            say(&format!(
                "{who}: {why}; starting it again on port {}",
                new.gen.port
            ));
        }
        match (started, is_next) {
            (Ok(new), true) => self.rollout.as_mut()?.next = Some((slot, new)),
            (Ok(new), false) => self.slots[slot].running = Some(new),
            (Err(e), true) => {
                let tail = inst.gen.tail(50);
                self.fail_rollout(e, tail).await;
            }
            (Err(e), false) => return self.instance_down(slot, inst, e.to_string(), None).await,
        }
        self.update_pgids().await;
        None
    }

    /// A change or `portok restart`. The latest source wins: a replacement still starting
    /// is cancelled, and so is any instance still starting; the rest rolls over one slot
    /// at a time.
    pub(super) async fn redeploy(&mut self, reason: String, mut waiters: Vec<Waiter>) {
        if let Some(mut old) = self.rollout.take() {
            if let Some((slot, mut inst)) = old.next.take() {
                let who = self.who_next(slot, inst.gen.n);
                say(&format!("{reason} -> cancelling {who} (still starting)"));
                inst.gen.stop(self.opts.kill_timeout).await;
            }
            waiters.append(&mut old.waiters);
        }
        self.gen += 1;
        if self.crashed || self.slots.iter().all(|s| s.running.is_none()) {
            if !self.single() {
                say(&format!(
                    "{reason} -> starting generation {} ({} instances)",
                    self.gen,
                    self.slots.len()
                ));
            }
            match self.start_all(Some(&reason)).await {
                Ok(()) => self.rollout = Some(Rollout::new(self.gen, reason, waiters)),
                Err(e) => {
                    say(&e.to_string());
                    for w in waiters {
                        let _ = w.send(Err(e.clone()));
                    }
                }
            }
            return;
        }
        if !self.single() {
            say(&format!(
                "{reason} -> rolling out generation {} over {} instances, one at a time",
                self.gen,
                self.slots.len()
            ));
        }
        self.rollout = Some(Rollout::new(self.gen, reason.clone(), waiters));
        if self.opts.fixed_port.is_some() {
            // Two generations cannot share a fixed port: stop, then start.
            // New requests are held from the route change on (as for a cold start), the
            // ones in flight finish first (up to --drain), then the old one stops: no
            // request fails, it only waits.
            if let Some(mut live) = self.slots[0].running.take() {
                say(&format!(
                    "{reason} -> the app's port {} is fixed: holding new requests, draining generation {} and stopping it before starting generation {}",
                    live.gen.port, live.gen.n, self.gen
                ));
                self.sync_route().await;
                let until = Instant::now() + self.opts.drain;
                daemon_link::drain(&self.state, live.gen.port, until).await;
                live.gen.stop(self.opts.kill_timeout).await;
                self.stopped_in_place = Some(live.gen.n);
            }
        }
        for slot in 0..self.slots.len() {
            let starting = match &self.slots[slot].running {
                Some(i) => !i.ready,
                None => self.opts.fixed_port.is_some(),
            };
            if starting {
                self.start_in_place(slot, &reason).await;
            }
        }
        self.advance().await;
    }

    /// Stop whatever is still starting in `slot` and start the rollout's generation there.
    async fn start_in_place(&mut self, slot: usize, reason: &str) {
        let target = self.gen;
        if let Some(mut old) = self.slots[slot].running.take() {
            let who = self.who_next(slot, old.gen.n);
            say(&format!("{reason} -> cancelling {who} (still starting)"));
            old.gen.stop(self.opts.kill_timeout).await;
        }
        match self.spawn(slot, target) {
            Ok(inst) => {
                self.say_starting(slot, reason, &inst);
                self.slots[slot].running = Some(inst);
                self.sync_route().await;
            }
            Err(e) => {
                self.fail_rollout(e, Vec::new()).await;
                if self.slots.iter().all(|s| s.running.is_none()) {
                    self.crashed = true;
                }
            }
        }
    }

    fn say_starting(&self, slot: usize, reason: &str, inst: &Instance) {
        let (n, port) = (inst.gen.n, inst.gen.port);
        if self.single() {
            say(&format!(
                "{reason} -> starting generation {n} on port {port}"
            ));
        } else {
            say(&format!(
                "instance {slot}: starting generation {n} on port {port}"
            ));
        }
    }

    /// Start the replacement for the next slot still on an older generation, or finish.
    pub(super) async fn advance(&mut self) {
        let Some(r) = &self.rollout else { return };
        if r.next.is_some() {
            return;
        }
        let (target, reason) = (r.gen, r.reason.clone());
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
                self.say_starting(slot, &reason, &inst);
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
        let ports = join_ports(&self.ready_ports());
        let msg = if self.single() {
            format!("generation {} live on port {ports}", r.gen)
        } else {
            let msg = format!(
                "generation {} live on {} instances (ports {ports})",
                r.gen,
                self.slots.len(),
            );
            say(&format!("{msg}; rolled out in {:.1}s", took.as_secs_f64()));
            msg
        };
        // The steps' timing for the dashboard: start -> ready -> switched, then the drain.
        let detail = format!(
            "{msg}; ready and switched {:.1}s after its start; the previous generation drains (up to {}s) and stops",
            took.as_secs_f64(),
            self.opts.drain.as_secs()
        );
        self.report(
            RedeployOutcome::Ok,
            r.gen,
            &r.reason,
            took,
            Some(detail),
            Vec::new(),
        )
        .await;
        for w in r.waiters {
            let _ = w.send(Ok(msg.clone()));
        }
    }

    /// The replacement failed: stop the rollout; the instances still running keep serving.
    pub(super) async fn fail_rollout(&mut self, err: SuperviseError, tail: Vec<String>) {
        let Some(r) = self.rollout.take() else { return };
        if self.single() {
            let serving = match self.slots[0].running.as_ref().filter(|i| i.ready) {
                Some(live) => format!("still serving generation {}", live.gen.n),
                None => "nothing to serve yet".into(),
            };
            say(&format!("{err}; {serving}"));
        } else {
            let on_old = self
                .slots
                .iter()
                .filter(|s| s.running.as_ref().is_some_and(|i| i.gen.n < r.gen))
                .count();
            say(&format!(
                "{err}; rollout of generation {} stopped ({on_old} of {} instances still on the previous generation, all serving)",
                r.gen,
                self.slots.len()
            ));
        }
        self.say_output(&tail, 10);
        // Recorded before anyone waiting hears back, so `portok restart` returning means
        // the status already shows it.
        let detail = Some(err.to_string());
        let took = r.started.elapsed();
        self.report(
            RedeployOutcome::Failed,
            r.gen,
            &r.reason,
            took,
            detail,
            tail.clone(),
        )
        .await;
        if !tail.is_empty() {
            self.last_tail = tail;
        }
        for w in r.waiters {
            let _ = w.send(Err(err.clone()));
        }
    }

    /// The instance with this pid is a rollout's replacement, still starting.
    fn is_next(&self, pid: u32) -> bool {
        self.rollout
            .as_ref()
            .and_then(|r| r.next.as_ref())
            .is_some_and(|(_, i)| i.gen.pid == pid)
    }

    /// A probe finished for the instance with this pid.
    pub(super) async fn probed(&mut self, pid: u32, ok: bool) -> Option<i32> {
        let is_next = self.is_next(pid);
        if is_next {
            let (slot, mut inst) = self.rollout.as_mut()?.next.take()?;
            if ok {
                inst.ready = true;
                self.replace(slot, inst).await;
                self.advance().await;
            } else {
                inst.gen.stop(self.opts.kill_timeout).await;
                inst.gen.flush_output().await;
                let tail = inst.gen.tail(50);
                let err = SuperviseError::NotReady {
                    who: self.who_next(slot, inst.gen.n),
                    why: self.not_ready_why(),
                };
                self.fail_rollout(err, tail).await;
                self.update_pgids().await;
            }
            return None;
        }
        let slot = self.slot_of(pid)?;
        if !ok {
            let why = self.not_ready_why();
            let mut inst = self.slots[slot].running.take()?;
            inst.gen.stop(self.opts.kill_timeout).await;
            return self.instance_down(slot, inst, why, None).await;
        }
        let inst = self.slots[slot].running.as_mut()?;
        inst.ready = true;
        self.stopped_in_place = None;
        let (port, n, pid) = (inst.gen.port, inst.gen.n, inst.gen.pid);
        let took = inst.gen.started.elapsed().as_secs_f64();
        self.crashed = false;
        self.sync_route().await;
        if self.single() {
            say(&format!(
                "{} ready in {took:.1}s (generation {n}, pid {pid})",
                self.launch.name
            ));
        } else {
            say(&format!(
                "instance {slot} ready on port {port} in {took:.1}s (generation {n})"
            ));
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
        }
        // A start (or a restart from crashed) completes when every slot answers.
        self.advance().await;
        None
    }

    /// A replacement answers: it takes the slot and the route switches to it (acknowledged
    /// by the daemon before anything is signalled). The instance it replaced drains and
    /// stops; a single instance keeps it for the rollback window first.
    async fn replace(&mut self, slot: usize, inst: Instance) {
        let (n, took) = (inst.gen.n, inst.gen.started.elapsed());
        let new_port = inst.gen.port;
        let old = self.slots[slot].running.replace(inst);
        self.slots[slot].recovered();
        self.crashed = false;
        let keep = self.single() && !self.opts.rollback_window.is_zero();
        if keep {
            if let Some(k) = self.slots[slot].kept.take() {
                self.retire(k.inst, k.switched);
            }
        }
        let now = Instant::now();
        let old = match old {
            Some(o) if keep => {
                self.slots[slot].kept = Some(Kept {
                    inst: o,
                    switched: now,
                });
                None
            }
            other => other,
        };
        self.sync_route().await;
        let (old_n, old_port) = match (&old, &self.slots[slot].kept) {
            (Some(o), _) => (o.gen.n, o.gen.port),
            (None, Some(k)) => (k.inst.gen.n, k.inst.gen.port),
            (None, None) => return,
        };
        let inflight = daemon_link::inflight(&self.state, old_port).await;
        if self.single() {
            say(&format!(
                "generation {n} ready in {:.1}s; switched; draining generation {old_n} ({inflight} request{} in flight)",
                took.as_secs_f64(),
                if inflight == 1 { "" } else { "s" }
            ));
        } else {
            say(&format!(
                "instance {slot}: generation {n} ready on port {new_port}; draining generation {old_n} ({inflight} in flight)"
            ));
        }
        if let Some(old) = old {
            self.retire(old, now);
        }
    }

    /// The rollback window of a kept generation closed: it drains and stops.
    pub(super) fn window_over(&mut self) {
        let now = Instant::now();
        let window = self.opts.rollback_window;
        for slot in 0..self.slots.len() {
            if self.slots[slot]
                .window_ends(window)
                .is_some_and(|t| t <= now)
            {
                if let Some(k) = self.slots[slot].kept.take() {
                    self.retire(k.inst, k.switched);
                }
            }
        }
    }

    /// Drain an instance that left the rotation at `switched`, then stop it, in the
    /// background.
    pub(super) fn retire(&mut self, inst: Instance, switched: Instant) {
        let state = self.state.clone();
        let drain_until = switched + self.opts.drain;
        let kill_timeout = self.opts.kill_timeout;
        let announce = self.single();
        let mut gen = inst.gen;
        self.stopping.spawn(async move {
            daemon_link::drain(&state, gen.port, drain_until).await;
            gen.stop(kill_timeout).await;
            if announce {
                say(&format!("generation {} stopped", gen.n));
            }
        });
    }

    pub(super) fn slot_of(&self, pid: u32) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.running.as_ref().is_some_and(|i| i.gen.pid == pid))
    }
}
