//! gRPC with the Rust stack: the tonic server of examples/grpc.rs run as `portok api CMD`,
//! called by a tonic client through portok over TLS and h2c.

use crate::support::*;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Code, Request};

#[path = "../../examples/grpc/channel.rs"]
mod channel;
#[path = "../../examples/grpc/echo.rs"]
#[allow(clippy::all, dead_code)]
mod echo;

use echo::echo_client::EchoClient;
use echo::{CountRequest, Msg, SlowRequest};

const LONG: Duration = Duration::from_secs(60);
const MAX_MESSAGE: usize = 16 << 20;

fn msg(text: &str) -> Msg {
    Msg {
        text: text.into(),
        blob: Vec::new(),
    }
}

/// A project folder running the tonic example as `portok api ...` with `flags`.
async fn tonic_app(p: &Portok, flags: &[&str]) -> (std::path::PathBuf, RunningApp) {
    tonic_app_env(p, flags, &[]).await
}

/// [`tonic_app`], with the example's knobs set in its environment.
async fn tonic_app_env(
    p: &Portok,
    flags: &[&str],
    env: &[(&str, &str)],
) -> (std::path::PathBuf, RunningApp) {
    let bin = example_bin("grpc");
    let dir = project(p);
    let mut args = vec!["api"];
    args.extend_from_slice(flags);
    args.push(bin.to_str().unwrap());
    let env: Vec<_> = env
        .iter()
        .map(|(k, v)| (*k, std::path::Path::new(v)))
        .collect();
    let app = p.spawn_app_env(&dir, &args, &env);
    app.wait_for("api ready in", LONG).await;
    (dir, app)
}

