//! A project's own dev command (issue: package scripts, `portok run` with nothing else, one
//! restarter, no watch loops): run the way the project's README says, with real servers.

use crate::support::*;
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// `portok run` with no name and no command, in a Vite project: the dev script serves at
/// the package's name, and Vite listens on the port portok chose.
#[tokio::test(flavor = "multi_thread")]
async fn portok_run_alone_serves_the_projects_dev_script() {
    let Some(dir) = npm_fixture_as("vite", Some("alone")) else {
        return missing("npm", "install Node.js 20.19+ with npm");
    };
    let p = Portok::new();
    let app = p.spawn_app(&dir, &["run"]);
    app.wait_for("ready in", Duration::from_secs(120)).await;
    let text = app.text();
    assert!(
        text.contains("running \"npm run dev\" (package.json's dev script; it runs `vite`)"),
        "{text}"
    );
    let host = "portok-vite-fixture.localhost";
    let r = get(p.addr(), host, "/").await;
    assert_eq!(r.status, 200, "{}\n{text}", r.text());
    assert!(r.text().contains("/@vite/client"), "{}", r.text());
    let port = route_of(&p, host).unwrap()["port"].as_u64().unwrap() as u16;
    assert!(listens_on_loopback(port), "vite on {port}\n{}", app.text());
    assert!(!app.text().contains("listens on port"), "{}", app.text());
}

/// With nothing to run, `portok run` says what it looked for.
#[test]
fn portok_run_alone_in_an_empty_folder_says_what_it_looked_for() {
    let p = Portok::new();
    let dir = p.dir.path().join("empty");
    std::fs::create_dir_all(&dir).unwrap();
    let out = p.command().arg("run").current_dir(&dir).output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    for looked in [
        "package.json",
        "Procfile",
        "manage.py",
        "Cargo.toml",
        "go.mod",
        "Gemfile",
    ] {
        assert!(err.contains(looked), "{looked}: {err}");
    }
    assert!(err.contains("portok run -- "), "{err}");
}

/// `portok st python3 -m http.server > st.txt 2>&1` in the project folder: the lines portok
/// writes into st.txt (a name no default skips) redeploy nothing, while a real edit does.
#[tokio::test(flavor = "multi_thread")]
async fn output_redirected_into_the_watched_folder_redeploys_nothing() {
    let p = Portok::new();
    let dir = project(&p);
    let app = p.spawn_app_into(
        &dir,
        &["st", "python3", "-m", "http.server"],
        &dir.join("st.txt"),
    );
    app.wait_for("st ready in", LONG).await;
    // http.server logs each request, so each one writes st.txt.
    for _ in 0..5 {
        assert_eq!(get(p.addr(), "st.localhost", "/").await.status, 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!app.text().contains("generation 2"), "{}", app.text());
    // The watcher was on all along.
    std::fs::write(dir.join("version.txt"), "2").unwrap();
    app.wait_for("generation 2 ready", LONG).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!app.text().contains("generation 3"), "{}", app.text());
}

