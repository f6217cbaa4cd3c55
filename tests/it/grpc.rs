//! gRPC and HTTP/2-only apps (issue: HTTP/2 to the app, trailers and streams end to end,
//! blue/green for RPCs), with a real grpcio server and client from PyPI.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// The grpc fixture in a project folder of `p`, and the venv's python.
fn grpc_project(p: &Portok) -> Option<(PathBuf, PathBuf)> {
    let python = grpc_python()?;
    let dir = project(p);
    let fixture = fixture_copy("grpc", &dir);
    for f in ["server.py", "client.py"] {
        std::fs::copy(fixture.join(f), dir.join(f)).unwrap();
    }
    Some((dir, python))
}

/// Run the fixture's client against portok (h2c, or TLS with the CA); its output.
fn client(p: &Portok, python: &Path, dir: &Path, tls: bool, args: &[&str]) -> Command {
    let mut c = Command::new(python);
    let ca = p.state().join("ca.pem");
    c.arg(dir.join("client.py"))
        .arg(p.addr().to_string())
        .arg(format!("api.localhost:{}", p.port))
        .arg(if tls { ca.to_str().unwrap() } else { "-" })
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn all_ok(out: &std::process::Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(out));
    assert!(out.status.success(), "{text}");
    text
}

/// `portok api python3 server.py` with no flag: portok finds that the app speaks only
/// HTTP/2, and unary calls, a server stream of 1,000, a bidi stream of 100, a 5 MiB
/// message, NOT_FOUND with its trailing metadata and a deadline all work over TLS and h2c.
#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_server_answers_through_portok_over_tls_and_h2c_with_no_flag() {
    let p = Portok::new();
    let Some((dir, python)) = grpc_project(&p) else {
        return missing(
            "a venv with grpcio",
            "python3 -m venv (apt-get install python3-venv) and PyPI",
        );
    };
    let app = p.spawn_app(&dir, &["api", python.to_str().unwrap(), "server.py"]);
    app.wait_for("api ready in", LONG).await;
    assert!(app.text().contains("speaks only HTTP/2"), "{}", app.text());
    for tls in [false, true] {
        let out = output_within(client(&p, &python, &dir, tls, &["all"]), LONG);
        let text = all_ok(&out);
        for check in [
            "unary",
            "server-stream",
            "bidi",
            "large",
            "not-found",
            "deadline",
        ] {
            assert!(text.contains(&format!("ok {check}\n")), "tls {tls}: {text}");
        }
    }
    let list = p.ok(&["list", "--json"]);
    assert!(list.contains("\"upstream\": \"h2\""), "{list}");
    // An HTTP/1.1 client gets the app's answer, translated.
    let req = hyper::Request::post("/t.T/Echo")
        .header("host", "api.localhost")
        .header("content-type", "application/grpc")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"\0\0\0\0\x02hi",
        )))
        .unwrap();
    let r = request(p.addr(), req).await;
    assert_eq!(r.status, 200);
    assert!(r.text().ends_with("v1:hi"), "{:?}", r.text());
}

/// An edit redeploys the gRPC app under 4 looping clients with no failed call, new calls
/// reach the new generation, and a server stream open across the redeploy gets all of its
/// messages from the old one.
#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_redeploy_under_load_fails_no_call_and_a_stream_crosses_it() {
    let p = Portok::new();
    let Some((dir, python)) = grpc_project(&p) else {
        return missing(
            "a venv with grpcio",
            "python3 -m venv (apt-get install python3-venv) and PyPI",
        );
    };
    let app = p.spawn_app(
        &dir,
        &[
            "api",
            "--drain",
            "30",
            "--",
            python.to_str().unwrap(),
            "server.py",
        ],
    );
    app.wait_for("api ready in", LONG).await;
    let loops: Vec<_> = (0..4)
        .map(|i| {
            client(&p, &python, &dir, i % 2 == 1, &["loop", "8"])
                .spawn()
                .unwrap()
        })
        .collect();
    let stream = client(&p, &python, &dir, true, &["stream", "1000"])
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::write(dir.join("version.txt"), "2").unwrap();
    app.wait_for("generation 2 ready", LONG).await;
    for c in loops {
        let text = all_ok(&c.wait_with_output().unwrap());
        assert!(!text.contains("FAIL"), "{text}");
        assert!(
            text.contains("('v2',"),
            "new calls reach generation 2: {text}"
        );
    }
    let text = all_ok(&stream.wait_with_output().unwrap());
    assert!(text.contains("ok stream"), "{text}");
    assert!(!app.text().contains("generation 3"), "{}", app.text());
}