async fn client(p: &Portok, tls: bool) -> EchoClient<tonic::transport::Channel> {
    let ca = p.state().join("ca.pem");
    let chan = channel::channel(
        &format!("http://{}", p.addr()),
        &format!("api.localhost:{}", p.port),
        tls.then(|| ca.to_str().unwrap()),
    )
    .await
    .unwrap_or_else(|e| panic!("connecting (tls {tls}): {e}"));
    EchoClient::new(chan)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// Every kind of call, as a tonic client makes it, with what the app must have seen.
async fn every_kind_of_call(mut c: EchoClient<tonic::transport::Channel>, tls: bool) {
    let said = c.say(msg("hi")).await.unwrap().into_inner();
    assert_eq!(said.text, "v1: hi", "tls {tls}");

    // A server stream of 1,000 messages, in order.
    let mut stream = c
        .count(CountRequest { n: 1000 })
        .await
        .unwrap()
        .into_inner();
    let mut next = 0;
    while let Some(m) = stream.next().await {
        assert_eq!(m.unwrap().text, next.to_string(), "tls {tls}");
        next += 1;
    }
    assert_eq!(next, 1000, "tls {tls}");

    // A client stream.
    let texts = futures_util::stream::iter(["a", "b", "c"].map(msg));
    let joined = c.collect(texts).await.unwrap().into_inner();
    assert_eq!(joined.text, "3:a,b,c", "tls {tls}");

    // A bidi stream of 100 echoes, each answered before the next is sent: nothing on the
    // way waits for the end of the stream.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let outgoing = tokio_stream_of(rx);
    let mut answers = c.chat(outgoing).await.unwrap().into_inner();
    for i in 0..100 {
        tx.send(msg(&format!("e{i}"))).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), answers.next())
            .await
            .unwrap_or_else(|_| panic!("echo {i} did not come back before the next was sent"))
            .unwrap()
            .unwrap();
        assert_eq!(answer.text, format!("e{i}"));
    }
    drop(tx);
    assert!(answers.next().await.is_none());

    // NOT_FOUND with its message and trailing metadata.
    let status = c.find(msg("x")).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "tls {tls}: {status:?}");
    assert_eq!(status.message(), "no such thing");
    assert_eq!(status.metadata().get("x-why").unwrap(), "testing");

    // A 5 MiB message each way.
    let blob = vec![7u8; 5 << 20];
    let big = c
        .say(Msg {
            text: "big".into(),
            blob: blob.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(big.blob == blob, "tls {tls}: the 5 MiB message changed");

    // The client's deadline reaches the app as grpc-timeout, and one it misses gives
    // DEADLINE_EXCEEDED.
    let mut within = Request::new(SlowRequest { ms: 10 });
    within.set_timeout(Duration::from_secs(30));
    let text = c.slow(within).await.unwrap().into_inner().text;
    assert!(
        text.starts_with("grpc-timeout=") && text != "grpc-timeout=none",
        "{text}"
    );
    // tonic reports a deadline it enforces itself as CANCELLED "Timeout expired" (direct
    // to the app too); grpcio's DEADLINE_EXCEEDED is checked in grpc.rs.
    let before = c
        .cancelled(CountRequest::default())
        .await
        .unwrap()
        .into_inner()
        .n;
    let mut late = Request::new(SlowRequest { ms: 3000 });
    late.set_timeout(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let status = c.slow(late).await.unwrap_err();
    let code = status.code();
    assert!(
        code == Code::DeadlineExceeded
            || (code == Code::Cancelled && status.message() == "Timeout expired"),
        "tls {tls}: {status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // A call the client gives up (RST_STREAM) is cancelled in the app too: the late one
    // above and this one.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        c.slow(SlowRequest { ms: 10_000 }),
    )
    .await;
    assert!(gave_up.is_err(), "the slow call answered early");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        let now = c
            .cancelled(CountRequest::default())
            .await
            .unwrap()
            .into_inner()
            .n;
        if now >= before + 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the app never saw the cancel"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<Msg>,
) -> impl futures_util::Stream<Item = Msg> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// `portok api examples/grpc` with no flag: unary, a server stream of 1,000, a client
/// stream, a bidi stream of 100, NOT_FOUND with trailing metadata, 5 MiB messages,
/// deadlines and cancellation all work over TLS and h2c; `--health grpc` uses the standard
/// health service; an HTTP/1.1 client gets the answer translated.
#[tokio::test(flavor = "multi_thread")]
async fn a_tonic_server_answers_every_kind_of_call_through_portok() {
    let p = Portok::new();
    let (_dir, app) = tonic_app(&p, &[]).await;
    assert!(app.text().contains("speaks only HTTP/2"), "{}", app.text());
    for tls in [false, true] {
        every_kind_of_call(client(&p, tls).await, tls).await;
    }
    // The inspector shows each call: method path, grpc-status, messages each way.
    let calls: Vec<serde_json::Value> = p
        .ok(&["inspect", "api", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let call = |path: &str| {
        calls
            .iter()
            .find(|c| c["path"] == path)
            .unwrap_or_else(|| panic!("no {path} in {calls:#?}"))["grpc"]
            .clone()
    };
    let find = call("/echo.Echo/Find");
    assert_eq!(find["status_name"], "NOT_FOUND", "{find}");
    assert_eq!(find["message"], "no such thing", "{find}");
    let count = call("/echo.Echo/Count");
    assert_eq!(
        (&count["messages_in"], &count["messages_out"]),
        (&1.into(), &1000.into()),
        "{count}"
    );
    let chat = call("/echo.Echo/Chat");
    assert_eq!(
        (&chat["messages_in"], &chat["messages_out"]),
        (&100.into(), &100.into()),
        "{chat}"
    );
    assert_eq!(call("/echo.Echo/Collect")["messages_in"], 3);
    assert_eq!(call("/echo.Echo/Say")["status_name"], "OK");
    let line = p.ok(&["inspect", "api"]);
    assert!(line.contains("200 NOT_FOUND 1→0 msgs"), "{line}");

    let status = p.ok(&["status", "api", "--json"]);
    assert!(status.contains("\"upstream\": \"h2\""), "{status}");

    an_http1_client_gets_the_answer(&p).await;

    // Declared health: ready once grpc.health.v1.Health/Check says SERVING.
    let bin = example_bin("grpc");
    let dir2 = project(&p);
    let health = p.spawn_app(
        &dir2,
        &["api2", "--health", "grpc", "--", bin.to_str().unwrap()],
    );
    health.wait_for("api2 ready in", LONG).await;
}

/// A daemon held to one core (taskset here; a container given one CPU alike) runs on
/// tokio's single-threaded scheduler, where every task shares the one thread: every kind of
/// call still passes, over h2c and TLS, and an HTTP/1.1 client still gets its answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_held_to_one_core_answers_every_kind_of_call() {
    let p = Portok::new();
    let portok = p.command();
    let mut start = std::process::Command::new("taskset");
    start.args(["-c", "0"]).arg(portok.get_program());
    start.args(["proxy", "start"]);
    for (k, v) in portok.get_envs() {
        match v {
            Some(v) => start.env(k, v),
            None => start.env_remove(k),
        };
    }
    let out = output_within(start, LONG);
    assert!(
        out.status.success(),
        "taskset -c 0 portok proxy start: {}",
        stderr(&out)
    );
    let pid = p.daemon_pid().expect("a daemon pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().eq(["Cpus_allowed_list:", "0"])),
        "the daemon is not held to core 0:\n{status}"
    );

    let (_dir, _app) = tonic_app(&p, &[]).await;
    for tls in [false, true] {
        every_kind_of_call(client(&p, tls).await, tls).await;
    }
    an_http1_client_gets_the_answer(&p).await;
}

/// An HTTP/1.1 client (no HTTP/2 at all) calls Say: Msg{text: "hi"} is 0a 02 68 69.
async fn an_http1_client_gets_the_answer(p: &Portok) {
    let req = hyper::Request::post("/echo.Echo/Say")
        .header("host", "api.localhost")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"\0\0\0\0\x04\x0a\x02hi",
        )))
        .unwrap();
    let r = request(p.addr(), req).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("v1: hi"), "{:?}", r.text());
}

