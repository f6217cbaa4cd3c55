//! `portok doctor`: read-only checks of everything portok depends on, one line each
//! (`ok`, `warn`, `fail`) with a hint for each problem. Exit 1 when any check fails.
//!
//! "Read-only" is strict: doctor takes no lock, starts nothing and changes no mode, so it
//! is safe to run while something is wrong (a hung daemon, a half-written state dir).

use crate::control::{self, DaemonStatus};
use crate::routes::Route;
use crate::state::{self, StateDir};
use crate::sys::pid_alive;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod docker;
mod installed;
/// A name that no one registers, to see what the system resolver does with `.localhost`.
const SAMPLE_HOST: &str = "portok-doctor-check.localhost";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One check's result.
#[derive(Debug)]
pub struct Finding {
    pub level: Level,
    pub check: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

fn ok(check: &'static str, message: impl Into<String>) -> Finding {
    Finding {
        level: Level::Ok,
        check,
        message: message.into(),
        hint: None,
    }
}

fn warn(check: &'static str, message: impl Into<String>, hint: impl Into<String>) -> Finding {
    Finding {
        level: Level::Warn,
        check,
        message: message.into(),
        hint: Some(hint.into()),
    }
}

fn fail(check: &'static str, message: impl Into<String>, hint: impl Into<String>) -> Finding {
    Finding {
        level: Level::Fail,
        check,
        message: message.into(),
        hint: Some(hint.into()),
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.level {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        };
        write!(f, "{level:<5} {:<13} {}", self.check, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n{:20}hint: {h}", "")?;
        }
        Ok(())
    }
}

/// `portok doctor`.
pub fn main() -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let mut counts = [0usize; 3];
    let mut report = |f: Finding| {
        counts[f.level as usize] += 1;
        println!("{f}");
    };
    report(state_dir(&state));
    let (routes, finding) = routes(&state);
    let daemon = control::status(&state);
    report(daemon_check(&state, daemon.as_ref(), &routes));
    report(port(daemon.as_ref()));
    report(ca(&state));
    report(resolution(&routes, &crate::hosts::hosts_path()));
    if let Some(f) = installed::custom_names(&routes, &crate::hosts::hosts_path()) {
        report(f);
    }
    report(installed::service_check());
    report(installed::ports_check(daemon.as_ref()));
    if let Some(f) = installed::lan_check(daemon.as_ref(), &routes) {
        report(f);
    }
    report(docker::check(&state, daemon.as_ref(), &routes));
    report(finding);
    report(orphans(&routes));
    report(file_watch(&cwd));
    let [oks, warns, fails] = counts;
    println!(
        "portok doctor: {oks} ok, {warns} warning{}, {fails} failure{}",
        if warns == 1 { "" } else { "s" },
        if fails == 1 { "" } else { "s" }
    );
    Ok(if fails > 0 { 1 } else { 0 })
}

/// An error with its causes, as `main` prints them: "outer: inner: innermost".
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let causes = std::iter::successors(Some(e), |e| e.source()).map(|e| e.to_string());
    crate::ui::join_causes(causes)
}

fn me() -> u32 {
    crate::sys::effective_ids().0
}

