//! What a running `portok up` leaves in the state dir, so `portok down`, `portok ps` and a
//! second `portok up` can find it: `up/<pid>.json`, one per `portok up` process, naming
//! its project and the `portok run` it started for each app. Written atomically; a file
//! whose process is gone is stale and removed by whoever finds it.

use crate::state::StateDir;
use crate::sys::pid_alive;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The `portok up` process.
    pub pid: u32,
    /// The project folder (where portok.toml is), canonical.
    pub project: PathBuf,
    pub apps: Vec<AppRecord>,
    /// Where a detached `portok up -d` writes its output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppRecord {
    /// The app's key in portok.toml.
    pub name: String,
    pub hostname: String,
    /// Its `portok run` (it owns the route); 0 once it has exited.
    pub pid: u32,
}

fn dir(state: &StateDir) -> PathBuf {
    state.root().join("up")
}

fn path(state: &StateDir, pid: u32) -> PathBuf {
    dir(state).join(format!("{pid}.json"))
}

pub fn write(state: &StateDir, record: &Record) -> std::io::Result<()> {
    std::fs::create_dir_all(dir(state))?;
    let data = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    crate::fsutil::write_atomic(&path(state, record.pid), &data, 0o600)
}

pub fn remove(state: &StateDir, pid: u32) {
    let _ = std::fs::remove_file(path(state, pid));
}

/// The live `portok up` processes of `project` (every project when None).
pub fn find(state: &StateDir, project: Option<&Path>) -> Vec<Record> {
    let Ok(entries) = std::fs::read_dir(dir(state)) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Some(rec) = std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
        else {
            continue;
        };
        if !pid_alive(rec.pid) {
            let _ = std::fs::remove_file(&p);
            continue;
        }
        if project.is_none_or(|d| d == rec.project) {
            found.push(rec);
        }
    }
    found.sort_by_key(|r| r.pid);
    found
}

/// The log file of a detached `portok up` of `project`.
pub fn log_path(state: &StateDir, project: &Path) -> PathBuf {
    let label = crate::project::label(&project.display().to_string()).unwrap_or_default();
    // The end of the path names it; the hash keeps two projects with the same folder apart.
    let tail: String = label
        .chars()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let hash = project
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ *b as u64).wrapping_mul(0x100000001b3)
        });
    dir(state).join(format!(
        "{}-{:08x}.log",
        tail.trim_matches('-'),
        hash as u32
    ))
}
