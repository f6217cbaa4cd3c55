//! The supervisor's places and what runs in them: one slot per instance index, the
//! instance running there (and, for a single instance, the one kept for the rollback
//! window), the probe that finds an instance ready, a redeploy's progress, and the
//! back-off for restarting an instance that keeps crashing.

use super::super::child::Generation;
use super::{Probed, Waiter};
use crate::probe;
use crate::routes::Upstream;
use crate::run::app_port::given_to_another_app;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// An instance that stays up this long has its crash count forgiven.
pub(super) const STABLE_AFTER: Duration = Duration::from_secs(10);
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(250);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One running copy of the app.
pub(super) struct Instance {
    pub(super) gen: Generation,
    pub(super) ready: bool,
    /// Probes until ready or its deadline; stopped with the instance.
    pub(super) _probe: ProbeTask,
}

pub(super) struct ProbeTask(pub(super) tokio::task::JoinHandle<()>);

impl Drop for ProbeTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The generation a single instance switched away from, kept running for the rollback
/// window: if the new one dies before the window is over, the route goes back to it.
pub(super) struct Kept {
    pub(super) inst: Instance,
    pub(super) switched: Instant,
}

/// A place in the supervisor: instance `index` of N, whichever generation runs there.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) running: Option<Instance>,
    pub(super) kept: Option<Kept>,
    /// Crashes in a row, for the back-off.
    pub(super) crashes: u32,
    /// When a crashed instance is started again.
    pub(super) restart_at: Option<Instant>,
}

impl Slot {
    /// The instance here crashed after `up_for`: when to start it again. A run of crashes
    /// doubles the wait; one that stayed up a while starts the count over.
    pub(super) fn crashed(&mut self, up_for: Duration, now: Instant) -> Duration {
        if up_for >= STABLE_AFTER {
            self.crashes = 0;
        }
        let delay = backoff(self.crashes);
        self.crashes += 1;
        self.restart_at = Some(now + delay);
        delay
    }

    /// The slot holds a ready instance again: no restart is owed.
    pub(super) fn recovered(&mut self) {
        self.crashes = 0;
        self.restart_at = None;
    }

    /// When the kept generation's rollback window closes.
    pub(super) fn window_ends(&self, window: Duration) -> Option<Instant> {
        self.kept.as_ref().map(|k| k.switched + window)
    }
}

/// A redeploy in progress (rolling, for a pool: one slot at a time).
pub(super) struct Rollout {
    /// The generation every slot is being moved to.
    pub(super) gen: u64,
    pub(super) reason: String,
    pub(super) started: Instant,
    pub(super) waiters: Vec<Waiter>,
    /// The replacement starting for one slot.
    pub(super) next: Option<(usize, Instance)>,
}

impl Rollout {
    pub(super) fn new(gen: u64, reason: String, waiters: Vec<Waiter>) -> Self {
        Rollout {
            gen,
            reason,
            started: Instant::now(),
            waiters,
            next: None,
        }
    }
}

/// The wait before restarting an instance that crashed `crashes` times in a row.
pub(super) fn backoff(crashes: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << crashes.min(16))
        .min(MAX_BACKOFF)
}

/// What probing an instance found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// It answers on this port (PORT, or with `discover` the one it listens on instead),
    /// in this protocol.
    Ready(u16, Upstream),
    /// What answers on its PORT is another portok app's, given the same port: this
    /// instance could never listen there.
    Taken(u16),
    /// Nothing of it listens on any port yet (said once, after [`SILENT_AFTER`]).
    NoPortYet,
    /// The deadline passed.
    TimedOut,
}

/// How long a starting app may listen nowhere before portok says so.
pub(super) const SILENT_AFTER: Duration = Duration::from_secs(5);

/// Probe one instance until it answers or the deadline passes, then say which. With
/// `discover`, the ports its process group listens on are looked at too (at most 10 times
/// a second, only while it starts): an app that ignores PORT and answers elsewhere is
/// found there.
#[allow(clippy::too_many_arguments)]
pub(super) async fn probe_until(
    pid: u32,
    port: u16,
    host: String,
    url: String,
    health: Option<String>,
    tcp: bool,
    declared: Option<Upstream>,
    discover: bool,
    deadline: Instant,
    tx: mpsc::Sender<Probed>,
) {
    let started = Instant::now();
    let mut silent_said = false;
    let mut looked = started;
    let mut taken_said = false;
    loop {
        if let Some(up) = probe::ready_as(port, &host, health.as_deref(), tcp, declared).await {
            // The port was free when it was handed out, not necessarily still: another
            // portok's app given it too may answer there before this one listens.
            // Once another app was seen there, what answers outside our group is not ours:
            // the processes' environments are read once, not on every probe.
            let (url, seen) = (url.clone(), taken_said);
            let taken = tokio::task::spawn_blocking(move || {
                !crate::sys::group_listening_ports(pid as i32).contains(&port)
                    && (seen || given_to_another_app(port, &url))
            })
            .await
            .unwrap_or(false);
            if !taken {
                let _ = tx.send((pid, Probe::Ready(port, up))).await;
                return;
            }
            if !taken_said {
                taken_said = true;
                let _ = tx.send((pid, Probe::Taken(port))).await;
            }
        }
        if discover && !tcp && looked.elapsed() >= Duration::from_millis(100) {
            looked = Instant::now();
            let pgid = pid as i32;
            let ports =
                tokio::task::spawn_blocking(move || crate::sys::group_listening_ports(pgid))
                    .await
                    .unwrap_or_default();
            if !ports.contains(&port) {
                for p in ports.iter().copied() {
                    let found = probe::ready_as(p, &host, health.as_deref(), false, declared);
                    if let Some(up) = found.await {
                        let _ = tx.send((pid, Probe::Ready(p, up))).await;
                        return;
                    }
                }
            }
            if ports.is_empty() && !silent_said && started.elapsed() >= SILENT_AFTER {
                silent_said = true;
                let _ = tx.send((pid, Probe::NoPortYet)).await;
            }
        }
        if Instant::now() >= deadline {
            let _ = tx.send((pid, Probe::TimedOut)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap() {
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn a_crash_loop_backs_off_and_a_stable_run_forgives_it() {
        let now = Instant::now();
        let mut slot = Slot::default();
        let quick = Duration::from_millis(100);
        assert_eq!(slot.crashed(quick, now), Duration::from_millis(250));
        assert_eq!(slot.crashed(quick, now), Duration::from_millis(500));
        assert_eq!(slot.crashed(quick, now), Duration::from_secs(1));
        assert_eq!(slot.restart_at, Some(now + Duration::from_secs(1)));
        // Up for longer than STABLE_AFTER: the next crash waits the first back-off again.
        assert_eq!(slot.crashed(STABLE_AFTER, now), FIRST_BACKOFF);
        slot.recovered();
        assert_eq!((slot.crashes, slot.restart_at), (0, None));
    }
}