fn state_dir(state: &StateDir) -> Finding {
    const C: &str = "state dir";
    let root = state.root();
    let shown = root.display();
    let meta = match std::fs::metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return ok(
                C,
                format!("{shown} does not exist yet; portok makes it (mode 0700) on first use"),
            )
        }
        Err(e) => {
            return fail(
                C,
                format!("cannot read {shown}: {e}"),
                "check the path, or set PORTOK_STATE_DIR to a folder of your own",
            )
        }
    };
    if !meta.is_dir() {
        return fail(
            C,
            format!("{shown} is not a folder"),
            "move it away, or set PORTOK_STATE_DIR to another folder",
        );
    }
    if meta.uid() != me() {
        return fail(
            C,
            format!("{shown} belongs to uid {}, not to you (uid {})", meta.uid(), me()),
            format!("it was probably made by `sudo portok ...`: `sudo chown -R $(id -un) {shown}`, or set PORTOK_STATE_DIR"),
        );
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return fail(
            C,
            format!("{shown} has mode {mode:04o}: other users can reach the CA key and the control socket"),
            format!("chmod 700 {shown}"),
        );
    }
    let writable = crate::sys::can_write_dir(root);
    if !writable {
        return fail(
            C,
            format!("{shown} is not writable"),
            format!("chmod u+rwx {shown}"),
        );
    }
    let mut files = Vec::new();
    for sub in [root.to_path_buf(), root.join("certs"), root.join("run")] {
        if let Ok(entries) = std::fs::read_dir(&sub) {
            files.extend(entries.flatten().map(|e| e.path()));
        }
    }
    if let Some((path, uid)) = files.iter().find_map(|p| {
        let m = std::fs::symlink_metadata(p).ok()?;
        (m.uid() != me()).then(|| (p.clone(), m.uid()))
    }) {
        return fail(
            C,
            format!(
                "{} belongs to uid {uid}, so portok cannot replace it",
                path.display()
            ),
            format!("it was probably made by `sudo portok ...`: `sudo chown -R $(id -un) {shown}`"),
        );
    }
    let secret = files.iter().find(|p| {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        (name == "ca-key.pem" || name == "admin.token" || name.ends_with("-key.pem"))
            && std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
    });
    if let Some(p) = secret {
        let mode = std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        return fail(
            C,
            format!(
                "{} has mode {mode:04o}: other users can read this secret",
                p.display()
            ),
            format!(
                "chmod 600 {} (the daemon also tightens it when it starts)",
                p.display()
            ),
        );
    }
    ok(C, format!("{shown}: yours, mode {mode:04o}"))
}

/// routes.json as written (dead owners included) and what is wrong with it.
fn routes(state: &StateDir) -> (Vec<Route>, Finding) {
    const C: &str = "routes";
    let routes = match crate::cmd::prune::read_raw(state) {
        Ok(r) => r,
        Err(e) => {
            return (
                Vec::new(),
                fail(
                    C,
                    chain(&e),
                    "fix it by hand, or let `portok alias NAME PORT` move it aside (as routes.json.corrupt-TIME) and start afresh",
                ),
            )
        }
    };
    let stale: Vec<String> = crate::cmd::prune::stale(&routes)
        .map(|r| format!("{} (pid {})", r.hostname, r.pid))
        .collect();
    if !stale.is_empty() {
        return (
            routes.clone(),
            warn(
                C,
                format!(
                    "{} route{} of a `portok run` that is gone: {}",
                    stale.len(),
                    if stale.len() == 1 { "" } else { "s" },
                    stale.join(", ")
                ),
                "`portok prune` drops them (the daemon also does on its next reload)",
            ),
        );
    }
    // A route whose server is down answers 502; worth saying before the user opens it.
    let silent: Vec<String> = routes
        .iter()
        .filter(|r| r.pid == 0 || r.state == Some(crate::routes::RouteState::Live))
        .filter(|r| !listening(r.port))
        .map(|r| format!("{} (port {})", r.hostname, r.port))
        .collect();
    if !silent.is_empty() {
        return (
            routes.clone(),
            warn(
                C,
                format!("nothing listens on the port of {}", silent.join(", ")),
                "start that server, or remove the route: `portok alias --remove NAME`",
            ),
        );
    }
    let apps = routes.iter().filter(|r| r.pid != 0).count();
    let msg = format!(
        "{} route{} ({} alias{}, {} app{}), every owner alive",
        routes.len(),
        if routes.len() == 1 { "" } else { "s" },
        routes.len() - apps,
        if routes.len() - apps == 1 { "" } else { "es" },
        apps,
        if apps == 1 { "" } else { "s" }
    );
    (routes, ok(C, msg))
}

fn listening(port: u16) -> bool {
    let t = Duration::from_millis(300);
    [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ]
    .iter()
    .any(|ip| TcpStream::connect_timeout(&SocketAddr::new(*ip, port), t).is_ok())
}

