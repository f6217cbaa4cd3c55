//! Live reload (issue: the browser refreshes after each redeploy, failed builds in an overlay).

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::time::Duration;

const TAG: &str = "<script src=\"/__portok/reload.js\" defer></script>";

async fn nav(p: &Portok, host: &str, path: &str) -> Reply {
    request(
        p.addr(),
        hyper::Request::get(path)
            .header("host", host)
            .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
            .header("accept-encoding", "gzip, br")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tag_is_injected_exactly_into_html_navigations() {
    let p = Portok::new();
    let b = backend("app").await;
    p.ok(&["alias", "app", &b.port.to_string(), "--reload"]);

    // HTML with Content-Length: tag appended, length fixed, Accept-Encoding not forwarded.
    let r = nav(&p, "app.localhost", "/html").await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.ends_with(&format!("</html>{TAG}")), "{text}");
    assert_eq!(r.headers["content-length"], text.len().to_string());
    assert_eq!(
        r.headers["x-seen-accept-encoding"], "-",
        "navigations ask for plain pages"
    );

    // Chunked HTML: appended at the end of the stream.
    let r = nav(&p, "app.localhost", "/html-chunked").await;
    assert!(r.text().ends_with(&format!("</html>{TAG}")), "{}", r.text());
    assert!(r.text().contains("<p>streamed</p>"));

    // Never otherwise.
    for path in ["/json", "/html-gzip", "/html404"] {
        let r = nav(&p, "app.localhost", path).await;
        assert!(!r.text().contains("__portok"), "{path}: {}", r.text());
    }
    let r = get(p.addr(), "app.localhost", "/html").await; // no Accept: text/html
    assert!(!r.text().contains("__portok"));
    assert_eq!(r.headers["content-length"], r.text().len().to_string());

    // SSE passes untouched, even to a browser.
    let resp = open_stream(
        p.addr(),
        hyper::Request::get("/sse")
            .header("host", "app.localhost")
            .header("accept", "text/html, text/event-stream")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "data: one\n\n");

    // WebSocket still works byte for byte.
    use futures_util::{SinkExt, StreamExt};
    let s = tokio::net::TcpStream::connect(p.addr()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("ws://app.localhost/ws", s)
        .await
        .unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text("x"))
        .await
        .unwrap();
    assert_eq!(
        ws.next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .as_str(),
        "x"
    );

    // The proxy answers /__portok/ itself.
    let js = get(p.addr(), "app.localhost", "/__portok/reload.js").await;
    assert_eq!(js.status, 200);
    assert!(js.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(js.text().contains("EventSource(\"/__portok/events\")"));
    assert!(js.text().contains("window.__portok"));
    assert_eq!(
        get(p.addr(), "app.localhost", "/__portok/other")
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_reload_everything_passes_untouched() {
    let p = Portok::new();
    let b = backend("plain").await;
    p.ok(&["alias", "plain", &b.port.to_string()]);
    let r = nav(&p, "plain.localhost", "/html").await;
    assert!(!r.text().contains("__portok"));
    assert_eq!(r.headers["x-seen-accept-encoding"], "gzip, br");
    let js = get(p.addr(), "plain.localhost", "/__portok/reload.js").await;
    assert_eq!(js.text(), "the app's own file");
}

/// Read server-sent events until one of `kind` arrives; returns its data line.
async fn next_event(body: &mut hyper::body::Incoming, buf: &mut String, kind: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(start) = buf.find(&format!("event: {kind}\ndata: ")) {
            let rest = &buf[start..];
            if let Some(end) = rest.find("\n\n") {
                let data = rest[..end].lines().nth(1).unwrap()["data: ".len()..].to_string();
                buf.drain(..start + end + 2);
                return data;
            }
        }
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("no {kind} event; got: {buf}"))
            .expect("stream ended")
            .unwrap();
        if let Ok(d) = frame.into_data() {
            buf.push_str(&String::from_utf8_lossy(&d));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_reports_redeploys_and_failures_with_output() {
    let p = Portok::new();
    let dir = project(&p);
    let script = app_script();
    let app = p.spawn_app(
        &dir,
        &[
            "run",
            "site",
            "--reload",
            "--rollback-window",
            "0",
            "--",
            &script,
        ],
    );
    app.wait_for("site ready in", Duration::from_secs(30)).await;
    let page = nav(&p, "site.localhost", "/").await;
    assert!(
        page.text().ends_with(TAG),
        "hello's page gets the tag: {}",
        page.text()
    );

    let resp = open_stream(
        p.addr(),
        hyper::Request::get("/__portok/events")
            .header("host", "site.localhost")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut buf = String::new();

    std::fs::write(dir.join("version.txt"), "2").unwrap();
    let ev: serde_json::Value =
        serde_json::from_str(&next_event(&mut body, &mut buf, "redeployed").await).unwrap();
    assert_eq!(ev["generation"], 2);

    std::fs::write(dir.join("broken"), "").unwrap();
    let ev: serde_json::Value =
        serde_json::from_str(&next_event(&mut body, &mut buf, "failed").await).unwrap();
    let tail = ev["tail"].as_array().unwrap();
    assert!(
        tail.iter()
            .any(|l| l.as_str().unwrap().contains("error[E0308]")),
        "{ev}"
    );

    // A page connecting while the failure stands hears about it at once.
    let resp2 = open_stream(
        p.addr(),
        hyper::Request::get("/__portok/events")
            .header("host", "site.localhost")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    let mut body2 = resp2.into_body();
    let mut buf2 = String::new();
    next_event(&mut body2, &mut buf2, "failed").await;

    std::fs::remove_file(dir.join("broken")).unwrap();
    std::fs::write(dir.join("version.txt"), "3").unwrap();
    next_event(&mut body, &mut buf, "redeployed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn in_chromium_the_page_follows_redeploys_and_shows_a_failed_build() {
    let p = Portok::new();
    let dir = project(&p);
    let script = app_script();
    let app = p.spawn_app(
        &dir,
        &[
            "run",
            "live",
            "--reload",
            "--rollback-window",
            "0",
            "--",
            &script,
        ],
    );
    app.wait_for("live ready in", Duration::from_secs(30)).await;
    let url = format!("http://live.localhost:{}/", p.port);
    let Some(mut b) = Browser::open(&p.dir.path().join("chromium-profile"), &url).await else {
        return missing("chromium", "apt-get install chromium");
    };
    let text = "document.body ? document.body.innerText : ''";
    let limit = Duration::from_secs(60);
    b.wait_until(text, limit, "version 1", |v| {
        v.as_str().unwrap_or("").contains("version 1")
    })
    .await;
    b.wait_until(
        "!!(window.__portok && window.__portok.connected)",
        limit,
        "event stream",
        |v| v == true,
    )
    .await;

    // Save a change: the page shows the new version with no action.
    std::fs::write(dir.join("version.txt"), "2").unwrap();
    b.wait_until(text, limit, "version 2", |v| {
        v.as_str().unwrap_or("").contains("version 2")
    })
    .await;

    // Break the build: the overlay shows the compiler's error as text.
    b.wait_until(
        "!!(window.__portok && window.__portok.connected)",
        limit,
        "reconnect",
        |v| v == true,
    )
    .await;
    std::fs::write(dir.join("broken"), "").unwrap();
    let overlay = "(function(){var o=document.querySelector('portok-overlay');return o?(o.shadowRoot||o).textContent:null})()";
    b.wait_until(overlay, limit, "the overlay", |v| {
        v.as_str()
            .unwrap_or("")
            .contains("error[E0308]: mismatched types")
    })
    .await;
    assert!(
        b.eval(text).await.as_str().unwrap().contains("version 2"),
        "the last good page stays"
    );

    // Fix it: the overlay goes and the page shows the fix.
    std::fs::remove_file(dir.join("broken")).unwrap();
    std::fs::write(dir.join("version.txt"), "3").unwrap();
    b.wait_until(text, limit, "version 3", |v| {
        v.as_str().unwrap_or("").contains("version 3")
    })
    .await;
    assert_eq!(
        b.eval("document.querySelector('portok-overlay') === null")
            .await,
        true
    );
}
