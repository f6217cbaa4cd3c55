//! Everyday developer experience: doctor, prune, clean, hosts, name inference (Cargo and
//! npm workspaces, a real `git worktree`), the project config file, completions and man.

use crate::support::*;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(30);

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run portok in `cwd`.
fn run_in(p: &Portok, cwd: &Path, args: &[&str]) -> Output {
    p.command()
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("running portok")
}

/// `portok doctor` in an empty folder of the test's own; returns (exit code, output).
fn doctor(p: &Portok) -> (i32, String) {
    let here = p.dir.path().join("here");
    std::fs::create_dir_all(&here).unwrap();
    let out = run_in(p, &here, &["doctor"]);
    (out.status.code().unwrap_or(-1), text(&out))
}

/// The doctor line for one check.
fn line<'a>(report: &'a str, check: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(check)))
        .unwrap_or_else(|| panic!("no {check:?} line in:\n{report}"))
}

/// A state dir as portok makes it (0700), without starting anything.
fn make_state(p: &Portok) -> PathBuf {
    let s = p.state();
    std::fs::create_dir_all(&s).unwrap();
    std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o700)).unwrap();
    s
}

/// A pid that was alive a moment ago and is not now.
fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

/// A process in its own process group (pgid == pid), reaped by a thread so it never
/// lingers as a zombie that still "exists" for kill(2).
struct Group {
    pid: i32,
    done: std::sync::mpsc::Receiver<()>,
}

impl Group {
    fn spawn(script: &str) -> Group {
        let mut child: Child = Command::new("sh")
            .args(["-c", script])
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let (tx, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = child.wait();
            let _ = tx.send(());
        });
        Group { pid, done }
    }

    fn exited_within(&self, limit: Duration) -> bool {
        self.done.recv_timeout(limit).is_ok()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        unsafe { libc::kill(-self.pid, libc::SIGKILL) };
    }
}

fn write_routes(p: &Portok, routes: serde_json::Value) {
    make_state(p);
    std::fs::write(p.routes_json(), routes.to_string()).unwrap();
}

#[test]
fn doctor_on_a_fresh_setup_checks_everything_and_passes() {
    let p = Portok::new();
    let (code, report) = doctor(&p);
    assert_eq!(code, 0, "{report}");
    for check in [
        "state dir",
        "daemon",
        "port",
        "local CA",
        ".localhost",
        "routes",
        "orphans",
        "file watch",
    ] {
        let l = line(&report, check);
        assert!(!l.starts_with("fail"), "{l}");
    }
    assert!(report.contains("0 failures"), "{report}");
    // Read-only: doctor made no state dir.
    assert!(!p.state().exists());
}

#[test]
fn doctor_fails_on_a_state_dir_others_can_read() {
    let p = Portok::new();
    let s = make_state(&p);
    std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, report) = doctor(&p);
    assert_eq!(code, 1, "{report}");
    let l = line(&report, "state dir");
    assert!(l.starts_with("fail") && l.contains("mode 0755"), "{report}");
    assert!(
        report.contains(&format!("hint: chmod 700 {}", s.display())),
        "{report}"
    );
    // Read-only: the mode is reported, not changed.
    assert_eq!(
        std::fs::metadata(&s).unwrap().permissions().mode() & 0o777,
        0o755
    );

    std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(s.join("ca-key.pem"), "k").unwrap();
    std::fs::set_permissions(s.join("ca-key.pem"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, report) = doctor(&p);
    assert_eq!(code, 1, "{report}");
    assert!(
        line(&report, "state dir").contains("ca-key.pem has mode 0644"),
        "{report}"
    );
}

#[test]
fn doctor_fails_when_another_program_has_the_port() {
    let p = Portok::new();
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", p.port)).unwrap();
    let (code, report) = doctor(&p);
    assert_eq!(code, 1, "{report}");
    let l = line(&report, "port");
    assert!(l.starts_with("fail") && l.contains("is taken"), "{report}");
    assert!(report.contains("PORTOK_PORT=N"), "{report}");
}