/// An edit redeploys the tonic app under 4 looping clients (2 over TLS, 2 over h2c) with no
/// failed call; new calls reach generation 2, and a server stream read slowly across the
/// redeploy gets all of its messages, in order.
#[tokio::test(flavor = "multi_thread")]
async fn a_tonic_redeploy_under_load_fails_no_call_and_a_stream_crosses_it() {
    let p = Portok::new();
    let (dir, app) = tonic_app(&p, &["--drain", "30", "--"]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let mut loops = Vec::new();
    for i in 0..4 {
        let mut c = client(&p, i % 2 == 1).await;
        let (stop, failed) = (stop.clone(), failed.clone());
        loops.push(tokio::spawn(async move {
            let (mut calls, mut last) = (0u64, String::new());
            while !stop.load(Ordering::SeqCst) {
                match c.say(msg("x")).await {
                    Ok(r) => last = r.into_inner().text,
                    Err(e) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        eprintln!("call failed: {e:?}");
                    }
                }
                calls += 1;
            }
            (calls, last)
        }));
    }
    let mut slow_reader = client(&p, true).await;
    let stream = tokio::spawn(async move {
        let mut s = slow_reader
            .count(CountRequest { n: 400 })
            .await
            .unwrap()
            .into_inner();
        let mut next = 0;
        while let Some(m) = s.next().await {
            assert_eq!(m.unwrap().text, next.to_string());
            next += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        next
    });
    // A bidi stream that stays open across the switch: one echo every 10 ms for 3 s.
    let mut chatter = client(&p, false).await;
    let chat = tokio::spawn(async move {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut answers = chatter
            .chat(tokio_stream_of(rx))
            .await
            .unwrap()
            .into_inner();
        for i in 0..300 {
            tx.send(msg(&i.to_string())).await.unwrap();
            assert_eq!(answers.next().await.unwrap().unwrap().text, i.to_string());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(tx);
        assert!(answers.next().await.is_none());
        300
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::write(dir.join("version.txt"), "2").unwrap();
    app.wait_for("generation 2 ready", LONG).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        let (calls, last) = l.await.unwrap();
        assert!(calls > 10, "a client made only {calls} calls");
        assert_eq!(last, "v2: x", "new calls reach generation 2");
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "{}", app.text());
    assert_eq!(
        stream.await.unwrap(),
        400,
        "the server stream across the redeploy"
    );
    assert_eq!(
        chat.await.unwrap(),
        300,
        "the bidi stream across the redeploy"
    );
    assert!(!app.text().contains("generation 3"), "{}", app.text());
}

/// `portok alias api PORT --upstream h2` to a gRPC server portok did not start: reached
/// over h2c (an alias is never asked anything: the server may count its requests).
#[tokio::test(flavor = "multi_thread")]
async fn an_alias_to_a_grpc_server_says_h2() {
    let p = Portok::new();
    let port = free_port();
    let mut server = std::process::Command::new(example_bin("grpc"))
        .env("PORT", port.to_string())
        .current_dir(project(&p))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(LONG, "the grpc example to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .await;
    let out = p.run(&["alias", "api", &port.to_string(), "--upstream", "h2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for tls in [false, true] {
        let said = client(&p, tls).await.say(msg("hi")).await.unwrap();
        assert_eq!(said.into_inner().text, "v1: hi");
    }
    server.kill().unwrap();
    server.wait().unwrap();
}

/// An app that closes its connections by age (grpc-go's MaxConnectionAge; tonic's
/// max_connection_age) sends GOAWAY every 200 ms: calls under way finish, and new calls go
/// on a new connection. Two looping clients fail no call.
#[tokio::test(flavor = "multi_thread")]
async fn an_app_that_closes_its_connections_by_age_fails_no_call() {
    let p = Portok::new();
    let _app = tonic_app_env(&p, &[], &[("GRPC_MAX_CONNECTION_AGE_MS", "200")]).await;
    let mut loops = Vec::new();
    for tls in [false, true] {
        let mut c = client(&p, tls).await;
        loops.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            let until = std::time::Instant::now() + Duration::from_secs(3);
            while std::time::Instant::now() < until {
                match c.say(msg("hi")).await {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(format!("{:?} {}", e.code(), e.message())),
                }
            }
            (ok, failed)
        }));
    }
    for l in loops {
        let (ok, failed) = l.await.unwrap();
        assert!(
            failed.is_empty(),
            "{} of {} calls failed: {:?}",
            failed.len(),
            ok as usize + failed.len(),
            &failed[..failed.len().min(5)]
        );
        assert!(ok > 100, "only {ok} calls in 3 s");
    }
}

/// The connections from portok (127.0.0.1, any port) to `port` that are established, read
/// from /proc/net/tcp (the app's side of each is its local address).
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // The app's end: local address is its port; state 01 is ESTABLISHED.
            cols.len() > 3 && cols[1] == local && cols[3] == "01"
        })
        .count()
}