fn daemon_check(state: &StateDir, status: Option<&DaemonStatus>, routes: &[Route]) -> Finding {
    const C: &str = "daemon";
    let log = state.log_file();
    if let Some(s) = status {
        return match probe_http(s.port) {
            Ok(version) => ok(
                C,
                format!(
                    "running (pid {}, up {}s, {} routes) and answering on 127.0.0.1:{} (portok {version})",
                    s.pid, s.uptime_secs, s.route_count(), s.port
                ),
            ),
            Err(e) => fail(
                C,
                format!("pid {} answers on control.sock but not on 127.0.0.1:{}: {e}", s.pid, s.port),
                format!("see {}; restart it: `portok proxy stop && portok proxy start`", log.display()),
            ),
        };
    }
    let recorded = std::fs::read_to_string(state.pid_file())
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if let Some(pid) = recorded.filter(|&p| pid_alive(p) && is_portok_daemon(p)) {
        return fail(
            C,
            format!("portok's daemon (pid {pid}, from proxy.pid) is alive but does not answer on control.sock"),
            format!("it may be hung: see {}; `kill {pid}` then `portok proxy start`", log.display()),
        );
    }
    if routes.is_empty() {
        ok(
            C,
            "not running; it starts on the first `portok run` or `portok alias` (or `portok proxy start`)",
        )
    } else {
        warn(
            C,
            format!(
                "not running, so its {} route(s) are not served",
                routes.len()
            ),
            "`portok proxy start` (it also starts on the next `portok run` or `portok alias`)",
        )
    }
}

/// Is this pid a portok daemon? (proxy.pid may name a pid the system has since reused.)
fn is_portok_daemon(pid: u32) -> bool {
    crate::sys::process(pid).is_some_and(|p| p.cmd.iter().any(|arg| arg == "__daemon"))
}

/// One plain HTTP request to the daemon's own host; returns its `x-portok` version.
fn probe_http(port: u16) -> Result<String, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    s.write_all(b"GET /api/status HTTP/1.1\r\nHost: portok.localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("no answer: {e}")),
        }
    }
    let head = String::from_utf8_lossy(&buf);
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-portok")
                .then(|| v.trim().to_string())
        })
        .ok_or_else(|| "the answer is not from portok (no x-portok header)".to_string())
}

fn port(daemon: Option<&DaemonStatus>) -> Finding {
    const C: &str = "port";
    let configured = match state::proxy_port(None) {
        Ok(p) => p,
        Err(e) => {
            return fail(
                C,
                e.to_string(),
                "set PORTOK_PORT to a port from 1 to 65535, or unset it for 1355",
            )
        }
    };
    if let Some(s) = daemon {
        if s.port != configured {
            return warn(
                C,
                format!("the daemon listens on {}, but new commands expect {configured} (PORTOK_PORT, else 1355)", s.port),
                format!("`portok proxy stop && portok proxy start` moves it to {configured}; or set PORTOK_PORT={}", s.port),
            );
        }
        return ok(C, format!("{configured}: portok's daemon listens there"));
    }
    if listening(configured) {
        return fail(
            C,
            format!("{configured} is taken: another program accepts connections there, so portok's daemon cannot start"),
            format!("stop it (`ss -ltnp 'sport = :{configured}'` names it), or use another port: PORTOK_PORT=N or `portok proxy start --port N`"),
        );
    }
    let unprivileged_from = crate::sys::unprivileged_port_start();
    if configured < unprivileged_from && me() != 0 {
        return fail(
            C,
            format!("{configured} is below {unprivileged_from}: only root may listen there"),
            "use a port from 1024 up (the default is 1355): unset PORTOK_PORT",
        );
    }
    ok(C, format!("{configured} is free for the daemon"))
}

