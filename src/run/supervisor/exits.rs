//! When an instance exits or never answers: a replacement that fails stops the rollout; a
//! single instance rolls back inside its window or shows the crash page; a pool's instance
//! leaves the rotation and is started again after a back-off; a start where nothing ever
//! answered is a failed start.

use super::super::child::describe_exit;
use super::slots::Instance;
use super::{exit_code, SuperviseError, Supervisor};
use crate::metrics::RedeployOutcome;
use crate::ui::say;
use std::process::ExitStatus;
use std::time::Instant;

impl Supervisor {
    /// Look for instances that exited.
    pub(super) async fn reap(&mut self) -> Option<i32> {
        let next_exit = self.rollout.as_mut().and_then(|r| {
            let (_, i) = r.next.as_mut()?;
            i.gen.exited()
        });
        if let Some(status) = next_exit {
            let (slot, mut inst) = self.rollout.as_mut()?.next.take()?;
            inst.gen.flush_output().await;
            let who = if self.single() {
                format!("generation {}", inst.gen.n)
            } else {
                format!("instance {slot}'s generation {}", inst.gen.n)
            };
            let err = SuperviseError::NotReady {
                who,
                why: describe_exit(status),
            };
            let tail = inst.gen.tail(50);
            self.fail_rollout(err, tail).await;
            self.update_pgids().await;
        }
        for slot in 0..self.slots.len() {
            let exited = self.slots[slot]
                .running
                .as_mut()
                .and_then(|i| i.gen.exited());
            let Some(status) = exited else { continue };
            let inst = self.slots[slot].running.take()?;
            let why = describe_exit(status);
            if let Some(code) = self.instance_down(slot, inst, why, Some(status)).await {
                return Some(code);
            }
        }
        None
    }

    /// An instance exited or never answered.
    pub(super) async fn instance_down(
        &mut self,
        slot: usize,
        mut inst: Instance,
        why: String,
        status: Option<ExitStatus>,
    ) -> Option<i32> {
        if self.slots[slot].kept.is_some() {
            return self.roll_back(slot, inst, why).await;
        }
        if !inst.ready {
            if let Some(prev) = self.stopped_in_place.take() {
                return self.start_again_in_place(slot, inst, why, prev).await;
            }
        }
        let restart = self.opts.restart_crashed;
        if self.single() && inst.ready && !restart {
            return self.crashed_live(inst, why, status).await;
        }
        // Out of the rotation at once (a single instance's route shows the crash page
        // below instead).
        if !self.single() {
            self.sync_route().await;
        }
        inst.gen.flush_output().await;
        let tail = inst.gen.tail(50);
        let up_for = inst.gen.started.elapsed();
        let was_ready = inst.ready;
        // Whatever is left of its process group.
        inst.gen.stop(self.opts.kill_timeout).await;
        let anyone_ready = !self.ready_ports().is_empty();
        if !restart && !was_ready && !anyone_ready && !self.any_ever_ready() {
            return self.start_failed(slot, inst, why, status, tail).await;
        }
        let delay = self.slots[slot].crashed(up_for, Instant::now());
        if self.single() {
            let (port, n) = (inst.gen.port, inst.gen.n);
            say(&format!(
                "generation {n} {why}; starting it again in {:.1}s (the crash page shows meanwhile)",
                delay.as_secs_f64()
            ));
            self.say_output(&tail, 5);
            self.last_tail = tail.clone();
            self.mark_crashed(port, n, format!("generation {n} {why}"), tail)
                .await;
            return None;
        }
        say(&format!(
            "instance {slot} (port {}, generation {}) {why}; out of rotation, starting it again in {:.1}s ({} serving)",
            inst.gen.port,
            inst.gen.n,
            delay.as_secs_f64(),
            self.ready_ports().len()
        ));
        self.say_output(&tail, 5);
        self.last_tail = tail;
        None
    }

    /// The generation started in place of one a fixed-port redeploy stopped has failed:
    /// the redeploy is reported failed, and the command starts once more so the site
    /// serves again (requests stay held meanwhile). If that fails too, the crash page shows.
    async fn start_again_in_place(
        &mut self,
        slot: usize,
        mut dead: Instance,
        why: String,
        prev: u64,
    ) -> Option<i32> {
        dead.gen.flush_output().await;
        let tail = dead.gen.tail(50);
        dead.gen.stop(self.opts.kill_timeout).await;
        let err = SuperviseError::NotReady {
            who: self.who(slot, dead.gen.n),
            why,
        };
        let message = err.to_string();
        self.fail_rollout(err, tail.clone()).await;
        self.gen += 1;
        match self.spawn(slot, self.gen) {
            Ok(inst) => {
                say(&format!(
                    "generation {prev} was stopped to free port {}: starting the command again as generation {} so the site serves again (requests are held meanwhile)",
                    inst.gen.port, self.gen
                ));
                self.slots[slot].running = Some(inst);
                self.sync_route().await;
                self.update_pgids().await;
            }
            Err(e) => {
                say(&e.to_string());
                self.crashed = true;
                let (port, n) = (dead.gen.port, dead.gen.n);
                self.mark_crashed(port, n, message, tail).await;
            }
        }
        None
    }

    fn any_ever_ready(&self) -> bool {
        // A slot that crashed before is waiting to restart: the app has run before.
        self.slots.iter().any(|s| s.restart_at.is_some())
            || self
                .slots
                .iter()
                .any(|s| s.running.as_ref().is_some_and(|i| i.ready))
    }

