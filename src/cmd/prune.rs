//! `portok prune`: stop the apps whose `portok run` is gone and drop their routes.
//!
//! A `portok run` killed with SIGKILL cannot clean up: its children get SIGTERM through the
//! parent-death signal, and the daemon stops what is left of their process groups when it
//! next reloads. prune does the same by hand (the daemon may not be running), from the
//! process groups each route records in routes.json, and removes run sockets nobody
//! listens on any more.

use crate::routes::{store, Route};
use crate::state::StateDir;
use crate::sys;
use crate::sys::pid_alive;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long SIGTERM gets before prune gives up (or, with --force, sends SIGKILL).
const TERM_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} does not parse, so portok cannot tell which apps it recorded; fix it by hand, or move it aside and run `portok prune` again")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// An app left running by a `portok run` that is gone.
#[derive(Debug, Clone)]
pub struct Orphan {
    pub hostname: String,
    /// The dead `portok run`.
    pub owner: u32,
    /// Its process groups that still have a member.
    pub groups: Vec<i32>,
}

/// routes.json exactly as written, dead owners included: `store::load` drops those, but
/// they are what prune and doctor look for. A missing file is an empty list.
pub fn read_raw(state: &StateDir) -> Result<Vec<Route>, PruneError> {
    let path = state.routes_json();
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(PruneError::Read { path, source }),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|source| PruneError::Corrupt { path, source })
}

/// Routes whose owning `portok run` is dead.
pub fn stale(routes: &[Route]) -> impl Iterator<Item = &Route> {
    routes.iter().filter(|r| r.pid != 0 && !pid_alive(r.pid))
}

/// Stale routes whose app processes still run.
pub fn orphans(routes: &[Route]) -> Vec<Orphan> {
    stale(routes)
        .filter_map(|r| {
            let groups: Vec<i32> = r
                .pgids
                .iter()
                .copied()
                .filter(|&g| sys::group_alive(g))
                .collect();
            (!groups.is_empty()).then(|| Orphan {
                hostname: r.hostname.clone(),
                owner: r.pid,
                groups,
            })
        })
        .collect()
}

/// What prune did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub stopped: Vec<Orphan>,
    /// Groups still alive after SIGTERM (without --force); their routes are kept so a
    /// later `prune --force` can find them.
    pub survivors: Vec<Orphan>,
    pub dropped: Vec<String>,
    pub sockets: usize,
}

/// Stop orphaned apps (SIGTERM to each group; SIGKILL after [`TERM_WAIT`] with `force`),
/// drop stale routes, remove dead run sockets. `say` reports each step.
pub fn prune(
    state: &StateDir,
    force: bool,
    say: &mut dyn FnMut(&str),
) -> Result<Outcome, PruneError> {
    let raw = read_raw(state)?;
    let orphans = orphans(&raw);
    for o in &orphans {
        say(&format!(
            "{}: its `portok run` (pid {}) is gone; stopping its app (process group {})",
            o.hostname,
            o.owner,
            join(&o.groups)
        ));
        for &g in &o.groups {
            sys::signal_group(g, crate::sys::Signal::Term);
        }
    }
    let all: Vec<i32> = orphans.iter().flat_map(|o| o.groups.clone()).collect();
    if !wait_gone(&all, TERM_WAIT) && force {
        for &g in all.iter().filter(|&&g| sys::group_alive(g)) {
            say(&format!(
                "process group {g} ignored SIGTERM; sending SIGKILL"
            ));
            sys::signal_group(g, crate::sys::Signal::Kill);
        }
        wait_gone(&all, Duration::from_secs(2));
    }
    let mut out = Outcome::default();
    for o in orphans {
        if o.groups.iter().any(|&g| sys::group_alive(g)) {
            out.survivors.push(o);
        } else {
            out.stopped.push(o);
        }
    }
    if out.survivors.is_empty() {
        let stale_hosts: Vec<String> = stale(&raw).map(|r| r.hostname.clone()).collect();
        // update() drops every route whose owner is dead, and writes only if that changed
        // something.
        store::update::<_, store::StoreError>(state, |_| Ok(()))?;
        out.dropped = stale_hosts;
    }
    out.sockets = remove_dead_sockets(state);
    Ok(out)
}

/// Wait until none of the groups has a member; false on timeout.
fn wait_gone(groups: &[i32], limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        if !groups.iter().any(|&g| sys::group_alive(g)) {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A run socket whose `portok run` died stays on disk; one that refuses connections is
/// nobody's, so it goes.
fn remove_dead_sockets(state: &StateDir) -> usize {
    let Ok(entries) = std::fs::read_dir(state.root().join("run")) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "sock")
            && std::os::unix::net::UnixStream::connect(&path).is_err()
            && std::fs::remove_file(&path).is_ok()
        {
            n += 1;
        }
    }
    n
}

pub fn join(groups: &[i32]) -> String {
    groups
        .iter()
        .map(|g| g.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `portok prune [--force]`.
pub fn main(force: bool) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    let out = prune(&state, force, &mut |m| crate::ui::say(m))?;
    for o in &out.stopped {
        crate::ui::say(&format!("{}: app stopped", o.hostname));
    }
    if !out.dropped.is_empty() {
        crate::ui::say(&format!(
            "dropped {} stale route{}: {}",
            out.dropped.len(),
            if out.dropped.len() == 1 { "" } else { "s" },
            out.dropped.join(", ")
        ));
        crate::daemon::reload_if_running(&state)?;
    }
    if out.sockets > 0 {
        crate::ui::say(&format!("removed {} dead run socket(s)", out.sockets));
    }
    if !out.survivors.is_empty() {
        for o in &out.survivors {
            eprintln!(
                "portok: {}: process group {} is still running {}s after SIGTERM; run `portok prune --force` to SIGKILL it",
                o.hostname,
                join(&o.groups),
                TERM_WAIT.as_secs()
            );
        }
        return Ok(1);
    }
    if out.stopped.is_empty() && out.dropped.is_empty() && out.sockets == 0 {
        crate::ui::say("nothing to prune: every route's owner is alive");
    }
    Ok(0)
}
