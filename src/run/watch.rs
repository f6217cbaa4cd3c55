//! Watching the source: a `notify` watcher whose callback `try_send`s into a channel, a
//! filter, and a debounce that turns a burst of events (an editor's save, a `git
//! checkout`) into one change. The filter honours .gitignore/.ignore (the `ignore` crate),
//! always skips .git, target, node_modules, the state dir and the files portok's own
//! output is redirected to (`portok run ... > out.log` would otherwise redeploy on every
//! line it writes), and by default skips what dev tools and apps write as they run (logs,
//! databases, caches, build output, editor swap files). Paths the loop guard
//! ([`LoopGuard`]) caught writing on every start are skipped from then on.

use crate::sync::LockExt;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Folders that never trigger a redeploy.
const ALWAYS_SKIP: &[&str] = &[".git", "target", "node_modules", ".portok"];

/// What apps and dev tools write as they run, skipped unless `--watch-all` (gitignore
/// syntax). docs/running-apps.md lists the same.
pub const GENERATED: &[&str] = &[
    // logs
    "*.log",
    "logs/",
    // SQLite and other database files, with their journals
    "*.sqlite",
    "*.sqlite3",
    "*.db",
    "*-journal",
    "*-wal",
    "*-shm",
    // Python's bytecode
    "__pycache__/",
    "*.pyc",
    // build output and caches
    ".next/",
    "dist/",
    "build/",
    ".turbo/",
    ".cache/",
    ".svelte-kit/",
    "coverage/",
    // editor swap and backup files
    "*.swp",
    "*.swo",
    "*.swx",
    "*~",
    ".#*",
    "#*#",
    "4913",
];

/// Paths the loop guard stopped watching, shared by the filter (on notify's thread) and
/// the supervisor that decides.
pub type Learned = Arc<Mutex<HashSet<PathBuf>>>;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {path}: {source} (check that it exists; on Linux raise fs.inotify.max_user_watches if it is a large tree)")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
    #[error("--ignore {glob:?} is not a valid glob: {source}")]
    Glob { glob: String, source: ignore::Error },
}

/// Decides whether a changed path matters.
pub struct Filter {
    roots: Vec<PathBuf>,
    state_dir: PathBuf,
    /// (directory, its .gitignore/.ignore rules), deepest last.
    ignores: Vec<Gitignore>,
    user: Gitignore,
    /// [`GENERATED`], unless `--watch-all`.
    generated: Option<Gitignore>,
    /// The files portok's stdout and stderr are (device, inode).
    own_output: Vec<(u64, u64)>,
    learned: Learned,
}

impl Filter {
    pub fn new(
        roots: &[PathBuf],
        globs: &[String],
        state_dir: &Path,
        watch_all: bool,
        learned: Learned,
    ) -> Result<Self, WatchError> {
        let mut ignores = Vec::new();
        for root in roots {
            // Walk with the ignore crate's own rules so ignored trees (target/) are not
            // entered, and collect every ignore file on the way.
            let walker = ignore::WalkBuilder::new(root)
                .hidden(false)
                .require_git(false)
                .filter_entry(|e| !ALWAYS_SKIP.iter().any(|s| e.file_name() == *s))
                .build();
            for entry in walker.flatten() {
                let name = entry.file_name();
                if name == ".gitignore" || name == ".ignore" {
                    let dir = entry.path().parent().unwrap_or(root).to_path_buf();
                    let mut b = GitignoreBuilder::new(&dir);
                    b.add(entry.path());
                    if let Ok(gi) = b.build() {
                        ignores.push(gi);
                    }
                }
            }
        }
        let base = roots.first().cloned().unwrap_or_else(|| PathBuf::from("."));
        let mut ub = GitignoreBuilder::new(&base);
        for g in globs {
            ub.add_line(None, g).map_err(|source| WatchError::Glob {
                glob: g.clone(),
                source,
            })?;
        }
        let user = ub.build().map_err(|source| WatchError::Glob {
            glob: globs.join(" "),
            source,
        })?;
        let generated = (!watch_all).then(|| {
            let mut b = GitignoreBuilder::new(&base);
            for g in GENERATED {
                b.add_line(None, g).expect("the built-in globs are valid");
            }
            b.build().expect("the built-in globs are valid")
        });
        Ok(Filter {
            roots: roots.to_vec(),
            state_dir: state_dir.to_path_buf(),
            ignores,
            user,
            generated,
            own_output: crate::sys::own_output_files(),
            learned,
        })
    }

    pub fn wants(&self, path: &Path) -> bool {
        if path.starts_with(&self.state_dir) {
            return false;
        }
        if self.learned.locked().contains(path) {
            return false;
        }
        if !self.own_output.is_empty() {
            use std::os::unix::fs::MetadataExt as _;
            if let Ok(m) = std::fs::metadata(path) {
                if self.own_output.contains(&(m.dev(), m.ino())) {
                    return false;
                }
            }
        }
        let rel = self
            .roots
            .iter()
            .find_map(|r| path.strip_prefix(r).ok())
            .unwrap_or(path);
        if rel
            .components()
            .any(|c| ALWAYS_SKIP.iter().any(|s| c.as_os_str() == *s))
        {
            return false;
        }
        let is_dir = path.is_dir();
        let skips = |gi: &Gitignore| gi.matched_path_or_any_parents(path, is_dir).is_ignore();
        if skips(&self.user) || self.generated.as_ref().is_some_and(skips) {
            return false;
        }
        for gi in &self.ignores {
            if path.starts_with(gi.path())
                && gi.matched_path_or_any_parents(path, is_dir).is_ignore()
            {
                return false;
            }
        }
        true
    }
}

