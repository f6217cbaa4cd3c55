//! `portok clean`: undo what portok set up. Stop the apps and the daemon, untrust the CA,
//! remove the hosts block, delete the files portok made in the state dir.
//!
//! Only portok's own files go: a file it does not know is left, and so are
//! `routes.json.corrupt-*` (a routes file that did not parse, moved aside: the user's
//! data, which only the user may throw away).

use crate::routes::store;
use crate::state::StateDir;
use crate::sys::pid_alive;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// Files portok makes at the top of the state dir.
const FILES: &[&str] = &[
    "routes.json",
    "routes.lock",
    "proxy.pid",
    "proxy.port",
    "proxy.log",
    "control.sock",
    "ca.pem",
    "ca-key.pem",
    "admin.token",
    "stats.json",
    "stats.json.tmp",
];

/// Is this top-level name one portok made? Its temp files included (a writer killed
/// between write and rename leaves one).
pub fn ours(name: &str) -> bool {
    FILES.contains(&name)
        || (name.starts_with(".routes.json.") && name.ends_with(".tmp"))
        || ["ca.pem.tmp.", "ca-key.pem.tmp.", "admin.token.tmp."]
            .iter()
            .any(|p| name.starts_with(p))
}

/// Files portok makes in `certs/` (leaf certificates and keys) and `run/` (app sockets).
fn ours_in(dir: &str, name: &str) -> bool {
    match dir {
        "certs" => name.ends_with(".pem") || name.contains(".pem.tmp."),
        "run" => name.ends_with(".sock"),
        _ => false,
    }
}

/// `portok clean [--yes]`.
pub fn main(yes: bool) -> anyhow::Result<i32> {
    let state = crate::hosts::state_dir()?;
    let hosts = crate::hosts::hosts_path();
    if !yes && !confirm(&state, &hosts)? {
        eprintln!("portok: clean cancelled; nothing was changed (pass --yes to skip the question)");
        return Ok(1);
    }
    let say = crate::ui::say;
    let mut failed = false;

    // Running apps first: each `portok run` stops its app and removes its own route.
    let me = std::process::id();
    let owners: Vec<(String, u32)> = crate::cmd::prune::read_raw(&state)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.pid != 0 && r.pid != me && pid_alive(r.pid))
        .map(|r| (r.hostname, r.pid))
        .collect();
    for (host, pid) in &owners {
        say(&format!("stopping {host} (its `portok run`, pid {pid})"));
        crate::sys::signal_pid(*pid, crate::sys::Signal::Term);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while owners.iter().any(|(_, p)| pid_alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(25));
    }
    for (host, pid) in owners.iter().filter(|(_, p)| pid_alive(*p)) {
        say(&format!(
            "{host}: pid {pid} did not stop in 15s; sending SIGKILL"
        ));
        crate::sys::signal_pid(*pid, crate::sys::Signal::Kill);
    }
    // Whatever a killed `portok run` left behind.
    if let Err(e) = crate::cmd::prune::prune(&state, true, &mut |m| say(m)) {
        eprintln!(
            "portok: could not stop orphaned apps: {:#}",
            anyhow::Error::from(e)
        );
        failed = true;
    }

    match crate::daemon::stop(&state, None) {
        Ok(Some(_)) => say("stopped the daemon"),
        Ok(None) => {}
        Err(e) => {
            eprintln!("portok: {:#}", anyhow::Error::from(e));
            failed = true;
        }
    }

    match crate::hosts::remove_block(&hosts) {
        Ok(true) => say(&format!("removed portok's block from {}", hosts.display())),
        Ok(false) => {}
        Err(e) => {
            eprintln!("portok: {:#}", anyhow::Error::from(e));
            failed = true;
        }
    }

    let pem = crate::ca::ca_pem_path(state.root());
    if pem.exists() {
        let opts = crate::trust::TrustOptions::for_current_user();
        let report = crate::trust::untrust(&pem, &opts);
        print!("{report}");
        // A step skipped for want of root (or, under sudo, of the user's own NSS database)
        // leaves the CA trusted. The commands shown finish it by hand; they name the
        // anchor file and the NSS nickname, so they work after ca.pem is gone. (With
        // commands turned off, as in tests, skipping them is by design.)
        let unfinished = !report.ok()
            || (opts.run_commands
                && report.lines.iter().any(
                    |l| matches!(l, crate::trust::TrustLine::Skipped(_, _, cmd) if !cmd.is_empty()),
                ));
        if unfinished {
            eprintln!(
                "portok: the local CA may still be trusted: run the commands shown above to finish"
            );
            failed = true;
        }
    }

    let (deleted, kept) = delete_files(state.root());
    if deleted > 0 {
        say(&format!(
            "deleted {deleted} of portok's files from {}",
            state.root().display()
        ));
    }
    for k in &kept {
        say(k);
    }
    if std::fs::remove_dir(state.root()).is_ok() {
        say(&format!("removed {}", state.root().display()));
    }
    if failed {
        eprintln!(
            "portok: clean did not finish; fix what is reported above and run `portok clean` again"
        );
        return Ok(1);
    }
    say("clean: portok is gone from this machine (run `portok` again any time)");
    Ok(0)
}

