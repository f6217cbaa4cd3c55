//! The daemon's route table and routes.json, kept in step.
//!
//! - Writers outside the daemon (`portok run`, `alias`, a hand edit) change the file; the
//!   daemon re-reads it on a control `reload` or when its watcher sees the file change.
//! - A change the daemon makes itself (a switch) is applied in memory first, so it takes
//!   effect at once, and persisted after. Re-reads wait for that write.
//! - The daemon remembers which version of the file its table came from, so a file it has
//!   already read (its own write, or one a writer already asked it to reload) is not read
//!   again when the watcher reports it.

use super::state::DaemonState;
use crate::routes::{store, Route, RouteTable};
use crate::sync::LockExt;
use crate::sys::pid_alive;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which version of routes.json the table was read from: a rename (every write is one)
/// gives a new inode; the time and length catch a file edited in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        len: m.size(),
    })
}

#[derive(Default)]
pub struct RouteSync {
    /// The version of routes.json the table holds (None: not read yet, or unknown).
    loaded: Mutex<Option<Stamp>>,
    /// Held from an in-memory change until it is on disk, and by every re-read.
    writing: Arc<tokio::sync::Mutex<()>>,
}

impl RouteSync {
    fn loaded(&self) -> Option<Stamp> {
        *self.loaded.locked()
    }

    fn set_loaded(&self, s: Option<Stamp>) {
        *self.loaded.locked() = s;
    }
}

impl DaemonState {
    /// Re-read routes.json and swap the table. A corrupt file keeps the current table.
    pub async fn reload_routes(&self) {
        let _w = self.route_sync.writing.lock().await;
        let ctx = &self.ctx;
        let state = ctx.state.clone();
        let read = tokio::task::spawn_blocking(move || {
            // Taken before the read: a write in between makes the next check read again.
            let before = stamp(&state.routes_json());
            store::load(&state).map(|routes| (before, routes))
        })
        .await;
        match read {
            Ok(Ok((before, routes))) => {
                let previous = ctx.routes.load_full();
                // Whatever prompted this reload, an app whose `portok run` died without
                // cleaning up (SIGKILL) is stopped here, so it does not outlive it.
                for live in previous.sorted() {
                    if live.route.pid != 0 && !pid_alive(live.route.pid) {
                        for &pgid in &live.route.pgids {
                            crate::sys::terminate_group(pgid, Duration::from_secs(5));
                        }
                    }
                }
                ctx.install(RouteTable::build(routes, Some(&previous), &ctx.metrics));
                self.route_sync.set_loaded(before);
            }
            Ok(Err(e)) => tracing::error!(error = %e, "keeping the current routes"),
            Err(e) => tracing::error!(error = %e, "route reload task failed"),
        }
    }

    /// Whether routes.json is no longer the version the table was read from.
    pub fn routes_changed_on_disk(&self) -> bool {
        let now = stamp(&self.ctx.state.routes_json());
        now.is_none() || now != self.route_sync.loaded()
    }

