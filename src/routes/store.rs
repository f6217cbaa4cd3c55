//! routes.json on disk: an exclusive lock on routes.lock around every read-modify-write,
//! atomic replacement (temp file, fsync, rename), stale-pid cleanup, and a corrupt file
//! moved aside rather than emptied.

use super::Route;
use crate::state::StateDir;
use crate::sys::pid_alive;
use fs4::fs_std::FileExt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a writer waits for another writer's lock before giving up.
/// `PORTOK_LOCK_TIMEOUT` (seconds) changes it, mostly for tests.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

fn lock_wait() -> Duration {
    std::env::var("PORTOK_LOCK_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .map(|s| Duration::from_secs_f64(s.max(0.0)))
        .unwrap_or(LOCK_WAIT)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path} is not valid routes JSON: {source} (fix or delete it; `portok alias` moves it aside and starts afresh)")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot read or write {path}: {source}{}", crate::fsutil::what_to_do(.source, .path))]
    Io { path: PathBuf, source: io::Error },
    #[error("routes are locked by another portok process{holder} for over {waited:?}; is it hung? (lock file: {path})")]
    LockTimeout {
        path: PathBuf,
        waited: Duration,
        holder: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Read routes.json without the lock (writers replace it atomically, so a reader never sees
/// half a file) and drop entries whose owner is dead. A missing file is an empty list.
pub fn load(state: &StateDir) -> Result<Vec<Route>, StoreError> {
    let mut routes = read_file(&state.routes_json())?;
    routes.retain(|r| r.pid == 0 || pid_alive(r.pid));
    Ok(routes)
}

fn read_file(path: &Path) -> Result<Vec<Route>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path)(e)),
    };
    parse(&bytes).map_err(|source| StoreError::Corrupt {
        path: path.to_path_buf(),
        source,
    })
}

/// Parse the bytes of a routes.json: all-whitespace (an emptied file) is an empty list.
/// Public so it can be fuzzed; `read_file` is the only caller in the daemon.
pub fn parse(bytes: &[u8]) -> Result<Vec<Route>, serde_json::Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    serde_json::from_slice(bytes)
}

/// Held while a read-modify-write runs. flock belongs to the open file description, so
/// every operation opens routes.lock afresh and never nests.
struct Lock {
    file: File,
}

impl Lock {
    fn acquire(state: &StateDir, wait: Duration) -> Result<Lock, StoreError> {
        let path = state.routes_lock();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        let start = Instant::now();
        let mut delay = Duration::from_millis(1);
        loop {
            match FileExt::try_lock_exclusive(&file) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
            if start.elapsed() >= wait {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => String::new(),
                    pid => format!(" (pid {pid})"),
                };
                return Err(StoreError::LockTimeout {
                    path,
                    waited: wait,
                    holder,
                });
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(20));
        }
        // Record the holder so a writer that times out can name it.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        Ok(Lock { file })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = FileExt::unlock(&self.file);
    }
}

/// What a read-modify-write saw besides the routes, for the caller to report.
#[derive(Debug, Default)]
pub struct UpdateNotes {
    /// Where a corrupt routes.json was moved before starting afresh.
    pub moved_aside: Option<PathBuf>,
}

/// Lock, load (dropping dead owners), let `f` change the list, and write it back atomically
/// if anything changed. A corrupt file is moved aside, never overwritten in place.
pub fn update<T, E>(
    state: &StateDir,
    f: impl FnOnce(&mut Vec<Route>) -> Result<T, E>,
) -> Result<(T, UpdateNotes), E>
where
    E: From<StoreError>,
{
    state.ensure().map_err(|e| StoreError::Io {
        path: state.root().to_path_buf(),
        source: io::Error::other(e),
    })?;
    let _lock = Lock::acquire(state, lock_wait())?;
    let path = state.routes_json();
    let mut notes = UpdateNotes::default();
    let (on_disk, mut routes) = match read_file(&path) {
        Ok(r) => (Some(r.clone()), r),
        Err(StoreError::Corrupt { .. }) => {
            let aside = path.with_file_name(format!("routes.json.corrupt-{}", super::unix_now()));
            fs::rename(&path, &aside).map_err(io_err(&path))?;
            notes.moved_aside = Some(aside);
            (None, Vec::new())
        }
        Err(e) => return Err(e.into()),
    };
    routes.retain(|r| r.pid == 0 || pid_alive(r.pid));
    let out = f(&mut routes)?;
    if on_disk.as_ref() != Some(&routes) {
        write_atomic(&path, &routes)?;
    }
    Ok((out, notes))
}

/// Run `f` holding routes.lock: the one lock of the state dir, also for apps.json.
pub fn locked<T>(state: &StateDir, f: impl FnOnce() -> T) -> Result<T, StoreError> {
    state.ensure().map_err(|e| StoreError::Io {
        path: state.root().to_path_buf(),
        source: io::Error::other(e),
    })?;
    let _lock = Lock::acquire(state, lock_wait())?;
    Ok(f())
}

/// The table, whole or not at all (fsutil: temp file, fsync, rename, fsync of the folder).
fn write_atomic(path: &Path, routes: &[Route]) -> Result<(), StoreError> {
    let mut json = serde_json::to_vec_pretty(routes).map_err(|e| StoreError::Io {
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })?;
    json.push(b'\n');
    crate::fsutil::write_atomic(path, &json, 0o600).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_writes_and_load_reads() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::at(dir.path().to_path_buf());
        update::<_, StoreError>(&state, |r| {
            r.push(Route::alias("a.localhost".into(), 80));
            Ok(())
        })
        .unwrap();
        let routes = load(&state).unwrap();
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].hostname, "a.localhost");
    }

    #[test]
    fn corrupt_file_is_reported_then_moved_aside_by_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::at(dir.path().to_path_buf());
        fs::write(state.routes_json(), b"[{\"hostname\": ").unwrap();
        assert!(matches!(load(&state), Err(StoreError::Corrupt { .. })));
        let ((), notes) = update::<_, StoreError>(&state, |r| {
            r.push(Route::alias("b.localhost".into(), 81));
            Ok(())
        })
        .unwrap();
        let aside = notes.moved_aside.unwrap();
        assert_eq!(fs::read(aside).unwrap(), b"[{\"hostname\": ");
        assert_eq!(load(&state).unwrap().len(), 1);
    }

    #[test]
    fn dead_pids_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::at(dir.path().to_path_buf());
        let routes = vec![
            Route {
                pid: i32::MAX as u32 - 7,
                ..Route::alias("dead.localhost".into(), 1)
            },
            Route {
                pid: std::process::id(),
                ..Route::alias("live.localhost".into(), 2)
            },
        ];
        fs::write(state.routes_json(), serde_json::to_vec(&routes).unwrap()).unwrap();
        let hosts: Vec<_> = load(&state)
            .unwrap()
            .into_iter()
            .map(|r| r.hostname)
            .collect();
        assert_eq!(hosts, vec!["live.localhost"]);
    }
}
