//! Real dev servers through portok, as users run them: Vite's and Next's pages and HMR
//! WebSockets over HTTP/1.1, TLS and HTTP/2 extended CONNECT, and in Chromium over https;
//! an axum app under `cargo run`, redeployed on save under load.

use crate::support::*;
use crate::tls::tls_connect;
use bytes::Bytes;
use futures_util::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::path::Path;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::Role;

/// A WebSocket handshake, bounded: a dev server that never answers fails the test.
async fn within<F: std::future::Future>(handshake: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), handshake)
        .await
        .expect("the dev server answered the WebSocket handshake")
}

/// A dev server's first HMR message, read from a connected socket.
async fn first_message<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
        .await
        .expect("Vite's first HMR message")
        .expect("an open socket")
        .expect("a frame");
    msg.into_text().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn vite_serves_and_its_hmr_socket_connects_on_every_path_and_in_chromium() {
    let Some(dir) = npm_fixture("vite") else {
        return missing("npm", "install Node.js 20.19+ with npm");
    };
    let p = Portok::new();
    // As the project's README says: its package.json's dev script is `vite`.
    let app = p.spawn_app(&dir, &["web", "npm", "run", "dev"]);
    app.wait_for("web ready in", Duration::from_secs(120)).await;
    told_the_port(&p, "web.localhost", &app);
    let host = format!("web.localhost:{}", p.port);

    // Vite's client script carries the token its HMR socket must present.
    let client = get(p.addr(), &host, "/@vite/client").await;
    assert_eq!(client.status, 200);
    let script = client.text();
    let token = script
        .split_once("wsToken = \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(t, _)| t.to_string())
        .unwrap_or_else(|| panic!("no wsToken in /@vite/client"));
    let request = |scheme: &str| {
        let mut r = format!("{scheme}://{host}/?token={token}")
            .into_client_request()
            .unwrap();
        r.headers_mut()
            .insert("sec-websocket-protocol", "vite-hmr".parse().unwrap());
        r
    };

    // HTTP/1.1, plain.
    let tcp = tokio::net::TcpStream::connect(p.addr()).await.unwrap();
    let (mut ws, _) = within(tokio_tungstenite::client_async(request("ws"), tcp))
        .await
        .expect("Vite's HMR socket over HTTP/1.1");
    assert!(first_message(&mut ws).await.contains("connected"));

    // HTTP/1.1 in TLS.
    let tls = tls_connect(&p, "web.localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let (mut ws, _) = within(tokio_tungstenite::client_async(request("wss"), tls))
        .await
        .expect("Vite's HMR socket over TLS");
    assert!(first_message(&mut ws).await.contains("connected"));

    // HTTP/2 extended CONNECT (RFC 8441), as Chrome and Firefox open it over h2.
    let tls = tls_connect(&p, "web.localhost", &[b"h2"]).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let page = hyper::Request::get(format!("https://{host}/"))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(send.send_request(page).await.unwrap().status(), 200);
    let mut connect = hyper::Request::connect(format!("https://{host}/?token={token}"))
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "vite-hmr")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    connect
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let resp = send.send_request(connect).await.unwrap();
    assert_eq!(resp.status(), 200, "extended CONNECT");
    let upgraded = hyper::upgrade::on(resp).await.expect("h2 tunnel");
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Client,
        None,
    )
    .await;
    assert!(first_message(&mut ws).await.contains("connected"));

    vite_edit_reaches_the_page(&p, &dir, &host, &app).await;
}

/// The dev server listens on the port portok chose (the route's), on loopback: it was told
/// it through the package script, not found on a port of its own.
fn told_the_port(p: &Portok, host: &str, app: &RunningApp) {
    let port = route_of(p, host).unwrap()["port"].as_u64().unwrap() as u16;
    assert!(
        listens_on_loopback(port),
        "{host}: nothing on 127.0.0.1:{port}\n{}",
        app.text()
    );
    assert!(!app.text().contains("listens on port"), "{}", app.text());
}

