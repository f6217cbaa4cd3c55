//! The request inspector, history and the dashboard's pages (issue: see what your apps are
//! doing).

use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

fn token(p: &Portok) -> String {
    std::fs::read_to_string(p.state().join("admin.token"))
        .unwrap()
        .trim()
        .to_string()
}

fn json(r: &Reply) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

/// `portok inspect NAME --json [more]`: one JSON object per line.
fn inspect_json(p: &Portok, more: &[&str]) -> Vec<Value> {
    let mut args = vec!["inspect", "shop", "--json"];
    args.extend_from_slice(more);
    p.ok(&args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn post(p: &Portok, host: &str, path: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut b = hyper::Request::post(path).header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    request(
        p.addr(),
        b.body(Full::new(Bytes::from(body.to_string()))).unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_inspector_keeps_requests_masks_secrets_and_replays_them() {
    let p = Portok::new();
    let b = backend("shop").await;
    p.ok(&["alias", "shop", &b.port.to_string()]);
    let r = hyper::Request::get("/items?page=2")
        .header("host", "shop.localhost")
        .header("authorization", "Bearer s3cret")
        .header("cookie", "session=abc")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(request(p.addr(), r).await.status, 200);
    assert_eq!(
        get(p.addr(), "shop.localhost", "/status/404").await.status,
        404
    );
    assert_eq!(
        get(p.addr(), "shop.localhost", "/html-gzip").await.status,
        200
    );
    let posted = post(
        &p,
        "shop.localhost",
        "/upload",
        r#"{"n":1}"#,
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(posted.status, 200);

    // The terminal view: one JSON object a request, every field the issue names.
    let list = inspect_json(&p, &[]);
    assert_eq!(list.len(), 4, "{list:?}");
    let first = &list[0];
    for key in [
        "id",
        "time",
        "method",
        "path",
        "status",
        "duration_ms",
        "bytes_in",
        "bytes_out",
        "generation",
        "port",
        "request_headers",
        "response_headers",
    ] {
        assert!(!first[key].is_null(), "{key} missing: {first}");
    }
    assert_eq!(first["path"], "/items?page=2");
    assert_eq!(first["port"], b.port);
    let headers = first["request_headers"].to_string();
    assert!(
        !headers.contains("s3cret") && !headers.contains("session=abc"),
        "{headers}"
    );
    assert!(headers.contains("(hidden, 13 characters)"), "{headers}");
    let shown = inspect_json(&p, &["--show-secrets"]);
    assert!(shown[0]["request_headers"]
        .to_string()
        .contains("Bearer s3cret"));
    assert_eq!(list[1]["status"], 404);
    assert!(first["bytes_out"].as_u64().unwrap() > 0);
    let lines = p.ok(&["inspect", "shop"]);
    assert!(
        lines.lines().any(|l| l.contains("GET /status/404  404")),
        "{lines}"
    );

    // Bodies are not kept by default, so a request with one cannot be replayed.
    let tk = token(&p);
    let replay = |id: u64| {
        let path = format!("/api/routes/shop/requests/{id}/replay");
        let tk = tk.clone();
        let p = &p;
        async move { admin(p, "POST", &path, Some(&tk)).await }
    };
    let r = replay(4).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        json(&r)["error"]
            .as_str()
            .unwrap()
            .contains("was not kept (body capture was off)"),
        "{}",
        r.text()
    );
    // A request without a body can be: the new answer beside the old.
    let r = replay(1).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = json(&r);
    assert_eq!(v["original"]["id"], 1);
    assert_eq!(v["replay"]["status"], 200);
    assert!(
        v["replay"]["body"]["text"]
            .as_str()
            .unwrap()
            .contains("path=/items?page=2"),
        "{v}"
    );

    // Body capture on (the page's toggle): bodies are kept, pretty-printed, and replayable.
    let r = admin(
        &p,
        "POST",
        "/api/routes/shop/inspect-bodies?on=1",
        Some(&tk),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    post(
        &p,
        "shop.localhost",
        "/upload",
        r#"{"n":2}"#,
        &[("content-type", "application/json")],
    )
    .await;
    get(p.addr(), "shop.localhost", "/html-gzip").await;
    get(p.addr(), "shop.localhost", "/json").await;
    let list = inspect_json(&p, &[]);
    let upload = list
        .iter()
        .find(|r| r["path"] == "/upload" && !r["request_body"].is_null())
        .unwrap();
    assert_eq!(upload["request_body"]["text"], "{\n  \"n\": 2\n}");
    assert_eq!(
        upload["response_body"]["text"],
        format!("7 {:x}", {
            let mut f = Fnv::new();
            f.update(br#"{"n":2}"#);
            f.0
        })
    );
    let gz = list
        .iter()
        .rev()
        .find(|r| r["path"] == "/html-gzip")
        .unwrap();
    assert_eq!(gz["response_body"]["binary"], true, "{gz}");
    assert!(
        gz["response_body"]["note"]
            .as_str()
            .unwrap()
            .starts_with("gzip-encoded"),
        "{gz}"
    );
    let js = list.iter().rev().find(|r| r["path"] == "/json").unwrap();
    assert_eq!(js["response_body"]["text"], "{\n  \"a\": 1\n}");
    let r = replay(upload["id"].as_u64().unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(json(&r)["replay"]["body"]["text"]
        .as_str()
        .unwrap()
        .starts_with("7 "));

    // Unknown routes and ids: 404 JSON; the API wants the token, and no other origin.
    for path in [
        "/api/routes/nope/requests",
        "/api/routes/shop/requests/999999",
    ] {
        let r = admin(&p, "GET", path, None).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(json(&r)["error"].is_string());
    }
    let r = admin(&p, "POST", "/api/routes/shop/requests/1/replay", None).await;
    assert_eq!(r.status, 401);
    let cross = hyper::Request::post("/api/routes/shop/requests/1/replay")
        .header("host", "portok.localhost")
        .header("origin", "http://evil.example")
        .header("x-portok-token", &tk)
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(request(p.addr(), cross).await.status, 403);

    // History: the requests are in this minute's points.
    let h = json(&admin(&p, "GET", "/api/routes/shop/history?window=15m", None).await);
    assert_eq!(h["resolution_secs"], 1);
    let r = admin(&p, "GET", "/api/routes/shop/history?window=2d", None).await;
    assert_eq!(r.status, 400);
    // status shows the inspector's memory.
    let status: Value = serde_json::from_str(&p.ok(&["status", "--json"])).unwrap();
    let shop = &status["routes"][0]["inspector"];
    assert!(
        shop["requests"].as_u64().unwrap() >= 7 && shop["memory_bytes"].as_u64().unwrap() > 0,
        "{shop}"
    );
    assert!(p.ok(&["status"]).contains("inspector: "), "status");

    // A route that is not live cannot be replayed.
    p.ok(&["alias", "--remove", "shop"]);
    let r = replay(1).await;
    assert_eq!(r.status, 404, "{}", r.text());
}

/// The inspector shows the app's side of a request: the head it received and the head it
/// answered with, the same over HTTP/1.1 (the fast path) and HTTP/2 (hyper's front-end).
#[tokio::test(flavor = "multi_thread")]
async fn a_request_shows_the_apps_answer_whichever_front_end_it_took() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let p = Portok::new();
    let b = backend("shop").await;
    p.ok(&["alias", "shop", &b.port.to_string()]);
    assert_eq!(get(p.addr(), "shop.localhost", "/same").await.status, 200);
    let stream = tokio::net::TcpStream::connect(p.addr()).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://shop.localhost:{}/same", p.port))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-portok"));

    let list = wait_for(LONG, "both requests in the inspector", || {
        let l = inspect_json(&p, &[]);
        (l.len() == 2).then_some(l)
    })
    .await;
    assert_eq!(list[0]["version"], "HTTP/1.1");
    assert_eq!(list[1]["version"], "HTTP/2");
    let names = |r: &Value| -> Vec<String> {
        r["response_headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h[0].as_str().unwrap().to_ascii_lowercase())
            .collect()
    };
    let (h1, h2) = (names(&list[0]), names(&list[1]));
    assert!(!h1.is_empty(), "{}", list[0]);
    assert_eq!(h1, h2, "the same answer, the same head");
    assert!(!h1.iter().any(|n| n == "x-portok"), "portok's tag: {h1:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn inspect_follow_streams_lines_and_history_fills_up() {
    let p = Portok::new();
    let b = backend("shop").await;
    p.ok(&["alias", "shop", &b.port.to_string()]);
    let follow = p.spawn_app(p.dir.path(), &["inspect", "shop", "-f"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..3 {
        get(p.addr(), "shop.localhost", &format!("/live/{i}")).await;
    }
    follow.wait_for("GET /live/2  200", LONG).await;
    // One point a second: the three requests show up in the last seconds.
    let mut counted = 0;
    for _ in 0..50 {
        let h = json(&admin(&p, "GET", "/api/routes/shop/history?window=1m", None).await);
        counted = h["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["by_class"][1].as_u64().unwrap())
            .sum::<u64>();
        if counted >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(counted >= 3, "{counted}");
}

/// Keeps a page's screenshot: beside the test's files, and in docs/ with
/// PORTOK_WRITE_DOCS=1 (how the pictures in docs/seeing-traffic.md are made).
fn keep_screenshot(p: &Portok, name: &str, png: &[u8]) {
    assert!(png.starts_with(b"\x89PNG"), "{name} is not a PNG");
    std::fs::write(p.dir.path().join(name), png).unwrap();
    if std::env::var_os("PORTOK_WRITE_DOCS").is_some() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::write(docs.join(name), png).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_route_page_and_inspector_work_in_chromium() {
    if chromium().is_none() {
        return missing("chromium", "apt-get install chromium");
    }
    let p = Portok::new();
    let dir = project(&p);
    let app = p.spawn_app(&dir, &["web", "--", "sh", "-c", &app_script()]);
    app.wait_for("web ready in", LONG).await;
    let base = format!("http://portok.localhost:{}", p.port);
    let profile = p.dir.path().join("chromium");
    let mut b = Browser::open(&profile, &format!("{base}/")).await.unwrap();
    b.wait_until("document.readyState", LONG, "the dashboard", |v| {
        v == "complete"
    })
    .await;

    // The sparkline rises after a burst of requests.
    let spark_max = "(function () { var t = document.querySelector('#routes .spark svg title'); var m = t && /([0-9.]+) at most/.exec(t.textContent); return m ? parseFloat(m[1]) : 0; })()";
    assert!(b.eval(spark_max).await.as_f64().unwrap_or(0.0) < 1.0);
    let burst: Vec<_> = (0..60)
        .map(|_| get(p.addr(), "web.localhost", "/"))
        .collect();
    futures_util::future::join_all(burst).await;
    b.wait_until(spark_max, LONG, "the sparkline to rise", |v| {
        v.as_f64().unwrap_or(0.0) >= 5.0
    })
    .await;
    // A redeploy is marked on it.
    p.ok(&["restart", "web"]);
    b.wait_until(
        "document.querySelectorAll('#routes .spark line.mark').length",
        LONG,
        "a redeploy mark",
        |v| v.as_u64().unwrap_or(0) >= 1,
    )
    .await;
    keep_screenshot(&p, "dashboard.png", &b.screenshot(1280, 420).await);

    // The route's page: its restart button redeploys.
    b.navigate(&format!("{base}/routes/web")).await;
    let generation = || {
        route_of(&p, "web.localhost").unwrap()["generation"]
            .as_u64()
            .unwrap()
    };
    let before = generation();
    b.eval("document.querySelector('button[data-action=restart]').click()")
        .await;
    b.wait_until(
        "window.portokRoute.last ? window.portokRoute.last.ok : null",
        LONG,
        "the restart button's answer",
        |v| v == true,
    )
    .await;
    assert_eq!(generation(), before + 1);
    let text = b.eval("document.body.innerText").await;
    let text = text.as_str().unwrap();
    assert!(
        text.contains("Redeploys") && text.contains("restart requested"),
        "{text}"
    );
    b.wait_until(
        "document.getElementById('log').textContent",
        LONG,
        "the log tail",
        |v| v.as_str().unwrap_or("").contains("hello: listening"),
    )
    .await;
    keep_screenshot(&p, "route.png", &b.screenshot(1280, 900).await);

    // The inspector: a request to this generation, replayed after a redeploy, shows the
    // new generation's answer beside the old one.
    let old = get(p.addr(), "web.localhost", "/replay-me").await;
    assert_eq!(old.status, 200);
    let old_gen = generation();
    p.ok(&["restart", "web"]);
    b.navigate(&format!("{base}/inspect/web")).await;
    let id = b
        .eval("(function () { var r = Array.prototype.find.call(document.querySelectorAll('tr.req'), function (t) { return t.dataset.path === '/replay-me'; }); return r ? r.dataset.id : null; })()")
        .await;
    let id = id.as_str().expect("the request's row").to_string();
    b.eval(&format!(
        "document.querySelector('tr.req[data-id=\"{id}\"]').click()"
    ))
    .await;
    b.wait_until(
        "!!document.getElementById('replay')",
        LONG,
        "the request's details",
        |v| v == true,
    )
    .await;
    b.eval("document.getElementById('replay').click()").await;
    b.wait_until(
        "document.getElementById('replayed').innerText",
        LONG,
        "the replay's answer",
        |v| {
            v.as_str()
                .unwrap_or("")
                .contains(&format!("Replay (generation {})", old_gen + 1))
        },
    )
    .await;
    let detail = b.eval("document.getElementById('detail').innerText").await;
    let detail = detail.as_str().unwrap();
    assert!(
        detail.contains(&format!("generation {old_gen}")),
        "{detail}"
    );
    // New requests appear live.
    get(p.addr(), "web.localhost", "/live-row").await;
    b.wait_until(
        "!!Array.prototype.find.call(document.querySelectorAll('tr.req'), function (t) { return t.dataset.path === '/live-row'; })",
        LONG,
        "a live row",
        |v| v == true,
    )
    .await;
    keep_screenshot(&p, "inspector.png", &b.screenshot(1280, 900).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_to_a_route_that_is_not_live_is_refused() {
    let p = Portok::new();
    let dir = project(&p);
    let hello = hello_bin();
    let app = p.spawn_app(
        &dir,
        &[
            "run",
            "lz",
            "--lazy",
            "--idle-stop",
            "1s",
            "--no-watch",
            "--",
            hello.to_str().unwrap(),
        ],
    );
    app.wait_for("the first request starts it", LONG).await;
    assert_eq!(get(p.addr(), "lz.localhost", "/").await.status, 200);
    app.wait_for("stopping (idle)", LONG).await;
    wait_for(LONG, "the route to be idle", || {
        (route_of(&p, "lz.localhost")?["state"] == "idle").then_some(())
    })
    .await;
    let r = admin(
        &p,
        "POST",
        "/api/routes/lz/requests/1/replay",
        Some(&token(&p)),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        json(&r)["error"]
            .as_str()
            .unwrap()
            .contains("lz is not live (idle)"),
        "{}",
        r.text()
    );
}
