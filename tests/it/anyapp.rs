//! Apps that ignore PORT (issue: any app works): dev servers told the port their own way,
//! and errors that say their cause once.

use crate::support::*;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn pythons_http_server_is_told_the_port_and_served() {
    if std::process::Command::new("python3")
        .arg("-V")
        .output()
        .is_err()
    {
        return missing("python3", "apt-get install python3");
    }
    let p = Portok::new();
    let dir = project(&p);
    std::fs::write(dir.join("index.html"), "<h1>static site</h1>").unwrap();
    // What a new user types: the server's default port is 8000, and it ignores PORT.
    let app = p.spawn_app(&dir, &["st", "python3", "-m", "http.server"]);
    app.wait_for("st ready in", LONG).await;
    let r = get(p.addr(), "st.localhost", "/").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("static site"), "{}", r.text());
    let port = route_of(&p, "st.localhost").unwrap()["port"]
        .as_u64()
        .unwrap();
    assert!(
        app.text()
            .contains(&format!("Serving HTTP on 127.0.0.1 port {port}")),
        "it listens where portok said, on loopback: {}",
        app.text()
    );
}

#[test]
fn an_invalid_routes_json_is_reported_with_its_cause_once() {
    let p = Portok::new();
    std::fs::create_dir_all(p.state()).unwrap();
    std::fs::write(p.routes_json(), "[{\"hostname\": 1}]").unwrap();
    let out = p.run(&["list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("is not valid routes JSON"), "{err}");
    let cause = "invalid type: integer `1`, expected a string";
    assert_eq!(err.matches(cause).count(), 1, "{err}");
}
