//! A lazy app (`--lazy`): nothing runs until the daemon reports a request (wake), and
//! everything stops, drained, when the daemon reports it idle. The route stays
//! registered throughout, as `idle` while nothing runs, so requests are held meanwhile.

use super::{SuperviseError, Supervisor};
use crate::routes::RouteState;
use crate::ui::say;
use std::time::Instant;

impl Supervisor {
    /// Stop every instance and leave the route idle. `since`: when the daemon found the app
    /// idle (None at the first start of a lazy app, when nothing runs yet). Ignored while a
    /// redeploy is under way or nothing serves.
    pub(super) async fn go_idle(&mut self, since: Option<Instant>) {
        if since.is_some() {
            let serving = self
                .slots
                .iter()
                .all(|s| s.running.as_ref().is_some_and(|i| i.ready));
            if self.idle || self.rollout.is_some() || !serving {
                return;
            }
        }
        let port = self
            .slots
            .iter()
            .find_map(|s| s.running.as_ref().map(|i| i.gen.port))
            .or(self.first_port)
            .or(self.opts.fixed_port)
            .unwrap_or(0);
        // New requests are held from here on; those in flight finish before the stop.
        self.write_route(Vec::new(), RouteState::Idle, port, self.gen, None)
            .await;
        let now = Instant::now();
        for i in 0..self.slots.len() {
            let slot = std::mem::take(&mut self.slots[i]);
            if let Some(inst) = slot.running {
                self.retire(inst, now);
            }
            if let Some(kept) = slot.kept {
                self.retire(kept.inst, now);
            }
        }
        self.idle = true;
        self.crashed = false;
        if let (Some(_), Some(after)) = (since, self.opts.idle_stop) {
            // The next start is a new generation.
            self.gen += 1;
            say(&format!(
                "no request for {}: stopping (idle); the next request starts it again",
                crate::ui::duration(after.as_secs())
            ));
        } else {
            say("idle: the first request starts it");
        }
    }

    /// Start a lazy app that was idle, for `reason`.
    pub(super) async fn wake(&mut self, reason: &str) -> Result<(), SuperviseError> {
        self.idle = false;
        let started = self.start_all(Some(reason)).await;
        if let Err(e) = &started {
            say(&e.to_string());
            let port = self.first_port.or(self.opts.fixed_port).unwrap_or(0);
            self.mark_crashed(port, self.gen, e.to_string(), Vec::new())
                .await;
        }
        started
    }
}
