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
    let path = path_with(python.parent().unwrap());
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
    assert!(
        listens_on_loopback(port as u16),
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

/// A server with its port written in its command, that fails its start when `fail_next`
/// exists (and removes it), like a start that hits a passing problem.
const HARD_WIRED: &str = r#"
import http.server, os, sys
port, fail_next = int(sys.argv[1]), sys.argv[2]
version = open('version.txt').read().strip()
if os.path.exists(fail_next):
    os.remove(fail_next)
    print('cannot start: simulated failure', flush=True)
    sys.exit(3)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f'version {version}'.encode()
        self.send_response(200)
        self.send_header('content-length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', port), H).serve_forever()
"#;

/// A hard-wired server portok had to find: an edit redeploys it in place under a request
/// loop with no failed request, and when the generation started in place fails, the command
/// starts once more and serves, again with no failed request.
#[tokio::test(flavor = "multi_thread")]
async fn a_found_port_app_redeploys_in_place_and_starts_again_when_the_new_one_fails() {
    if std::process::Command::new("python3")
        .arg("-V")
        .output()
        .is_err()
    {
        return missing("python3", "apt-get install python3");
    }
    let p = Portok::new();
    let dir = project(&p);
    std::fs::write(dir.join("server.py"), HARD_WIRED).unwrap();
    let fail_next = p.dir.path().join("fail-next");
    let fixed = free_port().to_string();
    let app = p.spawn_app(
        &dir,
        &[
            "run",
            "hw",
            "--",
            "python3",
            "server.py",
            &fixed,
            fail_next.to_str().unwrap(),
        ],
    );
    app.wait_for("hw ready in", LONG).await;
    assert!(
        app.text()
            .contains(&format!("hw listens on port {fixed}, not on PORT")),
        "{}",
        app.text()
    );
    let load = Load::start(p.addr(), "hw.localhost", 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(dir.join("version.txt"), "2").unwrap();
    app.wait_for("(generation 2, pid", LONG).await;
    let r = get(p.addr(), "hw.localhost", "/").await;
    assert_eq!(r.text(), "version 2");
    // The next start fails once: the command starts again and serves.
    std::fs::write(&fail_next, "").unwrap();
    std::fs::write(dir.join("version.txt"), "3").unwrap();
    app.wait_for("starting the command again as generation 4", LONG)
        .await;
    app.wait_for("(generation 4, pid", LONG).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, _, failures) = load.stop().await;
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(ok > 50, "load ran: {ok}");
    let r = get(p.addr(), "hw.localhost", "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "version 3");
    let text = app.text();
    assert!(text.contains("cannot start: simulated failure"), "{text}");
    assert!(
        text.contains("holding new requests, draining generation 1"),
        "{text}"
    );
}

/// A port another portok app holds: a server hard-wired to it fails with "address in use",
/// and portok names the app that holds it; `--app-port` with that port is refused before
/// anything starts.
#[tokio::test(flavor = "multi_thread")]
async fn a_port_held_by_another_portok_app_is_named() {
    if std::process::Command::new("python3")
        .arg("-V")
        .output()
        .is_err()
    {
        return missing("python3", "apt-get install python3");
    }
    let p = Portok::new();
    let dir = project(&p);
    let fixed = free_port().to_string();
    let server = [
        "python3",
        "-m",
        "http.server",
        &fixed,
        "--bind",
        "127.0.0.1",
    ];
    let mut args = vec!["run", "first", "--no-watch", "--"];
    args.extend(server);
    let first = p.spawn_app(&dir, &args);
    first.wait_for("first ready in", LONG).await;

    let mut args = vec!["run", "second", "--no-watch", "--"];
    args.extend(server);
    let out = p.command().args(&args).current_dir(&dir).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Address already in use"), "{err}");
    let named = format!("port {fixed} is taken by the portok app first.localhost (pid ");
    assert!(err.contains(&named), "{err}");

    let out = p
        .command()
        .args([
            "run",
            "third",
            "--no-watch",
            "--app-port",
            &fixed,
            "--",
            "sleep",
            "30",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains(&named), "{err}");
    assert!(get(p.addr(), "first.localhost", "/").await.status == 200);
}

/// An app that listens on two ports of its own: the one that answers HTTP is served, not
/// the one that only accepts (here the lower one, looked at first).
#[tokio::test(flavor = "multi_thread")]
async fn of_several_ports_the_one_that_answers_http_is_served() {
    if std::process::Command::new("python3")
        .arg("-V")
        .output()
        .is_err()
    {
        return missing("python3", "apt-get install python3");
    }
    let p = Portok::new();
    let dir = project(&p);
    let (a, b) = (free_port(), free_port());
    let (silent, http) = (a.min(b), a.max(b));
    let script = format!(
        "import socket, http.server\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', {silent}))\n\
         s.listen()\n\
         class H(http.server.BaseHTTPRequestHandler):\n\
         \x20   def do_GET(self):\n\
         \x20       self.send_response(200)\n\
         \x20       self.send_header('content-length', '4')\n\
         \x20       self.end_headers()\n\
         \x20       self.wfile.write(b'http')\n\
         http.server.HTTPServer(('127.0.0.1', {http}), H).serve_forever()\n"
    );
    std::fs::write(dir.join("two.py"), script).unwrap();
    let app = p.spawn_app(
        &dir,
        &["run", "two", "--no-watch", "--", "python3", "two.py"],
    );
    app.wait_for("two ready in", LONG).await;
    assert!(
        app.text()
            .contains(&format!("two listens on port {http}, not on PORT")),
        "{}",
        app.text()
    );
    let r = get(p.addr(), "two.localhost", "/").await;
    assert_eq!((r.status, r.text()), (200, "http".to_string()));
    let status: serde_json::Value = serde_json::from_str(&p.ok(&["status", "--json"])).unwrap();
    assert!(
        status.to_string().contains(&format!("\"port\":{http}")),
        "{status}"
    );
}
