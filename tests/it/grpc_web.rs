//! gRPC-Web through portok to the tonic server of examples/grpc.rs, which speaks only gRPC
//! (no tonic-web in it): tonic-web's own client over HTTP/1.1, grpc-web-text as a browser
//! library sends it, the CORS preflight, and a page in Chromium calling across origins.

use crate::support::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_util::StreamExt;
use http_body_util::Full;
use hyper::Request;
use std::time::Duration;
use tonic::Code;

#[path = "../../examples/grpc/echo.rs"]
#[allow(clippy::all, dead_code)]
mod echo;

use echo::echo_client::EchoClient;
use echo::{CountRequest, Msg};

const LONG: Duration = Duration::from_secs(60);

fn msg(text: &str) -> Msg {
    Msg {
        text: text.into(),
        blob: Vec::new(),
    }
}

async fn tonic_app(p: &Portok) -> RunningApp {
    let bin = example_bin("grpc");
    let app = p.spawn_app(&project(p), &["api", bin.to_str().unwrap()]);
    app.wait_for("api ready in", LONG).await;
    app
}

/// One gRPC message frame holding `Msg { text }` (field 1; texts under 128 bytes).
fn frame_of(text: &str) -> Vec<u8> {
    let mut pb = vec![0x0a, text.len() as u8];
    pb.extend_from_slice(text.as_bytes());
    let mut frame = vec![0];
    frame.extend_from_slice(&(pb.len() as u32).to_be_bytes());
    frame.extend_from_slice(&pb);
    frame
}

/// A grpc-web-text body as bytes. Each piece may be padded on its own (portok sends what it
/// has when the app pauses), so it is decoded piece by piece, as clients do.
fn decode_text(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'=')
            .map_or(rest.len(), |i| (i / 4 + 1) * 4);
        out.extend(STANDARD.decode(&rest[..end]).expect("a base64 answer"));
        rest = &rest[end..];
    }
    out
}

/// CountRequest { n } as a gRPC message frame (field 1, a varint under 128).
fn count_frame(n: u8) -> Vec<u8> {
    vec![0, 0, 0, 0, 2, 0x08, n]
}

/// A gRPC-Web body's frames: (flag, payload).
fn frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        out.push((body[0], body[5..5 + len].to_vec()));
        body = &body[5 + len..];
    }
    assert!(body.is_empty(), "a cut frame at the end: {body:?}");
    out
}

/// tonic-web's client (the Rust gRPC-Web client: HTTP/1.1, application/grpc-web) calls the
/// gRPC-only tonic server through portok: unary, a server stream of 1,000 messages, and
/// NOT_FOUND with its message and trailing metadata (tonic sends it trailers-only: in the
/// headers).
#[tokio::test(flavor = "multi_thread")]
async fn tonic_webs_client_calls_a_grpc_only_server_through_portok() {
    let p = Portok::new();
    let _app = tonic_app(&p).await;
    let addr = p.addr();
    // Every connection goes to portok; the URI's authority is the Host it routes on.
    let connect = tower::service_fn(move |_: http::Uri| {
        Box::pin(async move {
            tokio::net::TcpStream::connect(addr)
                .await
                .map(hyper_util::rt::TokioIo::new)
        })
    });
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connect);
    let web = tonic_web::GrpcWebClientService::new(http);
    let origin: http::Uri = format!("http://api.localhost:{}", p.port).parse().unwrap();
    let mut c = EchoClient::with_origin(web, origin);

    let said = c.say(msg("hi")).await.unwrap().into_inner();
    assert_eq!(said.text, "v1: hi");

    let mut stream = c
        .count(CountRequest { n: 1000 })
        .await
        .unwrap()
        .into_inner();
    let mut next = 0;
    while let Some(m) = stream.next().await {
        assert_eq!(m.unwrap().text, next.to_string());
        next += 1;
    }
    assert_eq!(next, 1000);

    let status = c.find(msg("x")).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), "no such thing");
    assert_eq!(status.metadata().get("x-why").unwrap(), "testing");

    // The inspector sees gRPC calls: the status from the app's trailers.
    let calls = p.ok(&["inspect", "api", "--json"]);
    let find = calls
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|c| c["path"] == "/echo.Echo/Find")
        .unwrap_or_else(|| panic!("no Find call in {calls}"));
    assert_eq!(find["grpc"]["status_name"], "NOT_FOUND", "{find}");
}