#[test]
fn doctor_fails_on_a_daemon_that_does_not_answer() {
    let p = Portok::new();
    let s = make_state(&p);
    // A live process whose command line says it is portok's daemon, but no control socket.
    let hung = Group::spawn_named("sleep 60");
    std::fs::write(s.join("proxy.pid"), hung.pid.to_string()).unwrap();
    let (code, report) = doctor(&p);
    assert_eq!(code, 1, "{report}");
    let l = line(&report, "daemon");
    assert!(
        l.starts_with("fail") && l.contains("does not answer"),
        "{report}"
    );
    assert!(report.contains(&format!("kill {}", hung.pid)), "{report}");
}

impl Group {
    /// `sh -c SCRIPT __daemon`: $0 is `__daemon`, as in the real daemon's command line.
    fn spawn_named(script: &str) -> Group {
        let mut child = Command::new("sh")
            .args(["-c", script, "__daemon"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let (tx, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = child.wait();
            let _ = tx.send(());
        });
        Group { pid, done }
    }
}

#[test]
fn doctor_checks_the_ca_and_its_trust() {
    let p = Portok::new();
    let s = make_state(&p);
    std::fs::write(s.join("ca.pem"), "not a certificate").unwrap();
    std::fs::write(s.join("ca-key.pem"), "not a key").unwrap();
    std::fs::set_permissions(s.join("ca-key.pem"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, report) = doctor(&p);
    assert_eq!(code, 1, "{report}");
    let l = line(&report, "local CA");
    assert!(l.starts_with("fail") && l.contains("unusable"), "{report}");
    assert!(report.contains("delete ca.pem and ca-key.pem"), "{report}");

    // A real CA: untrusted is a warning, trusted (under the test root) is ok.
    std::fs::remove_file(s.join("ca.pem")).unwrap();
    std::fs::remove_file(s.join("ca-key.pem")).unwrap();
    std::fs::create_dir_all(
        p.dir
            .path()
            .join("trust-root/usr/local/share/ca-certificates"),
    )
    .unwrap();
    p.ok(&["proxy", "start"]);
    let (_, report) = doctor(&p);
    assert!(line(&report, "local CA").starts_with("warn"), "{report}");
    assert!(report.contains("sudo portok trust"), "{report}");
    p.ok(&["trust"]);
    let (code, report) = doctor(&p);
    assert_eq!(code, 0, "{report}");
    assert!(line(&report, "local CA").starts_with("ok"), "{report}");
    assert!(
        line(&report, "daemon").contains("answering on 127.0.0.1"),
        "{report}"
    );
    p.ok(&["proxy", "stop"]);
}

#[test]
fn doctor_fails_on_a_broken_hosts_block_and_corrupt_routes() {
    let p = Portok::new();
    std::fs::write(
        p.hosts_file(),
        "127.0.0.1 localhost\n# portok-start\n127.0.0.1 a.localhost\n",
    )
    .unwrap();
    write_routes(&p, serde_json::json!([]));
    std::fs::write(p.routes_json(), "[{\"hostname\": ").unwrap();
    let (code, report) = doctor(&p);
    assert_eq!(code, 1, "{report}");
    let l = line(&report, ".localhost");
    assert!(
        l.starts_with("fail") && l.contains("has no `# portok-end`"),
        "{report}"
    );
    let l = line(&report, "routes");
    assert!(
        l.starts_with("fail") && l.contains("does not parse"),
        "{report}"
    );
}

#[test]
fn doctor_finds_stale_routes_and_orphans_and_prune_stops_them() {
    let p = Portok::new();
    let orphan = Group::spawn("sleep 300");
    let owner = dead_pid();
    write_routes(
        &p,
        serde_json::json!([
            {"hostname": "orphan.localhost", "port": 1, "pid": owner, "pgids": [orphan.pid]},
            {"hostname": "stale.localhost", "port": 2, "pid": dead_pid()},
            {"hostname": "keep.localhost", "port": 3, "pid": 0}
        ]),
    );
    let (code, report) = doctor(&p);
    assert_eq!(code, 1, "{report}");
    let l = line(&report, "orphans");
    assert!(
        l.starts_with("fail")
            && l.contains("orphan.localhost")
            && l.contains(&format!("process group {}", orphan.pid)),
        "{report}"
    );
    let l = line(&report, "routes");
    assert!(
        l.starts_with("warn") && l.contains("stale.localhost"),
        "{report}"
    );
    assert!(report.contains("portok prune"), "{report}");

    let out = p.run(&["prune"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("stopping its app (process group {})", orphan.pid)),
        "{}",
        text(&out)
    );
    assert!(
        orphan.exited_within(Duration::from_secs(5)),
        "the orphan was stopped"
    );
    let routes: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.routes_json()).unwrap()).unwrap();
    assert_eq!(routes.as_array().unwrap().len(), 1, "{routes}");
    assert_eq!(routes[0]["hostname"], "keep.localhost");