fn ca(state: &StateDir) -> Finding {
    const C: &str = "local CA";
    let pem = crate::ca::ca_pem_path(state.root());
    let key = crate::ca::ca_key_path(state.root());
    let regen = "delete ca.pem and ca-key.pem (run `portok untrust` first if you trusted it); the next daemon start makes a new CA; then `sudo portok trust`";
    match (pem.exists(), key.exists()) {
        (false, false) => {
            return ok(
                C,
                "none yet: the first daemon start makes one; then `sudo portok trust` makes browsers trust it",
            )
        }
        (true, false) | (false, true) => {
            return fail(
                C,
                format!("only one of {} and {} exists", pem.display(), key.display()),
                regen,
            )
        }
        (true, true) => {}
    }
    // Both files exist, so this only reads them: it checks the PEM, the key and that they
    // belong together.
    let ca = match crate::ca::Ca::load_or_create(state.root(), &[]) {
        Ok(ca) => ca,
        Err(e) => return fail(C, chain(&e), regen),
    };
    if ca.permitted().is_none() {
        return warn(
            C,
            format!("{} is unconstrained (made before portok limited its CAs to local names): whoever reads ca-key.pem can make certificates for any site, which this machine then trusts", pem.display()),
            "`sudo portok trust --renew` makes a CA that can vouch only for local names and trusts it instead",
        );
    }
    let tlds = crate::cmd::served_tlds(state).unwrap_or_default();
    let uncovered: Vec<&String> = tlds
        .iter()
        .filter(|t| !ca.covers(&format!("x.{t}")))
        .collect();
    if !uncovered.is_empty() {
        let list = uncovered
            .iter()
            .map(|t| format!(".{t}"))
            .collect::<Vec<_>>()
            .join(", ");
        return fail(
            C,
            format!("the CA cannot vouch for {list} (it was made before that TLD was added): https fails for those names"),
            "`sudo portok trust --renew` makes a CA for every TLD served now, then restart the daemon (`portok proxy stop && portok proxy start`)",
        );
    }
    let opts = crate::trust::TrustOptions::for_current_user();
    if crate::trust::check(&pem, &opts) {
        ok(
            C,
            format!(
                "{}: trusted by the system store and the NSS databases (Chrome, Firefox)",
                pem.display()
            ),
        )
    } else {
        warn(
            C,
            "not trusted by the system store and every NSS database (Chrome, Firefox): browsers warn on https://NAME.localhost",
            "`sudo portok trust` (then restart the browser); `portok trust --check` checks again",
        )
    }
}

/// What the system resolver (getaddrinfo) makes of a name, bounded: a resolver that
/// sends `.localhost` to a slow DNS server must not hang doctor.
fn resolve(host: &str, limit: Duration) -> Option<Vec<IpAddr>> {
    use std::net::ToSocketAddrs;
    let (tx, rx) = std::sync::mpsc::channel();
    let host = format!("{host}:80");
    std::thread::spawn(move || {
        let r = host
            .to_socket_addrs()
            .map(|a| a.map(|s| s.ip()).collect::<Vec<_>>());
        let _ = tx.send(r);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(addrs)) if !addrs.is_empty() => Some(addrs),
        _ => None,
    }
}

fn resolution(routes: &[Route], hosts: &Path) -> Finding {
    const C: &str = ".localhost";
    let block = match crate::hosts::block_names(hosts) {
        Ok(b) => b,
        Err(e) => {
            return fail(
                C,
                chain(&e),
                "then `sudo portok hosts sync` rewrites the block",
            )
        }
    };
    match resolve(SAMPLE_HOST, Duration::from_secs(3)) {
        Some(addrs) if addrs.iter().all(|a| a.is_loopback()) => ok(
            C,
            format!("the system resolver maps *.localhost to loopback ({SAMPLE_HOST}); no hosts entries needed"),
        ),
        Some(addrs) => fail(
            C,
            format!(
                "{SAMPLE_HOST} resolves to {}, not loopback: a DNS server or hosts entry answers for .localhost",
                addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
            ),
            "remove that record or entry; until then some tools reach it instead of portok",
        ),
        None => {
            let missing: Vec<&str> = routes
                .iter()
                .map(|r| r.hostname.as_str())
                .filter(|h| !block.iter().any(|b| b == h))
                .collect();
            let hint = "`sudo portok hosts sync`, or `portok proxy start --sync-hosts` (PORTOK_SYNC_HOSTS=1) to keep it in step";
            if missing.is_empty() && !routes.is_empty() {
                ok(
                    C,
                    format!("the system resolver does not map *.localhost, but portok's block in {} covers every route", hosts.display()),
                )
            } else if routes.is_empty() {
                warn(
                    C,
                    "the system resolver does not map *.localhost to loopback: browsers (except Safari) resolve it themselves, other tools need hosts entries",
                    hint,
                )
            } else {
                warn(
                    C,
                    format!(
                        "the system resolver does not map *.localhost to loopback, and {} has no entry for {}: Safari and tools that use the system resolver cannot reach them",
                        hosts.display(),
                        missing.join(", ")
                    ),
                    hint,
                )
            }
        }
    }
}

