//! Apps registered with `portok add` (puma-dev's model): lazy apps with no portok.toml,
//! kept in `apps.json` in the state dir (under the state dir's lock, replaced atomically)
//! until `portok remove`. Each is served by a detached `portok run --lazy` (its owner),
//! which the daemon starts again when it is missing, e.g. after the daemon restarts.

use crate::routes::store::{self, StoreError};
use crate::state::StateDir;
use crate::sys::pid_alive;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum AddedError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path} is not valid: {source} (fix or delete it, then `portok add` the apps again)")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot read or write {path}: {source}{}", crate::fsutil::what_to_do(.source, .path))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Added {
    pub name: String,
    pub hostname: String,
    pub dir: PathBuf,
    pub command: Vec<String>,
    /// `portok run` flags besides the name and command (`--idle-stop 900`, `--env K=V`...).
    pub flags: Vec<String>,
    /// The detached `portok run` last started for it (0: none yet).
    #[serde(default)]
    pub owner: u32,
}

fn path(state: &StateDir) -> PathBuf {
    state.root().join("apps.json")
}

/// Where an added app's `portok run` writes its output.
pub fn log_path(state: &StateDir, hostname: &str) -> PathBuf {
    state.root().join("added").join(format!("{hostname}.log"))
}

pub fn load(state: &StateDir) -> Result<Vec<Added>, AddedError> {
    let p = path(state);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(AddedError::Io { path: p, source }),
    };
    serde_json::from_slice(&bytes).map_err(|source| AddedError::Corrupt { path: p, source })
}

/// Lock, load, let `f` change the list, write it back whole if it changed.
pub fn update<T>(state: &StateDir, f: impl FnOnce(&mut Vec<Added>) -> T) -> Result<T, AddedError> {
    store::locked(state, || {
        let before = load(state)?;
        let mut apps = before.clone();
        let out = f(&mut apps);
        if apps != before {
            let p = path(state);
            let mut json = serde_json::to_vec_pretty(&apps).map_err(|e| AddedError::Io {
                path: p.clone(),
                source: std::io::Error::other(e),
            })?;
            json.push(b'\n');
            crate::fsutil::write_atomic(&p, &json, 0o600)
                .map_err(|source| AddedError::Io { path: p, source })?;
        }
        Ok(out)
    })?
}

/// Start the detached `portok run` of `app`: in its folder, in its own session (no
/// terminal reaches it), its output appended to its log. Returns its pid.
pub fn spawn_owner(state: &StateDir, app: &Added) -> std::io::Result<u32> {
    let exe = std::env::current_exe()?;
    let log = log_path(state, &app.hostname);
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("run")
        .arg(&app.name)
        .args(&app.flags)
        .arg("--")
        .args(&app.command)
        .current_dir(dir_or_root(&app.dir))
        .env("PORTOK_STATE_DIR", state.root())
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    crate::sys::detach_session(&mut cmd);
    let mut child = cmd.spawn()?;
    let pid = child.id();
    // Reaped when it exits, so a long-lived parent (the daemon) keeps no zombie that
    // would still look alive.
    std::thread::spawn(move || child.wait());
    Ok(pid)
}

fn dir_or_root(dir: &Path) -> &Path {
    if dir.is_dir() {
        dir
    } else {
        Path::new("/")
    }
}

/// Start the owner of every added app that has none running (its route is gone and the
/// `portok run` last started for it is not alive). Returns the names started.
pub fn ensure_owners(state: &StateDir) -> Result<Vec<String>, AddedError> {
    let routes = store::load(state)?;
    let owned = |a: &Added| {
        (a.owner != 0 && pid_alive(a.owner))
            || routes
                .iter()
                .any(|r| r.hostname == a.hostname && r.pid != 0 && pid_alive(r.pid))
    };
    update(state, |apps| {
        let mut started = Vec::new();
        for app in apps.iter_mut().filter(|a| !owned(a)) {
            match spawn_owner(state, app) {
                Ok(pid) => {
                    app.owner = pid;
                    started.push(app.name.clone());
                }
                Err(e) => tracing::warn!(app = app.name, error = %e, "cannot start an added app"),
            }
        }
        started
    })
}
