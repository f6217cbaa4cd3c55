//! What the app receives (docs/reference/routing.md, "What the app receives"), on every path
//! a request can take: the fast path, hyper's HTTP/1.1, TLS, HTTP/2, upgrades and the h2
//! WebSocket bridge, and what portok refuses before the app sees anything.

use crate::support::*;
use crate::tls::tls_connect;
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An app that records every request it gets as text (head, blank line, body), answers
/// `200 ok`, and accepts WebSocket upgrades (then echoes bytes).
struct Recorder {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(record(s, log.clone()));
            }
        });
        Recorder { port, seen }
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    /// The one request recorded since the last take.
    fn one(&self) -> String {
        let mut all = self.take();
        assert_eq!(all.len(), 1, "{all:#?}");
        all.pop().unwrap()
    }
}

/// Lines in every answer of the Recorder that no client may see from portok: hop-by-hop
/// ones, one its `Connection` names, and a forged tag of portok's.
const HOP_LINES: &str =
    "Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Secret: 1\r\nX-Portok: fake\r\n";

async fn record(mut s: TcpStream, log: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let lower = head.to_ascii_lowercase();
        let length = header(&lower, "content-length").map_or(0, |v| v.parse::<usize>().unwrap());
        let chunked = header(&lower, "transfer-encoding") == Some("chunked");
        let body_end = loop {
            if chunked {
                if let Some(i) = buf[end..].windows(5).position(|w| w == b"0\r\n\r\n") {
                    break end + i + 5;
                }
            } else if buf.len() >= end + length {
                break end + length;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    // Cut off mid-body: recorded as such.
                    log.lock().unwrap().push(format!("{head}(cut off)"));
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let body = String::from_utf8_lossy(&buf[end..body_end]).into_owned();
        log.lock().unwrap().push(format!("{head}{body}"));
        buf.drain(..body_end);
        if let Some(key) = header(&head, "sec-websocket-key") {
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let reply = format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade, x-secret\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n{HOP_LINES}\r\n");
            let _ = s.write_all(reply.as_bytes()).await;
            let (mut r, mut w) = s.into_split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            return;
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nConnection: keep-alive, x-secret\r\n{HOP_LINES}\r\nok"
        );
        if s.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The value of header `name` in `head` (case-insensitive name), if there is exactly one.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    let mut found = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim());
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

fn request_line(head: &str) -> &str {
    head.lines().next().unwrap_or("")
}

fn host_lines(head: &str) -> Vec<&str> {
    head.lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("host:"))
        .collect()
}

/// Send raw bytes; what came back until a whole response head is in (or the proxy closed,
/// or `limit` passed).
async fn raw(p: &Portok, bytes: &[u8], limit: Duration) -> String {
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    // The page that follows the head, by its length.
    let text = String::from_utf8_lossy(&buf).into_owned();
    let Some(end) = text.find("\r\n\r\n") else {
        return text;
    };
    let length: usize = header(&text[..end].to_ascii_lowercase(), "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let want = end + 4 + length;
    let _ = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 4096];
        while buf.len() < want {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&buf).into_owned()
}

fn setup() -> Portok {
    Portok::new()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_path_sends_an_origin_form_target_and_the_routed_host_once() {
    let p = setup();
    let app = Recorder::start().await;
    p.ok(&["alias", "web", &app.port.to_string()]);
    let host = format!("web.localhost:{}", p.port);
    let ws_key = "dGhlIHNhbXBsZSBub25jZQ==";

    // The fast path.
    let req = format!("GET /fast?a=1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    assert!(raw(&p, req.as_bytes(), Duration::from_secs(10))
        .await
        .starts_with("HTTP/1.1 200"));
    let seen = app.one();
    assert_eq!(request_line(&seen), "GET /fast?a=1 HTTP/1.1", "{seen}");
    assert_eq!(host_lines(&seen), [format!("host: {host}")], "{seen}");

    // hyper's HTTP/1.1 (absolute form): the target's host wins over Host (RFC 9112 3.2.2).
    let req = format!(
        "GET http://{host}/abs?q HTTP/1.1\r\nHost: other.localhost\r\nConnection: close\r\n\r\n"
    );
    assert!(raw(&p, req.as_bytes(), Duration::from_secs(10))
        .await
        .starts_with("HTTP/1.1 200"));
    let seen = app.one();
    assert_eq!(request_line(&seen), "GET /abs?q HTTP/1.1", "{seen}");
    assert_eq!(host_lines(&seen), [format!("host: {host}")], "{seen}");

    // An HTTP/1.1 WebSocket upgrade, as Vite's HMR client sends it.
    let req = format!("GET /?token=abc HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: {ws_key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: vite-hmr\r\n\r\n");
    let reply = raw(&p, req.as_bytes(), Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 101"), "{reply}");
    let seen = app.one();
    assert_eq!(request_line(&seen), "GET /?token=abc HTTP/1.1", "{seen}");
    assert_eq!(host_lines(&seen), [format!("host: {host}")], "{seen}");
    assert_eq!(header(&seen, "upgrade"), Some("websocket"), "{seen}");
    assert_eq!(
        header(&seen, "sec-websocket-protocol"),
        Some("vite-hmr"),
        "{seen}"
    );
    assert_eq!(
        header(&seen, "x-forwarded-host"),
        Some(host.as_str()),
        "{seen}"
    );

    // The same over TLS, with a real WebSocket client.
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let tls = tls_connect(&p, "web.localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let url = format!("wss://{host}/_next/webpack-hmr?id=1");
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    ws.send(Message::text("ping")).await.unwrap();
    // The app echoes raw bytes: the client's own (masked) frame coming back proves the
    // tunnel carries both ways.
    let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap();
    assert!(
        matches!(
            back,
            Some(Err(tokio_tungstenite::tungstenite::Error::Protocol(
                tokio_tungstenite::tungstenite::error::ProtocolError::MaskedFrameFromServer
            )))
        ),
        "{back:?}"
    );
    let seen = app.one();
    assert_eq!(
        request_line(&seen),
        "GET /_next/webpack-hmr?id=1 HTTP/1.1",
        "{seen}"
    );
    assert_eq!(host_lines(&seen), [format!("host: {host}")], "{seen}");
    assert_eq!(header(&seen, "x-forwarded-proto"), Some("https"), "{seen}");

    // HTTP/2: a GET, and an extended CONNECT bridged to an HTTP/1.1 Upgrade.
    let tls = tls_connect(&p, "web.localhost", &[b"h2"]).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let get = hyper::Request::get(format!("https://{host}/h2?x=y"))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(get).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = app.one();
    assert_eq!(request_line(&seen), "GET /h2?x=y HTTP/1.1", "{seen}");
    assert_eq!(host_lines(&seen), [format!("host: {host}")], "{seen}");
    assert_eq!(header(&seen, "cookie"), Some("a=1; b=2"), "{seen}");
    // Wait for the server's SETTINGS (ENABLE_CONNECT_PROTOCOL), which came before that answer.
    let mut connect = hyper::Request::connect(format!("https://{host}/hmr?token=t"))
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "vite-hmr")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    connect
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let resp = send.send_request(connect).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = app.one();
    assert_eq!(request_line(&seen), "GET /hmr?token=t HTTP/1.1", "{seen}");
    assert_eq!(host_lines(&seen), [format!("host: {host}")], "{seen}");
    assert_eq!(header(&seen, "upgrade"), Some("websocket"), "{seen}");
    assert!(header(&seen, "sec-websocket-key").is_some(), "{seen}");

    // An h2 Host header naming another host than :authority is malformed.
    let get = hyper::Request::get(format!("https://{host}/other"))
        .header("host", "evil.localhost")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(get).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(app.take().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_400_and_never_reach_the_app() {
    let p = setup();
    let app = Recorder::start().await;
    p.ok(&["alias", "web", &app.port.to_string()]);
    let limit = Duration::from_secs(10);

    let two_hosts =
        b"GET / HTTP/1.1\r\nHost: web.localhost\r\nHost: b.localhost\r\nConnection: close\r\n\r\n";
    let reply = raw(&p, two_hosts, limit).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("two Host headers"), "{reply}");

    for body in [
        "0x4\r\nabcd\r\n0\r\n\r\n",
        "4_0\r\nabcd\r\n0\r\n\r\n",
        "4\nabcd\n0\n\n",
        "4\r\nabcdefgh\r\n0\r\n\r\n",
    ] {
        let req = format!(
            "POST /up HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        );
        let reply = raw(&p, req.as_bytes(), limit).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{body:?} -> {reply}");
    }
    assert_eq!(app.take(), Vec::<String>::new(), "the app got nothing");

    // A well-formed chunked body reaches the app whole, framed by its length.
    let req = "POST /up HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n";
    let reply = raw(&p, req.as_bytes(), limit).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let seen = app.one();
    assert_eq!(header(&seen, "content-length"), Some("7"), "{seen}");
    assert!(header(&seen, "transfer-encoding").is_none(), "{seen}");
    assert!(seen.ends_with("\r\n\r\nabcdefg"), "{seen}");

    // h2c is no upgrade through portok: the app gets a plain request.
    let req = "GET /h2c HTTP/1.1\r\nHost: web.localhost\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
    let reply = raw(&p, req.as_bytes(), limit).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let seen = app.one();
    assert_eq!(request_line(&seen), "GET /h2c HTTP/1.1", "{seen}");
    let lower = seen.to_ascii_lowercase();
    assert!(
        !lower.contains("upgrade") && !lower.contains("http2-settings"),
        "{seen}"
    );

    // CONNECT: portok is no forward proxy.
    let reply = raw(
        &p,
        b"CONNECT web.localhost:443 HTTP/1.1\r\nHost: web.localhost:443\r\n\r\n",
        limit,
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(app.take().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_h2_preface_over_tls_gets_goaway_protocol_error() {
    let p = setup();
    let app = Recorder::start().await;
    p.ok(&["alias", "web", &app.port.to_string()]);
    // As h2spec 3.5/2 does: ALPN h2, then a preface that is not one.
    let mut tls = tls_connect(&p, "web.localhost", &[b"h2"]).await.unwrap();
    tls.write_all(b"INVALID CONNECTION PREFACE\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut got))
        .await
        .expect("closed")
        .ok();
    // SETTINGS, then GOAWAY (type 7) with PROTOCOL_ERROR (1).
    let goaway = got
        .windows(9)
        .position(|w| w[3] == 7 && w[..3] == [0, 0, 8]);
    let at = goaway.unwrap_or_else(|| panic!("no GOAWAY in {got:?}"));
    assert_eq!(&got[at + 13..at + 17], &[0, 0, 0, 1], "{got:?}");
    assert!(app.take().is_empty());
}

/// The fast path (plain HTTP/1.1) and hyper's handler (here HTTP/2 over TLS) make one
/// routing decision: the same request gets the same status from both, and reaches the app
/// from both or from neither.
#[tokio::test(flavor = "multi_thread")]
async fn both_front_ends_decide_alike() {
    let p = setup();
    let app = Recorder::start().await;
    p.ok(&["alias", "web", &app.port.to_string()]);
    let tls = tls_connect(&p, "web.localhost", &[b"h2"]).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let port = p.port;
    // (host, path, extra header, status, reaches the app)
    type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>, u16, bool);
    let cases: [Case; 6] = [
        ("web.localhost", "/a?b", None, 200, true),
        ("WEB.localhost.", "/", None, 200, true),
        ("api.web.localhost", "/", None, 200, true),
        ("nothere.localhost", "/", None, 404, false),
        (
            "web.localhost",
            "/",
            Some(("x-portok-hops", "9")),
            508,
            false,
        ),
        ("portok.localhost", "/api/nothing", None, 404, false),
    ];
    for (host, path, extra, status, reaches) in cases {
        let line = extra.map_or(String::new(), |(n, v)| format!("{n}: {v}\r\n"));
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{line}Connection: close\r\n\r\n"
        );
        let reply = raw(&p, req.as_bytes(), Duration::from_secs(10)).await;
        assert!(
            reply.starts_with(&format!("HTTP/1.1 {status}")),
            "HTTP/1.1 {host}{path}: {reply}"
        );
        assert_eq!(
            app.take().len(),
            usize::from(reaches),
            "HTTP/1.1 {host}{path}"
        );

        let mut req = hyper::Request::get(format!("https://{host}:{port}{path}"));
        if let Some((n, v)) = extra {
            req = req.header(n, v);
        }
        let resp = h2
            .send_request(req.body(http_body_util::Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "h2 {host}{path}");
        assert!(resp.headers().contains_key("x-portok"), "h2 {host}{path}");
        assert_eq!(app.take().len(), usize::from(reaches), "h2 {host}{path}");
    }
}

/// Every response reaches the client through one filter, whichever path it took: no
/// hop-by-hop line of the app's, none its Connection names, portok's own tag and a Date.
#[tokio::test(flavor = "multi_thread")]
async fn every_response_goes_through_one_filter() {
    let p = setup();
    let app = Recorder::start().await;
    p.ok(&["alias", "web", &app.port.to_string()]);
    let host = format!("web.localhost:{}", p.port);
    let version = env!("CARGO_PKG_VERSION");
    let check = |path: &str, head: &str| {
        let lower = head.to_ascii_lowercase();
        for gone in [
            "keep-alive:",
            "proxy-connection:",
            "x-secret:",
            "x-portok: fake",
        ] {
            assert!(!lower.contains(gone), "{path}: {gone} passed: {head}");
        }
        assert_eq!(header(&lower, "x-portok"), Some(version), "{path}: {head}");
        assert!(header(&lower, "date").is_some(), "{path}: {head}");
    };
    let limit = Duration::from_secs(10);

    // The fast path, and hyper's HTTP/1.1 (a chunked body is the handler's).
    let fast = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let chunked = format!("POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nhi\r\n0\r\n\r\n");
    for (path, req) in [("fast", fast), ("hyper", chunked)] {
        let reply = raw(&p, req.as_bytes(), limit).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{path}: {reply}");
        assert!(reply.ends_with("\r\n\r\nok"), "{path}: {reply}");
        check(path, &reply);
    }
    assert_eq!(app.take().len(), 2);

    // An upgrade: the switch's own Connection and Upgrade lines pass, nothing else.
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    let reply = raw(&p, req.as_bytes(), limit).await;
    assert!(reply.starts_with("HTTP/1.1 101"), "{reply}");
    let lower = reply.to_ascii_lowercase();
    assert_eq!(header(&lower, "upgrade"), Some("websocket"), "{reply}");
    assert_eq!(header(&lower, "connection"), Some("upgrade"), "{reply}");
    assert!(
        lower.contains("\r\nsec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{reply}"
    );
    check("upgrade", &reply);
    app.take();

    // HTTP/2 over TLS.
    let tls = tls_connect(&p, "web.localhost", &[b"h2"]).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let get = hyper::Request::get(format!("https://{host}/"))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(get).await.unwrap();
    assert_eq!(resp.status(), 200);
    let head: String = resp
        .headers()
        .iter()
        .map(|(n, v)| format!("{n}: {}\r\n", v.to_str().unwrap()))
        .collect();
    check("h2", &head);
}
