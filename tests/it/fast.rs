//! The HTTP/1.1 fast path (src/proxy/fast.rs) against a scripted app that answers with
//! every framing and a few faults, byte for byte. Each scenario runs twice, with the fast
//! path and with `PORTOK_NO_FAST_PATH=1` (hyper all the way), and both must agree.

use crate::support::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

/// Connections on which the scripted app's `/hang` saw the proxy close.
static HANG_CLOSED: AtomicUsize = AtomicUsize::new(0);

/// An app written against the socket: what it sends for each path is spelled out below.
struct ScriptedApp {
    port: u16,
    /// Connections it accepted.
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn scripted_app() -> ScriptedApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(app_conn(s));
        }
    });
    ScriptedApp {
        port,
        accepted,
        task,
    }
}

async fn app_conn(mut s: TcpStream) {
    let mut buf = Vec::new();
    loop {
        let Some((head, body)) = read_request(&mut s, &mut buf).await else {
            return;
        };
        let first = head.lines().next().unwrap_or("").to_string();
        let mut parts = first.split(' ');
        let method = parts.next().unwrap_or("");
        let path = parts.next().unwrap_or("");
        let reply: &[&[u8]] = match path {
            "/cl" => &[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\nX-Portok: fake\r\n\r\nhello"],
            "/chunked" => &[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
                b"lo\r\n6;x=y\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
            ],
            "/close" => &[b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil ", b"close"],
            "/hints" => &[b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
            "/bad" => &[b"HTTP/1.1 2OO OK\r\n\r\n"],
            "/204" => &[b"HTTP/1.1 204 No Content\r\n\r\n"],
            "/304" => &[b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"],
            "/bye" => &[b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbye"],
            _ => &[],
        };
        if path == "/upload" {
            let mut sum = Fnv::new();
            sum.update(&body);
            let text = format!("{} {:x}", body.len(), sum.0);
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                text.len()
            );
            if s.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
            continue;
        }
        if let Some(n) = path.strip_prefix("/download?n=") {
            let n: usize = n.parse().unwrap();
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n");
            if s.write_all(head.as_bytes()).await.is_err()
                || s.write_all(&pattern(0, n)).await.is_err()
            {
                return;
            }
            continue;
        }
        if path == "/echo" {
            let body = format!("{head}\n--\n{}", String::from_utf8_lossy(&body));
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
            continue;
        }
        if path == "/wait" {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nwait")
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        if path == "/stall" {
            // A long body that stops coming after 512 KiB; counts the proxy giving up on it.
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n";
            if s.write_all(head.as_bytes()).await.is_err()
                || s.write_all(&pattern(0, 512 * 1024)).await.is_err()
            {
                return;
            }
            let mut rest = [0u8; 64];
            while matches!(s.read(&mut rest).await, Ok(n) if n > 0) {}
            HANG_CLOSED.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if path == "/hang" {
            // Never answers; counts the proxy giving up on it.
            let mut rest = [0u8; 64];
            while matches!(s.read(&mut rest).await, Ok(n) if n > 0) {}
            HANG_CLOSED.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let head_only = method == "HEAD";
        for (i, piece) in reply.iter().enumerate() {
            let piece: &[u8] = if head_only {
                let end = piece.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                &piece[..end]
            } else {
                piece
            };
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if s.write_all(piece).await.is_err() {
                return;
            }
        }
        if matches!(path, "/close" | "/bad" | "/bye") {
            return;
        }
    }
}

/// One request from `s` (head as text, Content-Length or chunked body decoded).
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let (head, body) = read_message(s, buf, false).await?;
    Some((head, body))
}

/// Read one HTTP/1 message off `s`, keeping what follows it in `buf`. Bodies: by
/// Content-Length, chunked (decoded), none for `no_body`, else none for requests.
async fn read_message(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    no_body: bool,
) -> Option<(String, Vec<u8>)> {
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if no_body {
        return Some((head, body));
    }
    if lower.contains("transfer-encoding: chunked") {
        loop {
            let line_end = loop {
                if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
                    break p;
                }
                fill(s, buf).await?;
            };
            let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).ok()?;
            buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers up to the empty line.
                loop {
                    let p = loop {
                        if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
                            break p;
                        }
                        fill(s, buf).await?;
                    };
                    buf.drain(..p + 2);
                    if p == 0 {
                        return Some((head, body));
                    }
                }
            }
            while buf.len() < size + 2 {
                fill(s, buf).await?;
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
        }
    }
    let len = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse::<usize>().unwrap())
        .unwrap_or(0);
    while buf.len() < len {
        fill(s, buf).await?;
    }
    body.extend(buf.drain(..len));
    Some((head, body))
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    let n = s.read(&mut chunk).await.ok()?;
    if n == 0 {
        return None;
    }
    buf.extend_from_slice(&chunk[..n]);
    Some(())
}

/// A client connection to the proxy that sends raw requests and reads replies.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(p: &Portok) -> Client {
        Client {
            s: TcpStream::connect(p.addr()).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, raw: &str) {
        self.s.write_all(raw.as_bytes()).await.unwrap();
    }

    async fn reply(&mut self, head_request: bool) -> (u16, String, String) {
        let (status, head, body) = self.reply_bytes(head_request).await;
        (status, head, String::from_utf8_lossy(&body).into_owned())
    }

    async fn reply_bytes(&mut self, head_request: bool) -> (u16, String, Vec<u8>) {
        let (head, body) =
            tokio::time::timeout(WAIT, read_message(&mut self.s, &mut self.buf, head_request))
                .await
                .expect("a reply in time")
                .expect("a whole reply");
        let status = head[9..12].parse().unwrap();
        (status, head, body)
    }

    async fn get(&mut self, path: &str) -> (u16, String, String) {
        self.send(&format!(
            "GET {path} HTTP/1.1\r\nHost: fast.localhost\r\n\r\n"
        ))
        .await;
        self.reply(false).await
    }
}

/// A proxy with the fast path on or off, routing fast.localhost to `app`.
fn proxy(fast: bool, app: u16) -> Portok {
    proxy_with(
        if fast {
            &[]
        } else {
            &[("PORTOK_NO_FAST_PATH", "1")]
        },
        app,
    )
}

fn proxy_with(env: &[(&str, &str)], app: u16) -> Portok {
    let p = Portok::new();
    let mut start = p.command();
    start.args(["proxy", "start"]).envs(env.iter().copied());
    let out = start.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    p.ok(&["alias", "fast", &app.to_string()]);
    p
}

/// Wait until the daemon counts no open client connection.
async fn no_client_connections(p: &Portok) {
    wait_for(
        Duration::from_secs(10),
        "client connections to close",
        || {
            let status: serde_json::Value =
                serde_json::from_str(&p.ok(&["status", "--json"])).unwrap();
            (status["totals"]["connections_open"] == 0).then_some(())
        },
    )
    .await;
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn every_response_framing_reaches_the_client_whole() {
    for fast in [true, false] {
        let app = scripted_app().await;
        let p = proxy(fast, app.port);
        let mut c = Client::connect(&p).await;
        let mode = if fast { "fast path" } else { "hyper" };

        let (status, head, body) = c.get("/cl").await;
        assert_eq!((status, body.as_str()), (200, "hello"), "{mode}: {head}");
        assert_eq!(
            header(&head, "x-portok"),
            Some(env!("CARGO_PKG_VERSION")),
            "{mode}"
        );
        // The app sent no Date; the proxy adds one, as HTTP servers must.
        assert!(
            header(&head, "date").is_some_and(|d| d.ends_with(" GMT")),
            "{mode}: {head}"
        );
        // Hop-by-hop headers, and those the app's Connection names, stay on the app's hop.
        for gone in ["x-secret", "keep-alive", "connection"] {
            assert_eq!(header(&head, gone), None, "{mode}: {gone} in {head}");
        }

        let (status, head, body) = c.get("/chunked").await;
        assert_eq!(
            (status, body.as_str()),
            (200, "hello world"),
            "{mode}: {head}"
        );

        // Delimited by the app closing: the client gets it chunked and keeps its connection.
        let (status, head, body) = c.get("/close").await;
        assert_eq!(
            (status, body.as_str()),
            (200, "until close"),
            "{mode}: {head}"
        );
        assert_eq!(
            header(&head, "transfer-encoding"),
            Some("chunked"),
            "{mode}"
        );

        let (status, head, body) = c.get("/hints").await;
        assert_eq!((status, body.as_str()), (200, "ok"), "{mode}: {head}");

        let (status, _, body) = c.get("/204").await;
        assert_eq!((status, body.as_str()), (204, ""), "{mode}");
        c.send("GET /304 HTTP/1.1\r\nHost: fast.localhost\r\n\r\n")
            .await;
        let (status, head, _) = c.reply(true).await;
        assert_eq!(status, 304, "{mode}: {head}");

        c.send("HEAD /cl HTTP/1.1\r\nHost: fast.localhost\r\n\r\n")
            .await;
        let (status, head, _) = c.reply(true).await;
        assert_eq!(status, 200, "{mode}");
        assert_eq!(header(&head, "content-length"), Some("5"), "{mode}: {head}");

        // And the connection still carries requests after all of that.
        let (status, _, body) = c.get("/cl").await;
        assert_eq!((status, body.as_str()), (200, "hello"), "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_connections_are_kept_and_one_the_app_closed_is_replaced() {
    for fast in [true, false] {
        let app = scripted_app().await;
        let p = proxy(fast, app.port);
        let mode = if fast { "fast path" } else { "hyper" };
        let mut c = Client::connect(&p).await;
        for _ in 0..20 {
            assert_eq!(c.get("/cl").await.0, 200, "{mode}");
        }
        // New client connections, one after another, reuse it too. The fast path gives a
        // client connection's app connection back when the client connection ends, so each
        // next one starts once the daemon has seen the last one close.
        drop(c);
        for _ in 0..5 {
            no_client_connections(&p).await;
            let mut c = Client::connect(&p).await;
            assert_eq!(c.get("/cl").await.0, 200, "{mode}");
        }
        assert_eq!(app.accepted.load(Ordering::SeqCst), 1, "{mode}");
        // The app closes its side after this answer; the next request must not see that.
        let mut c = Client::connect(&p).await;
        for _ in 0..5 {
            assert_eq!(c.get("/bye").await.2, "bye", "{mode}");
            let (status, _, body) = c.get("/cl").await;
            assert_eq!((status, body.as_str()), (200, "hello"), "{mode}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_app_gets_forwarded_headers_bodies_and_pipelined_requests() {
    for fast in [true, false] {
        let app = scripted_app().await;
        let p = proxy(fast, app.port);
        let mode = if fast { "fast path" } else { "hyper" };
        let mut c = Client::connect(&p).await;
        c.send(
            "POST /echo HTTP/1.1\r\nHost: fast.localhost\r\nContent-Length: 3\r\n\
             X-Forwarded-For: 10.1.1.1\r\nX-Forwarded-For: 10.2.2.2\r\nForwarded: for=10.1.1.1\r\n\
             Connection: keep-alive, X-Drop\r\nX-Drop: x\r\nProxy-Connection: x\r\n\
             X-Portok-Hops: 1\r\nX-Keep: k\r\n\r\na=1",
        )
        .await;
        let (status, _, echo) = c.reply(false).await;
        assert_eq!(status, 200, "{mode}");
        let (head, body) = echo.split_once("\n--\n").unwrap();
        assert_eq!(body, "a=1", "{mode}");
        assert!(
            head.starts_with("POST /echo HTTP/1.1\r\n"),
            "{mode}: {head}"
        );
        assert_eq!(
            header(head, "x-forwarded-for"),
            Some("10.1.1.1, 10.2.2.2, 127.0.0.1"),
            "{mode}: {head}"
        );
        let port = p.port;
        assert_eq!(
            header(head, "forwarded"),
            Some("for=10.1.1.1, for=127.0.0.1;host=fast.localhost;proto=http"),
            "{mode}: {head}"
        );
        assert_eq!(header(head, "x-forwarded-proto"), Some("http"), "{mode}");
        assert_eq!(
            header(head, "x-forwarded-host"),
            Some("fast.localhost"),
            "{mode}"
        );
        assert_eq!(
            header(head, "x-forwarded-port"),
            Some(port.to_string().as_str()),
            "{mode}"
        );
        assert_eq!(header(head, "x-portok-hops"), Some("2"), "{mode}");
        assert_eq!(header(head, "x-keep"), Some("k"), "{mode}");
        for gone in ["x-drop", "proxy-connection"] {
            assert_eq!(header(head, gone), None, "{mode}: {gone} in {head}");
        }

        // Two requests in one write are answered in order.
        c.send(
            "GET /cl HTTP/1.1\r\nHost: fast.localhost\r\n\r\nGET /echo HTTP/1.1\r\nHost: fast.localhost\r\n\r\n",
        )
        .await;
        assert_eq!(c.reply(false).await.2, "hello", "{mode}");
        assert!(c.reply(false).await.2.starts_with("GET /echo"), "{mode}");

        // A chunked upload (hyper's to handle) on the same connection, then more requests.
        c.send(
            "POST /echo HTTP/1.1\r\nHost: fast.localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
             3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .await;
        let (status, _, echo) = c.reply(false).await;
        assert_eq!(status, 200, "{mode}");
        assert!(echo.ends_with("\n--\nabcde"), "{mode}: {echo}");
        assert_eq!(c.get("/cl").await.2, "hello", "{mode}");

        // A request for no app, then one for the app, on one connection.
        c.send("GET / HTTP/1.1\r\nHost: nothing.localhost\r\n\r\n")
            .await;
        assert_eq!(c.reply(false).await.0, 404, "{mode}");
        assert_eq!(c.get("/cl").await.2, "hello", "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_response_is_a_502_and_the_connection_goes_on() {
    for fast in [true, false] {
        let app = scripted_app().await;
        let p = proxy(fast, app.port);
        let mode = if fast { "fast path" } else { "hyper" };
        let mut c = Client::connect(&p).await;
        let (status, head, body) = c.get("/bad").await;
        assert_eq!(status, 502, "{mode}: {head}{body}");
        assert!(body.contains("did not answer"), "{mode}: {body}");
        let (status, _, body) = c.get("/cl").await;
        assert_eq!((status, body.as_str()), (200, "hello"), "{mode}");
        // Connection: close from the client is honoured after the answer.
        c.send("GET /cl HTTP/1.1\r\nHost: fast.localhost\r\nConnection: close\r\n\r\n")
            .await;
        let (status, head, _) = c.reply(false).await;
        assert_eq!(status, 200, "{mode}");
        assert_eq!(header(&head, "connection"), Some("close"), "{mode}: {head}");
        let mut rest = Vec::new();
        let n = tokio::time::timeout(WAIT, c.s.read_to_end(&mut rest))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert_eq!(n, 0, "{mode}: nothing after the last answer");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn long_bodies_arrive_intact_spliced_copied_or_through_hyper() {
    const SIZE: usize = 6 * 1024 * 1024 + 123;
    let modes: [(&str, &[(&str, &str)]); 3] = [
        ("splice", &[]),
        ("copy", &[("PORTOK_NO_SPLICE", "1")]),
        ("hyper", &[("PORTOK_NO_FAST_PATH", "1")]),
    ];
    let upload = pattern(7, SIZE);
    let mut sum = Fnv::new();
    sum.update(&upload);
    for (mode, env) in modes {
        let app = scripted_app().await;
        let p = proxy_with(env, app.port);
        let mut c = Client::connect(&p).await;
        for _ in 0..2 {
            c.send(&format!(
                "POST /upload HTTP/1.1\r\nHost: fast.localhost\r\nContent-Length: {SIZE}\r\n\r\n"
            ))
            .await;
            c.s.write_all(&upload).await.unwrap();
            let (status, _, body) = c.reply(false).await;
            assert_eq!(status, 200, "{mode}");
            assert_eq!(body, format!("{SIZE} {:x}", sum.0), "{mode}");

            c.send(&format!(
                "GET /download?n={SIZE} HTTP/1.1\r\nHost: fast.localhost\r\n\r\n"
            ))
            .await;
            let (status, head, body) = c.reply_bytes(false).await;
            assert_eq!(status, 200, "{mode}: {head}");
            assert_eq!(body.len(), SIZE, "{mode}");
            assert!(body == pattern(0, SIZE), "{mode}: the body differs");
            // The connection carries on with the next request, framed right.
            assert_eq!(c.get("/cl").await.2, "hello", "{mode}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_header_named_by_connection_never_unframes_a_body() {
    for fast in [true, false] {
        let app = scripted_app().await;
        let p = proxy(fast, app.port);
        let mode = if fast { "fast path" } else { "hyper" };
        let mut c = Client::connect(&p).await;
        // Were Content-Length dropped as a Connection-named header, the app would read a
        // bodiless POST and then a second, smuggled request.
        let smuggled = "GET /cl HTTP/1.1\r\nHost: fast.localhost\r\n\r\n";
        c.send(&format!(
            "POST /echo HTTP/1.1\r\nHost: fast.localhost\r\nConnection: content-length\r\n\
             Content-Length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        ))
        .await;
        let (status, _, echo) = c.reply(false).await;
        assert_eq!(status, 200, "{mode}");
        assert_eq!(
            echo.split_once("\n--\n").unwrap().1,
            smuggled,
            "{mode}: {echo}"
        );
        // Exactly one answer came back for the one request.
        c.send("GET /cl HTTP/1.1\r\nHost: fast.localhost\r\n\r\n")
            .await;
        let (status, _, body) = c.reply(false).await;
        assert_eq!((status, body.as_str()), (200, "hello"), "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_mid_request_releases_the_app_connection() {
    let app = scripted_app().await;
    let p = proxy(true, app.port);
    let before = HANG_CLOSED.load(Ordering::SeqCst);
    let mut c = Client::connect(&p).await;
    c.send("GET /hang HTTP/1.1\r\nHost: fast.localhost\r\n\r\n")
        .await;
    // The request reaches the app, then the client goes away.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(c);
    wait_for(WAIT, "the proxy to close the app connection", || {
        (HANG_CLOSED.load(Ordering::SeqCst) > before).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_pipelines_then_half_closes_gets_every_answer() {
    // (hyper, like nginx, cuts off what is in flight when the client's side ends; the fast
    // path answers every request the client sent before it said it was done.)
    let app = scripted_app().await;
    let p = proxy(true, app.port);
    let mut c = Client::connect(&p).await;
    c.send(
        "GET /wait HTTP/1.1\r\nHost: fast.localhost\r\n\r\nGET /cl HTTP/1.1\r\nHost: fast.localhost\r\n\r\n",
    )
    .await;
    // Nothing more to send: the client's end of the stream comes while /wait is pending.
    c.s.shutdown().await.unwrap();
    let (status, _, body) = c.reply(false).await;
    assert_eq!((status, body.as_str()), (200, "wait"));
    let (status, _, body) = c.reply(false).await;
    assert_eq!((status, body.as_str()), (200, "hello"));
    // And then the connection ends.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(WAIT, c.s.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_a_stalled_long_body_releases_the_app_connection() {
    let app = scripted_app().await;
    let p = proxy(true, app.port);
    let before = HANG_CLOSED.load(Ordering::SeqCst);
    let mut c = Client::connect(&p).await;
    c.send("GET /stall HTTP/1.1\r\nHost: fast.localhost\r\n\r\n")
        .await;
    // Read into the body (relayed with splice), then leave while the app stalls.
    let mut got = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    while got < 256 * 1024 {
        let n = tokio::time::timeout(WAIT, c.s.read(&mut chunk))
            .await
            .expect("body bytes in time")
            .unwrap();
        assert!(n > 0, "the body stopped early");
        got += n;
    }
    drop(c);
    wait_for(WAIT, "the proxy to close the app connection", || {
        (HANG_CLOSED.load(Ordering::SeqCst) > before).then_some(())
    })
    .await;
}

/// HTTP/2 requests go through the handler, which sends bodiless ones over the same kept
/// app connections as the fast path (src/proxy/upstream.rs `send`), and runs a connection's
/// streams in the connection's task (src/proxy/streams.rs). Every framing, hop-by-hop
/// headers, a malformed answer, a long streamed body, 50 streams at once, and an app
/// connection closed between requests.
#[tokio::test(flavor = "multi_thread")]
async fn an_h2_client_gets_every_framing_over_kept_app_connections() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let app = scripted_app().await;
    let p = proxy(true, app.port);
    let stream = TcpStream::connect(p.addr()).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let url = |path: &str| format!("http://fast.localhost:{}{path}", p.port);
    let fetch = |method: &'static str, path: String| {
        let mut send = send.clone();
        async move {
            let req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            let resp = tokio::time::timeout(WAIT, send.send_request(req))
                .await
                .expect("an answer in time")
                .unwrap();
            let (parts, body) = resp.into_parts();
            let body = tokio::time::timeout(WAIT, body.collect())
                .await
                .expect("a body in time")
                .unwrap()
                .to_bytes();
            (parts, body)
        }
    };

    let (head, body) = fetch("GET", url("/cl")).await;
    assert_eq!((head.status.as_u16(), &body[..]), (200, &b"hello"[..]));
    assert_eq!(
        head.headers.get("x-portok").unwrap(),
        env!("CARGO_PKG_VERSION")
    );
    for gone in ["x-secret", "keep-alive", "connection"] {
        assert!(head.headers.get(gone).is_none(), "{gone} in {head:?}");
    }
    for (path, want) in [
        ("/chunked", &b"hello world"[..]),
        ("/close", b"until close"),
        ("/hints", b"ok"),
    ] {
        let (head, body) = fetch("GET", url(path)).await;
        assert_eq!((head.status.as_u16(), &body[..]), (200, want), "{path}");
        // A length from the app that is not the body's framing is not passed on.
        assert!(head.headers.get("transfer-encoding").is_none(), "{path}");
    }
    // A client that asks for trailers gets the app's.
    let req = hyper::Request::get(url("/chunked"))
        .header("te", "trailers")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(WAIT, send.clone().send_request(req))
        .await
        .unwrap()
        .unwrap();
    let got = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got.trailers().and_then(|t| t.get("x-trailer")),
        Some(&http::HeaderValue::from_static("t"))
    );
    assert_eq!(&got.to_bytes()[..], b"hello world");

    let (head, body) = fetch("GET", url("/bad")).await;
    assert_eq!(head.status, 502, "{body:?}");
    for (path, status) in [("/204", 204), ("/304", 304)] {
        let (head, body) = fetch("GET", url(path)).await;
        assert_eq!((head.status.as_u16(), body.len()), (status, 0), "{path}");
    }
    let (head, body) = fetch("HEAD", url("/cl")).await;
    assert_eq!((head.status.as_u16(), body.len()), (200, 0));
    assert_eq!(head.headers.get("content-length").unwrap(), "5");

    // A body longer than what comes with the head streams off the app's connection.
    let n = 3 * 1024 * 1024 + 7;
    let (head, body) = fetch("GET", url(&format!("/download?n={n}"))).await;
    assert_eq!(head.status, 200);
    assert!(body[..] == pattern(0, n)[..], "the long body differs");

    // A streamed body with a length gives its app connection back when it ends.
    let before = app.accepted.load(Ordering::SeqCst);
    for _ in 0..5 {
        let (head, body) = fetch("GET", url("/download?n=200000")).await;
        assert_eq!((head.status.as_u16(), body.len()), (200, 200000));
    }
    assert!(app.accepted.load(Ordering::SeqCst) <= before + 1);

    // 50 streams at once, each answered whole.
    let all = futures_util::future::join_all((0..50).map(|_| fetch("GET", url("/cl")))).await;
    for (head, body) in all {
        assert_eq!((head.status.as_u16(), &body[..]), (200, &b"hello"[..]));
    }
    // Sequential requests reuse kept app connections rather than opening one each.
    let before = app.accepted.load(Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(fetch("GET", url("/cl")).await.0.status, 200);
    }
    assert_eq!(app.accepted.load(Ordering::SeqCst), before);
    // The app closes its side after /bye; the request after it must not see that.
    for _ in 0..5 {
        assert_eq!(&fetch("GET", url("/bye")).await.1[..], b"bye");
        let (head, body) = fetch("GET", url("/cl")).await;
        assert_eq!((head.status.as_u16(), &body[..]), (200, &b"hello"[..]));
    }
}
