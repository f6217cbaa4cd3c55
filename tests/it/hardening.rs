//! Hardening (issue: abuse suite, timeouts and limits, crash recovery, state-dir safety).
//! Every test uses a real socket against the real binary.

use crate::support::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Send raw bytes, read until the proxy closes (bounded); returns what came back.
async fn raw(p: &Portok, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_is_closed_at_the_header_deadline() {
    let p = Portok::new();
    let b = backend("b").await;
    p.ok(&["proxy", "start", "--header-timeout", "1"]);
    p.ok(&["alias", "web", &b.port.to_string()]);
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: web.localhost\r\nX-Slow: ")
        .await
        .unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    // Keep dribbling one byte at a time, as slowloris does.
    let dribble = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if s.write_all(b"a").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(8), dribble).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    let waited = start.elapsed();
    assert!(waited < Duration::from_secs(5), "not cut off: {waited:?}");
    assert_eq!(b.hits.load(Ordering::SeqCst), 0);
}

/// Read one HTTP/1.1 response with a Content-Length from a raw socket (bounded).
async fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let read = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .expect("a Content-Length");
                if buf.len() >= end + 4 + len {
                    return;
                }
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "closed mid-response: {}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("a response within 5 s");
    String::from_utf8_lossy(&buf).into_owned()
}

/// How long until the proxy closes `s` (bounded by `limit`); panics if it sends anything.
async fn closed_after(s: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = Vec::new();
    tokio::time::timeout(limit, s.read_to_end(&mut buf))
        .await
        .expect("closed in time")
        .ok();
    assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_outlives_the_header_deadline_and_closes_at_the_idle_one() {
    let p = Portok::new();
    let b = backend("b").await;
    p.ok(&[
        "proxy",
        "start",
        "--header-timeout",
        "1",
        "--idle-timeout",
        "3",
    ]);
    p.ok(&["alias", "web", &b.port.to_string()]);
    let req = b"GET / HTTP/1.1\r\nHost: web.localhost\r\n\r\n";
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    s.write_all(req).await.unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    // Idle for twice the header deadline: still open and usable.
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.write_all(req).await.unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    assert_eq!(b.hits.load(Ordering::SeqCst), 2);
    // Then idle: closed at the idle deadline, not before, not much after.
    let waited = closed_after(&mut s, Duration::from_secs(8)).await;
    assert!(
        waited > Duration::from_millis(2500) && waited < Duration::from_millis(4500),
        "idle connection closed after {waited:?}, expected ~3 s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_sent_head_on_a_kept_alive_connection_is_cut_at_the_header_deadline() {
    let p = Portok::new();
    let b = backend("b").await;
    p.ok(&[
        "proxy",
        "start",
        "--header-timeout",
        "1",
        "--idle-timeout",
        "30",
    ]);
    p.ok(&["alias", "web", &b.port.to_string()]);
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: web.localhost\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    // Idle a while (the header deadline does not run while idle), then half a head.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: web.loc")
        .await
        .unwrap();
    let waited = closed_after(&mut s, Duration::from_secs(8)).await;
    assert!(
        waited > Duration::from_millis(700) && waited < Duration::from_millis(2500),
        "half-sent head cut after {waited:?}, expected ~1 s"
    );
    assert_eq!(b.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_h2_connection_is_closed_at_the_idle_deadline_not_while_a_stream_is_open() {
    let p = Portok::new();
    let b = backend("b").await;
    p.ok(&[
        "proxy",
        "start",
        "--header-timeout",
        "1",
        "--idle-timeout",
        "2",
    ]);
    p.ok(&["alias", "web", &b.port.to_string()]);
    let tcp = TcpStream::connect(p.addr()).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let mut conn = tokio::spawn(conn);
    // A streaming response open for longer than the idle deadline keeps the connection.
    let mut c = client.ready().await.unwrap();
    let req = http::Request::get("http://web.localhost/sse")
        .body(())
        .unwrap();
    let (resp, _) = c.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), resp)
        .await
        .expect("response head")
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.data())
        .await
        .expect("first event")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("one"));
    let _ = body.flow_control().release_capacity(first.len());
    assert!(
        tokio::time::timeout(Duration::from_secs(3), &mut conn)
            .await
            .is_err(),
        "closed while a stream was open"
    );
    // The stream ends; then the connection is idle and goes at ~2 s.
    b.sse_gate.notify_one();
    while let Some(d) = tokio::time::timeout(Duration::from_secs(5), body.data())
        .await
        .expect("the stream ends")
    {
        let _ = body.flow_control().release_capacity(d.unwrap().len());
    }
    let idle = Instant::now();
    tokio::time::timeout(Duration::from_secs(8), &mut conn)
        .await
        .expect("idle h2 connection closed")
        .unwrap()
        .ok();
    let waited = idle.elapsed();
    assert!(
        waited > Duration::from_millis(1500) && waited < Duration::from_millis(4500),
        "idle h2 connection closed after {waited:?}, expected ~2 s"
    );
    drop(c);
}