/// An app that writes db.sqlite3 (and its journal) in its folder on every request is not
/// redeployed for it.
#[tokio::test(flavor = "multi_thread")]
async fn an_app_writing_its_database_in_its_folder_is_not_redeployed() {
    let p = Portok::new();
    let dir = project(&p);
    let server = r#"
import http.server, os, sqlite3
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        db = sqlite3.connect('db.sqlite3')
        db.execute('create table if not exists hits (at text)')
        db.execute("insert into hits values (datetime('now'))")
        db.commit()
        n = db.execute('select count(*) from hits').fetchone()[0]
        db.close()
        body = f'hits {n}'.encode()
        self.send_response(200)
        self.send_header('content-length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()
"#;
    std::fs::write(dir.join("server.py"), server).unwrap();
    let app = p.spawn_app(&dir, &["db", "python3", "server.py"]);
    app.wait_for("db ready in", LONG).await;
    // The readiness probe counts as a hit too: the count only has to keep rising.
    let mut last = 0;
    for _ in 1..=8 {
        let r = get(p.addr(), "db.localhost", "/").await;
        assert_eq!(r.status, 200);
        let n: u32 = r.text().trim_start_matches("hits ").parse().unwrap();
        assert!(n > last, "{}", r.text());
        last = n;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(dir.join("db.sqlite3").exists());
    assert!(!app.text().contains("generation 2"), "{}", app.text());
    std::fs::write(dir.join("server.py"), server.replace("hits", "count")).unwrap();
    app.wait_for("generation 2 ready", LONG).await;
}

/// An app that writes a file into the watched folder each time it starts would redeploy
/// forever: after 3 redeploys the loop guard stops watching that file and says so.
#[tokio::test(flavor = "multi_thread")]
async fn the_loop_guard_stops_a_real_loop_after_three_redeploys() {
    let p = Portok::new();
    let dir = project(&p);
    let cmd = format!("date +%s%N > stamp.txt; {}", app_script());
    let app = p.spawn_app(&dir, &["lp", &cmd]);
    app.wait_for("no longer redeploys for it", LONG).await;
    let text = app.text();
    assert!(
        text.contains("stamp.txt changed within 2s of each of the last 3 starts"),
        "{text}"
    );
    assert!(text.contains("--ignore \"stamp.txt\""), "{text}");
    app.wait_for("generation 4 ready", LONG).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = app.text();
    assert!(!text.contains("generation 5"), "{text}");
    assert_eq!(text.matches("no longer redeploys").count(), 1, "{text}");
    // Other files still redeploy.
    std::fs::write(dir.join("version.txt"), "2").unwrap();
    app.wait_for("generation 5 ready", LONG).await;
    let r = get(p.addr(), "lp.localhost", "/").await;
    assert!(r.text().contains("version 2"), "{}", r.text());
}

/// A Python project folder with `files`, and PATH with the dev servers' venv in front.
fn python_project(p: &Portok, files: &[(&str, &str)]) -> Option<(std::path::PathBuf, String)> {
    let python = dev_servers_python()?;
    let dir = project(p);
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    Some((dir, path_with(python.parent().unwrap())))
}

const FLASK_APP: &str = "from flask import Flask\napp = Flask(__name__)\n\n@app.route('/')\ndef index():\n    return 'version 1'\n";

/// `flask --app app run --debug` under 4 looping clients: Flask's reloader is switched off
/// (`--no-reload`), so an edit is one blue/green redeploy by portok, with no failed request.
#[tokio::test(flavor = "multi_thread")]
async fn flask_debug_restarts_once_per_edit_with_no_failed_request() {
    let p = Portok::new();
    let Some((dir, path)) = python_project(&p, &[("app.py", FLASK_APP)]) else {
        return missing(
            "a venv with flask",
            "python3 -m venv (apt-get install python3-venv) and PyPI",
        );
    };
    let app = p.spawn_app_env(
        &dir,
        &["fl", "flask", "--app", "app", "run", "--debug"],
        &[("PATH", Path::new(&path))],
    );
    app.wait_for("fl ready in", LONG).await;
    assert!(app.text().contains("--no-reload"), "{}", app.text());
    let load = Load::start(p.addr(), "fl.localhost", 4);
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::write(
        dir.join("app.py"),
        FLASK_APP.replace("version 1", "version 2"),
    )
    .unwrap();
    app.wait_for("generation 2 ready", LONG).await;
    let r = get(p.addr(), "fl.localhost", "/").await;
    assert_eq!(r.text(), "version 2");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ok, _, failures) = load.stop().await;
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(ok > 50, "load ran: {ok}");
    let text = app.text();
    assert!(
        !text.contains("generation 3"),
        "one restart per edit: {text}"
    );
    assert!(
        !text.contains("Restarting with"),
        "Flask's reloader ran: {text}"
    );
}

/// `python manage.py runserver`: Django's autoreloader is switched off (`--noreload`) and an
/// edit is one redeploy by portok.
#[tokio::test(flavor = "multi_thread")]
async fn djangos_runserver_restarts_once_per_edit() {
    let site = "from django.http import HttpResponse\nfrom django.urls import path\n\nDEBUG = True\nSECRET_KEY = 'test'\nROOT_URLCONF = 'site_conf'\nALLOWED_HOSTS = []\nINSTALLED_APPS = []\nurlpatterns = [path('', lambda request: HttpResponse('version 1'))]\n";
    let manage = "import os, sys\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'site_conf')\nfrom django.core.management import execute_from_command_line\nexecute_from_command_line(sys.argv)\n";
    let p = Portok::new();
    let Some((dir, path)) = python_project(&p, &[("site_conf.py", site), ("manage.py", manage)])
    else {
        return missing(
            "a venv with django",
            "python3 -m venv (apt-get install python3-venv) and PyPI",
        );
    };
    let app = p.spawn_app_env(
        &dir,
        &["dj", "python", "manage.py", "runserver"],
        &[("PATH", Path::new(&path))],
    );
    app.wait_for("dj ready in", LONG).await;
    assert!(app.text().contains("--noreload"), "{}", app.text());
    std::fs::write(
        dir.join("site_conf.py"),
        site.replace("version 1", "version 2"),
    )
    .unwrap();
    app.wait_for("generation 2 ready", LONG).await;
    let r = get(p.addr(), "dj.localhost", "/").await;
    assert_eq!(r.text(), "version 2");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = app.text();
    assert!(!text.contains("generation 3"), "{text}");
    assert!(!text.contains("Watching for file changes"), "{text}");
}

/// `node --watch server.js`: Node's own restarter is switched off (portok runs `node
/// server.js`), so an edit is one blue/green redeploy by portok under load, none failing.
#[tokio::test(flavor = "multi_thread")]
async fn node_watch_restarts_once_per_edit_with_no_failed_request() {
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        return missing("node", "apt-get install nodejs");
    }
    let server = "require('http').createServer((req, res) => res.end('version 1')).listen(process.env.PORT, '127.0.0.1');\n";
    let p = Portok::new();
    let dir = project(&p);
    std::fs::write(dir.join("server.js"), server).unwrap();
    let app = p.spawn_app(&dir, &["nw", "node", "--watch", "server.js"]);
    app.wait_for("nw ready in", LONG).await;
    assert!(
        app.text().contains("runs it without --watch"),
        "{}",
        app.text()
    );
    let load = Load::start(p.addr(), "nw.localhost", 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(
        dir.join("server.js"),
        server.replace("version 1", "version 2"),
    )
    .unwrap();
    app.wait_for("generation 2 ready", LONG).await;
    assert_eq!(get(p.addr(), "nw.localhost", "/").await.text(), "version 2");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ok, _, failures) = load.stop().await;
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(ok > 50, "load ran: {ok}");
    let text = app.text();
    assert!(!text.contains("generation 3"), "{text}");
    assert!(!text.contains("Restarting '"), "node's watcher ran: {text}");
}

