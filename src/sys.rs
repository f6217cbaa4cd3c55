//! Safe wrappers over the libc calls portok makes about processes: each `unsafe` block for
//! them is here, with why it is sound.

use std::time::Duration;

/// Send `sig` to process group `pgid`; false when there is no such group (or it is not
/// ours to signal). Groups 0 and 1 are never signalled: they would be our own group and
/// every process.
pub fn signal_group(pgid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) touches no memory; the group is one portok started for an app
    // (process_group(0)) and recorded, never 0 or 1.
    pgid > 1 && unsafe { libc::kill(-pgid, sig) } == 0
}

/// Whether process group `pgid` still has a process we may signal.
pub fn group_alive(pgid: i32) -> bool {
    signal_group(pgid, 0)
}

/// SIGTERM to the group, then SIGKILL after `grace` if any of it is left (in a task of
/// the current tokio runtime). Used for the app of a `portok run` that died without
/// stopping it.
pub fn terminate_group(pgid: i32, grace: Duration) {
    if !signal_group(pgid, libc::SIGTERM) {
        return;
    }
    tracing::info!(pgid, "stopped the app of a dead `portok run`");
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        signal_group(pgid, libc::SIGKILL);
    });
}

/// The effective user and group ids.
pub fn effective_ids() -> (u32, u32) {
    // SAFETY: geteuid and getegid cannot fail and touch no memory.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn groups_0_and_1_are_never_signalled_and_a_gone_group_is_dead() {
        assert!(!signal_group(0, 0));
        assert!(!signal_group(1, 0));
        assert!(!group_alive(-5));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id() as i32;
        assert!(group_alive(pgid));
        assert!(signal_group(pgid, libc::SIGKILL));
        child.wait().unwrap();
        assert!(!group_alive(pgid));
    }
}
