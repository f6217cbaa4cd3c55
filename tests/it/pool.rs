//! Instance pools (`portok run NAME --instances N`): requests spread over the instances,
//! a killed instance leaves the rotation and comes back, and redeploys roll one instance at
//! a time without failing a request.

use crate::support::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn ports_of(p: &Portok, host: &str) -> Vec<u64> {
    route_of(p, host)
        .map(|r| {
            r["ports"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_of_three_spreads_requests_evenly_and_lists_every_port() {
    let p = Portok::new();
    let dir = project(&p);
    let script = app_script();
    let app = p.spawn_app(&dir, &["run", "web", "--instances", "3", "--", &script]);
    app.wait_for("web ready: 3 instances", LONG).await;

    // routes.json keeps portless's fields (`port` is the first instance) and lists them all.
    let route = route_of(&p, "web.localhost").unwrap();
    let ports = ports_of(&p, "web.localhost");
    assert_eq!(ports.len(), 3, "{route}");
    assert_eq!(route["port"].as_u64(), Some(ports[0]), "{route}");
    assert_eq!(route["instances"], 3);
    let list: serde_json::Value = serde_json::from_str(&p.ok(&["list", "--json"])).unwrap();
    let entry = &list.as_array().unwrap()[0];
    assert_eq!(
        entry["ports"].as_array().map(|a| a.len()),
        Some(3),
        "{entry}"
    );

    // One client's sequential requests go round the instances in turn.
    let mut by_instance: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        let r = get(p.addr(), "web.localhost", "/").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let inst = r.headers["x-hello-instance"].to_str().unwrap().to_string();
        *by_instance.entry(inst).or_default() += 1;
    }
    let mut keys: Vec<_> = by_instance.keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["0", "1", "2"],
        "PORTOK_INSTANCE 0..2: {by_instance:?}"
    );
    for (inst, n) in &by_instance {
        assert!(
            (80..=120).contains(n),
            "instance {inst} got {n} of 300 (within 20% of 100): {by_instance:?}"
        );
    }

    // Under concurrent load, too.
    let load = Load::start(p.addr(), "web.localhost", 6);
    wait_for(LONG, "load to run", || (load.ok() >= 900).then_some(())).await;
    let (ok, by_pid, failures) = load.stop().await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(by_pid.len(), 3, "{by_pid:?}");
    // Least in flight first sends more to an instance that answers faster, by design (and
    // on a busy machine one is often slower for a while); each still gets a real share.
    let mean = ok as f64 / 3.0;
    for (pid, n) in &by_pid {
        assert!(
            *n as f64 >= mean * 0.25,
            "pid {pid}: {n} of {ok} ({by_pid:?})"
        );
    }

    // Status and metrics show each instance.
    let status = p.ok(&["status", "web"]);
    assert!(status.contains("instances: 3 of 3 in rotation"), "{status}");
    let metrics = get(p.addr(), "portok.localhost", "/metrics").await.text();
    for port in &ports {
        let line = format!("portok_instance_requests_total{{route=\"web\",port=\"{port}\"}} ");
        let n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("{line} in {metrics}"))
            .parse()
            .unwrap();
        assert!(n >= 80, "{line}{n}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_instance_leaves_the_rotation_and_is_started_again() {
    let p = Portok::new();
    let dir = project(&p);
    let script = app_script();
    let app = p.spawn_app(&dir, &["run", "web", "--instances", "3", "--", &script]);
    app.wait_for("web ready: 3 instances", LONG).await;
    let before = ports_of(&p, "web.localhost");
    assert_eq!(before.len(), 3);

    let load = Load::start(p.addr(), "web.localhost", 4);
    wait_for(LONG, "load to run", || (load.ok() >= 200).then_some(())).await;
    // Kill instance 1 (by the pid it answers with).
    let victim = loop {
        let r = get(p.addr(), "web.localhost", "/").await;
        if r.headers["x-hello-instance"] == "1" {
            break r.headers["x-hello-pid"]
                .to_str()
                .unwrap()
                .parse::<i32>()
                .unwrap();
        }
    };
    let victim_port = before[1];
    unsafe { libc::kill(victim, libc::SIGKILL) };
    app.wait_for("instance 1 (port", LONG).await;
    app.wait_for("instance 1: started again", LONG).await;
    app.wait_for_n("instance 1 ready on port", 2, LONG).await;
    let served = load.ok();
    wait_for(LONG, "load after the restart", || {
        (load.ok() >= served + 200).then_some(())
    })
    .await;
    let (ok, by_pid, failures) = load.stop().await;

    // Requests the killed instance refused or dropped went to another instance instead.
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(ok > 400, "{ok}");
    let after = ports_of(&p, "web.localhost");
    assert_eq!(after.len(), 3, "back to three: {after:?}");
    assert!(!after.contains(&victim_port), "{after:?}");
    assert!(
        by_pid.len() >= 4,
        "the restarted instance serves too: {by_pid:?}"
    );
    assert!(app.text().contains("out of rotation"), "{}", app.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_redeploy_under_load_fails_no_request() {
    let p = Portok::new();
    let dir = project(&p);
    let script = app_script();
    let app = p.spawn_app(
        &dir,
        &[
            "run",
            "web",
            "--instances",
            "3",
            "--drain",
            "30",
            "--",
            &script,
        ],
    );
    app.wait_for("web ready: 3 instances", LONG).await;

    // Capacity is sampled all along: never fewer than N-1 instances in rotation.
    let stop = Arc::new(AtomicBool::new(false));
    let min_ports = Arc::new(AtomicUsize::new(usize::MAX));
    let sampler = {
        let (stop, min_ports, routes) = (stop.clone(), min_ports.clone(), p.routes_json());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(text) = std::fs::read_to_string(&routes) {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                        let n = v[0]["ports"].as_array().map_or(0, |a| a.len());
                        min_ports.fetch_min(n, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let load = Load::start(p.addr(), "web.localhost", 4);
    wait_for(LONG, "load to run", || (load.ok() >= 100).then_some(())).await;

    std::fs::write(dir.join("version.txt"), "2").unwrap();
    app.wait_for("generation 2 live on 3 instances", LONG).await;
    let out = tokio::task::spawn_blocking({
        let mut c = p.command();
        c.args(["restart", "web"]);
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "restart: {}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("generation 3 live on 3 instances")
            || app.text().contains("generation 3 live on 3 instances"),
        "{}",
        app.text()
    );
    let served = load.ok();
    wait_for(LONG, "load after the rollouts", || {
        (load.ok() >= served + 100).then_some(())
    })
    .await;
    let (ok, _, failures) = load.stop().await;
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(ok > 200, "{ok}");
    assert!(
        min_ports.load(Ordering::Relaxed) >= 2,
        "capacity dropped to {} instances",
        min_ports.load(Ordering::Relaxed)
    );
    // Every instance now runs generation 3, each its own process.
    let mut pids = std::collections::HashSet::new();
    for _ in 0..30 {
        let r = get(p.addr(), "web.localhost", "/").await;
        assert!(r.text().contains("generation 3"), "{}", r.text());
        pids.insert(r.headers["x-hello-pid"].to_str().unwrap().to_string());
    }
    assert_eq!(pids.len(), 3, "{pids:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_spreads_tcp_connections_and_rejects_bad_flags() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let p = Portok::new();
    let dir = project(&p);
    std::fs::write(
        dir.join("echo.py"),
        r#"
import os, socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"]))); s.listen(128)
tag = ("instance %s\n" % os.environ["PORTOK_INSTANCE"]).encode()
def serve(c):
    c.sendall(tag)
    while True:
        d = c.recv(65536)
        if not d: break
        c.sendall(d)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#,
    )
    .unwrap();
    let listen = free_port();
    let app = p.spawn_app(
        &dir,
        &[
            "run",
            "db",
            "--tcp",
            &listen.to_string(),
            "--instances",
            "2",
            "--no-watch",
            "--",
            "python3",
            "echo.py",
        ],
    );
    app.wait_for("db ready: 2 instances", LONG).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", listen))
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let mut n = 0;
        while !buf[..n].contains(&b'\n') {
            let got = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf[n..]))
                .await
                .expect("the instance greets")
                .unwrap();
            assert!(got > 0, "closed early");
            n += got;
        }
        s.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
        *seen
            .entry(String::from_utf8_lossy(&buf[..n]).trim().to_string())
            .or_default() += 1;
    }
    // A closed connection is counted until its relay ends, so the split may be off by one
    // or two; within 20%.
    for inst in ["instance 0", "instance 1"] {
        let n = seen.get(inst).copied().unwrap_or(0);
        assert!((8..=12).contains(&n), "{inst}: {seen:?}");
    }

    let bad = p.run(&[
        "run",
        "x",
        "--instances",
        "2",
        "--app-port",
        "4100",
        "--",
        "true",
    ]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("--app-port cannot be combined with --instances"),
        "{}",
        stderr(&bad)
    );
    let zero = p.run(&["run", "x", "--instances", "0", "--", "true"]);
    assert_eq!(zero.status.code(), Some(2), "{}", stderr(&zero));
    assert!(stderr(&zero).contains("at least 1"), "{}", stderr(&zero));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_change_stops_the_rollout_and_a_pool_that_never_starts_shows_why() {
    let p = Portok::new();
    let dir = project(&p);
    let script = app_script();
    let app = p.spawn_app(&dir, &["run", "web", "--instances", "2", "--", &script]);
    app.wait_for("web ready: 2 instances", LONG).await;
    let before = ports_of(&p, "web.localhost");

    // A broken build: the first replacement fails, both old instances keep serving.
    std::fs::write(dir.join("broken"), "").unwrap();
    std::fs::write(dir.join("version.txt"), "2").unwrap();
    app.wait_for("rollout of generation 2 stopped", LONG).await;
    assert!(
        app.text().contains("mismatched types"),
        "the failure's output is shown: {}",
        app.text()
    );
    assert_eq!(ports_of(&p, "web.localhost"), before);
    for _ in 0..10 {
        let r = get(p.addr(), "web.localhost", "/").await;
        assert_eq!(r.status, 200);
        assert!(r.text().contains("version 1"), "{}", r.text());
    }

    // Fixed: the next change rolls out.
    std::fs::remove_file(dir.join("broken")).unwrap();
    std::fs::write(dir.join("version.txt"), "3").unwrap();
    app.wait_for("live on 2 instances", LONG).await;
    let r = get(p.addr(), "web.localhost", "/").await;
    assert!(r.text().contains("version 3"), "{}", r.text());
    drop(app);

    // A pool whose instances never come up: the crash page says why.
    let p = Portok::new();
    let dir = project(&p);
    std::fs::write(dir.join("broken"), "").unwrap();
    let app = p.spawn_app(&dir, &["run", "web", "--instances", "2", "--", &script]);
    app.wait_for("stopping the pool", LONG).await;
    wait_for(LONG, "the crash page", || {
        route_of(&p, "web.localhost")
            .filter(|r| r["state"] == "crashed")
            .map(|_| ())
    })
    .await;
    // The daemon reloads routes.json and takes the crash report a moment after
    // the file says crashed: until then the page may still say "starting" (503).
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let r = get_html(p.addr(), "web.localhost", "/").await;
        if r.status == 502 && r.text().contains("mismatched types") {
            break;
        }
        assert!(
            r.status == 502 || r.status == 503,
            "{}: {}",
            r.status,
            r.text()
        );
        assert!(std::time::Instant::now() < deadline, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And it starts once the build is fixed.
    std::fs::remove_file(dir.join("broken")).unwrap();
    std::fs::write(dir.join("version.txt"), "4").unwrap();
    app.wait_for("live on 2 instances", LONG).await;
    let r = get(p.addr(), "web.localhost", "/").await;
    assert!(r.text().contains("version 4"), "{}", r.text());
}
