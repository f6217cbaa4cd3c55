//! `portok up` / `down` / `ps`, lazy apps and `portok add` (issue: a project's apps in one
//! command, started on demand).

use crate::support::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(30);

/// A project whose three apps are the example app: `api` (in ./api), `web` (which refuses
/// to start unless api answers through the proxy, so it proves the order) and a lazy
/// `docs` that stops after 3 s without a request.
fn three_apps(p: &Portok) -> PathBuf {
    let dir = p.dir.path().join("shop");
    std::fs::create_dir_all(dir.join("api")).unwrap();
    let hello = hello_bin();
    let toml = format!(
        r#"
[apps.api]
command = "{hello}"
dir = "api"
watch = false

[apps.web]
command = "curl -sf -o /dev/null -H 'Host: api.localhost' http://127.0.0.1:{port}/ || {{ echo 'api is not ready'; exit 1; }}; exec {hello}"
depends_on = ["api"]
watch = false

[apps.docs]
command = "{hello}"
lazy = true
idle_stop = "3s"
watch = false
"#,
        hello = hello.display(),
        port = p.port
    );
    std::fs::write(dir.join("portok.toml"), toml).unwrap();
    dir.canonicalize().unwrap()
}

fn pid_of(r: &Reply) -> i32 {
    r.headers["x-hello-pid"].to_str().unwrap().parse().unwrap()
}

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // A zombie ('Z') has ended; only its parent has not collected it yet.
    !stat.is_empty() && !stat.contains(") Z ")
}