/// grpc-web-text (base64, as grpc-web's JavaScript client sends it by default) over
/// HTTP/1.1: the app's answer comes back in base64, its status in the last frame; the
/// preflight is answered for a page on this machine and refused, with the reason, for one
/// elsewhere; a body that is not base64 does not reach the app as a call.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_web_text_and_its_preflight_are_answered() {
    let p = Portok::new();
    let _app = tonic_app(&p).await;
    let host = format!("api.localhost:{}", p.port);
    let page = format!("https://web.localhost:{}", p.port);
    let call = |method: &str, body: String, origin: &str| {
        Request::post(format!("/echo.Echo/{method}"))
            .header("host", &host)
            .header("content-type", "application/grpc-web-text+proto")
            .header("accept", "application/grpc-web-text")
            .header("x-grpc-web", "1")
            .header("origin", origin)
            .body(Full::new(body.into()))
            .unwrap()
    };

    let r = request(
        p.addr(),
        call("Say", STANDARD.encode(frame_of("hi")), &page),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["content-type"], "application/grpc-web-text");
    assert_eq!(r.headers["access-control-allow-origin"], page.as_str());
    assert_eq!(r.headers["access-control-allow-credentials"], "true");
    // The page may read every header of the answer, the app's and portok's.
    let expose = r.headers["access-control-expose-headers"].to_str().unwrap();
    assert!(expose.contains("x-portok"), "{expose}");
    let raw = decode_text(&r.body);
    let got = frames(&raw);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], (0, frame_of("v1: hi")[5..].to_vec()));
    assert_eq!(got[1].0, 0x80);
    let trailers = String::from_utf8(got[1].1.clone()).unwrap();
    assert!(trailers.contains("grpc-status:0\r\n"), "{trailers:?}");

    // A call whose message is cut mid-way: the app's INTERNAL, a trailers-only answer (its
    // status in the headers, which the page may read).
    let cut = STANDARD.encode(&frame_of("hello")[..6]);
    let r = request(p.addr(), call("Say", cut, &page)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["grpc-status"], "13", "{:?}", r.headers);
    assert!(r.body.is_empty(), "{}", r.text());
    assert_eq!(r.headers["access-control-allow-origin"], page.as_str());

    // A server stream in base64: every message, in order, then the status.
    let r = request(
        p.addr(),
        call("Count", STANDARD.encode(count_frame(3)), &page),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = frames(&decode_text(&r.body));
    let texts: Vec<_> = got
        .iter()
        .map(|(flag, m)| (*flag, m.get(2..).unwrap_or_default().to_vec()))
        .collect();
    assert_eq!(
        texts[..3],
        [(0, b"0".to_vec()), (0, b"1".to_vec()), (0, b"2".to_vec())],
        "{got:?}"
    );
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[3].0, 0x80);

    // A body that is not base64 never reaches the app as a call; the page may read why.
    let r = request(p.addr(), call("Say", "!!!!".into(), &page)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("not base64"), "{}", r.text());
    assert_eq!(r.headers["access-control-allow-origin"], page.as_str());

    let preflight = |origin: &str| {
        Request::options("/echo.Echo/Say")
            .header("host", &host)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,x-grpc-web,x-user-agent",
            )
            .body(Full::default())
            .unwrap()
    };
    let r = request(p.addr(), preflight(&page)).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.headers["access-control-allow-origin"], page.as_str());
    assert_eq!(
        r.headers["access-control-allow-headers"],
        "content-type,x-grpc-web,x-user-agent"
    );
    let r = request(p.addr(), preflight("https://evil.example")).await;
    assert_eq!(r.status, 403);
    assert!(r.text().contains("pages on this machine"), "{}", r.text());
    assert!(!r.headers.contains_key("access-control-allow-origin"));

    // A call that names a page elsewhere (a client that is not a browser, or one that did
    // not ask first) is answered with no CORS headers: a browser keeps the answer from it.
    let evil = "https://evil.example";
    let r = request(p.addr(), call("Say", STANDARD.encode(frame_of("hi")), evil)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.headers.contains_key("access-control-allow-origin"));
}