    /// The new generation died inside the rollback window: the route goes back to the
    /// kept one at once.
    async fn roll_back(&mut self, slot: usize, mut dead: Instance, what: String) -> Option<i32> {
        let kept = self.slots[slot].kept.take()?;
        let (prev_n, prev_port) = (kept.inst.gen.n, kept.inst.gen.port);
        self.slots[slot].running = Some(kept.inst);
        self.sync_route().await;
        dead.gen.flush_output().await;
        let tail = dead.gen.tail(50);
        self.last_tail = tail.clone();
        say(&format!(
            "generation {} {what} within the rollback window; rolled back to generation {prev_n} (port {prev_port})",
            dead.gen.n
        ));
        self.report(
            RedeployOutcome::RolledBack,
            dead.gen.n,
            "new generation died in the rollback window",
            kept.switched.elapsed(),
            Some(format!(
                "generation {} {what}; back to generation {prev_n}",
                dead.gen.n
            )),
            tail,
        )
        .await;
        dead.gen.stop(self.opts.kill_timeout).await;
        self.update_pgids().await;
        None
    }

    /// The dashboard's "roll back": the generation kept for the rollback window serves
    /// again, and the one that replaced it drains and stops.
    pub(super) async fn roll_back_now(&mut self) -> Result<String, SuperviseError> {
        let window = self.opts.rollback_window.as_secs_f64();
        let Some(slot) = self.slots.iter().position(|s| s.kept.is_some()) else {
            let why = if self.single() {
                format!("the previous generation is kept for {window}s after a switch (--rollback-window), and that time is over")
            } else {
                "a pool keeps no previous generation".into()
            };
            return Err(SuperviseError::NothingKept { why });
        };
        let kept = self.slots[slot].kept.take().expect("found above");
        let (back_n, back_port) = (kept.inst.gen.n, kept.inst.gen.port);
        let current = self.slots[slot].running.replace(kept.inst);
        self.sync_route().await;
        let message = match current {
            Some(cur) => {
                let n = cur.gen.n;
                self.retire(cur, Instant::now());
                format!("rolled back to generation {back_n} (port {back_port}); generation {n} drains and stops")
            }
            None => format!("rolled back to generation {back_n} (port {back_port})"),
        };
        say(&message);
        self.report(
            RedeployOutcome::RolledBack,
            back_n,
            "roll back requested",
            std::time::Duration::ZERO,
            Some(message.clone()),
            Vec::new(),
        )
        .await;
        Ok(message)
    }

    /// A single instance that was serving exited on its own: without watching, `portok
    /// run` exits with it; otherwise the crash page shows until the next change.
    async fn crashed_live(
        &mut self,
        mut dead: Instance,
        what: String,
        status: Option<ExitStatus>,
    ) -> Option<i32> {
        dead.gen.flush_output().await;
        let tail = dead.gen.tail(50);
        self.last_tail = tail.clone();
        if !self.opts.watching {
            say(&format!("{} {what}", self.launch.name));
            return Some(status.map(exit_code).unwrap_or(1));
        }
        say(&format!(
            "generation {} {what}; serving a crash page until the next change (or `portok restart {}`)",
            dead.gen.n, self.launch.name
        ));
        dead.gen.stop(self.opts.kill_timeout).await;
        self.crashed = true;
        let message = format!("generation {} {what}", dead.gen.n);
        self.mark_crashed(dead.gen.port, dead.gen.n, message, tail)
            .await;
        None
    }

    /// Nothing ever answered: stop the rest and show the crash page (or, without watching,
    /// exit), like a single app whose first start fails.
    async fn start_failed(
        &mut self,
        slot: usize,
        inst: Instance,
        why: String,
        status: Option<ExitStatus>,
        tail: Vec<String>,
    ) -> Option<i32> {
        let (n, port) = (inst.gen.n, inst.gen.port);
        let err = SuperviseError::NotReady {
            who: self.who(slot, n),
            why: why.clone(),
        };
        if self.single() {
            say(&format!("{err}; nothing to serve yet"));
        } else {
            say(&format!("{err}; stopping the pool"));
        }
        self.say_output(&tail, 10);
        let mut gens = Vec::new();
        for s in &mut self.slots {
            s.restart_at = None;
            gens.extend(s.running.take().map(|i| i.gen));
        }
        let kill = self.opts.kill_timeout;
        futures_util::future::join_all(gens.iter_mut().map(|g| g.stop(kill))).await;
        // Recorded before anyone waiting hears back, so `portok restart` returning means
        // the status already shows it.
        let rollout = self.rollout.take();
        let reason = rollout.as_ref().map(|r| r.reason.as_str());
        let took = inst.gen.started.elapsed();
        self.report(
            RedeployOutcome::Failed,
            n,
            reason.unwrap_or("first start"),
            took,
            Some(err.to_string()),
            tail.clone(),
        )
        .await;
        for w in rollout.into_iter().flat_map(|r| r.waiters) {
            let _ = w.send(Err(err.clone()));
        }
        self.last_tail = tail.clone();
        if !self.opts.watching {
            return Some(status.map(exit_code).filter(|c| *c != 0).unwrap_or(1));
        }
        self.crashed = true;
        let message = format!("{} {why}", self.who(slot, n));
        self.mark_crashed(port, n, message, tail).await;
        None
    }

    /// Start the slots whose back-off is over, on the current generation.
    pub(super) async fn restart_due(&mut self) {
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
                    say(&e.to_string());
                    self.slots[slot].crashed(std::time::Duration::ZERO, now);
                }
            }
        }
        self.update_pgids().await;
    }
}
