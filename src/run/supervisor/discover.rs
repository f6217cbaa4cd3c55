//! Apps that ignore PORT: what the probe found besides "ready" ([`Probe`]). An instance
//! that answers on a port of its own choosing is served there, and said once; from then on
//! that port is fixed, so redeploys stop the old generation (drained) before starting the
//! next. An instance that listens nowhere after a few seconds is said once too.

use super::slots::{Probe, SILENT_AFTER};
use super::Supervisor;
use crate::routes::Upstream;
use crate::run::app_port::held_by_others;
use crate::ui::say;

impl Supervisor {
    pub(super) async fn found(&mut self, pid: u32, found: Probe) -> Option<i32> {
        match found {
            Probe::TimedOut => self.probed(pid, false).await,
            Probe::Taken(port) => self.port_taken(pid, port).await,
            Probe::NoPortYet => {
                self.silent(pid);
                None
            }
            Probe::Ready(port, upstream) => {
                self.adopt_port(pid, port);
                self.adopt_upstream(upstream);
                self.probed(pid, true).await
            }
        }
    }

    /// The instance of `pid`, running or starting as a replacement.
    fn gen_of(&mut self, pid: u32) -> Option<&mut crate::run::child::Generation> {
        if let Some(slot) = self.slot_of(pid) {
            return self.slots[slot].running.as_mut().map(|i| &mut i.gen);
        }
        let next = self.rollout.as_mut()?.next.as_mut()?;
        (next.1.gen.pid == pid).then_some(&mut next.1.gen)
    }

    fn adopt_port(&mut self, pid: u32, port: u16) {
        let name = self.launch.name.clone();
        let Some(g) = self.gen_of(pid) else { return };
        if g.port == port {
            return;
        }
        let asked = g.port;
        g.port = port;
        self.opts.fixed_port = Some(port);
        let fix = crate::run::flags::port_fix(&name, &self.launch.tool);
        say(&format!(
            "{name} listens on port {port}, not on PORT ({asked}), so portok serves port {port}. Two generations cannot share that port, so redeploys now hold requests while the old generation stops; for redeploys side by side, {fix}"
        ));
    }

    /// An app found to speak only HTTP/2 is reached over h2c from now on: said once.
    fn adopt_upstream(&mut self, upstream: Upstream) {
        if upstream == Upstream::H2 && self.opts.upstream.is_none() {
            say(&crate::probe::h2_only_note(&self.launch.name));
            self.opts.upstream = Some(Upstream::H2);
        }
    }

    fn silent(&mut self, pid: u32) {
        let Some(g) = self.gen_of(pid) else { return };
        let (n, port) = (g.n, g.port);
        let tail = g.tail(5);
        say(&format!(
            "generation {n}: no process of the app listens on any port {}s after its start (it should listen on PORT={port}); is the command a server, and did it start?",
            SILENT_AFTER.as_secs()
        ));
        self.say_output(&tail, 5);
    }

    /// The last `n` lines of an instance's output, and, when they say a port is in use and
    /// another portok app serves a port they (or the command) name, which app that is.
    pub(super) fn say_output(&self, tail: &[String], n: usize) {
        for line in tail.iter().skip(tail.len().saturating_sub(n)) {
            say(&format!("  | {line}"));
        }
        if let Some(clash) = self.port_clash(tail) {
            say(&clash);
        }
    }

    fn port_clash(&self, tail: &[String]) -> Option<String> {
        let in_use = tail.iter().any(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("in use") || l.contains("eaddrinuse")
        });
        if !in_use {
            return None;
        }
        let held = held_by_others(&self.state, &self.launch.hostname);
        let mut words = tail
            .iter()
            .chain(self.launch.command.iter())
            .flat_map(|l| l.split(|c: char| !c.is_ascii_digit()))
            .filter_map(|w| w.parse::<u16>().ok());
        let taken = words.find_map(|port| held.iter().find(|t| t.port == port))?;
        Some(taken.to_string())
    }
}
