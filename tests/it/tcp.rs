//! TCP routes (issue: TCP routes with zero-downtime switch, splice fast path).

use crate::support::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP echo server on loopback; returns its port and a task handle (abort to stop).
async fn echo_server() -> (u16, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (port, task)
}

async fn roundtrip(port: u16, data: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the TCP route");
    let (mut r, mut w) = s.split();
    let send = async {
        w.write_all(data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let recv = r.read_to_end(&mut back);
    let (_, got) =
        tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(send, recv) })
            .await
            .expect("echo timed out");
    got.unwrap();
    back
}

fn tcp_status(p: &Portok, name: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&p.ok(&["status", name, "--json"])).unwrap();
    v["tcp"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tcp_alias_relays_bytes_with_splice_and_counts_them() {
    let p = Portok::new();
    let (echo, _t) = echo_server().await;
    let listen = free_port();
    let out = p.ok(&[
        "alias",
        "db",
        &echo.to_string(),
        "--tcp",
        &listen.to_string(),
    ]);
    assert_eq!(out.trim(), format!("127.0.0.1:{listen}"));
    let data: Vec<u8> = (0..(4 << 20)).map(|i| (i % 253) as u8).collect();
    assert_eq!(roundtrip(listen, &data).await, data);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = tcp_status(&p, "db");
    assert_eq!(t["listen"], listen);
    assert_eq!(t["bytes_in"], data.len() as u64, "{t}");
    assert_eq!(t["bytes_out"], data.len() as u64, "{t}");
    assert!(
        t["spliced"].as_u64().unwrap() >= 1,
        "splice used on Linux: {t}"
    );
    assert_eq!(t["copied"], 0);
    let m = admin(&p, "GET", "/metrics", None).await.text();
    assert!(
        m.contains(&format!(
            "portok_tcp_bytes_total{{route=\"db\",direction=\"in\"}} {}",
            data.len()
        )),
        "{m}"
    );
    assert!(
        m.contains("portok_tcp_connections_open{route=\"db\"} 0"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_userspace_fallback_relays_the_same_bytes() {
    let p = Portok::new();
    p.command()
        .env("PORTOK_NO_SPLICE", "1")
        .args(["proxy", "start"])
        .output()
        .unwrap();
    let (echo, _t) = echo_server().await;
    let listen = free_port();
    p.ok(&[
        "alias",
        "db",
        &echo.to_string(),
        "--tcp",
        &listen.to_string(),
    ]);
    let data: Vec<u8> = (0..(1 << 20)).map(|i| (i % 241) as u8).collect();
    assert_eq!(roundtrip(listen, &data).await, data);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = tcp_status(&p, "db");
    assert!(t["copied"].as_u64().unwrap() >= 1, "{t}");
    assert_eq!(t["spliced"], 0);
    assert_eq!(t["bytes_in"], data.len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_taken_listen_port_is_a_clear_error_naming_the_holder() {
    let p = Portok::new();
    let (echo, _t) = echo_server().await;
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let out = p.run(&[
        "alias",
        "db",
        &echo.to_string(),
        "--tcp",
        &taken.to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("TCP port {taken} is already in use")),
        "{err}"
    );
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "names the holder: {err}"
    );
    assert!(
        !p.ok(&["list", "--json"]).contains("db.localhost"),
        "nothing registered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_a_tcp_route_stops_accepting_and_lets_open_connections_finish() {
    let p = Portok::new();
    let (echo, _t) = echo_server().await;
    let listen = free_port();
    p.ok(&[
        "alias",
        "db",
        &echo.to_string(),
        "--tcp",
        &listen.to_string(),
    ]);
    let mut open = TcpStream::connect(("127.0.0.1", listen)).await.unwrap();
    open.write_all(b"before").await.unwrap();
    let mut buf = [0u8; 6];
    open.read_exact(&mut buf).await.unwrap();
    p.ok(&["alias", "--remove", "db"]);
    assert!(
        TcpStream::connect(("127.0.0.1", listen)).await.is_err(),
        "no longer accepting"
    );
    open.write_all(b"after!").await.unwrap();
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"after!", "the open connection still works");
}

#[tokio::test(flavor = "multi_thread")]
async fn switch_moves_new_tcp_connections_and_proxy_protocol_names_the_client() {
    let p = Portok::new();
    let (a, _ta) = echo_server().await;
    let (b, _tb) = echo_server().await;
    let listen = free_port();
    p.ok(&["alias", "db", &a.to_string(), "--tcp", &listen.to_string()]);
    let mut old = TcpStream::connect(("127.0.0.1", listen)).await.unwrap();
    let out = p.run(&["switch", "db", &free_port().to_string()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a port that refuses connections is unhealthy"
    );
    p.ok(&["switch", "db", &b.to_string(), "--drain", "0"]);
    assert_eq!(roundtrip(listen, b"new").await, b"new");
    assert_eq!(tcp_status(&p, "db")["target"], b);
    old.write_all(b"old").await.unwrap();
    let mut buf = [0u8; 3];
    old.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"old", "open connections stay on the old target");

    // PROXY protocol v1: the app reads the client's address first.
    let raw = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raw_port = raw.local_addr().unwrap().port();
    let listen2 = free_port();
    p.ok(&[
        "alias",
        "pp",
        &raw_port.to_string(),
        "--tcp",
        &listen2.to_string(),
        "--proxy-protocol",
    ]);
    let mut client = TcpStream::connect(("127.0.0.1", listen2)).await.unwrap();
    let client_port = client.local_addr().unwrap().port();
    client.write_all(b"hi").await.unwrap();
    let (mut s, _) = tokio::time::timeout(Duration::from_secs(10), raw.accept())
        .await
        .unwrap()
        .unwrap();
    let mut got = [0u8; 128];
    let mut n = 0;
    while !got[..n].ends_with(b"hi") {
        n += s.read(&mut got[n..]).await.unwrap();
    }
    let text = String::from_utf8_lossy(&got[..n]);
    assert_eq!(
        text,
        format!("PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {listen2}\r\nhi")
    );
}

const ECHO_APP: &str = r#"
import os, socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"]))); s.listen(128)
print("echo generation", os.environ.get("PORTOK_GENERATION"), "listening", flush=True)
def serve(c):
    while True:
        d = c.recv(65536)
        if not d: break
        c.sendall(d)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_tcp_app_redeployed_five_times_under_load_loses_no_byte() {
    let p = Portok::new();
    let dir = project(&p);
    std::fs::write(dir.join("echo.py"), ECHO_APP).unwrap();
    let listen = free_port();
    let app = p.spawn_app(
        &dir,
        &[
            "run",
            "echo",
            "--tcp",
            &listen.to_string(),
            "--drain",
            "60",
            "--rollback-window",
            "0",
            "--",
            "python3",
            "echo.py",
        ],
    );
    app.wait_for("echo ready in", Duration::from_secs(30)).await;

    // 20 long-lived connections that keep talking across every redeploy.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut long = Vec::new();
    for i in 0..20u32 {
        let stop = stop.clone();
        long.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(("127.0.0.1", listen))
                .await
                .expect("long connection");
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let msg = format!("conn {i} msg {sent};");
                s.write_all(msg.as_bytes())
                    .await
                    .expect("write on a long connection");
                let mut back = vec![0u8; msg.len()];
                tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
                    .await
                    .expect("echo on a long connection")
                    .expect("read on a long connection");
                assert_eq!(back, msg.as_bytes(), "bytes changed");
                sent += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent
        }));
    }
    // New connections every 10 ms.
    let stop2 = stop.clone();
    let fresh = tokio::spawn(async move {
        let mut n = 0u32;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let data = format!("fresh {n}");
            assert_eq!(
                roundtrip(listen, data.as_bytes()).await,
                data.as_bytes(),
                "fresh connection {n}"
            );
            n += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        n
    });
    for round in 2..=6 {
        let out = tokio::task::spawn_blocking({
            let mut c = p.command();
            c.args(["restart", "echo"]);
            move || c.output().unwrap()
        })
        .await
        .unwrap();
        assert!(out.status.success(), "restart {round}: {}", stderr(&out));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let fresh_count = fresh.await.expect("no fresh connection failed");
    assert!(fresh_count > 20, "{fresh_count}");
    for l in long {
        assert!(l.await.expect("no long connection failed") > 5);
    }
    let started = Instant::now();
    assert!(app.text().contains("generation 6 ready"), "{}", app.text());
    let _ = started;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_during_a_tcp_apps_cold_start_is_held_until_it_is_ready() {
    let p = Portok::new();
    let dir = project(&p);
    std::fs::write(dir.join("echo.py"), ECHO_APP).unwrap();
    let listen = free_port();
    // The app's port is one the system just gave: a port from portok's 4000-4999 could be
    // taken, during the 2 s the app sleeps, by another test's app, which a TCP readiness
    // check (it accepts a connection) cannot tell from this one.
    let app_port = free_port().to_string();
    let app = p.spawn_app(
        &dir,
        &[
            "run",
            "slowdb",
            "--tcp",
            &listen.to_string(),
            "--app-port",
            &app_port,
            "--",
            "sh",
            "-c",
            "sleep 2; exec python3 echo.py",
        ],
    );
    app.wait_for("starting on port", Duration::from_secs(30))
        .await;
    let text = app.text();
    assert!(
        text.contains(&format!("slowdb -> tcp 127.0.0.1:{listen} (not HTTP)")),
        "a TCP app is announced by its port, not a URL: {text}"
    );
    assert!(!text.contains("http://slowdb.localhost"), "{text}");
    // The listener is up before the app: this connection waits instead of being reset.
    let started = std::time::Instant::now();
    assert_eq!(roundtrip(listen, b"early").await, b"early");
    assert!(
        started.elapsed() > Duration::from_millis(500),
        "it was held for the cold start"
    );
    app.wait_for("slowdb ready in", Duration::from_secs(30))
        .await;
}