/// An app that takes 2 calls at a time on a connection (its SETTINGS): 6 slow calls at once
/// go over 3 connections, so none waits for another, and all are answered.
#[tokio::test(flavor = "multi_thread")]
async fn calls_past_the_apps_stream_limit_go_on_more_connections() {
    let p = Portok::new();
    let _app = tonic_app_env(&p, &[], &[("GRPC_MAX_STREAMS", "2")]).await;
    let port = route_of(&p, "api.localhost").unwrap()["port"]
        .as_u64()
        .unwrap() as u16;
    // One call first, so the app's SETTINGS have come before the six.
    let mut c = client(&p, false).await;
    c.say(msg("hi")).await.unwrap();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let mut c = c.clone();
            tokio::spawn(async move { c.slow(SlowRequest { ms: 1500 }).await })
        })
        .collect();
    let mut most = 0;
    let until = std::time::Instant::now() + Duration::from_millis(1200);
    while std::time::Instant::now() < until {
        most = most.max(connections_to(port));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for call in calls {
        call.await.unwrap().expect("a slow call");
    }
    assert!(
        most >= 3,
        "portok had {most} connections to the app at most"
    );
}

/// The daemon's resident memory, from /proc.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Flow control holds end to end, over h2c and TLS: a client that sends a bidi stream of
/// 400 messages of 256 KiB (100 MiB) and reads none of the echoes is stopped once the
/// windows on the way are full. The app stops reading because its echoes cannot go, portok
/// stops reading both ways, and its memory stays flat. Read again, every echo arrives, in
/// order. (Direct to the app, the client gets 13 messages out before it is stopped; through
/// portok, 24: portok's windows hold 11 more. Sending on without the app's window, portok
/// took all 400 and grew by 100 MiB.)
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_stops_the_app_and_portok_holds_no_backlog() {
    const N: usize = 400;
    const SIZE: usize = 256 << 10;
    let p = Portok::new();
    let (_dir, _app) = tonic_app(&p, &[]).await;
    let pid = p.daemon_pid().expect("the daemon's pid");
    for tls in [false, true] {
        let mut c = client(&p, tls).await;
        c.say(msg("hi")).await.unwrap();
        let before = rss_kib(pid);
        let taken = Arc::new(AtomicU64::new(0));
        let counter = taken.clone();
        let out = futures_util::stream::iter(0..N).map(move |i| {
            counter.fetch_add(1, Ordering::SeqCst);
            Msg {
                text: i.to_string(),
                blob: vec![b'x'; SIZE],
            }
        });
        let mut echoes = c.chat(out).await.expect("the chat call").into_inner();
        // Wait until the sender is held: no message taken for a second.
        let (mut last, mut still) = (0, 0);
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = taken.load(Ordering::SeqCst);
            still = if now == last { still + 1 } else { 0 };
            last = now;
            if still >= 10 {
                break;
            }
        }
        let grown = rss_kib(pid).saturating_sub(before);
        assert!(
            still >= 10,
            "tls {tls}: the client never stopped: {last} taken"
        );
        assert!(
            (last as usize) < N / 4,
            "tls {tls}: {last} of {N} messages went while nothing was read"
        );
        assert!(
            grown < 32 << 10,
            "tls {tls}: portok grew by {grown} KiB while the stream stood"
        );
        for i in 0..N {
            let m = tokio::time::timeout(LONG, echoes.next())
                .await
                .expect("the next echo")
                .expect("more echoes")
                .expect("an echo");
            assert_eq!(m.text, i.to_string(), "tls {tls}");
            assert_eq!(m.blob.len(), SIZE, "tls {tls}");
        }
        assert!(echoes.next().await.is_none(), "tls {tls}: the stream ends");
        assert_eq!(taken.load(Ordering::SeqCst) as usize, N);
    }
}

