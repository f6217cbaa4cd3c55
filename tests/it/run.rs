//! `portok NAME CMD` / `portok run` (issue: spawn with PORT, health-gated start,
//! zero-downtime redeploy with drain and rollback, clean exit).

use crate::support::*;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(30);

async fn body_of(p: &Portok, host: &str) -> Reply {
    get(p.addr(), host, "/").await
}

fn pid_header(r: &Reply) -> String {
    r.headers
        .get("x-hello-pid")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn run_serves_the_app_and_redeploys_on_change() {
    let p = Portok::new();
    let dir = project(&p);
    let script = app_script();
    let app = p.spawn_app(&dir, &["web", &script]);
    app.wait_for("web ready in", LONG).await;
    let text = app.text();
    assert!(
        text.contains(&format!("portok: web -> http://web.localhost:{}", p.port)),
        "{text}"
    );

    let r = body_of(&p, "web.localhost").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("version 1, generation 1"), "{}", r.text());
    let route = route_of(&p, "web.localhost").unwrap();
    assert_eq!(route["state"], "live");
    assert_eq!(route["pid"], app.pid());
    let port1 = route["port"].as_u64().unwrap();
    assert!((4000..=4999).contains(&port1));
    let list = p.ok(&["list", "--json"]);
    assert!(list.contains("\"kind\": \"app\""), "{list}");

    std::fs::write(dir.join("version.txt"), "2").unwrap();
    app.wait_for("generation 2 ready", LONG).await;
    assert!(
        app.text()
            .contains("change in version.txt -> starting generation 2"),
        "{}",
        app.text()
    );
    let r2 = body_of(&p, "web.localhost").await;
    assert!(
        r2.text().contains("version 2, generation 2"),
        "{}",
        r2.text()
    );
    assert_ne!(pid_header(&r), pid_header(&r2), "a new process");
    let port2 = route_of(&p, "web.localhost").unwrap()["port"]
        .as_u64()
        .unwrap();
    assert_ne!(port1, port2, "a new port");
    // The old generation is stopped after the rollback window (default 5 s) once idle.
    app.wait_for("generation 1 stopped", LONG).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_failed_requests_across_five_redeploys_under_load() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let p = Portok::new();
    let dir = project(&p);
    let script = app_script();
    let app = p.spawn_app(
        &dir,
        &[
            "run",
            "load",
            "--rollback-window",
            "0.5",
            "--drain",
            "30",
            "--",
            &script,
        ],
    );
    app.wait_for("load ready in", LONG).await;
    let addr = p.addr();

    // One WebSocket opened before the first switch must live through all of them.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("ws://load.localhost/ws", stream)
        .await
        .unwrap();

    let load = Load::start(addr, "load.localhost", 4);

    for round in 2..=6u32 {
        // A long request that starts on the old generation and must finish there.
        let slow = tokio::spawn(async move { get(addr, "load.localhost", "/slow?ms=1500").await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        if round % 2 == 0 {
            std::fs::write(dir.join("version.txt"), round.to_string()).unwrap();
        } else {
            let out = tokio::task::spawn_blocking({
                let mut c = p.command();
                c.args(["restart", "load"]);
                move || c.output().unwrap()
            })
            .await
            .unwrap();
            assert!(out.status.success(), "restart: {}", stderr(&out));
        }
        app.wait_for(&format!("generation {round} ready"), LONG)
            .await;
        let slow = slow.await.unwrap();
        assert_eq!(
            slow.status,
            200,
            "long request across the switch: {}",
            slow.text()
        );
        assert!(
            slow.text().contains(&format!("generation {}", round - 1)),
            "{}",
            slow.text()
        );
        ws.send(Message::text(format!("still here {round}")))
            .await
            .unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            back.into_text().unwrap().as_str(),
            format!("still here {round}")
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, _, failures) = load.stop().await;
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(ok > 100, "load ran: {ok}");
    let last = body_of(&p, "load.localhost").await;
    assert!(last.text().contains("generation 6"), "{}", last.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_change_keeps_the_old_generation_serving() {
    let p = Portok::new();
    let dir = project(&p);
    let script = app_script();
    let app = p.spawn_app(&dir, &["web", &script]);
    app.wait_for("web ready in", LONG).await;
    let before = body_of(&p, "web.localhost").await;

    std::fs::write(dir.join("broken"), "").unwrap();
    app.wait_for("before it was ready; still serving generation 1", LONG)
        .await;
    let text = app.text();
    assert!(
        text.contains("generation 2 exited with status 101"),
        "{text}"
    );
    assert!(
        text.contains("error[E0308]: mismatched types"),
        "the failed output is shown: {text}"
    );
    let during = body_of(&p, "web.localhost").await;
    assert_eq!(during.status, 200);
    assert_eq!(
        pid_header(&before),
        pid_header(&during),
        "the last good version still serves"
    );

    // `portok restart` reports the failure with exit 1.
    let out = p.run(&["restart", "web"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exited with status 101"),
        "{}",
        stderr(&out)
    );

    std::fs::remove_file(dir.join("broken")).unwrap();
    std::fs::write(dir.join("version.txt"), "fixed").unwrap();
    app.wait_for("switched; draining generation 1", LONG).await;
    assert!(body_of(&p, "web.localhost")
        .await
        .text()
        .contains("version fixed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_generation_that_dies_in_the_rollback_window_is_rolled_back() {
    let p = Portok::new();
    let dir = project(&p);
    // With `crashy` present the app answers for about a second, then exits 3.
    let script = format!(
        "if test -f crashy; then timeout 1 {hello}; exit 3; fi; HELLO_VERSION=$(cat version.txt) exec {hello}",
        hello = hello_bin().display()
    );
    let app = p.spawn_app(
        &dir,
        &["run", "web", "--rollback-window", "10", "--", &script],
    );
    app.wait_for("web ready in", LONG).await;
    let first = body_of(&p, "web.localhost").await;
    std::fs::write(dir.join("crashy"), "").unwrap();
    app.wait_for("generation 2 ready", LONG).await;
    app.wait_for("rolled back to generation 1", LONG).await;
    let after = body_of(&p, "web.localhost").await;
    assert_eq!(after.status, 200);
    assert_eq!(
        pid_header(&first),
        pid_header(&after),
        "generation 1 serves again"
    );
    assert_eq!(route_of(&p, "web.localhost").unwrap()["generation"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn cold_start_holds_clients_and_shows_browsers_a_starting_page() {
    let p = Portok::new();
    let dir = project(&p);
    let script = format!("sleep 2; exec {}", hello_bin().display());
    let app = p.spawn_app(&dir, &["slowstart", &script]);
    app.wait_for("starting on port", LONG).await;
    let started = Instant::now();
    let browser = get_html(p.addr(), "slowstart.localhost", "/").await;
    assert_eq!(browser.status, 503);
    assert!(
        browser.text().contains("is starting") && browser.text().contains("http-equiv=\"refresh\"")
    );
    assert!(browser.headers.contains_key("retry-after"));
    // A script's request is held until the app is ready, then answered.
    let held = get(p.addr(), "slowstart.localhost", "/").await;
    assert_eq!(held.status, 200, "{}", held.text());
    assert!(
        started.elapsed() > Duration::from_millis(800),
        "it was held"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ignored_files_do_not_trigger_a_redeploy() {
    let p = Portok::new();
    let dir = project(&p);
    std::fs::write(dir.join(".gitignore"), "*.log\nout/\n").unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let script = app_script();
    let app = p.spawn_app(
        &dir,
        &[
            "run",
            "web",
            "--debounce",
            "100",
            "--ignore",
            "*.tmp",
            "--",
            &script,
        ],
    );
    app.wait_for("web ready in", LONG).await;
    std::fs::write(dir.join("server.log"), "x").unwrap();
    std::fs::write(dir.join("out/bundle.js"), "x").unwrap();
    std::fs::write(dir.join("scratch.tmp"), "x").unwrap();
    std::fs::create_dir_all(dir.join("target/debug")).unwrap();
    std::fs::write(dir.join("target/debug/app"), "x").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !app.text().contains("change in"),
        "ignored files triggered: {}",
        app.text()
    );
    std::fs::write(dir.join("version.txt"), "2").unwrap();
    app.wait_for("change in version.txt", LONG).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_the_whole_tree_and_removes_the_route() {
    let p = Portok::new();
    let dir = project(&p);
    // The app forks a grandchild that would outlive a careless supervisor.
    let script = format!("sleep 300 & exec {}", hello_bin().display());
    let mut app = p.spawn_app(&dir, &["tree", &script]);
    app.wait_for("tree ready in", LONG).await;
    let route = route_of(&p, "tree.localhost").unwrap();
    let pgid = route["pgids"][0].as_i64().unwrap() as i32;
    assert_eq!(unsafe { libc::kill(-pgid, 0) }, 0, "the app's group runs");
    app.signal(libc::SIGINT);
    assert_eq!(app.wait_exit(LONG).await, Some(130));
    assert_ne!(
        unsafe { libc::kill(-pgid, 0) },
        0,
        "no process of the app's group is left"
    );
    assert!(route_of(&p, "tree.localhost").is_none(), "route removed");
    assert_eq!(get(p.addr(), "tree.localhost", "/").await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_and_sighup_exit_codes() {
    let p = Portok::new();
    let dir = project(&p);
    let script = app_script();
    for (sig, code) in [(libc::SIGTERM, 143), (libc::SIGHUP, 129)] {
        let mut app = p.spawn_app(&dir, &["run", "sig", "--no-watch", "--", &script]);
        app.wait_for("sig ready in", LONG).await;
        app.signal(sig);
        assert_eq!(app.wait_exit(LONG).await, Some(code));
        assert!(route_of(&p, "sig.localhost").is_none());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn force_takes_over_a_name_from_another_run() {
    let p = Portok::new();
    let dir = project(&p);
    let script = app_script();
    let mut first = p.spawn_app(&dir, &["web", &script]);
    first.wait_for("web ready in", LONG).await;

    let mut refused = p.spawn_app(&dir, &["web", &script]);
    assert_eq!(refused.wait_exit(LONG).await, Some(1));
    assert!(refused.text().contains("--force"), "{}", refused.text());

    let second = p.spawn_app(&dir, &["web", "--force", &script]);
    second.wait_for("web ready in", LONG).await;
    assert_eq!(
        first.wait_exit(LONG).await,
        Some(143),
        "the old owner was stopped"
    );
    assert_eq!(route_of(&p, "web.localhost").unwrap()["pid"], second.pid());
    assert_eq!(body_of(&p, "web.localhost").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_app_gets_a_crash_page_and_restarts_on_change() {
    let p = Portok::new();
    let dir = project(&p);
    let script = app_script();
    let app = p.spawn_app(&dir, &["web", &script]);
    app.wait_for("web ready in", LONG).await;
    let pid: i32 = pid_header(&body_of(&p, "web.localhost").await)
        .parse()
        .unwrap();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    app.wait_for("serving a crash page", LONG).await;
    let r = get_html(p.addr(), "web.localhost", "/").await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains("killed by signal 9"), "{}", r.text());
    assert!(
        r.text().contains("hello: listening on"),
        "output tail shown: {}",
        r.text()
    );
    std::fs::write(dir.join("version.txt"), "3").unwrap();
    let start = Instant::now();
    loop {
        let r = body_of(&p, "web.localhost").await;
        if r.status == 200 {
            assert!(r.text().contains("version 3"));
            break;
        }
        assert!(start.elapsed() < LONG, "never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_watch_portok_exits_with_the_apps_code() {
    let p = Portok::new();
    let dir = project(&p);
    let mut app = p.spawn_app(
        &dir,
        &[
            "run",
            "once",
            "--no-watch",
            "--",
            "sh",
            "-c",
            "echo bye; exit 7",
        ],
    );
    assert_eq!(app.wait_exit(LONG).await, Some(7));
    assert!(app.text().contains("bye"), "{}", app.text());
    assert!(route_of(&p, "once.localhost").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_portok_run_drops_its_route_and_stops_its_app() {
    let p = Portok::new();
    let dir = project(&p);
    let script = format!("sleep 300 & exec {}", hello_bin().display());
    let mut app = p.spawn_app(&dir, &["orphan", &script]);
    app.wait_for("orphan ready in", LONG).await;
    let pgid = route_of(&p, "orphan.localhost").unwrap()["pgids"][0]
        .as_i64()
        .unwrap() as i32;
    app.child.kill().unwrap();
    app.child.wait().unwrap();
    let start = Instant::now();
    while get(p.addr(), "orphan.localhost", "/").await.status != 404 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "stale route still served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while unsafe { libc::kill(-pgid, 0) } == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the app outlived its portok run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn run_flags_env_and_name_inference() {
    let p = Portok::new();
    let dir = project(&p);
    std::fs::write(dir.join("Cargo.toml"), "[package]\nname = \"My_Service\"\n").unwrap();
    // A script that prints what portok gave it, then serves.
    let script = format!(
        "echo \"env PORT=$PORT HOST=$HOST URL=$PORTOK_URL NAME=$PORTOK_NAME VITE=$__VITE_ADDITIONAL_SERVER_ALLOWED_HOSTS\"; exec {}",
        hello_bin().display()
    );
    let app = p.spawn_app(
        &dir,
        &["run", "--no-watch", "--health", "/health", "--", &script],
    );
    app.wait_for("my-service ready in", LONG).await;
    let port = route_of(&p, "my-service.localhost").unwrap()["port"]
        .as_u64()
        .unwrap();
    let text = app.text();
    assert!(
        text.contains(&format!(
            "env PORT={port} HOST=127.0.0.1 URL=http://my-service.localhost:{} NAME=my-service VITE=.localhost",
            p.port
        )),
        "{text}"
    );
    let out = p.run(&["logs", "my-service", "-n", "5"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hello: listening"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn portok_zero_runs_the_command_plainly() {
    let p = Portok::new();
    let dir = project(&p);
    let out = p
        .command()
        .current_dir(&dir)
        .env("PORTOK", "0")
        .args(["plain", "sh", "-c", "echo port=${PORT:-unset}; exit 4"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "port=unset");
    assert!(p.daemon_pid().is_none(), "no proxy");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fixed_app_port_redeploys_by_stopping_then_starting() {
    let p = Portok::new();
    let dir = project(&p);
    let port = free_port();
    let script = app_script();
    let app = p.spawn_app(
        &dir,
        &["run", "web", "--app-port", &port.to_string(), "--", &script],
    );
    app.wait_for("web ready in", LONG).await;
    assert!(body_of(&p, "web.localhost")
        .await
        .text()
        .contains("version 1, generation 1"));
    std::fs::write(dir.join("version.txt"), "2").unwrap();
    app.wait_for_n("web ready in", 2, LONG).await;
    let text = app.text();
    assert!(
        text.contains("is fixed: holding new requests, draining generation 1 and stopping it"),
        "{text}"
    );
    let r = body_of(&p, "web.localhost").await;
    assert!(r.text().contains("version 2, generation 2"), "{}", r.text());
    let route = route_of(&p, "web.localhost").unwrap();
    assert_eq!(route["port"], port);
    assert_eq!(route["generation"], 2);
    assert_eq!(route["state"], "live");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_during_the_first_start_cancels_it_and_the_newest_source_serves() {
    let p = Portok::new();
    let dir = project(&p);
    // The first start takes 6 s: the change must be seen (a debounce, and a busy machine)
    // while it is still starting. With 2 s it was not, once in a full run.
    let script = format!(
        "sleep 6; HELLO_VERSION=$(cat version.txt) exec {}",
        hello_bin().display()
    );
    let app = p.spawn_app(&dir, &["web", &script]);
    app.wait_for("starting on port", LONG).await;
    std::fs::write(dir.join("version.txt"), "2").unwrap();
    app.wait_for("cancelling generation 1 (still starting)", LONG)
        .await;
    app.wait_for("web ready in", LONG).await;
    let text = app.text();
    assert!(text.contains("(generation 2, pid"), "{text}");
    let r = body_of(&p, "web.localhost").await;
    assert!(r.text().contains("version 2, generation 2"), "{}", r.text());
    assert_eq!(route_of(&p, "web.localhost").unwrap()["generation"], 2);
}

/// Another portok (its own state, as each test has) can be handed the port a generation
/// was given while that generation still starts. Its app answering there is not this
/// generation being ready: the generation starts again on another port. (In a full run
/// another test's app answered, once, and its page was served.)
#[tokio::test(flavor = "multi_thread")]
async fn a_port_another_portok_takes_while_the_generation_starts_is_left_to_it() {
    let p = Portok::new();
    let dir = project(&p);
    std::fs::write(dir.join("version.txt"), "7").unwrap();
    let script = format!(
        "sleep 3; HELLO_VERSION=$(cat version.txt) exec {}",
        hello_bin().display()
    );
    let app = p.spawn_app(&dir, &["web", &script]);
    app.wait_for("starting on port", LONG).await;
    let text = app.text();
    let port = text
        .split("starting on port ")
        .nth(1)
        .and_then(|rest| rest.split("...").next())
        .unwrap()
        .to_string();
    let other = Portok::new();
    let other_dir = project(&other);
    let squatter = other.spawn_app(
        &other_dir,
        &["run", "other", "--app-port", &port, "--", &app_script()],
    );
    squatter.wait_for("other ready in", LONG).await;
    app.wait_for("web ready in", LONG).await;
    let r = body_of(&p, "web.localhost").await;
    assert!(r.text().contains("version 7, generation 1"), "{}", r.text());
    let text = app.text();
    assert!(
        text.contains(&format!("another portok app answers on port {port}")),
        "{text}"
    );
    let route = route_of(&p, "web.localhost").unwrap();
    assert_ne!(route["port"].as_u64().unwrap().to_string(), port);
    let r = body_of(&other, "other.localhost").await;
    assert!(r.text().contains("version 1, generation 1"), "{}", r.text());
}