fn orphans(routes: &[Route]) -> Finding {
    const C: &str = "orphans";
    let found = crate::cmd::prune::orphans(routes);
    if found.is_empty() {
        return ok(C, "no app runs without its `portok run`");
    }
    let list: Vec<String> = found
        .iter()
        .map(|o| {
            format!(
                "{} (process group {}, its `portok run` pid {} is gone)",
                o.hostname,
                crate::cmd::prune::join(&o.groups),
                o.owner
            )
        })
        .collect();
    fail(
        C,
        format!(
            "still running without their `portok run`: {}",
            list.join("; ")
        ),
        "`portok prune` stops them (`portok prune --force` if they ignore SIGTERM)",
    )
}

/// The verdict on watching `dirs` folders under a per-user limit of `limit` inotify
/// watches (one per folder). Editors and other watchers share the limit, so more than
/// half is already a warning.
pub fn watch_verdict(dirs: usize, limit: usize) -> Level {
    if dirs >= limit {
        Level::Fail
    } else if dirs * 2 > limit {
        Level::Warn
    } else {
        Level::Ok
    }
}

fn file_watch(cwd: &Path) -> Finding {
    const C: &str = "file watch";
    let Some(limit) = crate::sys::inotify_watch_limit() else {
        return ok(C, "no inotify limit to check on this system");
    };
    let roots: Vec<PathBuf> = match crate::config::load(cwd) {
        Ok(c) if c.no_watch => return ok(C, "portok.toml turns watching off here"),
        Ok(c) => match c.watch {
            Some(w) if !w.is_empty() => w.iter().map(|p| cwd.join(p)).collect(),
            _ => vec![cwd.to_path_buf()],
        },
        Err(_) => vec![cwd.to_path_buf()],
    };
    let (dirs, complete) = count_dirs(&roots, limit + 1, Duration::from_secs(3));
    let shown = roots
        .iter()
        .map(|r| r.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let counted = if complete {
        format!("{dirs}")
    } else {
        format!("at least {dirs}")
    };
    let hint = "raise the limit: `sudo sysctl fs.inotify.max_user_watches=524288` (keep it in /etc/sysctl.d/60-inotify.conf), or watch less: `--watch src` or `watch = [\"src\"]` in portok.toml";
    match watch_verdict(dirs, limit) {
        Level::Fail => fail(
            C,
            format!("{shown} has {counted} folders, but inotify allows {limit} watches per user: `portok run` here cannot watch them all"),
            hint,
        ),
        Level::Warn => warn(
            C,
            format!("{shown} has {counted} folders, more than half of the {limit} inotify watches your user may have (editors share them)"),
            hint,
        ),
        Level::Ok => ok(C, format!("{counted} folders to watch under {shown}; inotify allows {limit}")),
    }
}

/// Count folders (what a recursive inotify watch costs), stopping at `cap` or after
/// `budget`. Returns the count and whether it is complete. Symlinks are not followed.
fn count_dirs(roots: &[PathBuf], cap: usize, budget: Duration) -> (usize, bool) {
    let start = Instant::now();
    let mut stack: Vec<PathBuf> = roots.iter().filter(|r| r.is_dir()).cloned().collect();
    let mut n = 0;
    while let Some(dir) = stack.pop() {
        n += 1;
        if n >= cap || start.elapsed() > budget {
            return (n, false);
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    (n, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_limits() {
        assert_eq!(watch_verdict(10, 8192), Level::Ok);
        assert_eq!(watch_verdict(5000, 8192), Level::Warn);
        assert_eq!(watch_verdict(8192, 8192), Level::Fail);
        assert_eq!(watch_verdict(9000, 8192), Level::Fail);
    }

    #[test]
    fn counts_folders_and_stops_at_the_cap() {
        let d = tempfile::tempdir().unwrap();
        for p in ["a/b/c", "a/d", "e"] {
            std::fs::create_dir_all(d.path().join(p)).unwrap();
        }
        std::fs::write(d.path().join("a/file"), "x").unwrap();
        let root = vec![d.path().to_path_buf()];
        assert_eq!(count_dirs(&root, 100, Duration::from_secs(5)), (6, true));
        assert_eq!(count_dirs(&root, 3, Duration::from_secs(5)), (3, false));
    }

    #[test]
    fn findings_print_level_check_and_hint() {
        let f = fail("port", "1355 is taken", "stop it");
        assert_eq!(
            f.to_string(),
            format!("fail  port          1355 is taken\n{:20}hint: stop it", "")
        );
    }
}