/// An app that answers each request only after `delay` (its response head is late), and
/// counts the request heads it has read.
async fn slow_app(delay: Duration) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(AtomicUsize::new(0));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut have = 0;
                while !buf[..have].windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf[have..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => have += n,
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nslow",
                    )
                    .await;
            });
        }
    });
    (port, heads)
}

/// A POST with a small body: it goes through hyper's client, which takes a turn.
async fn post(addr: std::net::SocketAddr, host: &str) -> Reply {
    let req = hyper::Request::post("/")
        .header("host", host)
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"x")))
        .unwrap();
    request(addr, req).await
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_over_max_inflight_wait_their_turn_and_slow_ones_do_not_hold_it() {
    let p = Portok::new();
    let b = backend("b").await;
    let (slow, slow_heads) = slow_app(Duration::from_secs(4)).await;
    // Turns are for exchanges that open app connections: through hyper's client (requests
    // with a body here), or a bodiless request finding no kept connection. The HTTP/1.1
    // fast path holds no upstream state worth limiting.
    let out = p
        .command()
        .env("PORTOK_NO_FAST_PATH", "1")
        .args(["proxy", "start", "--max-inflight", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    p.ok(&["alias", "web", &b.port.to_string()]);
    p.ok(&["alias", "web2", &b.port.to_string()]);
    p.ok(&["alias", "slow", &slow.to_string()]);
    let p_addr = p.addr();
    // Many at once through one turn: every one is answered.
    let many: Vec<_> = (0..20)
        .map(|_| tokio::spawn(post(p.addr(), "web.localhost")))
        .collect();
    for r in many {
        let r = tokio::time::timeout(Duration::from_secs(10), r)
            .await
            .expect("answered within 10 s")
            .unwrap();
        assert_eq!(r.status, 200);
    }
    // A bodiless request opens an app connection in its turn and leaves it kept.
    assert_eq!(get(p.addr(), "web.localhost", "/").await.status, 200);
    // Two slow requests take the turn in turn; a fast one behind them is answered long
    // before they are (each gives the turn up after 1 s), and not before the first did.
    let slow_reqs: Vec<_> = (0..2)
        .map(|_| tokio::spawn(post(p.addr(), "slow.localhost")))
        .collect();
    wait_for(
        Duration::from_secs(10),
        "the first slow request at the app",
        || (slow_heads.load(Ordering::SeqCst) >= 1).then_some(()),
    )
    .await;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A bodiless request over the kept connection takes no turn: answered at once.
    let bodiless =
        tokio::time::timeout(Duration::from_secs(10), get(p.addr(), "web.localhost", "/"))
            .await
            .expect("the bodiless request is answered");
    let bodiless_at = start.elapsed();
    assert_eq!(bodiless.status, 200);
    assert!(
        bodiless_at < Duration::from_millis(800),
        "a bodiless request over a kept connection waited {bodiless_at:?} for a turn"
    );
    assert_eq!(
        slow_heads.load(Ordering::SeqCst),
        1,
        "the second slow request had no turn"
    );
    // With no kept connection to its app (another route), a bodiless request waits to
    // open one: turns bound the app connections a burst opens.
    let unkept = tokio::spawn(async move {
        let r = get(p_addr, "web2.localhost", "/").await;
        (r.status, start.elapsed())
    });
    let fast = tokio::time::timeout(Duration::from_secs(10), post(p.addr(), "web.localhost"))
        .await
        .expect("the fast request is answered");
    let fast_at = start.elapsed();
    assert_eq!(fast.status, 200);
    assert!(
        fast_at >= Duration::from_millis(700),
        "the fast request took no turn: answered after {fast_at:?} with the turn held"
    );
    assert!(
        fast_at < Duration::from_millis(3500),
        "the fast request waited {fast_at:?} behind slow ones"
    );
    let (status, unkept_at) = tokio::time::timeout(Duration::from_secs(10), unkept)
        .await
        .expect("the request without a kept connection is answered")
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        unkept_at >= Duration::from_millis(700),
        "a bodiless request opened an app connection without a turn: answered after {unkept_at:?}"
    );
    for r in slow_reqs {
        let r = tokio::time::timeout(Duration::from_secs(10), r)
            .await
            .expect("slow requests are answered")
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "slow");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_headers_get_431() {
    let p = Portok::new();
    let b = backend("b").await;
    p.ok(&["alias", "web", &b.port.to_string()]);
    let big = "x".repeat(70 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: web.localhost\r\nX-Big: {big}\r\n\r\n");
    let reply = raw(&p, req.as_bytes()).await;
    assert!(
        reply.starts_with("HTTP/1.1 431"),
        "{}",
        &reply[..reply.len().min(200)]
    );
    assert_eq!(b.hits.load(Ordering::SeqCst), 0);
    // Just under the limit is fine.
    let ok = format!(
        "GET / HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "x".repeat(60 * 1024)
    );
    assert!(raw(&p, ok.as_bytes()).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread")]
async fn smuggling_and_malformed_requests_are_refused_and_never_forwarded() {
    let p = Portok::new();
    let b = backend("b").await;
    p.ok(&["alias", "web", &b.port.to_string()]);
    // Content-Length and Transfer-Encoding together: hyper (the only parser on the path) lets
    // chunked win and drops Content-Length (RFC 9112 6.3); portok refuses what reaches it
    // with both, and the connection closes after the response, so the request smuggled
    // behind it is never read, let alone forwarded.
    for order in [
        "Content-Length: 4\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 4",
    ] {
        let req = format!("POST /first HTTP/1.1\r\nHost: web.localhost\r\n{order}\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: web.localhost\r\n\r\n");
        let reply = raw(&p, req.as_bytes()).await;
        assert!(!reply.contains("/smuggled"), "{reply}");
        assert_eq!(
            reply.matches("HTTP/1.1").count(),
            1,
            "one answer, then closed: {reply}"
        );
    }
    assert!(
        b.hits.load(Ordering::SeqCst) <= 2,
        "only the two outer requests, never the smuggled ones"
    );
    b.hits.store(0, Ordering::SeqCst);
    let cases: [&[u8]; 5] = [
        b"POST / HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 4\r\nContent-Length: 7\r\n\r\nabcd",
        b"GET / HTTP/1.1\r\nHost: web.localhost\r\nBad Header: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: web.localhost\r\nX-Bin: \x01\x02\x7f\r\n\r\n",
        b"GET /\x00path HTTP/1.1\r\nHost: web.localhost\r\n\r\n",
        b"GARBAGE\r\n\r\n",
    ];
    for case in cases {
        let reply = raw(&p, case).await;
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 400"),
            "{:?} -> {reply}",
            String::from_utf8_lossy(case)
        );
    }
    // HTTP/0.9 and random binary: closed without an answer.
    assert!(!raw(&p, b"GET /\r\n").await.contains("backend="));
    let noise: Vec<u8> = (0..512).map(|_| rand::random::<u8>() | 0x80).collect();
    assert!(!raw(&p, &noise).await.contains("backend="));
    assert_eq!(
        b.hits.load(Ordering::SeqCst),
        0,
        "nothing reached the backend"
    );
    assert_eq!(
        get(p.addr(), "web.localhost", "/").await.status,
        200,
        "still serving"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn h2_rapid_reset_is_cut_off_while_others_are_served() {
    let p = Portok::new();
    let b = backend("b").await;
    p.ok(&["alias", "web", &b.port.to_string()]);
    let addr = p.addr();
    let flood = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
        let conn = tokio::spawn(conn);
        let mut sent = 0u32;
        for _ in 0..20_000 {
            let req = http::Request::get("http://web.localhost/")
                .body(())
                .unwrap();
            let Ok(ready) =
                tokio::time::timeout(Duration::from_secs(5), client.clone().ready()).await
            else {
                break;
            };
            let Ok(mut c) = ready else { break };
            match c.send_request(req, false) {
                Ok((_resp, mut stream)) => {
                    stream.send_reset(h2::Reason::CANCEL);
                    sent += 1;
                }
                Err(_) => break,
            }
            client = c;
        }
        let cut = tokio::time::timeout(Duration::from_secs(10), conn).await;
        (sent, cut)
    });
    // Meanwhile a normal client keeps being served.
    let mut served = 0;
    let start = Instant::now();
    while !flood.is_finished() && start.elapsed() < Duration::from_secs(30) {
        assert_eq!(get(addr, "web.localhost", "/").await.status, 200);
        served += 1;
    }
    let (sent, cut) = flood.await.unwrap();
    assert!(served > 0);
    let cut_off = matches!(cut, Ok(Ok(Err(_))) | Ok(Ok(Ok(()))));
    let cut = format!("{cut:?}");
    assert!(
        cut_off,
        "the flooding connection was not closed after {sent} resets"
    );
    // The server ends the flooding connection: the h2 layer's limit on remotely reset
    // streams (GOAWAY ENHANCE_YOUR_CALM) or portok's own cancel meter.
    let log = std::fs::read_to_string(p.state().join("proxy.log")).unwrap();
    assert!(
        log.contains("reached limit") || log.contains("rapid reset"),
        "no sign of the flood being cut off ({sent} resets queued, {cut:?}): {log}"
    );
    assert_eq!(get(addr, "web.localhost", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_upstream_response_is_a_502_not_a_hang() {
    let p = Portok::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\nhello")
                    .await;
            });
        }
    });
    p.ok(&["alias", "broken", &port.to_string()]);
    let start = Instant::now();
    let r = get(p.addr(), "broken.localhost", "/").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_cap_are_refused_cleanly() {
    let p = Portok::new();
    let b = backend("b").await;
    p.ok(&["proxy", "start", "--max-connections", "8"]);
    p.ok(&["alias", "web", &b.port.to_string()]);
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(p.addr()).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(p.addr()).await.unwrap();
    let _ = extra
        .write_all(b"GET / HTTP/1.1\r\nHost: web.localhost\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut buf))
        .await
        .expect("refused promptly, not hung");
    assert!(
        n.is_err() || buf.is_empty(),
        "over the cap but answered: {}",
        String::from_utf8_lossy(&buf)
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        get(p.addr(), "web.localhost", "/").await.status,
        200,
        "serves again under the cap"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_daemon_is_healed_by_the_next_command_and_by_portok_run() {
    let p = Portok::new();
    let b = backend("b").await;
    p.ok(&["alias", "web", &b.port.to_string()]);
    let pid = p.daemon_pid().unwrap();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        TcpStream::connect(p.addr()).await.is_err(),
        "daemon is down"
    );
    // The next command that needs the proxy starts it with every route.
    p.ok(&["alias", "other", &b.port.to_string()]);
    assert_eq!(get(p.addr(), "web.localhost", "/").await.status, 200);

    // A running `portok run` notices within about a second and restarts it.
    let dir = project(&p);
    let script = app_script();
    let app = p.spawn_app(&dir, &["app", &script]);
    app.wait_for("app ready in", Duration::from_secs(60)).await;
    let pid = p.daemon_pid().unwrap();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let start = Instant::now();
    loop {
        // A connect can still land in the dying daemon's backlog and be reset: retry.
        if try_get(p.addr(), "app.localhost", "/")
            .await
            .is_some_and(|r| r.status == 200)
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "portok run did not restart the daemon"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(
        get(p.addr(), "web.localhost", "/").await.status,
        200,
        "aliases intact"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_lock_holder_makes_writers_fail_in_bounded_time_naming_it() {
    use fs4::fs_std::FileExt;
    use std::io::Write;
    let p = Portok::new();
    p.ok(&["alias", "web", "4100"]);
    let before = std::fs::read(p.routes_json()).unwrap();
    let mut lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p.state().join("routes.lock"))
        .unwrap();
    FileExt::lock_exclusive(&lock).unwrap();
    write!(lock, "{}", std::process::id()).unwrap();
    let start = Instant::now();
    let out = p
        .command()
        .env("PORTOK_LOCK_TIMEOUT", "1")
        .args(["alias", "api", "4200"])
        .output()
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert_eq!(
        std::fs::read(p.routes_json()).unwrap(),
        before,
        "nothing written"
    );
    drop(lock);
    p.ok(&["alias", "api", "4200"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_dir_of_another_user_is_refused() {
    let p = Portok::new();
    std::fs::create_dir_all(p.state()).unwrap();
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root to give the state dir to another user");
        return;
    }
    std::os::unix::fs::chown(p.state(), Some(65534), Some(65534)).unwrap();
    let out = p.run(&["alias", "web", "4100"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&p.state().display().to_string()) && err.contains("uid 65534"),
        "{err}"
    );
    assert!(!p.routes_json().exists());
}

/// A small tmpfs for the state dir, or None (with a note) when mounting is not allowed.
fn tmpfs(dir: &std::path::Path, size: &str) -> Option<()> {
    std::fs::create_dir_all(dir).unwrap();
    let ok = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(())
}

fn umount(dir: &std::path::Path) {
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(dir)
        .status();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_or_full_state_dir_fails_clearly_and_keeps_routes_json_whole() {
    let p = Portok::new();
    if tmpfs(&p.state(), "256k").is_none() {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            umount(&self.0);
        }
    }
    let _guard = Unmount(p.state());
    p.ok(&["alias", "web", "4100"]);
    p.ok(&["proxy", "stop"]);
    let before = std::fs::read(p.routes_json()).unwrap();

    // Full: fill the filesystem, then try to add a route.
    let mut filler = std::fs::File::create(p.state().join("filler")).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    use std::io::Write;
    while filler.write_all(&chunk).is_ok() {}
    let _ = filler.flush();
    let out = p.run(&["alias", "api", &"1".repeat(4)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&p.state().display().to_string()),
        "names the path: {err}"
    );
    assert_eq!(
        std::fs::read(p.routes_json()).unwrap(),
        before,
        "routes.json whole"
    );
    drop(filler);
    std::fs::remove_file(p.state().join("filler")).unwrap();

    // Read-only.
    // A remount can be refused while the kernel still finishes closing files: retry briefly.
    let mut remounted = false;
    for _ in 0..50 {
        let out = std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(p.state())
            .output()
            .unwrap();
        if out.status.success() {
            remounted = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(remounted, "could not remount the state dir read-only");
    let out = p.run(&["alias", "api", "4200"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&p.state().display().to_string()) && err.to_lowercase().contains("read-only"),
        "{err}"
    );
    assert_eq!(std::fs::read(p.routes_json()).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_rebinding_hosts_get_404_never_an_app() {
    let p = Portok::new();
    let b = backend("b").await;
    p.ok(&["alias", "web", &b.port.to_string()]);
    for host in [
        "attacker.example",
        "web.localhost.attacker.example",
        "127.0.0.1",
        &format!("127.0.0.1:{}", p.port),
        "localhost",
        "web",
    ] {
        let r = get(p.addr(), host, "/").await;
        assert_eq!(r.status, 404, "{host}");
    }
    assert_eq!(b.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_tightened_to_0600_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let p = Portok::new();
    p.ok(&["proxy", "start"]);
    p.ok(&["proxy", "stop"]);
    let key = p.state().join("ca-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(p.state(), std::fs::Permissions::from_mode(0o755)).unwrap();
    p.ok(&["proxy", "start"]);
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(p.state()).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let log = std::fs::read_to_string(p.state().join("proxy.log")).unwrap();
    assert!(log.contains("made it 0600"), "{log}");
    assert!(!log.contains("PRIVATE KEY"), "the CA key is never logged");
}

/// An h2 client that vanishes without a word (a phone leaving the LAN) is dropped by TCP's
/// keep-alive probes, which portok arms on its h2 connections (30 s of silence) rather than
/// pinging in h2 (that cost a clock read and a lock on every frame). HTTP/1.1 connections
/// never had the pings, and get no probes either.
#[tokio::test(flavor = "multi_thread")]
async fn h2_connections_have_tcp_keep_alive_probes_and_http1_ones_do_not() {
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let p = Portok::new();
    let b = backend("b").await;
    p.ok(&["alias", "web", &b.port.to_string()]);
    let stream = TcpStream::connect(p.addr()).await.unwrap();
    let h2_port = stream.local_addr().unwrap().port();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://web.localhost:{}/", p.port))
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
    let mut h1 = TcpStream::connect(p.addr()).await.unwrap();
    h1.write_all(b"GET / HTTP/1.1\r\nHost: web.localhost\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut h1).await.starts_with("HTTP/1.1 200"));
    let h1_port = h1.local_addr().unwrap().port();
    // The kernel arms the keep-alive timer once the connection is quiet.
    let mut armed = (None, None);
    for _ in 0..50 {
        armed = (
            keep_alive_due(p.port, h2_port),
            keep_alive_due(p.port, h1_port),
        );
        if armed.0.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (h2, h1) = armed;
    let h2 = h2.expect("no keep-alive timer on the h2 connection");
    assert!(
        h2 <= Duration::from_secs(30),
        "first probe due in {h2:?}, expected 30 s at most"
    );
    assert_eq!(h1, None, "keep-alive timer on the HTTP/1.1 connection");
}

/// When TCP's keep-alive timer of portok's end of the connection from `client_port` is
/// due, if it runs (`tr` 2 in /proc/net/tcp, `tm->when` in clock ticks of 1/100 s).
fn keep_alive_due(server_port: u16, client_port: u16) -> Option<Duration> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next().unwrap(), 16).unwrap();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if port(f[1]) == server_port && port(f[2]) == client_port {
            let (timer, when) = f[5].split_once(':').unwrap();
            let ticks = u64::from_str_radix(when, 16).unwrap();
            return (timer == "02").then(|| Duration::from_millis(ticks * 10));
        }
    }
    panic!("no connection from port {client_port} to {server_port} in /proc/net/tcp");
}
