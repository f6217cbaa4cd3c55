//! Observe and control (issue: dashboard, status, JSON API, metrics, switch, logs).

use crate::support::*;
use std::time::Duration;

fn status_json(p: &Portok, name: &str) -> serde_json::Value {
    serde_json::from_str(&p.ok(&["status", name, "--json"])).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn status_api_and_metrics_count_requests_by_class() {
    let p = Portok::new();
    let b = backend("api").await;
    p.ok(&["alias", "api", &b.port.to_string()]);
    for _ in 0..7 {
        assert_eq!(get(p.addr(), "api.localhost", "/").await.status, 200);
    }
    for _ in 0..3 {
        assert_eq!(
            get(p.addr(), "api.localhost", "/status/404").await.status,
            404
        );
    }
    for _ in 0..2 {
        assert_eq!(
            get(p.addr(), "api.localhost", "/status/503").await.status,
            503
        );
    }
    let s = status_json(&p, "api");
    assert_eq!(s["requests"], 12);
    assert_eq!(s["responses"]["2xx"], 7);
    assert_eq!(s["responses"]["4xx"], 3);
    assert_eq!(s["responses"]["5xx"], 2);
    assert_eq!(s["inflight"], 0);
    assert_eq!(s["kind"], "alias");
    assert_eq!(s["state"], "live");
    assert!(
        s["p50_ms"].as_f64().is_some() && s["p99_ms"].as_f64().is_some(),
        "{s}"
    );

    let api = admin(&p, "GET", "/api/status", None).await;
    assert_eq!(api.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&api.body).unwrap();
    assert_eq!(v["port"], p.port);
    assert_eq!(v["routes"][0]["hostname"], "api.localhost");
    assert_eq!(v["routes"][0]["responses"]["2xx"], 7);
    assert_eq!(v["totals"]["requests"], 12);
    let one = admin(&p, "GET", "/api/routes/api", None).await;
    let one: serde_json::Value = serde_json::from_slice(&one.body).unwrap();
    assert_eq!(one["requests"], 12);
    assert_eq!(admin(&p, "GET", "/api/routes/nope", None).await.status, 404);

    let m = admin(&p, "GET", "/metrics", None).await;
    assert_eq!(m.status, 200);
    let text = m.text();
    for line in [
        "portok_requests_total{route=\"api\",code_class=\"2xx\"} 7",
        "portok_requests_total{route=\"api\",code_class=\"4xx\"} 3",
        "portok_requests_total{route=\"api\",code_class=\"5xx\"} 2",
        "portok_inflight_requests{route=\"api\"} 0",
        "portok_request_duration_seconds_count{route=\"api\"} 12",
        "portok_upstream_errors_total{route=\"api\"} 0",
        "portok_connections_open ",
        "portok_tls_handshakes_total 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }

    // A dead upstream counts as an upstream error and a 5xx.
    p.ok(&["alias", "gone", &free_port().to_string()]);
    assert_eq!(get(p.addr(), "gone.localhost", "/").await.status, 502);
    let g = status_json(&p, "gone");
    assert_eq!(g["upstream_errors"], 1);
    assert_eq!(g["responses"]["5xx"], 1);

    // Counters and history survive a daemon restart.
    p.ok(&["proxy", "stop"]);
    p.ok(&["proxy", "start"]);
    let s = status_json(&p, "api");
    assert_eq!(s["requests"], 12);
    assert_eq!(s["responses"]["4xx"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn mutating_endpoints_need_the_token_and_are_rate_limited() {
    let p = Portok::new();
    let a = backend("a").await;
    let b = backend("b").await;
    p.ok(&["alias", "api", &a.port.to_string()]);
    let path = format!("/api/routes/api/switch?port={}", b.port);
    assert_eq!(admin(&p, "POST", &path, None).await.status, 401);
    assert_eq!(admin(&p, "POST", &path, Some("wrong")).await.status, 403);
    assert_eq!(
        get(p.addr(), "api.localhost", "/").await.headers["x-backend"],
        "a",
        "unchanged"
    );
    let token = std::fs::read_to_string(p.state().join("admin.token")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(p.state().join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let ok = admin(
        &p,
        "POST",
        &format!("{path}&drain=0&rollback_window=0"),
        Some(token.trim()),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        get(p.addr(), "api.localhost", "/").await.headers["x-backend"],
        "b"
    );
    // Repeated failures from one client: 429, even with the right token.
    for _ in 0..5 {
        admin(&p, "POST", &path, Some("nope")).await;
    }
    let limited = admin(&p, "POST", &path, Some(token.trim())).await;
    assert_eq!(limited.status, 429);
    assert!(limited.headers.contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_is_reachable_only_on_portok_localhost() {
    let p = Portok::new();
    let b = backend("app").await;
    p.ok(&["alias", "app", &b.port.to_string()]);
    // The same paths on an app's host go to the app.
    for path in ["/api/status", "/metrics", "/"] {
        let r = get(p.addr(), "app.localhost", path).await;
        assert_eq!(r.headers["x-backend"], "app", "{path} on app.localhost");
    }
    // Names under portok.localhost are not the dashboard, and cannot be taken.
    assert_eq!(
        get(p.addr(), "x.portok.localhost", "/api/status")
            .await
            .status,
        404
    );
    assert_eq!(p.run(&["alias", "portok", "4000"]).status.code(), Some(2));
    assert_eq!(p.run(&["alias", "x.portok", "4000"]).status.code(), Some(2));
    let out = p.run(&["run", "portok", "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(admin(&p, "GET", "/api/status", None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn switch_refuses_an_unhealthy_port_and_rolls_back_when_the_new_one_dies() {
    let p = Portok::new();
    let a = backend("a").await;
    p.ok(&["alias", "api", &a.port.to_string()]);
    let dead = free_port();
    let out = p.run(&["switch", "api", &dead.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("health check"), "{}", stderr(&out));
    assert_eq!(
        get(p.addr(), "api.localhost", "/").await.headers["x-backend"],
        "a"
    );
    let s = status_json(&p, "api");
    assert_eq!(s["switches"][0]["outcome"], "refused");

    // --health: a port that answers 503 there is unhealthy too.
    let b = backend("b").await;
    let out = p.run(&[
        "switch",
        "api",
        &b.port.to_string(),
        "--health",
        "/status/503",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    let out = p.run(&[
        "switch",
        "api",
        &b.port.to_string(),
        "--health",
        "/status/200",
        "--drain",
        "1",
        "--rollback-window",
        "20",
        "--fail-threshold",
        "4",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        get(p.addr(), "api.localhost", "/").await.headers["x-backend"],
        "b"
    );
    drop(b); // the new target dies
             // The rollback writes routes.json, which the daemon then reloads, and then its record:
             // two separate moments, so wait for each.
    wait_for(Duration::from_secs(15), "the rollback record", || {
        let s = status_json(&p, "api");
        let last = s["switches"].as_array()?.last()?.clone();
        (last["outcome"] == "rolled_back").then_some(())
    })
    .await;
    let start = std::time::Instant::now();
    loop {
        let r = get(p.addr(), "api.localhost", "/").await;
        if r.status == 200 && r.headers["x-backend"] == "a" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no rollback: {}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = status_json(&p, "api");
    let last = s["switches"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["outcome"], "rolled_back", "{s}");
    assert!(last["rollback"]
        .as_str()
        .unwrap()
        .contains("health checks in a row failed"));
    assert_eq!(s["port"], a.port);
    // The history survives a restart.
    p.ok(&["proxy", "stop"]);
    p.ok(&["proxy", "start"]);
    // refused, refused (503 on --health), switched, rolled back.
    assert_eq!(
        status_json(&p, "api")["switches"].as_array().unwrap().len(),
        4
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redeploys_show_in_status_and_metrics_and_restart_works_through_the_api() {
    let p = Portok::new();
    let dir = project(&p);
    let script = app_script();
    let app = p.spawn_app(
        &dir,
        &["run", "web", "--rollback-window", "0", "--", &script],
    );
    app.wait_for("web ready in", Duration::from_secs(30)).await;
    let token = std::fs::read_to_string(p.state().join("admin.token")).unwrap();
    let r = admin(&p, "POST", "/api/routes/web/restart", Some(token.trim())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let s = status_json(&p, "web");
    assert_eq!(s["kind"], "app");
    assert_eq!(s["generation"], 2);
    assert_eq!(s["last_redeploy"]["outcome"], "ok");
    assert_eq!(s["last_redeploy"]["reason"], "restart requested");
    std::fs::write(dir.join("broken"), "").unwrap();
    let out = p.run(&["restart", "web"]);
    assert_eq!(out.status.code(), Some(1));
    let s = status_json(&p, "web");
    assert_eq!(s["last_redeploy"]["outcome"], "failed");
    let m = admin(&p, "GET", "/metrics", None).await.text();
    assert!(
        m.contains("portok_redeploys_total{route=\"web\",outcome=\"ok\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("portok_redeploys_total{route=\"web\",outcome=\"failed\"} 1"),
        "{m}"
    );
    let logs = p.run(&["logs", "web", "-n", "50"]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("hello: listening"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_lists_routes_without_javascript_and_in_chromium() {
    let p = Portok::new();
    let b = backend("shop").await;
    p.ok(&["alias", "shop", &b.port.to_string()]);
    get(p.addr(), "shop.localhost", "/").await;
    let page = admin(&p, "GET", "/", None).await;
    assert_eq!(page.status, 200);
    assert!(page.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text();
    assert!(
        html.contains("shop.localhost") && html.contains("badge live"),
        "server-rendered rows"
    );
    assert!(html.contains("name=\"viewport\""), "phone-sized windows");
    assert!(
        !html.contains("http://") || !html.contains("<script src=\"http"),
        "no CDN"
    );

    // The event stream sends a status snapshot.
    let resp = open_stream(
        p.addr(),
        hyper::Request::get("/api/events")
            .header("host", "portok.localhost")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    use http_body_util::BodyExt;
    while !seen.contains("event: status") {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("status event")
            .unwrap()
            .unwrap();
        if let Ok(d) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&d));
        }
    }
    assert!(seen.contains("shop.localhost"));

    let Some(chromium) = chromium() else {
        return missing("chromium", "apt-get install chromium");
    };
    let mut cmd = std::process::Command::new(chromium);
    cmd.args(CHROMIUM_FLAGS)
        .arg(format!(
            "--user-data-dir={}",
            p.dir.path().join("chromium-profile").display()
        ))
        .args([
            "--dump-dom",
            &format!("http://portok.localhost:{}/", p.port),
        ]);
    let out = tokio::task::spawn_blocking(move || output_within(cmd, Duration::from_secs(60)))
        .await
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("shop.localhost"),
        "chromium did not render routes: {dom}\n{}",
        stderr(&out)
    );
    // The script ran: it rewrote the header facts with live totals.
    let rendered = dom
        .match_indices(" requests · ")
        .any(|(i, m)| dom[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()));
    assert!(rendered, "script did not run: {dom}");
}
