//! A pool's places and what runs in them: one slot per instance index, the instance
//! running there and the probe that finds it ready, a rolling redeploy's progress, and the
//! back-off for restarting an instance that keeps crashing.

use super::super::child::Generation;
use super::{Probed, Waiter};
use crate::probe;
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

/// A place in the pool: instance `index` of N, whichever generation runs there.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) running: Option<Instance>,
    /// Crashes in a row, for the back-off.
    pub(super) crashes: u32,
    /// When a crashed instance is started again.
    pub(super) restart_at: Option<Instant>,
}

/// A rolling redeploy in progress.
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

/// Probe one instance until it answers or the deadline passes, then say which.
pub(super) async fn probe_until(
    pid: u32,
    port: u16,
    host: String,
    health: Option<String>,
    tcp: bool,
    deadline: Instant,
    tx: mpsc::Sender<Probed>,
) {
    let ready = probe::until_ready(port, &host, health.as_deref(), tcp, deadline).await;
    let _ = tx.send((pid, ready)).await;
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
}