/// `uvicorn main:app --reload`: portok drops `--reload` and restarts on an edit itself.
#[tokio::test(flavor = "multi_thread")]
async fn uvicorn_reload_is_dropped_and_an_edit_is_one_redeploy() {
    let asgi = "async def app(scope, receive, send):\n    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n    await send({'type': 'http.response.body', 'body': b'version 1'})\n";
    let p = Portok::new();
    let Some((dir, path)) = python_project(&p, &[("main.py", asgi)]) else {
        return missing(
            "a venv with uvicorn",
            "python3 -m venv (apt-get install python3-venv) and PyPI",
        );
    };
    let app = p.spawn_app_env(
        &dir,
        &["uv", "uvicorn", "main:app", "--reload"],
        &[("PATH", Path::new(&path))],
    );
    app.wait_for("uv ready in", LONG).await;
    assert!(app.text().contains("without --reload"), "{}", app.text());
    std::fs::write(dir.join("main.py"), asgi.replace("version 1", "version 2")).unwrap();
    app.wait_for("generation 2 ready", LONG).await;
    assert_eq!(get(p.addr(), "uv.localhost", "/").await.text(), "version 2");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = app.text();
    assert!(!text.contains("generation 3"), "{text}");
    assert!(
        !text.contains("reloader process"),
        "uvicorn's reloader ran: {text}"
    );
}