/// Chromium, trusting portok's CA, opens the page over https (h2); an edit of message.js
/// reaches it through Vite's HMR: no reload, and no second generation.
async fn vite_edit_reaches_the_page(p: &Portok, dir: &Path, host: &str, app: &RunningApp) {
    let home = p.dir.path().join("chromium-home");
    if !nssdb_trusting(&home, &p.state().join("ca.pem")) {
        return missing("certutil", "apt-get install libnss3-tools");
    }
    let url = format!("https://{host}/");
    let profile = p.dir.path().join("chromium-profile");
    let Some(mut b) = Browser::open_with_home(&profile, Some(&home), &url).await else {
        return missing("chromium", "apt-get install chromium");
    };
    let text = "document.getElementById('msg') && document.getElementById('msg').textContent";
    b.wait_until(text, Duration::from_secs(60), "the page", |v| {
        v == "before edit"
    })
    .await;
    let proto = b
        .eval("performance.getEntriesByType('navigation')[0].nextHopProtocol")
        .await;
    assert_eq!(proto, "h2", "the page came over HTTP/2");
    // Vite's HMR socket is up before the edit: one that is still connecting when it comes
    // polls, then reloads the page (a CI run failed so, on a busy machine).
    b.wait_until(
        "window.hmrConnected === true",
        Duration::from_secs(30),
        "Vite's HMR socket",
        |v| *v == true,
    )
    .await;
    // An edit reaches the open page through Vite's HMR: no reload, no portok redeploy.
    std::fs::write(
        dir.join("message.js"),
        "export const message = 'after edit';\n",
    )
    .unwrap();
    b.wait_until(text, Duration::from_secs(30), "the HMR update", |v| {
        v == "after edit"
    })
    .await;
    assert_eq!(b.eval("window.loads").await, 1, "no full reload");
    let how = b
        .eval("performance.getEntriesByType('navigation')[0].type")
        .await;
    assert_eq!(how, "navigate", "the page was not reloaded");
    assert_eq!(b.eval("window.hmrUpdates").await, 1, "one HMR update");
    assert!(!app.text().contains("generation 2"), "{}", app.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn vite_started_with_pnpm_dev_keeps_its_hmr() {
    let Some(dir) = npm_fixture_as("vite", Some("pnpm")) else {
        return missing("npm", "install Node.js 20.19+ with npm");
    };
    let Some(pnpm) = pnpm_bin() else {
        return missing("pnpm", "npm install -g pnpm");
    };
    std::fs::write(
        dir.join("message.js"),
        "export const message = 'before edit';\n",
    )
    .unwrap();
    let p = Portok::new();
    let path = path_with(&pnpm);
    let app = p.spawn_app_env(&dir, &["web", "pnpm", "dev"], &[("PATH", Path::new(&path))]);
    app.wait_for("web ready in", Duration::from_secs(120)).await;
    assert!(app.text().contains("runs `vite`"), "{}", app.text());
    told_the_port(&p, "web.localhost", &app);
    let host = format!("web.localhost:{}", p.port);
    vite_edit_reaches_the_page(&p, &dir, &host, &app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn next_renders_in_chromium_and_an_edit_arrives_over_its_hmr_socket() {
    let Some(dir) = npm_fixture("next") else {
        return missing("npm", "install Node.js 20.9+ with npm");
    };
    let _ = std::fs::write(
        dir.join("app/message.js"),
        "'use client';\n\nexport default function Message() {\n  return 'before edit';\n}\n",
    );
    let p = Portok::new();
    // As the project's README says: its package.json's dev script is `next dev`.
    let app = p.spawn_app(&dir, &["site", "npm", "run", "dev"]);
    app.wait_for("site ready in", Duration::from_secs(180))
        .await;
    told_the_port(&p, "site.localhost", &app);
    let host = format!("site.localhost:{}", p.port);

    // Next's HMR socket (`/_next/hmr` since Next 16; `/_next/webpack-hmr` before) through
    // portok, over HTTP/1.1: Next greets a new client.
    let tcp = tokio::net::TcpStream::connect(p.addr()).await.unwrap();
    let url = format!("ws://{host}/_next/hmr?id=portok-test");
    let (mut ws, _) = within(tokio_tungstenite::client_async(url, tcp))
        .await
        .expect("Next's HMR socket over HTTP/1.1");
    assert!(!first_message(&mut ws).await.is_empty());
    drop(ws);

    next_edits_reach_the_page(&p, &dir, &host, &app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn next_started_with_pnpm_dev_keeps_its_hmr() {
    let Some(dir) = npm_fixture_as("next", Some("pnpm")) else {
        return missing("npm", "install Node.js 20.9+ with npm");
    };
    let Some(pnpm) = pnpm_bin() else {
        return missing("pnpm", "npm install -g pnpm");
    };
    let _ = std::fs::write(
        dir.join("app/message.js"),
        "'use client';\n\nexport default function Message() {\n  return 'before edit';\n}\n",
    );
    let p = Portok::new();
    let path = path_with(&pnpm);
    let app = p.spawn_app_env(
        &dir,
        &["site", "pnpm", "dev"],
        &[("PATH", Path::new(&path))],
    );
    app.wait_for("site ready in", Duration::from_secs(180))
        .await;
    assert!(app.text().contains("runs `next dev`"), "{}", app.text());
    told_the_port(&p, "site.localhost", &app);
    let host = format!("site.localhost:{}", p.port);
    next_edits_reach_the_page(&p, &dir, &host, &app).await;
}

/// Chromium opens Next's page over https; edits of app/message.js reach it over HMR with
/// the page's state kept, and portok starts no second generation.
async fn next_edits_reach_the_page(p: &Portok, dir: &Path, host: &str, app: &RunningApp) {
    let home = p.dir.path().join("chromium-home");
    if !nssdb_trusting(&home, &p.state().join("ca.pem")) {
        return missing("certutil", "apt-get install libnss3-tools");
    }
    let url = format!("https://{host}/");
    let profile = p.dir.path().join("chromium-profile");
    let Some(mut b) = Browser::open_with_home(&profile, Some(&home), &url).await else {
        return missing("chromium", "apt-get install chromium");
    };
    let text = "document.getElementById('msg') && document.getElementById('msg').textContent";
    b.wait_until(text, Duration::from_secs(120), "the page", |v| {
        v == "before edit"
    })
    .await;
    // Each edit reaches the open page. Next reloads the page instead when an edit comes
    // before the page has subscribed to its chunks' updates (right after a load, or while a
    // fresh server compiles), so edits repeat, a while apart, until one arrives over HMR
    // with the page's state kept: with a broken HMR socket none would.
    let mut kept = false;
    for round in 1..=5 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        b.eval("window.portokMark = 7").await;
        let word = format!("edit {round}");
        std::fs::write(
            dir.join("app/message.js"),
            format!(
                "'use client';\n\nexport default function Message() {{\n  return '{word}';\n}}\n"
            ),
        )
        .unwrap();
        b.wait_until(text, Duration::from_secs(60), "the HMR update", |v| {
            v == &word
        })
        .await;
        if b.eval("window.portokMark").await == 7 {
            kept = true;
            break;
        }
    }
    assert!(kept, "every edit reloaded the page: {}", app.text());
    assert!(!app.text().contains("generation 2"), "{}", app.text());
}

/// The version line of the axum fixture's page, e.g. `version one`.
async fn axum_version(p: &Portok) -> String {
    let page = get(p.addr(), "app.localhost", "/").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let text = page.text();
    let at = text.find("version ").expect("a version line");
    text[at..].split(" pid").next().unwrap().to_string()
}

/// A real Rust server-rendered app (axum) under `portok app cargo run`: each save
/// recompiles and redeploys it while clients send requests, and none fails; a compile error
/// keeps the last good build serving; the fix is redeployed.
#[tokio::test(flavor = "multi_thread")]
async fn an_axum_app_redeploys_on_save_under_load_and_survives_a_compile_error() {
    let p = Portok::new();
    let dir = fixture_copy("axum", p.dir.path());
    // Kept between runs, so only the first run builds axum itself.
    let target = test_cache().join("cargo-axum-target");
    let main = dir.join("src/main.rs");
    let source = std::fs::read_to_string(&main).unwrap();
    let edit = |version: &str| {
        let changed = source.replace(
            "const VERSION: &str = \"one\";",
            &format!("const VERSION: &str = {version};"),
        );
        assert_ne!(changed, source);
        std::fs::write(&main, changed).unwrap();
    };
    let app = p.spawn_app_env(
        &dir,
        &["app", "cargo", "run", "--locked"],
        &[("CARGO_TARGET_DIR", &target)],
    );
    app.wait_for("app ready in", Duration::from_secs(300)).await;
    assert_eq!(axum_version(&p).await, "version one");

    let load = Load::start(p.addr(), "app.localhost", 4);
    edit("\"two\"");
    app.wait_for("generation 2 ready", Duration::from_secs(120))
        .await;
    app.wait_for("switched; draining generation 1", Duration::from_secs(30))
        .await;
    assert_eq!(axum_version(&p).await, "version two");

    // A type error: cargo fails, generation 2 keeps serving.
    edit("2");
    app.wait_for(
        "before it was ready; still serving generation 2",
        Duration::from_secs(120),
    )
    .await;
    let text = app.text();
    assert!(
        text.contains("error[E0308]"),
        "the compiler's error is shown: {text}"
    );
    assert_eq!(axum_version(&p).await, "version two");

    edit("\"three\"");
    app.wait_for("switched; draining generation 2", Duration::from_secs(120))
        .await;
    assert_eq!(axum_version(&p).await, "version three");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, _, failures) = load.stop().await;
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(ok > 100, "the load ran: {ok} answers");
}