/// A stream the app holds back (it reads nothing more: its echoes wait on a client that
/// does not read) holds no other client's call back. When the client gives it up, it is
/// reset at the app too: portok does not keep it open, waiting for window on the client's
/// behalf.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_resets_a_held_back_stream_resets_it_at_the_app() {
    let p = Portok::new();
    let (_dir, _app) = tonic_app(&p, &[]).await;
    let mut c = client(&p, false).await;
    let cancelled = |mut c: EchoClient<tonic::transport::Channel>| async move {
        c.cancelled(CountRequest::default())
            .await
            .unwrap()
            .into_inner()
            .n
    };
    let before = cancelled(c.clone()).await;
    // A Chat by hand on h2 over h2c, so the test decides when the stream is reset.
    let tcp = tokio::net::TcpStream::connect(p.addr()).await.unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    let req = hyper::Request::post(format!("http://api.localhost:{}/echo.Echo/Chat", p.port))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (_answer, mut tx) = h2.send_request(req, false).unwrap();
    // Messages of 256 KiB (field 2, the blob), sent as the window allows, until it stays shut.
    let size = 256usize << 10;
    let mut framed = vec![0u8];
    framed.extend_from_slice(&((size + 4) as u32).to_be_bytes());
    framed.extend_from_slice(&[0x12, 0x80, 0x80, 0x10]); // blob: 262,144 bytes (varint)
    framed.resize(5 + 4 + size, b'x');
    let framed = bytes::Bytes::from(framed);
    let mut sent = 0;
    loop {
        tx.reserve_capacity(framed.len());
        let waited = tokio::time::timeout(Duration::from_secs(1), async {
            while tx.capacity() < framed.len() {
                futures_util::future::poll_fn(|cx| tx.poll_capacity(cx))
                    .await
                    .expect("the stream is open")
                    .unwrap();
            }
        })
        .await;
        if waited.is_err() {
            break;
        }
        tx.send_data(framed.clone(), false).unwrap();
        sent += 1;
        assert!(sent < 200, "the window never shut");
    }
    // The held-back stream holds no other call back: portok's connection to the app has a
    // stream waiting for window, so other calls go on another.
    let other = tokio::time::timeout(Duration::from_secs(5), cancelled(c.clone())).await;
    assert_eq!(
        other.ok(),
        Some(before),
        "another client's call while the stream is held"
    );
    tx.send_reset(h2::Reason::CANCEL);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while cancelled(c.clone()).await < before + 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the app's Chat was still open 5 s after the client reset it ({sent} messages sent)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.say(msg("hi")).await.expect("the app goes on");
}

/// Server streams to clients that read none of them fill their windows at portok, which
/// share portok's connection window to the app (16 MiB, eight streams' windows). Sixteen such
/// streams (each ~100 MB of messages) leave room for another client's call: a connection
/// whose answers hold half its window unread takes no new call. (Without that, the call
/// waited past 5 s in 3 of 3 runs; with the 5 MiB window portok had before, four streams
/// were enough.)
#[tokio::test(flavor = "multi_thread")]
async fn server_streams_to_clients_that_do_not_read_hold_no_other_call() {
    const STALLED: usize = 16;
    let p = Portok::new();
    let (_dir, _app) = tonic_app(&p, &[]).await;
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        let mut c = client(&p, false).await;
        let s = c
            .count(CountRequest { n: 10_000_000 })
            .await
            .expect("a server stream")
            .into_inner();
        stalled.push((c, s));
    }
    // Until the streams stand: the app has filled every window on the way.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut c = client(&p, false).await;
    let said = tokio::time::timeout(Duration::from_secs(5), c.say(msg("hi"))).await;
    let said = said.expect("another client's call is answered while the streams stand");
    assert_eq!(said.unwrap().into_inner().text, "v1: hi");
    // And a stalled stream reads on, in order.
    let (_, s) = &mut stalled[0];
    for i in 0..1000 {
        let m = s.next().await.expect("more").expect("a message");
        assert_eq!(m.text, i.to_string());
    }
}