/// Show what will happen and ask. Input that is not a "y" (or no input) is a no.
fn confirm(state: &StateDir, hosts: &Path) -> anyhow::Result<bool> {
    let routes = store::load(state).unwrap_or_default();
    let mut err = std::io::stderr();
    writeln!(err, "portok clean will:")?;
    if !routes.is_empty() {
        let names: Vec<&str> = routes.iter().map(|r| r.hostname.as_str()).collect();
        writeln!(
            err,
            "  - stop the apps and remove the routes: {}",
            names.join(", ")
        )?;
    }
    writeln!(err, "  - stop the daemon")?;
    writeln!(
        err,
        "  - untrust the local CA (system store and NSS databases)"
    )?;
    writeln!(err, "  - remove portok's block from {}", hosts.display())?;
    writeln!(
        err,
        "  - delete portok's files in {} (routes.json.corrupt-* and files it did not make are kept)",
        state.root().display()
    )?;
    write!(err, "Proceed? [y/N] ")?;
    err.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if !std::io::stdin().is_terminal() {
        // Piped input: echo the answer so a log reads naturally.
        writeln!(err, "{}", line.trim())?;
    }
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Delete portok's files; returns how many went and a line for each one kept.
fn delete_files(root: &Path) -> (usize, Vec<String>) {
    let mut deleted = 0;
    let mut kept = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return (0, kept);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && (name == "certs" || name == "run") {
            if let Ok(inner) = std::fs::read_dir(&path) {
                for f in inner.flatten() {
                    let fname = f.file_name().to_string_lossy().into_owned();
                    if ours_in(&name, &fname) && std::fs::remove_file(f.path()).is_ok() {
                        deleted += 1;
                    } else {
                        kept.push(format!(
                            "kept {}: portok did not make it",
                            f.path().display()
                        ));
                    }
                }
            }
            let _ = std::fs::remove_dir(&path);
        } else if name.starts_with("routes.json.corrupt-") {
            kept.push(format!(
                "kept {}: routes from a routes.json that did not parse, your data; delete it yourself once you no longer need it",
                path.display()
            ));
        } else if !is_dir && ours(&name) {
            if std::fs::remove_file(&path).is_ok() {
                deleted += 1;
            }
        } else {
            kept.push(format!("kept {}: portok did not make it", path.display()));
        }
    }
    (deleted, kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_its_own_files() {
        for n in [
            "routes.json",
            "ca-key.pem",
            ".routes.json.42.tmp",
            "ca.pem.tmp.1.ff",
        ] {
            assert!(ours(n), "{n}");
        }
        for n in ["routes.json.corrupt-1700000000", "notes.txt", "ca.pem.bak"] {
            assert!(!ours(n), "{n}");
        }
        assert!(ours_in("certs", "api.localhost-key.pem"));
        assert!(!ours_in("certs", "README"));
        assert!(ours_in("run", "api.localhost.sock"));
    }
}
