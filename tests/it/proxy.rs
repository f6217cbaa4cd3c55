//! The proxy daemon and route store (issue: proxy daemon and route store).

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread")]
async fn alias_routes_by_host_exact_then_parent() {
    let p = Portok::new();
    let shop = backend("shop").await;
    let api = backend("api").await;
    let url = p.ok(&["alias", "shop", &shop.port.to_string()]);
    assert_eq!(url.trim(), format!("http://shop.localhost:{}", p.port));
    p.ok(&["alias", "api.shop", &api.port.to_string()]);

    let r = get(p.addr(), "shop.localhost", "/users?id=1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-backend"], "shop");
    assert_eq!(echoed(&r.text(), "path"), Some("/users?id=1"));
    assert_eq!(echoed(&r.text(), "host"), Some("shop.localhost"));
    assert!(r.headers.contains_key("x-portok"));

    let r = get(p.addr(), &format!("API.Shop.localhost:{}", p.port), "/").await;
    assert_eq!(r.headers["x-backend"], "api");
    // A tenant subdomain goes to the longest registered parent.
    let r = get(p.addr(), "t1.shop.localhost", "/").await;
    assert_eq!(r.headers["x-backend"], "shop");
    let r = get(p.addr(), "t1.api.shop.localhost", "/").await;
    assert_eq!(r.headers["x-backend"], "api");

    // Unknown host: 404 naming it, listing live routes for browsers.
    let r = get(p.addr(), "nope.localhost", "/").await;
    assert_eq!(r.status, 404);
    assert!(
        r.text().contains("no app registered for nope.localhost"),
        "{}",
        r.text()
    );
    assert!(r.headers.contains_key("x-portok"));
    let html = get_html(p.addr(), "<b>x</b>.localhost", "/").await;
    assert_eq!(html.status, 404);
    let page = html.text();
    assert!(page.contains("&lt;b&gt;x&lt;/b&gt;.localhost"), "{page}");
    assert!(!page.contains("<b>x</b>"));
    assert!(
        page.contains("api.shop.localhost"),
        "live routes listed: {page}"
    );

    // list, get, remove.
    let list: serde_json::Value = serde_json::from_str(&p.ok(&["list", "--json"])).unwrap();
    let arr = list.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    let e = arr
        .iter()
        .find(|e| e["hostname"] == "shop.localhost")
        .unwrap();
    assert_eq!(e["kind"], "alias");
    assert_eq!(e["pid"], 0);
    assert_eq!(e["port"], shop.port);
    assert_eq!(e["url"], format!("http://shop.localhost:{}", p.port));
    assert!(p.ok(&["list"]).contains("shop.localhost"));
    assert_eq!(
        p.ok(&["get", "api.shop"]).trim(),
        format!("http://api.shop.localhost:{}", p.port)
    );

    p.ok(&["alias", "--remove", "api.shop"]);
    // The very next request already sees the change.
    let r = get(p.addr(), "api.shop.localhost", "/").await;
    assert_eq!(r.headers["x-backend"], "shop");
    let out = p.run(&["alias", "--remove", "api.shop"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no route named api.shop.localhost"));
}

#[tokio::test(flavor = "multi_thread")]
async fn alias_change_is_served_by_the_next_request() {
    let p = Portok::new();
    let a = backend("a").await;
    let b = backend("b").await;
    p.ok(&["alias", "web", &a.port.to_string()]);
    for i in 0..5 {
        let (target, name) = if i % 2 == 0 { (&b, "b") } else { (&a, "a") };
        p.ok(&["alias", "web", &target.port.to_string()]);
        let r = get(p.addr(), "web.localhost", "/").await;
        assert_eq!(r.headers["x-backend"], name, "round {i}");
    }
}

/// An app that speaks only HTTP/2 gets its header fields by the same rules as an HTTP/1.1
/// app's head: forwarding appended, hops counted, hop-by-hop fields and those Connection
/// names dropped, cookies on one field, `te: trailers`, and no Host (`:authority` is it).
#[tokio::test(flavor = "multi_thread")]
async fn an_http2_only_app_gets_the_same_forwarding_fields() {
    let p = Portok::new();
    let b = backend_h2("h2").await;
    p.ok(&["alias", "web", &b.port.to_string(), "--upstream", "h2"]);
    let r = request(
        p.addr(),
        hyper::Request::get("/fields?q=1")
            .header("host", "web.localhost")
            .header("x-portok-hops", "2")
            .header("connection", "keep-alive, x-secret")
            .header("x-secret", "hop-only")
            .header("keep-alive", "timeout=5")
            .header("te", "gzip")
            .header("x-forwarded-for", "10.1.2.3")
            .header("forwarded", "for=10.1.2.3")
            .header("x-forwarded-proto", "https")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("x-custom", "kept")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    let body = r.text();
    assert_eq!(echoed(&body, "backend"), Some("h2"), "{body}");
    assert_eq!(
        echoed(&body, "path"),
        Some("http://web.localhost/fields?q=1"),
        "{body}"
    );
    assert_eq!(echoed(&body, "host"), None, "{body}");
    assert_eq!(
        echoed(&body, "x-forwarded-for"),
        Some("10.1.2.3, 127.0.0.1")
    );
    assert_eq!(
        echoed(&body, "forwarded"),
        Some("for=10.1.2.3, for=127.0.0.1;host=web.localhost;proto=http")
    );
    assert_eq!(
        echoed(&body, "x-forwarded-proto"),
        Some("https"),
        "the client's is kept"
    );
    assert_eq!(echoed(&body, "x-forwarded-host"), Some("web.localhost"));
    assert_eq!(
        echoed(&body, "x-forwarded-port"),
        Some(p.port.to_string().as_str())
    );
    assert_eq!(echoed(&body, "x-portok-hops"), Some("3"));
    assert_eq!(echoed(&body, "x-secret"), None, "{body}");
    assert_eq!(echoed(&body, "keep-alive"), None, "{body}");
    assert_eq!(echoed(&body, "te"), Some("trailers"), "{body}");
    assert_eq!(echoed(&body, "cookie"), Some("a=1; b=2"), "{body}");
    assert_eq!(echoed(&body, "x-custom"), Some("kept"), "{body}");
    let fields = body.lines().filter(|l| l.contains('=')).count();
    // backend, path, and the nine fields above.
    assert_eq!(fields, 11, "no field twice, none left over: {body}");
}

/// A body that came whole before portok sent the request on (a short message, then its
/// last frame with END_STREAM, or its trailers) reaches an HTTP/2-only app whole: no frame
/// after the first is taken for the end. The client here writes all its frames at once.
#[tokio::test]
async fn an_http2_only_app_gets_every_frame_of_a_body_that_came_at_once() {
    let p = Portok::new();
    let b = backend_h2("h2").await;
    p.ok(&["alias", "web", &b.port.to_string(), "--upstream", "h2"]);
    let tcp = tokio::net::TcpStream::connect(p.addr()).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    for trailers in [false, true] {
        let mut c = client.clone().ready().await.unwrap();
        let req = http::Request::post("http://web.localhost/upload")
            .body(())
            .unwrap();
        // Queued before the connection's task runs (this runtime has one thread), so the
        // head and both frames go in one write.
        let (resp, mut tx) = c.send_request(req, false).unwrap();
        tx.send_data(Bytes::from_static(b"one"), false).unwrap();
        if trailers {
            tx.send_data(Bytes::from_static(b"two"), false).unwrap();
            let mut t = http::HeaderMap::new();
            t.insert("x-end", http::HeaderValue::from_static("1"));
            tx.send_trailers(t).unwrap();
        } else {
            tx.send_data(Bytes::from_static(b"two"), true).unwrap();
        }
        let resp = tokio::time::timeout(std::time::Duration::from_secs(10), resp)
            .await
            .expect("the app's answer")
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut got = Vec::new();
        while let Some(chunk) = body.data().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        let got = String::from_utf8_lossy(&got);
        assert!(
            got.starts_with("6 "),
            "the app got {got:?} of \"onetwo\" (trailers: {trailers})"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_headers_and_hop_counter() {
    let p = Portok::new();
    let b = backend("b").await;
    p.ok(&["alias", "web", &b.port.to_string()]);
    let r = request(
        p.addr(),
        hyper::Request::get("/")
            .header("host", "web.localhost")
            .header("x-portok-hops", "2")
            .header("connection", "keep-alive, x-secret")
            .header("x-secret", "hop-only")
            .header("keep-alive", "timeout=5")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    let body = r.text();
    assert_eq!(echoed(&body, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(echoed(&body, "x-forwarded-proto"), Some("http"));
    assert_eq!(echoed(&body, "x-forwarded-host"), Some("web.localhost"));
    assert_eq!(
        echoed(&body, "x-forwarded-port"),
        Some(p.port.to_string().as_str())
    );
    assert_eq!(
        echoed(&body, "forwarded"),
        Some("for=127.0.0.1;host=web.localhost;proto=http"),
        "RFC 7239 Forwarded"
    );
    assert_eq!(echoed(&body, "x-portok-hops"), Some("3"));
    assert_eq!(
        echoed(&body, "x-secret"),
        None,
        "headers named by Connection are hop-by-hop"
    );
    assert_eq!(echoed(&body, "keep-alive"), None);

    // A Forwarded header from an earlier proxy is kept, ours appended; an IPv6 client is
    // quoted and bracketed.
    let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, p.port));
    let r = request(
        v6,
        hyper::Request::get("/")
            .header("host", "web.localhost")
            .header("forwarded", "for=192.0.2.1;proto=https")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(
        echoed(&r.text(), "forwarded"),
        Some("for=192.0.2.1;proto=https, for=\"[::1]\";host=web.localhost;proto=http")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn loop_missing_host_and_dead_app_pages() {
    let p = Portok::new();
    let b = backend("b").await;
    p.ok(&["alias", "web", &b.port.to_string()]);
    let dead_port = free_port();
    p.ok(&["alias", "gone", &dead_port.to_string()]);

    let r = request(
        p.addr(),
        hyper::Request::get("/")
            .header("host", "web.localhost")
            .header("x-portok-hops", "5")
            .header("accept", "text/html")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 508);
    assert!(r.text().contains("loop"), "{}", r.text());

    let r = get(p.addr(), "gone.localhost", "/").await;
    assert_eq!(r.status, 502);
    assert!(
        r.text().contains(&format!("127.0.0.1:{dead_port}")),
        "{}",
        r.text()
    );
    assert!(r.headers.contains_key("x-portok"));

    // HTTP/1.0 without Host.
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.starts_with("HTTP/1.0 400") || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn absolute_form_for_an_unrouted_host_is_never_forwarded() {
    let p = Portok::new();
    let b = backend("b").await;
    p.ok(&["alias", "web", &b.port.to_string()]);
    // An open proxy would fetch this; portok must answer 404 itself.
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    let req = format!(
        "GET http://127.0.0.1:{}/ HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n",
        b.port
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    assert!(!text.contains("backend=b"));
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_prior_knowledge_is_forwarded_to_http1_upstream() {
    let p = Portok::new();
    let b = backend("b").await;
    p.ok(&["alias", "web", &b.port.to_string()]);
    let stream = TcpStream::connect(p.addr()).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for i in 0..3 {
        let req = hyper::Request::get(format!("http://web.localhost:{}/h2?i={i}", p.port))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert_eq!(
            echoed(&body, "host"),
            Some(format!("web.localhost:{}", p.port).as_str())
        );
        assert_eq!(echoed(&body, "path"), Some(format!("/h2?i={i}").as_str()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_is_relayed_both_ways() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let p = Portok::new();
    let b = backend("b").await;
    p.ok(&["alias", "ws", &b.port.to_string()]);
    let stream = TcpStream::connect(p.addr()).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://ws.localhost/ws", stream)
        .await
        .expect("websocket handshake through portok");
    assert_eq!(resp.status(), 101);
    for i in 0..20 {
        let msg = format!("hello {i}");
        ws.send(Message::text(msg.clone())).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), msg);
    }
    let big = vec![7u8; 1 << 20];
    ws.send(Message::binary(big.clone())).await.unwrap();
    let back = ws.next().await.unwrap().unwrap();
    assert_eq!(back.into_data().as_ref(), big.as_slice());
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_events_arrive_one_by_one() {
    let p = Portok::new();
    let b = backend("b").await;
    p.ok(&["alias", "events", &b.port.to_string()]);
    let stream = TcpStream::connect(p.addr()).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/sse")
        .header("host", "events.localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    // The first event arrives while the backend is still holding back the second.
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("first event not streamed")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "data: one\n\n");
    b.sse_gate.notify_one();
    let second = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("second event")
        .unwrap()
        .unwrap();
    assert_eq!(second.into_data().unwrap(), "data: two\n\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_bodies_stream_both_ways_intact() {
    const SIZE: u64 = 100 * 1024 * 1024;
    let p = Portok::new();
    let b = backend("b").await;
    p.ok(&["alias", "big", &b.port.to_string()]);

    // Upload 100 MB as a stream and compare the backend's checksum with ours.
    let stream = TcpStream::connect(p.addr()).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
    let producer = tokio::spawn(async move {
        let mut sum = Fnv::new();
        let mut off = 0;
        while off < SIZE {
            let chunk = pattern(off, 1 << 20);
            sum.update(&chunk);
            off += chunk.len() as u64;
            tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.unwrap();
        }
        sum.0
    });
    let body = StreamBody::new(futures_util::stream::poll_fn({
        let mut rx = rx;
        move |cx| rx.poll_recv(cx)
    }));
    let req = hyper::Request::post("/upload")
        .header("host", "big.localhost")
        .body(body)
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(120), send.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let expected = producer.await.unwrap();
    assert_eq!(text, format!("{SIZE} {expected:x}"));

    // Download 100 MB and checksum it as it arrives.
    let stream = TcpStream::connect(p.addr()).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("/download?n={SIZE}"))
        .header("host", "big.localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let mut body = resp.into_body();
    let mut got = Fnv::new();
    let mut want = Fnv::new();
    let mut n = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while let Some(frame) = tokio::time::timeout_at(deadline, body.frame())
        .await
        .unwrap()
    {
        if let Ok(data) = frame.unwrap().into_data() {
            got.update(&data);
            want.update(&pattern(n, data.len()));
            n += data.len() as u64;
        }
    }
    assert_eq!(n, SIZE);
    assert_eq!(got.0, want.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_alias_writers_leave_fifty_routes() {
    let p = Portok::new();
    let children: Vec<_> = (0..50)
        .map(|i| {
            p.command()
                .args(["alias", &format!("app{i}"), &(20000 + i).to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let list: serde_json::Value = serde_json::from_str(&p.ok(&["list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 50);
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.routes_json()).unwrap()).unwrap();
    assert_eq!(raw.as_array().unwrap().len(), 50);
    // Exactly one daemon serves them all.
    let status = p.ok(&["proxy", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["routes"], 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_owner_route_vanishes() {
    let p = Portok::new();
    let b = backend("b").await;
    p.ok(&["proxy", "start"]);
    let mut owner = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    // Another writer (a `portok run`) registered an app route owned by `owner`.
    let routes = serde_json::json!([
        {"hostname": "owned.localhost", "port": b.port, "pid": owner.id()},
    ]);
    // Written whole and renamed into place, as portok's writers do: a plain write could be
    // read half-done by the watcher (and kept aside as corrupt).
    let tmp = p.state().join("routes.json.test-tmp");
    std::fs::write(&tmp, routes.to_string()).unwrap();
    std::fs::rename(&tmp, p.routes_json()).unwrap();
    // The watcher picks up the file; wait for the route to serve.
    let start = std::time::Instant::now();
    while get(p.addr(), "owned.localhost", "/").await.status != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "watcher never loaded the route"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    owner.kill().unwrap();
    owner.wait().unwrap();
    assert!(!p.ok(&["list", "--json"]).contains("owned.localhost"));
    let start = std::time::Instant::now();
    loop {
        if get(p.addr(), "owned.localhost", "/").await.status == 404 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "stale route still served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn alias_refuses_a_name_owned_by_a_live_app_unless_forced() {
    let p = Portok::new();
    std::fs::create_dir_all(p.state()).unwrap();
    let me = std::process::id();
    let routes = serde_json::json!([{"hostname": "taken.localhost", "port": 4999, "pid": me}]);
    std::fs::write(p.routes_json(), routes.to_string()).unwrap();
    let out = p.run(&["alias", "taken", "4000"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert!(std::fs::read_to_string(p.routes_json())
        .unwrap()
        .contains("4999"));
    p.ok(&["alias", "taken", "4000", "--force"]);
    let list = p.ok(&["list", "--json"]);
    assert!(list.contains("4000") && !list.contains("4999"), "{list}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_routes_file_is_reported_and_kept_aside() {
    let p = Portok::new();
    std::fs::create_dir_all(p.state()).unwrap();
    let garbage = b"[{\"hostname\": \"half.localhost\", \"port\": 12";
    std::fs::write(p.routes_json(), garbage).unwrap();
    let out = p.run(&["list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("routes.json") && err.contains("not valid"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(p.routes_json()).unwrap(),
        garbage,
        "a reader never changes it"
    );

    let out = p.run(&["alias", "fresh", "4100"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("moved it to"), "{}", stderr(&out));
    let aside: Vec<_> = std::fs::read_dir(p.state())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("routes.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(
        std::fs::read(aside[0].path()).unwrap(),
        garbage,
        "every byte kept"
    );
    assert!(p.ok(&["list", "--json"]).contains("fresh.localhost"));
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_start_stop_status_and_idempotent_start() {
    let p = Portok::new();
    let out = p.run(&["proxy", "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not running"));

    p.ok(&["proxy", "start"]);
    let pid = p.daemon_pid().expect("pid file");
    let out = p.run(&["proxy", "start"]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("already running"));
    assert_eq!(p.daemon_pid(), Some(pid), "no second daemon");
    let status = p.ok(&["proxy", "status"]);
    assert!(
        status.contains(&format!("port {}", p.port)) && status.contains(&format!("pid {pid}")),
        "{status}"
    );
    assert_eq!(
        std::fs::read_to_string(p.state().join("proxy.port"))
            .unwrap()
            .trim(),
        p.port.to_string()
    );
    // Only loopback addresses are bound.
    let json: serde_json::Value =
        serde_json::from_str(&p.ok(&["proxy", "status", "--json"])).unwrap();
    for addr in json["listening"].as_array().unwrap() {
        let a = addr.as_str().unwrap();
        assert!(
            a.starts_with("127.0.0.1:") || a.starts_with("[::1]:"),
            "{a}"
        );
    }
    // Mode 0700 state dir.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(p.state()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);

    p.ok(&["proxy", "stop"]);
    assert_eq!(p.run(&["proxy", "status"]).status.code(), Some(1));
    assert!(
        TcpStream::connect(p.addr()).await.is_err(),
        "port closed after stop"
    );

    // A daemon killed hard leaves a stale pid file; the next start copes.
    p.ok(&["proxy", "start"]);
    let pid = p.daemon_pid().unwrap();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for(Duration::from_secs(5), "daemon death", || {
        (unsafe { libc::kill(pid, 0) } != 0
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z"))
                .unwrap_or(true))
        .then_some(())
    })
    .await;
    p.ok(&["proxy", "start"]);
    assert_ne!(p.daemon_pid(), Some(pid));
    assert_eq!(get(p.addr(), "x.localhost", "/").await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_start_on_a_taken_port_names_the_port() {
    let p = Portok::new();
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", p.port)).unwrap();
    let out = p.run(&["proxy", "start"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("127.0.0.1:{}", p.port)) && err.contains("in use"),
        "{err}"
    );
    assert!(p.run(&["proxy", "status"]).status.code() == Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_names_exit_2_and_write_nothing() {
    let p = Portok::new();
    for bad in [
        "a b", "a..b", "a/b", "", "portok", "proxy", "-x", "x_y", "ünï",
    ] {
        let out = p.run(&["alias", bad, "4000"]);
        assert_eq!(out.status.code(), Some(2), "name {bad:?}: {}", stderr(&out));
        assert!(!stderr(&out).is_empty());
    }
    assert!(!p.routes_json().exists(), "nothing written");
    assert!(p.daemon_pid().is_none(), "no daemon started");
    let out = p.run(&["get", "a..b"]);
    assert_eq!(out.status.code(), Some(2));
}

/// An app that answers `GET /slow/MS` after MS milliseconds with `done`.
async fn slow_app() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                let ms: u64 = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.strip_prefix("/slow/"))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\ndone",
                    )
                    .await;
            });
        }
    });
    port
}

/// `portok proxy stop` closes the door but lets requests in flight finish (HTTP/1.1 and
/// HTTP/2), and says how many it had to cut at its deadline.
#[tokio::test(flavor = "multi_thread")]
async fn proxy_stop_lets_requests_in_flight_finish_and_says_what_it_cut() {
    let p = Portok::new();
    let port = slow_app().await;
    p.ok(&["alias", "slow", &port.to_string()]);
    let addr = p.addr();
    let h1 = tokio::spawn(async move { try_get(addr, "slow.localhost", "/slow/1500").await });
    let tls = crate::tls::tls_connect(&p, "slow.localhost", &[b"h2"])
        .await
        .unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("https://slow.localhost:{}/slow/1500", p.port))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let h2 = tokio::spawn(async move {
        let resp = h2.send_request(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stop = {
        let mut c = p.command();
        c.args(["proxy", "stop"]);
        tokio::task::spawn_blocking(move || c.output().unwrap())
    };
    let h1 = h1
        .await
        .unwrap()
        .expect("the HTTP/1.1 request in flight was answered");
    assert_eq!((h1.status, h1.text().as_str()), (200, "done"));
    let (status, body) = h2.await.unwrap();
    assert_eq!((status.as_u16(), &body[..]), (200, &b"done"[..]));
    let out = stop.await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("every request in flight finished"),
        "{}",
        stderr(&out)
    );
    assert!(TcpStream::connect(addr).await.is_err(), "closed after stop");

    // A request longer than the deadline is cut, and counted.
    p.ok(&["proxy", "start"]);
    let long = tokio::spawn(async move { try_get(addr, "slow.localhost", "/slow/20000").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let out = p.run(&["proxy", "stop", "--timeout", "0.5"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1 request still in flight after 0.5 s was cut"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(
        long.await.unwrap().is_none(),
        "the cut request got no answer"
    );
}
