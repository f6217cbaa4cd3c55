//! HTTPS on the same port (issue: sniffing, local CA, h2 by ALPN, WebSocket over h2).

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A client that trusts only the daemon's ca.pem.
pub(crate) fn client_config(p: &Portok, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let pem = std::fs::read(p.state().join("ca.pem")).expect("ca.pem exists");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(cfg)
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .map(|c| c.unwrap())
        .collect()
}

pub(crate) async fn tls_connect(
    p: &Portok,
    name: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(client_config(p, alpn));
    let tcp = TcpStream::connect(p.addr()).await?;
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), connector.connect(server_name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

pub(crate) async fn h1_get(tls: TlsStream<TcpStream>, host: &str, path: &str) -> (u16, String) {
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(
            hyper::Request::get(path)
                .header("host", host)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn https_h2_and_http1_on_one_port_with_verified_certificates() {
    let p = Portok::new();
    let b = backend("app").await;
    p.ok(&["alias", "myapp", &b.port.to_string()]);
    use std::os::unix::fs::PermissionsExt;
    let mode = |f: &str| {
        std::fs::metadata(p.state().join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("ca.pem"), 0o644);
    assert_eq!(mode("ca-key.pem"), 0o600);

    // h2 by ALPN, verified against ca.pem only.
    let tls = tls_connect(&p, "myapp.localhost", &[b"h2", b"http/1.1"])
        .await
        .expect("verified handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(
            hyper::Request::get(format!("https://myapp.localhost:{}/over-h2", p.port))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let body = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert_eq!(echoed(&body, "path"), Some("/over-h2"));
    assert_eq!(echoed(&body, "x-forwarded-proto"), Some("https"));

    // A deeper name under the app gets a certificate too (SAN *.myapp.localhost).
    let tls = tls_connect(&p, "a.b.myapp.localhost", &[b"http/1.1"])
        .await
        .expect("deep name verifies");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body) = h1_get(tls, "a.b.myapp.localhost", "/deep").await;
    assert_eq!(status, 200);
    assert_eq!(echoed(&body, "backend"), Some("app"));

    // An unregistered .localhost name still reaches the proxy's 404 over https.
    let tls = tls_connect(&p, "nobody.localhost", &[b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(h1_get(tls, "nobody.localhost", "/").await.0, 404);

    // Plain HTTP/1.1 keeps working on the same port.
    assert_eq!(get(p.addr(), "myapp.localhost", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn names_outside_localhost_get_no_certificate() {
    let p = Portok::new();
    p.ok(&["proxy", "start"]);
    let err = tls_connect(&p, "example.com", &[b"http/1.1"]).await;
    assert!(err.is_err(), "the local CA must not sign example.com");
    // The daemon is unharmed.
    assert!(tls_connect(&p, "fine.localhost", &[b"http/1.1"])
        .await
        .is_ok());
    assert!(!p.state().join("certs/example.com.pem").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn ip_literal_without_sni_gets_a_localhost_certificate() {
    let p = Portok::new();
    p.ok(&["proxy", "start"]);
    let connector = tokio_rustls::TlsConnector::from(client_config(&p, &[b"http/1.1"]));
    let tcp = TcpStream::connect(p.addr()).await.unwrap();
    // An IP server name makes rustls send no SNI; the leaf must cover 127.0.0.1.
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let tls = connector
        .connect(name, tcp)
        .await
        .expect("IP certificate verifies");
    assert_eq!(h1_get(tls, "localhost", "/").await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_over_tls_http1_and_over_h2_extended_connect() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{protocol::Role, Message};
    let p = Portok::new();
    let b = backend("ws").await;
    p.ok(&["alias", "ws", &b.port.to_string()]);

    // HTTP/1.1 Upgrade inside TLS.
    let tls = tls_connect(&p, "ws.localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("wss://ws.localhost/ws", tls)
        .await
        .unwrap();
    ws.send(Message::text("over tls")).await.unwrap();
    assert_eq!(
        ws.next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .as_str(),
        "over tls"
    );

    // RFC 8441: CONNECT with :protocol websocket on an h2 stream.
    let tls = tls_connect(&p, "ws.localhost", &[b"h2"]).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    // Give the server's SETTINGS (ENABLE_CONNECT_PROTOCOL) a moment to arrive.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut req = hyper::Request::connect(format!("https://ws.localhost:{}/ws", p.port))
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let resp = send.send_request(req).await.expect("extended CONNECT");
    assert_eq!(resp.status(), 200);
    let upgraded = hyper::upgrade::on(resp).await.expect("h2 tunnel");
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Client,
        None,
    )
    .await;
    for i in 0..5 {
        ws.send(Message::text(format!("h2 {i}"))).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), format!("h2 {i}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn leaf_certificate_is_reused_from_disk_after_restart() {
    let p = Portok::new();
    p.ok(&["proxy", "start"]);
    let cert_of =
        |tls: &TlsStream<TcpStream>| tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let first = cert_of(
        &tls_connect(&p, "keep.localhost", &[b"http/1.1"])
            .await
            .unwrap(),
    );
    // Written off the handshake's thread, right after it.
    wait_for(Duration::from_secs(10), "the leaf on disk", || {
        p.state()
            .join("certs/keep.localhost.pem")
            .exists()
            .then_some(())
    })
    .await;
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(p.state().join("certs/keep.localhost-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    p.ok(&["proxy", "stop"]);
    p.ok(&["proxy", "start"]);
    let second = cert_of(
        &tls_connect(&p, "keep.localhost", &[b"http/1.1"])
            .await
            .unwrap(),
    );
    assert_eq!(first, second, "same leaf after a restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_client_is_closed_at_the_deadline() {
    let p = Portok::new();
    p.ok(&["proxy", "start", "--handshake-timeout", "1"]);
    let mut silent = TcpStream::connect(p.addr()).await.unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("the daemon closes a silent connection")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    // A ClientHello that stops half way is cut at the same deadline.
    let mut half = TcpStream::connect(p.addr()).await.unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), half.read(&mut buf))
        .await
        .expect("closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_and_truncated_handshakes_leave_the_daemon_serving() {
    let p = Portok::new();
    let b = backend("ok").await;
    p.ok(&["proxy", "start", "--handshake-timeout", "2"]);
    p.ok(&["alias", "ok", &b.port.to_string()]);
    let hello = {
        // A real ClientHello's first bytes, to cut at random places.
        let connector = tokio_rustls::TlsConnector::from(client_config(&p, &[b"h2"]));
        let (mut a, b2) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(async move {
            let _ = connector
                .connect(ServerName::try_from("ok.localhost").unwrap(), b2)
                .await;
        });
        let mut buf = vec![0u8; 4096];
        let n = a.read(&mut buf).await.unwrap();
        task.abort();
        buf.truncate(n);
        buf
    };
    let addr = p.addr();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000u32 {
        let hello = hello.clone();
        tasks.spawn(async move {
            let Ok(mut s) = TcpStream::connect(addr).await else {
                return;
            };
            let bytes: Vec<u8> = match i % 4 {
                0 => (0..64).map(|_| rand::random::<u8>()).collect(),
                1 => hello[..(i as usize % hello.len()).max(1)].to_vec(),
                2 => {
                    let mut v = vec![0x16];
                    v.extend((0..32).map(|_| rand::random::<u8>()));
                    v
                }
                _ => hello.iter().map(|b| b ^ 0x5a).collect(),
            };
            let _ = s.write_all(&bytes).await;
            let _ = s.shutdown().await;
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
        });
        if tasks.len() >= 64 {
            tasks.join_next().await;
        }
    }
    while tasks.join_next().await.is_some() {}
    assert_eq!(get(addr, "ok.localhost", "/").await.status, 200);
    let tls = tls_connect(&p, "ok.localhost", &[b"http/1.1"])
        .await
        .expect("TLS still works");
    assert_eq!(h1_get(tls, "ok.localhost", "/").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn user_supplied_certificate_is_served_and_bad_files_are_refused() {
    let p = Portok::new();
    let dir = p.dir.path();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["custom.localhost".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("junk.pem"), "not a pem").unwrap();

    let junk = dir.join("junk.pem").display().to_string();
    let key_path = dir.join("key.pem").display().to_string();
    let cert_path = dir.join("cert.pem").display().to_string();
    let out = p.run(&["proxy", "start", "--cert", &junk, "--key", &key_path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("junk.pem"), "{}", stderr(&out));
    let out = p.run(&["proxy", "start", "--cert", &cert_path]);
    assert_eq!(out.status.code(), Some(2), "--cert needs --key");

    p.ok(&["proxy", "start", "--cert", &cert_path, "--key", &key_path]);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(p.addr()).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("custom.localhost").unwrap(), tcp)
        .await
        .expect("user certificate verifies");
    assert_eq!(h1_get(tls, "custom.localhost", "/").await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn redirect_https_sends_browsers_to_https() {
    let p = Portok::new();
    let b = backend("b").await;
    p.ok(&["proxy", "start", "--redirect-https"]);
    p.ok(&["alias", "web", &b.port.to_string()]);
    // A browser sends the port it used: https on the same port (TLS is sniffed there).
    let with_port = format!("web.localhost:{}", p.port);
    let r = get_html(p.addr(), &with_port, "/x?y=1").await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.headers["location"],
        format!("https://web.localhost:{}/x?y=1", p.port)
    );
    // No port: it came to port 80 (`portok ports enable`), so https on 443.
    let r = get_html(p.addr(), "web.localhost", "/x?y=1").await;
    assert_eq!(r.status, 308);
    assert_eq!(r.headers["location"], "https://web.localhost/x?y=1");
    // Non-browser clients are not redirected.
    assert_eq!(get(p.addr(), "web.localhost", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn trust_installs_checks_and_untrusts_under_a_test_root() {
    let p = Portok::new();
    // PORTOK_TRUST_ROOT (set by the harness) stands in for `/`; a Debian-style anchor dir.
    let anchors = p
        .dir
        .path()
        .join("trust-root/usr/local/share/ca-certificates");
    std::fs::create_dir_all(&anchors).unwrap();
    assert_eq!(p.run(&["trust", "--check"]).status.code(), Some(1));
    let out = p.run(&["trust"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}\n{}", stderr(&out));
    assert!(report.contains("ok "), "{report}");
    let installed: Vec<_> = std::fs::read_dir(&anchors).unwrap().flatten().collect();
    assert_eq!(installed.len(), 1);
    assert_eq!(
        std::fs::read(installed[0].path()).unwrap(),
        std::fs::read(p.state().join("ca.pem")).unwrap()
    );
    assert_eq!(p.run(&["trust", "--check"]).status.code(), Some(0));
    assert!(p.run(&["untrust"]).status.success());
    assert_eq!(
        std::fs::read_dir(&anchors).unwrap().count(),
        0,
        "untrust removes what trust added"
    );
    assert_eq!(p.run(&["trust", "--check"]).status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unconstrained_ca_is_flagged_and_trust_renew_replaces_it_with_a_constrained_one() {
    let p = Portok::new();
    let anchors = p
        .dir
        .path()
        .join("trust-root/usr/local/share/ca-certificates");
    std::fs::create_dir_all(&anchors).unwrap();
    // A CA as portok made them before: no name constraints.
    std::fs::create_dir_all(p.state()).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let old = params.self_signed(&key).unwrap();
    std::fs::write(p.state().join("ca-key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(p.state().join("ca.pem"), old.pem()).unwrap();
    assert!(p.run(&["trust"]).status.success());

    let doctor = |p: &Portok| {
        let out = p.run(&["doctor"]);
        String::from_utf8_lossy(&out.stdout).to_string() + &stderr(&out)
    };
    let said = doctor(&p);
    assert!(
        said.contains("unconstrained") && said.contains("portok trust --renew"),
        "{said}"
    );

    let out = p.run(&["trust", "--renew"]);
    let report = String::from_utf8_lossy(&out.stdout).to_string() + &stderr(&out);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("vouches only for localhost"), "{report}");
    let new_pem = std::fs::read(p.state().join("ca.pem")).unwrap();
    assert_ne!(new_pem, old.pem().into_bytes());
    let kept: Vec<_> = std::fs::read_dir(p.state())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("ca.pem.old-") || n.starts_with("ca-key.pem.old-"))
        .collect();
    assert_eq!(kept.len(), 2, "the old CA is kept aside: {kept:?}");
    // Only the new CA is trusted now.
    let installed: Vec<_> = std::fs::read_dir(&anchors).unwrap().flatten().collect();
    assert_eq!(installed.len(), 1);
    assert_eq!(std::fs::read(installed[0].path()).unwrap(), new_pem);
    let text = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(p.state().join("ca.pem"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Name Constraints: critical"), "{text}");
    assert!(text.contains("DNS:localhost"), "{text}");
    assert!(!doctor(&p).contains("unconstrained"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_custom_tld_is_served_over_https_from_a_ca_constrained_to_it() {
    let p = Portok::new();
    // Public suffixes, mDNS's .local and bad labels: exit 2, nothing written.
    for bad in ["com", "dev", "co.uk", "local", "a_b"] {
        let out = p.run(&["proxy", "start", "--tld", bad]);
        assert_eq!(out.status.code(), Some(2), "--tld {bad}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("--tld \"{bad}\"")),
            "{}",
            stderr(&out)
        );
    }
    assert!(!p.state().join("ca.pem").exists(), "nothing written");
    assert!(p.run(&["proxy", "status"]).status.code() != Some(0));

    std::fs::write(p.hosts_file(), "127.0.0.1 localhost\n").unwrap();
    p.ok(&["proxy", "start", "--tld", "test"]);
    let dir = project(&p);
    let app = p.spawn_app(&dir, &["run", "api", "--tld", "test", "--", &app_script()]);
    app.wait_for("api ready in", Duration::from_secs(30)).await;
    assert!(
        app.text()
            .contains(&format!("api -> http://api.test:{}", p.port)),
        "{}",
        app.text()
    );

    // https://api.test verifies against portok's CA, which may vouch for .test only.
    let tls = tls_connect(&p, "api.test", &[b"http/1.1"]).await.unwrap();
    let (status, body) = h1_get(tls, "api.test", "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("version 1"), "{body}");
    let text = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(p.state().join("ca.pem"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("DNS:localhost") && text.contains("DNS:test"),
        "{text}"
    );
    assert!(!text.contains("DNS:com"), "{text}");
    // No certificate for a name outside localhost and the served TLDs.
    assert!(tls_connect(&p, "api.example", &[b"http/1.1"])
        .await
        .is_err());

    // The name resolves through the hosts file, kept in step by the daemon.
    let hosts = std::fs::read_to_string(p.hosts_file()).unwrap();
    assert!(
        hosts.contains("127.0.0.1 api.test") && hosts.starts_with("127.0.0.1 localhost\n"),
        "{hosts}"
    );
    let status = p.ok(&["status", "--json"]);
    assert!(status.contains("\"tlds\""), "{status}");
    let doctor = |p: &Portok| String::from_utf8_lossy(&p.run(&["doctor"]).stdout).to_string();
    assert!(
        doctor(&p).contains("api.test resolve to loopback"),
        "{}",
        doctor(&p)
    );
    std::fs::write(p.hosts_file(), "127.0.0.1 localhost\n").unwrap();
    assert!(
        doctor(&p).contains("api.test do not resolve"),
        "{}",
        doctor(&p)
    );

    // A TLD the running daemon does not serve is refused with the way out.
    let out = p.run(&["run", "other", "--tld", "example", "--", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not serve .example") && stderr(&out).contains("--tld example"),
        "{}",
        stderr(&out)
    );

    // A TLD added after the CA was made: the CA cannot vouch for it, and doctor says so.
    drop(app);
    p.ok(&["proxy", "stop"]);
    let out = p.run(&["proxy", "start", "--tld", "test", "--tld", "example"]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("cannot vouch for it") && stderr(&out).contains(".example"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains(".test was served"),
        "{}",
        stderr(&out)
    );
    let said = doctor(&p);
    assert!(
        said.contains("cannot vouch for .example") && said.contains("trust --renew"),
        "{said}"
    );
    assert!(tls_connect(&p, "web.example", &[b"http/1.1"])
        .await
        .is_err());
}