/// Start watching. Returns the watcher (dropping it stops watching) and a channel that
/// yields the changed paths of each debounced burst.
pub fn spawn(
    roots: Vec<PathBuf>,
    filter: Filter,
    debounce: Duration,
) -> Result<(notify::RecommendedWatcher, mpsc::Receiver<Vec<PathBuf>>), WatchError> {
    let (raw_tx, raw_rx) = mpsc::channel::<PathBuf>(1024);
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if matches!(ev.kind, EventKind::Access(_)) {
            return;
        }
        for p in ev.paths {
            if filter.wants(&p) {
                // A full channel already holds a change; dropping more is harmless.
                let _ = raw_tx.try_send(p);
            }
        }
    })
    .map_err(|source| WatchError::Watch {
        path: roots.first().cloned().unwrap_or_default(),
        source,
    })?;
    for root in &roots {
        watcher
            .watch(root, RecursiveMode::Recursive)
            .map_err(|source| WatchError::Watch {
                path: root.clone(),
                source,
            })?;
    }
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(debounced(raw_rx, tx, debounce));
    Ok((watcher, rx))
}

/// Most paths one burst keeps (a `git checkout` can touch thousands).
const BURST_PATHS: usize = 64;

/// Pass on the paths of each burst (first first, each once), once no event has arrived
/// for `quiet`.
async fn debounced(
    mut raw: mpsc::Receiver<PathBuf>,
    tx: mpsc::Sender<Vec<PathBuf>>,
    quiet: Duration,
) {
    while let Some(first) = raw.recv().await {
        let mut burst = vec![first];
        while let Ok(Some(p)) = tokio::time::timeout(quiet, raw.recv()).await {
            if burst.len() < BURST_PATHS && !burst.contains(&p) {
                burst.push(p);
            }
        }
        if tx.send(burst).await.is_err() {
            return;
        }
    }
}

/// The next burst of changed paths from the watcher; never, when nothing is watched.
pub(super) async fn next_change(
    rx: &mut Option<mpsc::Receiver<Vec<PathBuf>>>,
) -> Option<Vec<PathBuf>> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_changes_is_one_redeploy_after_the_quiet_period() {
        let (raw_tx, raw_rx) = mpsc::channel(16);
        let (tx, mut rx) = mpsc::channel(4);
        let quiet = Duration::from_millis(300);
        tokio::spawn(debounced(raw_rx, tx, quiet));
        let start = tokio::time::Instant::now();
        for name in ["a.rs", "b.rs", "c.rs"] {
            raw_tx.send(PathBuf::from(name)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The burst's paths, once 300 ms pass with no event after the last.
        let burst = ["a.rs", "b.rs", "c.rs"].map(PathBuf::from).to_vec();
        assert_eq!(rx.recv().await, Some(burst));
        assert_eq!(start.elapsed(), Duration::from_millis(400 + 300));
        // Nothing more until the next burst, which is its own change.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(rx.try_recv().is_err());
        raw_tx.send(PathBuf::from("d.rs")).await.unwrap();
        assert_eq!(rx.recv().await, Some(vec![PathBuf::from("d.rs")]));
    }

    #[test]
    fn filter_skips_ignored_and_builtin_folders() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join(".gitignore"), "*.log\nbuild/\n").unwrap();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::create_dir_all(root.join("build")).unwrap();
        let state = root.join("state");
        let learned = Learned::default();
        let f = Filter::new(
            std::slice::from_ref(&root),
            &["*.tmp".into()],
            &state,
            false,
            learned.clone(),
        )
        .unwrap();
        assert!(f.wants(&root.join("src/main.rs")));
        assert!(!f.wants(&root.join("server.log")));
        assert!(!f.wants(&root.join("build/out.js")));
        assert!(!f.wants(&root.join("target/debug/x")));
        assert!(!f.wants(&root.join(".git/index")));
        assert!(!f.wants(&root.join("node_modules/a/b.js")));
        assert!(!f.wants(&root.join("a.tmp")));
        assert!(!f.wants(&state.join("routes.json")));
        // What apps and dev tools write, by default.
        for p in [
            "db.sqlite3",
            "db.sqlite3-journal",
            "app/__pycache__/m.pyc",
            "logs/x.txt",
            ".next/a.js",
            "dist/a.js",
            "src/.main.rs.swp",
            "src/main.rs~",
        ] {
            assert!(!f.wants(&root.join(p)), "{p}");
        }
        // A path the loop guard caught.
        assert!(f.wants(&root.join("src/gen.rs")));
        learned.lock().unwrap().insert(root.join("src/gen.rs"));
        assert!(!f.wants(&root.join("src/gen.rs")));
        // --watch-all: only .gitignore, the flags and the built-in folders.
        let all = Filter::new(
            std::slice::from_ref(&root),
            &[],
            &state,
            true,
            Learned::default(),
        )
        .unwrap();
        assert!(all.wants(&root.join("db.sqlite3")));
        assert!(all.wants(&root.join("dist/a.js")));
        assert!(!all.wants(&root.join("server.log")));
    }
}