/// Chromium, trusting portok's CA, on a page at web.localhost calls the tonic server at
/// api.localhost with fetch(): a cross-origin grpc-web-text call over HTTPS (h2), with its
/// preflight. The page reads the answer and the status in its last frame.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_in_chromium_calls_a_grpc_server_through_portok() {
    let p = Portok::new();
    let _api = tonic_app(&p).await;
    let web = p.spawn_app(&project(&p), &["web", "--", "sh", "-c", &app_script()]);
    web.wait_for("web ready in", LONG).await;
    let home = p.dir.path().join("chromium-home");
    if !nssdb_trusting(&home, &p.state().join("ca.pem")) {
        return missing("certutil", "apt-get install libnss3-tools");
    }
    let profile = p.dir.path().join("chromium-profile");
    let page = format!("https://web.localhost:{}/", p.port);
    let Some(mut b) = Browser::open_with_home(&profile, Some(&home), &page).await else {
        return missing("chromium", "apt-get install chromium");
    };
    // The tab starts on about:blank, complete at once, whose origin is opaque ("null").
    let loaded = format!("web.localhost:{} complete", p.port);
    b.wait_until(
        "location.host + ' ' + document.readyState",
        LONG,
        "the page",
        |v| *v == *loaded,
    )
    .await;
    let script = format!(
        r#"(async () => {{
  const text = new TextEncoder().encode("from chromium");
  const frame = new Uint8Array(7 + text.length);
  frame[4] = 2 + text.length; frame[5] = 0x0a; frame[6] = text.length; frame.set(text, 7);
  const r = await fetch("https://api.localhost:{port}/echo.Echo/Say", {{
    method: "POST",
    headers: {{"content-type": "application/grpc-web-text", "accept": "application/grpc-web-text", "x-grpc-web": "1"}},
    body: btoa(String.fromCharCode(...frame)),
    signal: AbortSignal.timeout(8000),
  }});
  // Each piece of the answer may be padded on its own.
  const pieces = (await r.text()).match(/[^=]+=*|=+/g) || [];
  const raw = Uint8Array.from(pieces.map(atob).join(""), c => c.charCodeAt(0));
  const out = {{status: r.status, type: r.headers.get("content-type")}};
  for (let i = 0; i + 5 <= raw.length; ) {{
    const len = (raw[i + 1] << 24) | (raw[i + 2] << 16) | (raw[i + 3] << 8) | raw[i + 4];
    const body = raw.slice(i + 5, i + 5 + len);
    if (raw[i] & 0x80) out.trailers = new TextDecoder().decode(body);
    else out.message = new TextDecoder().decode(body.slice(2));
    i += 5 + len;
  }}
  return out;
}})().catch(e => ({{error: String(e)}}))"#,
        port = p.port
    );
    let params =
        serde_json::json!({"expression": script, "awaitPromise": true, "returnByValue": true});
    let got = b.call("Runtime.evaluate", params).await["result"]["value"].clone();
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(got["type"], "application/grpc-web-text", "{got}");
    assert_eq!(got["message"], "v1: from chromium", "{got}");
    let trailers = got["trailers"].as_str().unwrap_or_default();
    assert!(trailers.contains("grpc-status:0"), "{got}");
    // The preflight (answered by portok) and the call (by the app), as the inspector saw them.
    let seen = p.ok(&["inspect", "api"]);
    assert!(seen.contains("OPTIONS /echo.Echo/Say  204"), "{seen}");
    assert!(
        seen.contains("POST /echo.Echo/Say  200 OK 1→1 msgs"),
        "{seen}"
    );
}