    let (_, report) = doctor(&p);
    assert!(line(&report, "orphans").starts_with("ok"), "{report}");
    let out = p.run(&["prune"]);
    assert!(text(&out).contains("nothing to prune"), "{}", text(&out));
}

#[test]
fn prune_needs_force_for_an_app_that_ignores_sigterm() {
    let p = Portok::new();
    // SIG_IGN survives exec, so the whole group ignores SIGTERM.
    let stubborn = Group::spawn("trap '' TERM; sleep 300");
    write_routes(
        &p,
        serde_json::json!([{"hostname": "stuck.localhost", "port": 1, "pid": dead_pid(), "pgids": [stubborn.pid]}]),
    );
    let out = p.run(&["prune"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("portok prune --force"),
        "{}",
        text(&out)
    );
    assert!(!stubborn.exited_within(Duration::from_millis(100)));
    // The route stays, so --force can still find the group.
    assert!(std::fs::read_to_string(p.routes_json())
        .unwrap()
        .contains("stuck.localhost"));

    let out = p.run(&["prune", "--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("sending SIGKILL"), "{}", text(&out));
    assert!(stubborn.exited_within(Duration::from_secs(5)));
    assert!(!std::fs::read_to_string(p.routes_json())
        .unwrap()
        .contains("stuck.localhost"));
}

#[test]
fn hosts_sync_and_clean_change_only_portoks_block() {
    let p = Portok::new();
    let original = "127.0.0.1\tlocalhost\n::1 localhost ip6-localhost\n# a comment about portok\n";
    std::fs::write(p.hosts_file(), original).unwrap();
    std::fs::set_permissions(p.hosts_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    write_routes(
        &p,
        serde_json::json!([
            {"hostname": "api.localhost", "port": 1, "pid": 0},
            {"hostname": "web.shop.localhost", "port": 2, "pid": 0}
        ]),
    );
    let out = p.run(&["hosts", "sync"]);
    assert!(out.status.success(), "{}", text(&out));
    let hosts = std::fs::read_to_string(p.hosts_file()).unwrap();
    assert!(hosts.starts_with(original), "{hosts}");
    for l in [
        "# portok-start",
        "127.0.0.1 api.localhost",
        "::1 api.localhost",
        "127.0.0.1 web.shop.localhost",
        "::1 web.shop.localhost",
        "# portok-end",
    ] {
        assert!(hosts.lines().any(|x| x == l), "{l:?} missing:\n{hosts}");
    }
    assert_eq!(
        std::fs::metadata(p.hosts_file())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
    let out = p.run(&["hosts", "sync"]);
    assert!(text(&out).contains("already up to date"), "{}", text(&out));

    // A line the user adds after the block survives; a removed route leaves the block.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(p.hosts_file())
        .unwrap();
    f.write_all(b"10.1.2.3 nas\n").unwrap();
    drop(f);
    write_routes(
        &p,
        serde_json::json!([{"hostname": "api.localhost", "port": 1, "pid": 0}]),
    );
    p.ok(&["hosts", "sync"]);
    let hosts = std::fs::read_to_string(p.hosts_file()).unwrap();
    assert!(!hosts.contains("web.shop"), "{hosts}");
    assert!(hosts.ends_with("# portok-end\n10.1.2.3 nas\n"), "{hosts}");

    let out = p.run(&["hosts", "clean"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(p.hosts_file()).unwrap(),
        format!("{original}10.1.2.3 nas\n")
    );
    let out = p.run(&["hosts", "clean"]);
    assert!(text(&out).contains("has no portok block"), "{}", text(&out));

    // Markers that do not pair up: refused, file untouched, exit 1 with what to do.
    let broken = "# portok-end\n127.0.0.1 localhost\n";
    std::fs::write(p.hosts_file(), broken).unwrap();
    let out = p.run(&["hosts", "sync"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("line 1: unexpected `# portok-end`") && text(&out).contains("by hand"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(p.hosts_file()).unwrap(), broken);
}

#[test]
fn proxy_start_passes_sync_hosts_to_the_daemon() {
    let p = Portok::new();
    p.ok(&["proxy", "start", "--sync-hosts"]);
    let pid = p.daemon_pid().expect("daemon pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        cmdline.split(|&b| b == 0).any(|a| a == b"--sync-hosts"),
        "{}",
        String::from_utf8_lossy(&cmdline)
    );
    p.ok(&["proxy", "stop"]);
}

#[test]
fn clean_asks_first_then_removes_only_what_portok_made() {
    let p = Portok::new();
    let anchors = p
        .dir
        .path()
        .join("trust-root/usr/local/share/ca-certificates");
    std::fs::create_dir_all(&anchors).unwrap();
    std::fs::write(p.hosts_file(), "127.0.0.1 localhost\n").unwrap();
    p.ok(&["alias", "api", "9"]);
    p.ok(&["trust"]);
    p.ok(&["hosts", "sync"]);
    let s = p.state();
    std::fs::write(s.join("routes.json.corrupt-1700000000"), "[{").unwrap();
    std::fs::write(s.join("notes.txt"), "mine").unwrap();
    let daemon = p.daemon_pid().unwrap();

    // No answer (stdin is empty): nothing happens.
    let out = p.run(&["clean"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("Proceed? [y/N]") && text(&out).contains("nothing was changed"));
    assert!(s.join("ca.pem").exists() && p.daemon_pid() == Some(daemon));

    let mut child = p
        .command()
        .arg("clean")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"y\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("stopped the daemon"), "{t}");
    assert!(
        t.contains("kept") && t.contains("routes.json.corrupt-1700000000"),
        "{t}"
    );
    let start = Instant::now();
    while unsafe { libc::kill(daemon, 0) } == 0 && start.elapsed() < LONG {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(start.elapsed() < LONG, "the daemon stopped");
    assert_eq!(
        std::fs::read_dir(&anchors).unwrap().count(),
        0,
        "CA untrusted"
    );
    assert_eq!(
        std::fs::read_to_string(p.hosts_file()).unwrap(),
        "127.0.0.1 localhost\n"
    );
    let mut left: Vec<String> = std::fs::read_dir(&s)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["notes.txt", "routes.json.corrupt-1700000000"]);

    // Nothing left to do is fine, and --yes skips the question.
    let out = p.run(&["clean", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("Proceed?"));
}

/// What `portok get` prints in `cwd`, with the test's port stripped.
fn get_in(p: &Portok, cwd: &Path, args: &[&str]) -> String {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    let out = run_in(p, cwd, &all);
    assert!(out.status.success(), "{}", text(&out));
    let url = String::from_utf8(out.stdout).unwrap();
    url.trim()
        .strip_prefix("http://")
        .unwrap()
        .strip_suffix(&format!(":{}", p.port))
        .unwrap()
        .to_string()
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

#[test]
fn cargo_workspace_members_are_named_pkg_dot_workspace() {
    let p = Portok::new();
    let shop = p.dir.path().join("shop");
    write(
        &shop.join("Cargo.toml"),
        "[workspace]\nmembers = [\"crates/*\"]\nexclude = [\"crates/old\"]\n",
    );
    write(
        &shop.join("crates/api/Cargo.toml"),
        "[package]\nname = \"api\"\n",
    );
    write(
        &shop.join("crates/old/Cargo.toml"),
        "[package]\nname = \"old_api\"\n",
    );
    write(
        &shop.join("tools/gen/Cargo.toml"),
        "[package]\nname = \"gen\"\nworkspace = \"../..\"\n",
    );
    assert_eq!(
        get_in(&p, &shop.join("crates/api"), &[]),
        "api.shop.localhost"
    );
    assert_eq!(
        get_in(&p, &shop.join("crates/old"), &[]),
        "old-api.localhost"
    );
    assert_eq!(
        get_in(&p, &shop.join("tools/gen"), &[]),
        "gen.shop.localhost"
    );
    assert_eq!(get_in(&p, &shop, &[]), "shop.localhost");
    // NAME given: used as is (no workspace suffix).
    assert_eq!(
        get_in(&p, &shop.join("crates/api"), &["web"]),
        "web.localhost"
    );

    // A root package names the workspace.
    write(
        &shop.join("Cargo.toml"),
        "[package]\nname = \"store\"\n[workspace]\nmembers = [\"crates/*\"]\n",
    );
    assert_eq!(
        get_in(&p, &shop.join("crates/api"), &[]),
        "api.store.localhost"
    );
    assert_eq!(get_in(&p, &shop, &[]), "store.localhost");
}

#[test]
fn npm_and_pnpm_workspace_packages_are_named_pkg_dot_workspace() {
    let p = Portok::new();
    let npm = p.dir.path().join("npm-mono");
    write(
        &npm.join("package.json"),
        r#"{"name": "@acme/shop", "private": true, "workspaces": ["packages/*"]}"#,
    );
    write(
        &npm.join("packages/web/package.json"),
        r#"{"name": "@acme/web"}"#,
    );
    write(&npm.join("other/package.json"), r#"{"name": "other"}"#);
    assert_eq!(
        get_in(&p, &npm.join("packages/web"), &[]),
        "web.shop.localhost"
    );
    assert_eq!(get_in(&p, &npm.join("other"), &[]), "other.localhost");

    let pnpm = p.dir.path().join("mono");
    write(
        &pnpm.join("pnpm-workspace.yaml"),
        "packages:\n  - 'apps/*'\n  - '!apps/legacy'\n",
    );
    write(&pnpm.join("package.json"), r#"{"private": true}"#);
    write(&pnpm.join("apps/site/package.json"), r#"{"name": "site"}"#);
    write(
        &pnpm.join("apps/legacy/package.json"),
        r#"{"name": "legacy"}"#,
    );
    assert_eq!(
        get_in(&p, &pnpm.join("apps/site"), &[]),
        "site.mono.localhost"
    );
    assert_eq!(
        get_in(&p, &pnpm.join("apps/legacy"), &[]),
        "legacy.localhost"
    );
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git is installed");
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
}

#[test]
fn linked_git_worktrees_put_the_branch_in_front() {
    let p = Portok::new();
    let root = p.dir.path().join("src");
    let shop = root.join("shop");
    std::fs::create_dir_all(&shop).unwrap();
    git(&shop, &["-c", "init.defaultBranch=main", "init", "-q"]);
    git(&shop, &["config", "user.name", "Test"]);
    git(&shop, &["config", "user.email", "test@example.com"]);
    write(&shop.join("README"), "shop\n");
    git(&shop, &["add", "README"]);
    git(&shop, &["commit", "-q", "-m", "init"]);
    git(
        &shop,
        &["worktree", "add", "-q", "-b", "fix/login", "../shop-login"],
    );
    git(
        &shop,
        &["worktree", "add", "-q", "-b", "fix-signup", "../wt2"],
    );
    git(
        &shop,
        &["worktree", "add", "-q", "-b", "master", "../on-master"],
    );
    git(
        &shop,
        &["worktree", "add", "-q", "-b", "later", "../detached"],
    );

    // The main checkout: no prefix, named after its folder.
    assert_eq!(get_in(&p, &shop, &[]), "shop.localhost");
    // A linked worktree: the branch's last segment, and the main checkout's folder name
    // (not the worktree's own folder, shop-login).
    let login = root.join("shop-login");
    assert_eq!(get_in(&p, &login, &[]), "login.shop.localhost");
    assert_eq!(
        get_in(&p, &root.join("wt2"), &[]),
        "fix-signup.shop.localhost"
    );
    assert_eq!(get_in(&p, &login, &["--no-worktree"]), "shop.localhost");
    // NAME follows the same rule.
    assert_eq!(get_in(&p, &login, &["api"]), "login.api.localhost");
    // From a subfolder of the worktree too.
    std::fs::create_dir_all(login.join("src/deep")).unwrap();
    assert_eq!(
        get_in(&p, &login.join("src/deep"), &["api"]),
        "login.api.localhost"
    );

    // A Cargo project in the worktree: package name, branch in front.
    write(
        &login.join("Cargo.toml"),
        "[package]\nname = \"shop-web\"\n",
    );
    assert_eq!(get_in(&p, &login, &[]), "login.shop-web.localhost");
    // A worktree on master (or main), or on a detached HEAD, adds nothing (as in portless).
    assert_eq!(get_in(&p, &root.join("on-master"), &[]), "shop.localhost");
    git(&root.join("detached"), &["checkout", "-q", "--detach"]);
    assert_eq!(get_in(&p, &root.join("detached"), &[]), "shop.localhost");
}

#[tokio::test(flavor = "multi_thread")]
async fn portok_toml_gives_name_and_command_and_flags_win() {
    let p = Portok::new();
    let dir = project(&p);
    let hello = hello_bin();
    write(
        &dir.join("portok.toml"),
        &format!(
            "name = \"cfg\"\ncommand = [{:?}]\nwatch = false\nready-timeout = 60\nhelth = \"/typo\"\n",
            hello.display().to_string()
        ),
    );
    assert_eq!(get_in(&p, &dir, &[]), "cfg.localhost");

    let app = p.spawn_app(&dir, &["run"]);
    app.wait_for("cfg ready in", LONG).await;
    let t = app.text();
    assert!(
        t.contains("portok.toml: unknown key `helth` is ignored"),
        "{t}"
    );
    let r = get(p.addr(), "cfg.localhost", "/").await;
    assert_eq!(r.status, 200, "{}", r.text());
    drop(app);

    // A NAME on the command line wins over the file's.
    let app = p.spawn_app(&dir, &["run", "flagged"]);
    app.wait_for("flagged ready in", LONG).await;
    assert_eq!(get(p.addr(), "flagged.localhost", "/").await.status, 200);
}

#[test]
fn config_mistakes_are_errors_naming_file_key_and_type() {
    let p = Portok::new();
    let dir = p.dir.path().join("proj");
    write(
        &dir.join("portok.toml"),
        "debounce = \"fast\"\ncommand = \"true\"\n",
    );
    for args in [&["run"][..], &["get"]] {
        let out = run_in(&p, &dir, args);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains("portok.toml: `debounce` must be a whole number, not a string"),
            "{}",
            text(&out)
        );
    }
    write(&dir.join("portok.toml"), "name = [\n");
    let out = run_in(&p, &dir, &["get"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("portok.toml is not valid TOML"),
        "{}",
        text(&out)
    );

    // No command anywhere: a usage error that says where to put one.
    std::fs::remove_file(dir.join("portok.toml")).unwrap();
    let out = run_in(&p, &dir, &["run"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no command to run"), "{}", text(&out));
}

#[test]
fn cargo_metadata_and_package_json_carry_settings_too() {
    let p = Portok::new();
    let rust = p.dir.path().join("rust");
    write(
        &rust.join("Cargo.toml"),
        "[package]\nname = \"svc\"\n[package.metadata.portok]\nname = \"meta\"\nhealth = \"/health\"\n",
    );
    assert_eq!(get_in(&p, &rust, &[]), "meta.localhost");
    write(
        &rust.join("Cargo.toml"),
        "[package]\nname = \"svc\"\n[package.metadata.portok]\napp-port = \"x\"\n",
    );
    let out = run_in(&p, &rust, &["get"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out)
            .contains("Cargo.toml [package.metadata.portok]: `app-port` must be a whole number"),
        "{}",
        text(&out)
    );

    let node = p.dir.path().join("node");
    write(
        &node.join("package.json"),
        r#"{"name": "web", "portok": {"name": "front", "readyTimeout": 5}}"#,
    );
    assert_eq!(get_in(&p, &node, &[]), "front.localhost");
    // portok.toml wins, and says the other settings are ignored.
    write(&node.join("portok.toml"), "name = \"tomlname\"\n");
    let out = run_in(&p, &node, &["get"]);
    assert!(text(&out).contains("tomlname.localhost"), "{}", text(&out));
    assert!(
        text(&out).contains("ignoring the settings in package.json \"portok\""),
        "{}",
        text(&out)
    );
}

#[test]
fn completions_for_every_shell_and_man_pages() {
    let p = Portok::new();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = p.ok(&["completions", shell]);
        assert!(
            out.contains("doctor") && out.contains("completions"),
            "{shell}: {out}"
        );
    }
    let out = p.run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("possible values"), "{}", text(&out));

    let page = p.ok(&["man"]);
    assert!(page.contains(".TH portok 1"), "{page}");
    assert!(page.contains("doctor") && page.contains("hosts"), "{page}");
    let dir = p.dir.path().join("man1");
    p.ok(&["man", "--dir", dir.to_str().unwrap()]);
    for f in [
        "portok.1",
        "portok-doctor.1",
        "portok-hosts-sync.1",
        "portok-proxy-start.1",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    // Every command's --help shows an example.
    for cmd in [
        &["doctor"][..],
        &["prune"],
        &["clean"],
        &["hosts", "sync"],
        &["get"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let help = p.ok(&args);
        assert!(help.contains("Example"), "{cmd:?}: {help}");
    }
}

#[test]
fn service_install_writes_a_unit_that_verifies_and_uninstall_removes_exactly_it() {
    use std::os::unix::fs::PermissionsExt;
    let p = Portok::new();
    // A stand-in for `systemctl`: a user manager that answers, logging what it is asked.
    let log = p.dir.path().join("systemctl.log");
    let fake = p.dir.path().join("systemctl");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\ncase \"$2\" in is-enabled) echo enabled;; is-active) echo active;; esac\nexit 0\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let service = |args: &[&str]| {
        p.command()
            .env("PORTOK_SYSTEMCTL", &fake)
            .env("PORTOK_TLD", "test,dev.example.com")
            .arg("service")
            .args(args)
            .output()
            .unwrap()
    };
    let unit = p.home().join(".config/systemd/user/portok.service");

    let out = service(&["install"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&unit).unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_portok"));
    assert!(
        text.contains(&format!(
            "ExecStart={} __daemon --port {}\n",
            bin.display(),
            p.port
        )),
        "{text}"
    );
    assert!(text.contains("Restart=on-failure"), "{text}");
    assert!(text.contains(&format!("Environment=PORTOK_PORT={}\n", p.port)));
    assert!(
        text.contains("Environment=PORTOK_TLD=test,dev.example.com\n"),
        "{text}"
    );
    assert!(text.contains(&format!(
        "Environment=PORTOK_STATE_DIR={}\n",
        p.state().display()
    )));
    match std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
    {
        Ok(verify) => assert!(
            verify.status.success() && verify.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        ),
        Err(_) => missing("systemd-analyze", "apt-get install systemd"),
    }
    let asked = std::fs::read_to_string(&log).unwrap();
    for call in [
        "--user daemon-reload",
        "--user enable portok.service",
        "--user start portok.service",
    ] {
        assert!(asked.contains(call), "{call}: {asked}");
    }

    // Twice: the same unit, nothing rewritten.
    let out = service(&["install"]);
    assert!(
        stderr(&out).contains("already installed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&unit).unwrap(), text);
    let out = service(&["status"]);
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("starts: {}", bin.display())),
        "{said}"
    );
    assert!(said.contains("enabled: enabled; running: active"), "{said}");

    let doctor = String::from_utf8_lossy(&p.run(&["doctor"]).stdout).to_string();
    assert!(doctor.contains("portok.service starts"), "{doctor}");

    let out = service(&["uninstall"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!unit.exists());
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("--user disable --now portok.service"));
    assert_eq!(service(&["status"]).status.code(), Some(1));

    // A unit portok did not write is left alone.
    std::fs::write(&unit, "[Service]\nExecStart=/bin/true\n").unwrap();
    for args in [&["uninstall"][..], &["install"][..]] {
        let out = service(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("not written by portok"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(
        std::fs::read_to_string(&unit).unwrap(),
        "[Service]\nExecStart=/bin/true\n"
    );

    // Without a user manager, install writes the unit and says how to enable it.
    std::fs::remove_file(&unit).unwrap();
    let out = p
        .command()
        .env("PORTOK_SYSTEMCTL", "")
        .args(["service", "install"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(stderr(&out).contains("systemctl --user enable --now portok"));
    assert!(unit.exists());
}
