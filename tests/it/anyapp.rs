//! Apps that ignore PORT (issue: any app works): dev servers told the port their own way,
//! found where they listen, and redeployed in place.

use crate::support::*;
use std::path::Path;
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

/// A server hard-wired to one port cannot run beside its next generation: a redeploy holds
/// new requests, lets the ones in flight finish, stops it, starts the next; none fails.
#[tokio::test(flavor = "multi_thread")]
async fn redeploys_of_a_fixed_port_app_under_load_fail_no_request() {
    let p = Portok::new();
    let dir = project(&p);
    let fixed = free_port().to_string();
    let app = p.spawn_app(
        &dir,
        &[
            "run",
            "fx",
            "--app-port",
            &fixed,
            "--drain",
            "30",
            "--",
            &app_script(),
        ],
    );
    app.wait_for("fx ready in", LONG).await;
    let addr = p.addr();
    let load = Load::start(addr, "fx.localhost", 4);
    for round in 2..=4u32 {
        // A request in flight when the redeploy starts finishes on the old generation.
        let slow = tokio::spawn(async move { get(addr, "fx.localhost", "/slow?ms=800").await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::fs::write(dir.join("version.txt"), round.to_string()).unwrap();
        app.wait_for(&format!("(generation {round}, pid"), LONG)
            .await;
        let slow = slow.await.unwrap();
        assert_eq!(slow.status, 200, "{}", slow.text());
        assert!(
            slow.text().contains(&format!("generation {}", round - 1)),
            "{}",
            slow.text()
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, _, failures) = load.stop().await;
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(ok > 50, "load ran: {ok}");
    assert!(
        app.text()
            .contains("holding new requests, draining generation 1"),
        "{}",
        app.text()
    );
}

/// A server with its port written in its command: portok finds where it listens and
/// serves that, and says so once.
#[tokio::test(flavor = "multi_thread")]
async fn an_app_that_ignores_port_is_found_where_it_listens() {
    if std::process::Command::new("python3")
        .arg("-V")
        .output()
        .is_err()
    {
        return missing("python3", "apt-get install python3");
    }
    let p = Portok::new();
    let dir = project(&p);
    std::fs::write(dir.join("index.html"), "<h1>fixed</h1>").unwrap();
    let fixed = free_port();
    let app = p.spawn_app(
        &dir,
        &[
            "run",
            "hw",
            "--no-watch",
            "--",
            "python3",
            "-m",
            "http.server",
            &fixed.to_string(),
            "--bind",
            "127.0.0.1",
        ],
    );
    app.wait_for("hw ready in", LONG).await;
    assert!(
        app.text()
            .contains(&format!("hw listens on port {fixed}, not on PORT")),
        "{}",
        app.text()
    );
    assert_eq!(
        app.text().matches("not on PORT").count(),
        1,
        "{}",
        app.text()
    );
    let r = get(p.addr(), "hw.localhost", "/").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("fixed"), "{}", r.text());
    let list: serde_json::Value = serde_json::from_str(&p.ok(&["list", "--json"])).unwrap();
    assert_eq!(list[0]["port"], fixed, "list shows the port served: {list}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_that_never_listens_is_said_early() {
    let p = Portok::new();
    let dir = project(&p);
    let app = p.spawn_app(&dir, &["run", "nap", "--no-watch", "--", "sleep", "60"]);
    app.wait_for(
        "no process of the app listens on any port 5s after its start",
        LONG,
    )
    .await;
    assert!(!app.text().contains("nap ready"), "{}", app.text());
}

/// Each real Python dev server, run as its docs say with no port given, is told the port
/// (and loopback) by portok and served through the proxy.
async fn a_python_dev_server_is_served(name: &str, files: &[(&str, &str)], cmd: &[&str]) {
    let Some(python) = dev_servers_python() else {
        return missing(
            "a venv with flask, uvicorn and django",
            "python3 -m venv (apt-get install python3-venv) and PyPI",
        );
    };
    let p = Portok::new();
    let dir = project(&p);
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    // As after `source .venv/bin/activate`.
    let bin = python.parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut args = vec!["run", name, "--no-watch", "--"];
    args.extend(cmd);
    let app = p.spawn_app_env(&dir, &args, &[("PATH", Path::new(&path))]);
    app.wait_for(&format!("{name} ready in"), LONG).await;
    let r = get(p.addr(), &format!("{name}.localhost"), "/").await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), app.text());
    assert!(r.text().contains("served by"), "{}", r.text());
    assert!(
        !app.text().contains("not on PORT"),
        "told, not found: {}",
        app.text()
    );
    let port = route_of(&p, &format!("{name}.localhost")).unwrap()["port"]
        .as_u64()
        .unwrap();
    let listeners = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let loopback = format!("0100007F:{port:04X}");
    assert!(
        listeners.contains(&loopback),
        "{name} listens on 127.0.0.1:{port} only"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn flask_run_is_told_the_port_and_served() {
    let app = "from flask import Flask\napp = Flask(__name__)\n\n@app.route('/')\ndef index():\n    return 'served by flask'\n";
    a_python_dev_server_is_served("fl", &[("app.py", app)], &["flask", "--app", "app", "run"])
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn uvicorn_is_told_the_port_and_served() {
    let app = "async def app(scope, receive, send):\n    assert scope['type'] == 'http'\n    await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-type', b'text/plain')]})\n    await send({'type': 'http.response.body', 'body': b'served by uvicorn'})\n";
    a_python_dev_server_is_served("uv", &[("main.py", app)], &["uvicorn", "main:app"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn djangos_runserver_is_told_the_port_and_served() {
    // The smallest Django project: one settings module with one view.
    let site = "from django.http import HttpResponse\nfrom django.urls import path\n\nDEBUG = True\nSECRET_KEY = 'test'\nROOT_URLCONF = 'site_conf'\nALLOWED_HOSTS = []\nINSTALLED_APPS = []\nurlpatterns = [path('', lambda request: HttpResponse('served by django'))]\n";
    let manage = "import os, sys\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'site_conf')\nfrom django.core.management import execute_from_command_line\nexecute_from_command_line(sys.argv)\n";
    a_python_dev_server_is_served(
        "dj",
        &[("site_conf.py", site), ("manage.py", manage)],
        &["python", "manage.py", "runserver"],
    )
    .await;
}