/// One HTTP/2 request on `send`: its status, body and trailers.
async fn h2_exchange(
    send: &mut h2::client::SendRequest<bytes::Bytes>,
    req: http::Request<()>,
    body: &[u8],
) -> (u16, Vec<u8>, Option<http::HeaderMap>) {
    let (resp, mut tx) = send.send_request(req, body.is_empty()).unwrap();
    if !body.is_empty() {
        tx.send_data(bytes::Bytes::copy_from_slice(body), true)
            .unwrap();
    }
    let resp = tokio::time::timeout(LONG, resp).await.unwrap().unwrap();
    let status = resp.status().as_u16();
    let mut rx = resp.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = rx.data().await {
        let chunk = chunk.unwrap();
        let _ = rx.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    (status, got, rx.trailers().await.unwrap())
}

/// A connection whose first request is a call (relayed to the app frame by frame) is
/// served by the relay for its whole life: a page from an HTTP/1.1 app, portok's own
/// answer for an unknown host, and a gRPC-Web call on the same connection come back as
/// they would on any other, then another call; over h2c and TLS.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_carries_calls_reaches_every_other_route_too() {
    let p = Portok::new();
    let _app = tonic_app(&p, &[]).await;
    let web = backend("web").await;
    p.ok(&["alias", "web", &web.port.to_string()]);
    // Msg { text: "hi" }, as one gRPC message.
    let call = [0, 0, 0, 0, 4, 0x0a, 2, b'h', b'i'];
    for tls in [false, true] {
        let mut send = if tls {
            let io = crate::tls::tls_connect(&p, "api.localhost", &[b"h2"])
                .await
                .unwrap();
            let (send, conn) = h2::client::handshake(io).await.unwrap();
            tokio::spawn(conn);
            send
        } else {
            let io = tokio::net::TcpStream::connect(p.addr()).await.unwrap();
            let (send, conn) = h2::client::handshake(io).await.unwrap();
            tokio::spawn(conn);
            send
        };
        let scheme = if tls { "https" } else { "http" };
        let url = |host: &str, path: &str| format!("{scheme}://{host}:{}{path}", p.port);
        let grpc = |path: &str, ty: &str| {
            http::Request::post(url("api.localhost", path))
                .header("content-type", ty)
                .header("te", "trailers")
                .body(())
                .unwrap()
        };
        let (status, body, trailers) =
            h2_exchange(&mut send, grpc("/echo.Echo/Say", "application/grpc"), &call).await;
        assert_eq!(status, 200, "tls {tls}");
        assert!(body.ends_with(b"v1: hi"), "tls {tls}: {body:?}");
        assert_eq!(trailers.unwrap()["grpc-status"], "0", "tls {tls}");

        let page = http::Request::get(url("web.localhost", "/page"))
            .body(())
            .unwrap();
        let (status, body, _) = h2_exchange(&mut send, page, &[]).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 200, "tls {tls}: {body}");
        assert!(
            body.contains("backend=web") && body.contains("x-forwarded-proto="),
            "{body}"
        );

        let none = http::Request::get(url("nosuch.localhost", "/"))
            .body(())
            .unwrap();
        let (status, _, _) = h2_exchange(&mut send, none, &[]).await;
        assert_eq!(status, 404, "tls {tls}");

        // gRPC-Web goes to the handler, which translates it for the app.
        let (status, body, _) = h2_exchange(
            &mut send,
            grpc("/echo.Echo/Say", "application/grpc-web+proto"),
            &call,
        )
        .await;
        assert_eq!(status, 200, "tls {tls}");
        assert!(
            body.windows(6).any(|w| w == b"v1: hi")
                && body.windows(13).any(|w| w == b"grpc-status:0"),
            "tls {tls}: {body:?}"
        );

        let (status, body, _) =
            h2_exchange(&mut send, grpc("/echo.Echo/Say", "application/grpc"), &call).await;
        assert_eq!(
            (status, body.ends_with(b"v1: hi")),
            (200, true),
            "tls {tls}"
        );
    }
    assert!(web.hits.load(Ordering::SeqCst) >= 2);
}