    /// Change the routes in memory now, then in routes.json. `edit` returns whether it
    /// changed anything; it runs on the table's routes, and again on the file's under its
    /// lock (where another writer may have changed other routes).
    pub async fn change_routes<F>(self: &Arc<Self>, edit: F) -> bool
    where
        F: Fn(&mut Vec<Route>) -> bool + Send + Sync + 'static,
    {
        let guard = self.route_sync.writing.clone().lock_owned().await;
        let ctx = &self.ctx;
        let previous = ctx.routes.load_full();
        let mut routes: Vec<Route> = previous.sorted().iter().map(|l| l.route.clone()).collect();
        if !edit(&mut routes) {
            return false;
        }
        ctx.install(RouteTable::build(routes, Some(&previous), &ctx.metrics));
        let d = self.clone();
        tokio::spawn(async move {
            let state = d.ctx.state.clone();
            let loaded = d.route_sync.loaded();
            let written = tokio::task::spawn_blocking(move || {
                let path = state.routes_json();
                store::update::<_, store::StoreError>(&state, |routes| {
                    // Under the file's lock: had anyone else written since our last read?
                    let ours = stamp(&path) == loaded;
                    edit(routes);
                    Ok(ours)
                })
                .map(|(ours, _)| (ours, stamp(&path)))
            })
            .await;
            match written {
                Ok(Ok((true, after))) => {
                    d.route_sync.set_loaded(after);
                    drop(guard);
                }
                Ok(Ok((false, _))) => {
                    // Another writer's change is in the file too: read it all.
                    drop(guard);
                    d.reload_routes().await;
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "the route change applies until the daemon restarts: cannot write routes.json");
                }
                Err(e) => tracing::error!(error = %e, "route write task failed"),
            }
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::{Ctx, Limits};
    use crate::state::StateDir;

    fn port_of(d: &DaemonState, host: &str) -> Option<u16> {
        d.ctx.routes.load().lookup(host).map(|l| l.route.port)
    }

    fn write(state: &StateDir, f: impl FnOnce(&mut Vec<Route>)) {
        store::update::<_, store::StoreError>(state, |r| {
            f(r);
            Ok(())
        })
        .unwrap();
    }

    async fn on_disk(state: &StateDir, host: &str, port: u16) {
        for _ in 0..500 {
            let routes = store::load(state).unwrap();
            if routes.iter().any(|r| r.hostname == host && r.port == port) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{host} never reached port {port} in routes.json");
    }

    #[tokio::test]
    async fn a_change_applies_in_memory_then_on_disk_and_is_not_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::at(dir.path().to_path_buf());
        write(&state, |r| r.push(Route::alias("a.localhost".into(), 1000)));
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let ctx = Ctx::new(state.clone(), 1, Limits::default(), None, metrics);
        let d = Arc::new(DaemonState::new(Arc::new(ctx), "t".into(), Vec::new()));
        assert!(d.routes_changed_on_disk(), "nothing read yet");
        d.reload_routes().await;
        assert_eq!(port_of(&d, "a.localhost"), Some(1000));
        assert!(!d.routes_changed_on_disk(), "the table holds this version");

        let moved = d
            .change_routes(|r| {
                let a = r.iter_mut().find(|r| r.hostname == "a.localhost");
                a.map(|a| a.port = 2000).is_some()
            })
            .await;
        assert!(moved);
        // In the table at once, then in the file; the watcher then has nothing to read.
        assert_eq!(port_of(&d, "a.localhost"), Some(2000));
        on_disk(&state, "a.localhost", 2000).await;
        let _settled = d.route_sync.writing.lock().await;
        assert!(
            !d.routes_changed_on_disk(),
            "its own write is not read back"
        );
        drop(_settled);

        // Another writer's change is read.
        write(&state, |r| r.push(Route::alias("b.localhost".into(), 3000)));
        assert!(d.routes_changed_on_disk());
        d.reload_routes().await;
        assert_eq!(port_of(&d, "b.localhost"), Some(3000));

        // A change the daemon has not read yet survives the daemon's own write.
        write(&state, |r| r.push(Route::alias("c.localhost".into(), 4000)));
        let unchanged = d.change_routes(|_| false).await;
        assert!(!unchanged);
        d.change_routes(|r| {
            let a = r.iter_mut().find(|r| r.hostname == "a.localhost");
            a.map(|a| a.port = 2001).is_some()
        })
        .await;
        on_disk(&state, "a.localhost", 2001).await;
        for _ in 0..500 {
            if port_of(&d, "c.localhost").is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            port_of(&d, "c.localhost"),
            Some(4000),
            "read with the write"
        );
        assert_eq!(port_of(&d, "a.localhost"), Some(2001));
        let routes = store::load(&state).unwrap();
        assert_eq!(routes.len(), 3, "{routes:?}");
    }
}
