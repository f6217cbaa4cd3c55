//! Containers as routes, with a real Docker engine: each test starts its own dockerd (its
//! own socket, data root and containerd; `--bridge=none --iptables=false`), makes its image
//! with `docker import` of a static busybox (no registry is reachable), and runs containers
//! on the host network only, so every byte stays on loopback.

use crate::support::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const IMAGE: &str = "portok-box:1";
const SOON: Duration = Duration::from_secs(5);
const LONG: Duration = Duration::from_secs(60);

/// A dockerd of the test's own.
struct Engine {
    dir: tempfile::TempDir,
    child: Option<Child>,
    host: String,
}

impl Engine {
    /// Started and answering, with [`IMAGE`] imported; None (a skip, or a failure in CI)
    /// when dockerd or a static busybox is missing.
    async fn start() -> Option<Engine> {
        let have = |bin: &str| {
            Command::new("sh")
                .args(["-c", &format!("command -v {bin}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !have("dockerd") || !have("docker") {
            missing("dockerd and docker", "apt-get install -y docker.io");
            return None;
        }
        if !busybox().exists() {
            missing("a static busybox", "apt-get install -y busybox-static");
            return None;
        }
        // Short: the engine's sockets live under it, and unix socket paths are short.
        let dir = tempfile::Builder::new()
            .prefix("pd")
            .tempdir_in("/tmp")
            .unwrap();
        let host = format!("unix://{}/d.sock", dir.path().display());
        let mut e = Engine {
            dir,
            child: None,
            host,
        };
        e.run_dockerd().await;
        e.import_image();
        Some(e)
    }

    async fn run_dockerd(&mut self) {
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(&self.host)
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("x"))
            .arg("--pidfile")
            .arg(d.join("d.pid"))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--storage-driver=vfs",
                "--log-level=warn",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting dockerd");
        self.child = Some(child);
        let start = std::time::Instant::now();
        while !self.docker(&["version"]).status.success() {
            assert!(
                start.elapsed() < LONG,
                "dockerd did not answer: {}",
                std::fs::read_to_string(d.join("dockerd.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stop the engine (its containers stop with it) and start it again on the same data.
    async fn restart(&mut self) {
        self.stop_dockerd();
        self.run_dockerd().await;
    }

    fn stop_dockerd(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", self.dir.path().join("cli"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running docker")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(out.status.success(), "docker {args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// [`IMAGE`]: a static busybox and a page, imported from a tar (no registry).
    fn import_image(&self) {
        let root = self.dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("www")).unwrap();
        std::fs::copy(busybox(), root.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
        std::fs::write(root.join("www/index.html"), "hello from a container\n").unwrap();
        let tar = self.dir.path().join("rootfs.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        self.ok(&["import", tar.to_str().unwrap(), IMAGE]);
    }

    /// A container on the host network serving the page on 127.0.0.1:`port`.
    fn run_box(&self, name: &str, port: u16, extra: &[&str]) -> String {
        let listen = format!("127.0.0.1:{port}");
        // --init: httpd as the container's first process would ignore SIGTERM, and every
        // stop and restart would wait out the engine's 10 s.
        let mut args = vec!["run", "-d", "--init", "--network", "host", "--name", name];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            IMAGE,
            "/bin/busybox",
            "httpd",
            "-f",
            "-p",
            &listen,
            "-h",
            "/www",
        ]);
        self.ok(&args)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.ok(&["ps", "-aq"]);
            let mut rm = vec!["rm", "-f"];
            rm.extend(ids.lines());
            if rm.len() > 2 {
                let _ = self.docker(&rm);
            }
        }
        self.stop_dockerd();
    }
}

fn busybox() -> PathBuf {
    PathBuf::from("/bin/busybox")
}

fn routes(p: &Portok) -> Vec<serde_json::Value> {
    serde_json::from_str(&p.ok(&["list", "--json"])).unwrap()
}

fn route<'a>(list: &'a [serde_json::Value], host: &str) -> Option<&'a serde_json::Value> {
    list.iter().find(|r| r["hostname"] == host)
}

/// Whether `host` answers the container's page through portok.
async fn served(p: &Portok, host: &str) -> bool {
    let r = get(p.addr(), host, "/").await;
    r.status == 200 && r.text().contains("hello from a container")
}

async fn wait_served(p: &Portok, host: &str, within: Duration) {
    let start = std::time::Instant::now();
    while !served(p, host).await {
        assert!(
            start.elapsed() < within,
            "{host} not served within {within:?}: {:?}",
            routes(p)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `portok.name=box` on the host network: served at box.localhost over http and https
/// within 5 s, `kind: container` in `list`; `docker restart` fails no request;
/// `docker stop` removes the route within 5 s; `portok.enable=false` is never served.
#[tokio::test(flavor = "multi_thread")]
async fn a_labelled_container_is_served_and_follows_restart_and_stop() {
    let Some(engine) = Engine::start().await else {
        return;
    };
    let p = Portok::with_docker(&engine.host);
    p.ok(&["proxy", "start"]);
    let port = free_port();
    let id = engine.run_box("box", port, &["-l", "portok.name=box"]);
    wait_served(&p, "box.localhost", SOON).await;
    let tls = crate::tls::tls_connect(&p, "box.localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let (status, body) = crate::tls::h1_get(tls, "box.localhost", "/").await;
    assert_eq!((status, body.trim()), (200, "hello from a container"));
    let list = routes(&p);
    let r = route(&list, "box.localhost").expect("box in list");
    assert_eq!(r["kind"], "container", "{r}");
    assert_eq!(r["image"], IMAGE, "{r}");
    assert_eq!(r["container_id"], &id[..12], "{r}");
    assert_eq!(r["port"], port, "{r}");

    // Requests while `docker restart` runs are held and answered, never refused. One may be
    // cut short by the app itself: busybox's httpd answers each request from a child, and
    // the engine kills a child that is between its head and its body (about 1 run in 8).
    // No proxy can mend an answer the app cut; every other request must be answered.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addr = p.addr();
    let looping = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed, mut cut) = (0u32, Vec::new(), Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match get_or_cut(addr, "box.localhost", "/").await {
                    Ok(r) if r.status == 200 => ok += 1,
                    Ok(r) => failed.push((r.status, r.text())),
                    Err(e) => cut.push(e),
                }
            }
            (ok, failed, cut)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.ok(&["restart", "-t", "1", "box"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed, cut) = looping.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} failed of {}: {failed:?}",
        failed.len(),
        ok as usize + failed.len() + cut.len()
    );
    assert!(cut.len() <= 1, "{} answers cut short: {cut:?}", cut.len());
    assert!(ok > 10, "only {ok} requests");

    // A container labelled portok.enable=false is never served.
    engine.run_box(
        "hidden",
        free_port(),
        &["-l", "portok.name=hidden", "-l", "portok.enable=false"],
    );

    // The dashboard's Restart acts through the engine: a new start of the same container.
    let token = std::fs::read_to_string(p.state().join("admin.token")).unwrap();
    let started = || engine.ok(&["inspect", "-f", "{{.State.StartedAt}}", "box"]);
    let before = started();
    let r = admin(&p, "POST", "/api/routes/box/restart", Some(token.trim())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_ne!(started(), before, "the engine restarted it");
    wait_served(&p, "box.localhost", SOON).await;

    engine.ok(&["stop", "-t", "1", "box"]);
    wait_for(SOON, "box's route to go", || {
        route(&routes(&p), "box.localhost").is_none().then_some(())
    })
    .await;
    assert!(route(&routes(&p), "hidden.localhost").is_none());
    let doctor = p.run(&["doctor"]);
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(text.contains("following the engine at"), "{text}");
}

/// A Compose project `shop` with services web and api and no portok labels: served at
/// web.shop.localhost and api.shop.localhost; the ports are the ones the services' processes
/// listen on (host network). A container that dies shows the crash page with its exit code
/// and last log lines.
#[tokio::test(flavor = "multi_thread")]
async fn compose_services_are_served_at_service_dot_project() {
    let Some(engine) = Engine::start().await else {
        return;
    };
    if Command::new("docker-compose")
        .arg("version")
        .output()
        .is_err()
    {
        return missing("docker-compose", "apt-get install -y docker-compose");
    }
    let p = Portok::with_docker(&engine.host);
    p.ok(&["proxy", "start"]);
    let (web, api) = (free_port(), free_port());
    let dir = project(&p);
    let service = |port: u16| {
        format!(
            "    image: {IMAGE}\n    network_mode: host\n    command: [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"127.0.0.1:{port}\", \"-h\", \"/www\"]\n"
        )
    };
    std::fs::write(
        dir.join("docker-compose.yml"),
        format!(
            "version: \"2.4\"\nservices:\n  web:\n{}  api:\n{}",
            service(web),
            service(api)
        ),
    )
    .unwrap();
    let up = Command::new("docker-compose")
        .args(["-p", "shop", "up", "-d"])
        .env("DOCKER_HOST", &engine.host)
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(up.status.success(), "docker-compose up: {}", stderr(&up));
    wait_served(&p, "web.shop.localhost", SOON).await;
    wait_served(&p, "api.shop.localhost", SOON).await;
    let list = routes(&p);
    let r = route(&list, "web.shop.localhost").unwrap();
    assert_eq!(
        (&r["kind"], &r["project"], &r["port"]),
        (&"container".into(), &"shop".into(), &web.into()),
        "{r}"
    );

    // A labelled container that serves, then dies with code 3.
    let port = free_port();
    let script =
        format!("/bin/busybox httpd -p 127.0.0.1:{port} -h /www; sleep 2; echo last words; exit 3");
    engine.ok(&[
        "run",
        "-d",
        "--network",
        "host",
        "--name",
        "dies",
        "-l",
        "portok.name=dies",
        IMAGE,
        "/bin/sh",
        "-c",
        &script,
    ]);
    wait_served(&p, "dies.localhost", SOON).await;
    let page = wait_for_async(LONG, || async {
        let r = get_html(p.addr(), "dies.localhost", "/").await;
        (r.status == 502 && r.text().contains("code 3")).then(|| r.text())
    })
    .await;
    assert!(page.contains("last words"), "{page}");
}

/// After the engine restarts, containers with a restart policy come back and so do their
/// routes, without touching portok.
#[tokio::test(flavor = "multi_thread")]
async fn routes_come_back_after_the_engine_restarts() {
    let Some(mut engine) = Engine::start().await else {
        return;
    };
    let p = Portok::with_docker(&engine.host);
    p.ok(&["proxy", "start"]);
    engine.run_box(
        "box",
        free_port(),
        &["-l", "portok.name=box", "--restart", "always"],
    );
    wait_served(&p, "box.localhost", SOON).await;
    engine.restart().await;
    wait_served(&p, "box.localhost", Duration::from_secs(30)).await;
}

/// A container asking for a name an alias has is refused, and `list` and `doctor` say
/// why; once the alias is gone the container gets the name.
#[tokio::test(flavor = "multi_thread")]
async fn a_name_an_alias_holds_is_refused_until_it_is_free() {
    let Some(engine) = Engine::start().await else {
        return;
    };
    let p = Portok::with_docker(&engine.host);
    p.ok(&["proxy", "start"]);
    let b = backend("b").await;
    p.ok(&["alias", "taken", &b.port.to_string()]);
    engine.run_box("box", free_port(), &["-l", "portok.name=taken"]);
    let list = wait_for_async(SOON, || async {
        let text = p.ok(&["list"]);
        text.contains("not served: container box").then_some(text)
    })
    .await;
    assert!(list.contains("belongs to an alias"), "{list}");
    let doctor = String::from_utf8_lossy(&p.run(&["doctor"]).stdout).into_owned();
    assert!(doctor.contains("not served: container box"), "{doctor}");
    let r = route(&routes(&p), "taken.localhost").cloned().unwrap();
    assert_eq!(r["kind"], "alias", "the alias keeps its name: {r}");
    p.ok(&["alias", "--remove", "taken"]);
    wait_served(&p, "taken.localhost", SOON).await;

    // `proxy start --no-docker`: no container is served, and the routes the last daemon
    // made from the engine are gone; doctor says it is off.
    p.ok(&["proxy", "stop"]);
    p.ok(&["proxy", "start", "--no-docker"]);
    assert!(
        route(&routes(&p), "taken.localhost").is_none(),
        "{:?}",
        routes(&p)
    );
    let doctor = String::from_utf8_lossy(&p.run(&["doctor"]).stdout).into_owned();
    assert!(
        doctor.contains("off (the proxy runs with --no-docker"),
        "{doctor}"
    );
}

/// While a container's HEALTHCHECK says `starting`, its requests are held, then answered
/// once it is healthy: never refused.
#[tokio::test(flavor = "multi_thread")]
async fn requests_wait_while_the_healthcheck_says_starting() {
    let Some(engine) = Engine::start().await else {
        return;
    };
    let p = Portok::with_docker(&engine.host);
    p.ok(&["proxy", "start"]);
    let port = free_port();
    // Healthy once /tmp/ok exists, 2 s after the start; httpd serves from the first moment.
    let script = format!(
        "/bin/busybox httpd -p 127.0.0.1:{port} -h /www; sleep 2; /bin/busybox touch /tmp/ok; sleep 600"
    );
    engine.ok(&[
        "run",
        "-d",
        "--init",
        "--network",
        "host",
        "--name",
        "healthy",
        "-l",
        "portok.name=healthy",
        "--health-cmd",
        "/bin/busybox test -f /tmp/ok",
        "--health-interval",
        "1s",
        IMAGE,
        "/bin/sh",
        "-c",
        &script,
    ]);
    let list = wait_for_async(SOON, || async {
        let l = routes(&p);
        route(&l, "healthy.localhost").is_some().then_some(l)
    })
    .await;
    let r = route(&list, "healthy.localhost").unwrap();
    assert_eq!(
        r["state"], "starting",
        "held while the HEALTHCHECK says starting: {r}"
    );
    let started = std::time::Instant::now();
    assert!(
        served(&p, "healthy.localhost").await,
        "a held request is answered"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "answered after {:?}: it was not held",
        started.elapsed()
    );
}

/// `portok alias app.test PORT` with the daemon serving `--tld test` serves app.test, not
/// app.test.localhost: a name under a served TLD is taken as given.
#[tokio::test(flavor = "multi_thread")]
async fn an_alias_under_a_served_tld_is_taken_as_given() {
    let p = Portok::new();
    p.ok(&["proxy", "start", "--tld", "test"]);
    let b = backend("b").await;
    p.ok(&["alias", "app.test", &b.port.to_string()]);
    let list = routes(&p);
    assert!(route(&list, "app.test").is_some(), "{list:?}");
    let r = get(p.addr(), "app.test", "/").await;
    assert_eq!(r.status, 200);
}

async fn wait_for_async<T, F, Fut>(limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `portok docker env`: the CA mount and the variables, for `docker run` and for Compose;
/// with no CA yet, what to do first.
#[test]
fn docker_env_prints_the_ca_mount_and_variables() {
    let p = Portok::new();
    let out = p.run(&["docker", "env"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("portok proxy start"),
        "{}",
        stderr(&out)
    );
    p.ok(&["proxy", "start"]);
    let ca = p.state().join("ca.pem");
    let line = p.ok(&["docker", "env"]);
    let target = "/usr/local/share/ca-certificates/portok-ca.crt";
    assert!(
        line.contains(&format!("-v {}:{target}:ro", ca.display())),
        "{line}"
    );
    assert!(
        line.contains(&format!("-e NODE_EXTRA_CA_CERTS={target}")),
        "{line}"
    );
    assert!(
        line.contains(&format!("-e SSL_CERT_FILE={target}")),
        "{line}"
    );
    let yaml = p.ok(&["docker", "env", "--compose"]);
    assert!(
        yaml.contains("    volumes:\n") && yaml.contains("      NODE_EXTRA_CA_CERTS: "),
        "{yaml}"
    );
}