fn state_of(p: &Portok, host: &str) -> Option<String> {
    route_of(p, host).map(|r| r["state"].as_str().unwrap_or("").to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn up_starts_a_project_in_order_and_a_lazy_app_on_its_first_request() {
    let p = Portok::new();
    let dir = three_apps(&p);
    let mut up = p.spawn_app(&dir, &["up"]);
    up.wait_for("web ready in", LONG).await;
    // One stream, each line under its app's name; web started once api answered.
    let text = up.text();
    assert!(text.contains("api  | portok: api ready in"), "{text}");
    assert!(text.contains("web  | hello: listening"), "{text}");
    assert!(!text.contains("api is not ready"), "{text}");
    let api = get(p.addr(), "api.localhost", "/").await;
    assert_eq!(api.status, 200);
    assert_eq!(get(p.addr(), "web.localhost", "/").await.status, 200);

    // docs is registered, idle, and nothing of it runs.
    wait_for(LONG, "docs idle", || {
        (state_of(&p, "docs.localhost")? == "idle").then_some(())
    })
    .await;
    assert!(!up.text().contains("docs ready"), "{}", up.text());
    let ps = p.command().arg("ps").current_dir(&dir).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout).to_string();
    assert!(
        ps.lines()
            .any(|l| l.starts_with("docs") && l.contains("idle")),
        "{ps}"
    );
    assert!(
        ps.lines()
            .any(|l| l.starts_with("api") && l.contains("live")),
        "{ps}"
    );
    // Each app's output is also where `portok logs` finds it.
    let logs = p.ok(&["logs", "api", "-n", "5"]);
    assert!(logs.contains("hello: listening"), "{logs}");
    // status and the dashboard show it idle and lazy, beside the live apps.
    let status: serde_json::Value = serde_json::from_str(&p.ok(&["status", "--json"])).unwrap();
    let routes = status["routes"].as_array().unwrap();
    let docs = routes
        .iter()
        .find(|r| r["hostname"] == "docs.localhost")
        .unwrap();
    assert_eq!(
        (docs["state"].as_str(), docs["idle_stop"].as_u64()),
        (Some("idle"), Some(3))
    );
    let page = admin(&p, "GET", "/", None).await.text();
    assert!(page.contains("lazy app"), "{page}");
    assert!(
        page.contains("<span class=\"badge idle\">idle</span>"),
        "{page}"
    );
    assert!(
        page.contains("<span class=\"badge live\">live</span>"),
        "{page}"
    );

    // The first requests start it; every one of them is answered by it.
    let first: Vec<Reply> =
        futures_util::future::join_all((0..8).map(|_| get(p.addr(), "docs.localhost", "/"))).await;
    assert!(
        first.iter().all(|r| r.status == 200),
        "{:?}",
        first.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let docs_pid = pid_of(&first[0]);
    assert!(
        first[0].text().contains("generation 1"),
        "{}",
        first[0].text()
    );
    assert_eq!(state_of(&p, "docs.localhost").as_deref(), Some("live"));

    // 3 s without a request: it is stopped and idle again.
    let live_at = Instant::now();
    wait_for(Duration::from_secs(15), "docs to go idle", || {
        (state_of(&p, "docs.localhost")? == "idle").then_some(())
    })
    .await;
    assert!(
        live_at.elapsed() >= Duration::from_millis(2500),
        "stopped before its idle_stop"
    );
    wait_for(LONG, "the docs process to end", || {
        (!alive(docs_pid)).then_some(())
    })
    .await;
    assert!(
        up.text()
            .contains("docs | portok: no request for 3s: stopping (idle)"),
        "{}",
        up.text()
    );

    // The next request starts it again.
    let again = get(p.addr(), "docs.localhost", "/").await;
    assert_eq!(again.status, 200);
    assert!(again.text().contains("generation 2"), "{}", again.text());
    let docs_pid = pid_of(&again);

    // Ctrl-C: everything stops, the last started first, and nothing is left.
    let api_pid = pid_of(&api);
    up.signal(libc::SIGINT);
    assert_eq!(up.wait_exit(LONG).await, Some(130));
    let text = up.text();
    let pos = |s: &str| {
        text.find(s)
            .unwrap_or_else(|| panic!("{s:?} missing:\n{text}"))
    };
    assert!(pos("stopping docs") > pos("stopping web"), "{text}");
    assert!(pos("stopping api") > pos("stopping docs"), "{text}");
    for pid in [api_pid, docs_pid] {
        assert!(!alive(pid), "pid {pid} is still running");
    }
    let routes = std::fs::read_to_string(p.routes_json()).unwrap_or_default();
    assert!(!routes.contains("localhost"), "{routes}");
}

/// Stops a detached `portok up` even when the test fails.
struct Down<'a>(&'a Portok, &'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = self.0.command().arg("down").current_dir(self.1).output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn up_d_survives_its_terminal_and_the_daemon_and_down_ends_every_process() {
    let p = Portok::new();
    let dir = three_apps(&p);
    let _down = Down(&p, &dir);
    // `up -d` in a process group of its own, as a shell job would be; the hangup of its
    // terminal is SIGHUP to that group.
    let mut cmd = p.command();
    cmd.args(["up", "-d"]).current_dir(&dir);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let group = child.id() as i32;
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("running in the background"), "{said}");
    assert!(
        said.lines()
            .any(|l| l.starts_with("web") && l.contains("live")),
        "{said}"
    );
    unsafe { libc::kill(-group, libc::SIGHUP) };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let api = get(p.addr(), "api.localhost", "/").await;
    assert_eq!(api.status, 200);
    let web = get(p.addr(), "web.localhost", "/").await;
    assert_eq!(web.status, 200);
    let docs = get(p.addr(), "docs.localhost", "/").await;
    assert_eq!(docs.status, 200);

    // The daemon is killed: the apps' supervisors start it again, with every route.
    let daemon = p.daemon_pid().unwrap();
    unsafe { libc::kill(daemon, libc::SIGKILL) };
    wait_for(LONG, "a new daemon", || {
        p.daemon_pid().filter(|d| *d != daemon && alive(*d))
    })
    .await;
    let mut served = None;
    for _ in 0..100 {
        if let Some(r) = try_get(p.addr(), "api.localhost", "/").await {
            if r.status == 200 {
                served = Some(r);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        pid_of(&served.expect("api is served by the new daemon")),
        pid_of(&api)
    );

    // `down` ends every process: the apps, their supervisors, the `portok up`.
    let up_pid: i32 = {
        let entries: Vec<_> = std::fs::read_dir(p.state().join("up"))
            .unwrap()
            .flatten()
            .collect();
        let rec = entries
            .iter()
            .find(|e| e.path().extension().is_some_and(|x| x == "json"))
            .unwrap();
        rec.path()
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let pids = [pid_of(&api), pid_of(&web), pid_of(&docs), up_pid];
    let out = p.command().arg("down").current_dir(&dir).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("stopped"), "{}", stderr(&out));
    for pid in pids {
        assert!(!alive(pid), "pid {pid} still runs after down");
    }
    let routes = std::fs::read_to_string(p.routes_json()).unwrap_or_default();
    assert!(!routes.contains("localhost"), "{routes}");
    let out = p.command().arg("down").current_dir(&dir).output().unwrap();
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("no `portok up` runs"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_projects_exit_2_naming_what_is_wrong() {
    let p = Portok::new();
    let dir = p.dir.path().join("bad");
    std::fs::create_dir_all(&dir).unwrap();
    for (toml, want) in [
        (
            "[apps.a]\ncommand = \"x\"\ndepends_on = [\"b\"]\n[apps.b]\ncommand = \"x\"\ndepends_on = \"a\"\n",
            "cycle (a -> b -> a)",
        ),
        (
            "[apps.web]\ncommand = \"x\"\ndepends_on = [\"db\"]\n",
            "[apps.web]: `depends_on` names \"db\", which is not an app here",
        ),
        (
            "[apps.web]\ncommand = \"x\"\ndir = \"frontend\"\n",
            "[apps.web]: `dir` is \"frontend\", which is not a folder",
        ),
        ("[apps.web]\ncommand = \"x\"\ndrain = \"long\"\n", "portok.toml [apps.web]: `drain` must be"),
        ("name = \"solo\"\ncommand = \"x\"\n", "has no apps"),
    ] {
        std::fs::write(dir.join("portok.toml"), toml).unwrap();
        let out = p.command().arg("up").current_dir(&dir).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{toml}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{toml}: {}", stderr(&out));
    }
    // An app that is not in the project.
    std::fs::write(dir.join("portok.toml"), "[apps.web]\ncommand = \"x\"\n").unwrap();
    let out = p
        .command()
        .args(["up", "nope"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no app \"nope\""), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn down_of_an_app_not_started_by_up_says_so() {
    let p = Portok::new();
    let dir = three_apps(&p);
    let app = p.spawn_app(&dir, &["run", "--app", "api"]);
    app.wait_for("api ready in", LONG).await;
    let out = p
        .command()
        .args(["down", "api"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("api was not started by `portok up`"),
        "{}",
        stderr(&out)
    );
    // It still serves.
    assert_eq!(get(p.addr(), "api.localhost", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_added_app_starts_on_demand_survives_a_daemon_restart_and_is_removed() {
    let p = Portok::new();
    let dir = project(&p);
    let hello = hello_bin();
    let out = p
        .command()
        .args(["add", "blog", "--idle-stop", "2s", "--dir"])
        .arg(&dir)
        .arg("--")
        .arg(&hello)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("blog -> http://blog.localhost"),
        "{}",
        stderr(&out)
    );
    assert_eq!(state_of(&p, "blog.localhost").as_deref(), Some("idle"));
    let r = get(p.addr(), "blog.localhost", "/").await;
    assert_eq!(r.status, 200);
    wait_for(LONG, "blog idle", || {
        (state_of(&p, "blog.localhost")? == "idle").then_some(())
    })
    .await;
    wait_for(LONG, "the blog process to end", || {
        (!alive(pid_of(&r))).then_some(())
    })
    .await;

    // Everything of portok goes away (a reboot); the next daemon starts the app's owner.
    let owner = route_of(&p, "blog.localhost").unwrap()["pid"]
        .as_i64()
        .unwrap() as i32;
    unsafe { libc::kill(owner, libc::SIGKILL) };
    p.ok(&["proxy", "stop"]);
    wait_for(LONG, "the owner to end", || (!alive(owner)).then_some(())).await;
    p.ok(&["proxy", "start"]);
    wait_for(LONG, "blog registered again", || {
        let r = route_of(&p, "blog.localhost")?;
        (r["pid"].as_i64()? as i32 != owner && r["state"] == "idle").then_some(())
    })
    .await;
    let r = get(p.addr(), "blog.localhost", "/").await;
    assert_eq!(r.status, 200);
    let app_pid = pid_of(&r);

    let out = p.command().args(["remove", "blog"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(route_of(&p, "blog.localhost").is_none());
    assert!(!alive(app_pid));
    let apps = std::fs::read_to_string(p.state().join("apps.json")).unwrap();
    assert_eq!(apps.trim(), "[]");
    let out = p.command().args(["remove", "blog"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("blog is not an app added with `portok add`"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_that_crashes_on_every_start_backs_off_and_shows_its_output() {
    let p = Portok::new();
    let dir = p.dir.path().join("crashy");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("portok.toml"),
        "[apps.bad]\ncommand = \"echo 'boom: no database'; exit 3\"\nwatch = false\n",
    )
    .unwrap();
    let up = p.spawn_app(&dir, &["up"]);
    up.wait_for("starting it again", LONG).await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let crashes = up.text().matches("starting it again").count();
    // 0.25 s, 0.5 s, 1 s, 2 s...: a handful in 3 s, not a spin.
    assert!(
        (2..=6).contains(&crashes),
        "{crashes} restarts in {:?}:\n{}",
        started.elapsed(),
        up.text()
    );
    let page = get_html(p.addr(), "bad.localhost", "/").await;
    assert_eq!(page.status, 502, "{}", page.text());
    assert!(page.text().contains("boom: no database"), "{}", page.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_project_with_the_same_app_name_is_refused_with_the_owners_path() {
    let p = Portok::new();
    let first = three_apps(&p);
    let app = p.spawn_app(&first, &["run", "--app", "api"]);
    app.wait_for("api ready in", LONG).await;
    let second = p.dir.path().join("other");
    std::fs::create_dir_all(&second).unwrap();
    std::fs::write(
        second.join("portok.toml"),
        format!("[apps.api]\ncommand = \"{}\"\n", hello_bin().display()),
    )
    .unwrap();
    let out = p.command().arg("up").current_dir(&second).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let want = format!(
        "api.localhost is already run by portok (pid {}, in {})",
        app.pid(),
        first.display()
    );
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tcp_connection_to_an_idle_lazy_app_starts_it_and_is_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let p = Portok::new();
    let dir = project(&p);
    let listen = free_port();
    let hello = hello_bin();
    let app = p.spawn_app(
        &dir,
        &[
            "run",
            "db",
            "--tcp",
            &listen.to_string(),
            "--lazy",
            "--no-watch",
            "--",
            hello.to_str().unwrap(),
        ],
    );
    app.wait_for("idle: the first request starts it", LONG)
        .await;
    assert!(
        app.text()
            .contains(&format!("db -> tcp 127.0.0.1:{listen}")),
        "{}",
        app.text()
    );
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", listen))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: db\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(LONG, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    assert!(text.contains("generation 1"), "{text}");
}
