//! Containers as routes: the daemon follows the Docker engine (through bollard) and keeps
//! a route for each container [`crate::docker`]'s rules serve.
//!
//! - At connect it subscribes to the engine's container events, then lists the running
//!   containers and brings every container route in line with them.
//! - Each event for a container leads to one look at it (inspect), which decides the route:
//!   served (live once its port answers, held while it starts or its HEALTHCHECK says
//!   `starting`), crashed (the crash page, with its exit code and last log lines), or gone
//!   (`docker stop`, removed, or no longer labelled).
//! - A container going down (`die`) is held at once: during `docker restart` requests wait
//!   for the new start instead of failing. Whether it comes back is decided 1.5 s later.
//! - When the engine goes away, its routes are held; it is asked again with backoff (0.5 s
//!   to 10 s), and one line is logged per change of state, never per retry.
//!
//! What `portok list` and `portok doctor` show of it (the engine's state, containers refused
//! a name) is in `docker.json` in the state directory.

use super::state::DaemonState;
use crate::docker::{self, endpoint, Facts, Naming, PortSource};
use crate::routes::{Container, Route, RouteState};
use crate::state::StateDir;
use crate::sync::LockExt;
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `proxy start --docker-all`: serve unlabelled containers too, at their container name.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub all: bool,
}

/// How long after a container goes down it is looked at again: `docker restart` starts it
/// well within this, so its requests are held rather than its route removed.
const SETTLE: Duration = Duration::from_millis(1500);
/// How often a starting container (port not answering yet, or HEALTHCHECK `starting`) is
/// looked at again.
const RECHECK: Duration = Duration::from_millis(250);
/// How often containers refused a name are looked at again.
const RETRY_REFUSED: Duration = Duration::from_secs(2);
/// How long a running container may take to serve HTTP before it is refused (a database
/// in a Compose project, say), until its next event.
const GIVE_UP: Duration = Duration::from_secs(60);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Log lines on a crashed container's page.
const TAIL: usize = 20;

/// The engine's state and the containers refused a name, as `list` and `doctor` read them.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// `connected`, or why not.
    pub engine: String,
    pub endpoint: String,
    pub from: String,
    /// One line per container not served, and why.
    #[serde(default)]
    pub refused: Vec<String>,
}

fn report_path(state: &StateDir) -> std::path::PathBuf {
    state.root().join("docker.json")
}

/// What the daemon last wrote of the engine (None: it does not follow one).
pub fn report(state: &StateDir) -> Option<Report> {
    serde_json::from_slice(&std::fs::read(report_path(state)).ok()?).ok()
}

/// A daemon starting: what an earlier one knew of the engine goes (its report, and its
/// container routes, which a daemon that follows the engine makes again from the engine).
pub fn forget(state: &StateDir) {
    let _ = std::fs::remove_file(report_path(state));
    let _ = crate::routes::store::update::<_, crate::routes::store::StoreError>(state, |routes| {
        routes.retain(|r| r.container.is_none());
        Ok(())
    });
}

/// Containers the running daemon does not serve, and why.
pub fn clashes(state: &StateDir) -> Vec<String> {
    report(state).map(|r| r.refused).unwrap_or_default()
}

/// Follow the engine until `shutdown`.
pub async fn follow(d: Arc<DaemonState>, opts: Options, shutdown: CancellationToken) {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let ep = endpoint::find(home.as_deref());
    let mut report = Report {
        endpoint: ep.host.clone(),
        from: ep.from.clone(),
        ..Report::default()
    };
    if let Some(why) = endpoint::not_local(&ep.host) {
        tracing::info!(endpoint = %ep.host, "not following the Docker engine: {why}");
        report.engine = format!("not followed: {why}");
        write_report(&d.ctx.state, &report);
        return;
    }
    let mut backoff = BACKOFF_MIN;
    loop {
        let outcome = match connect(&ep.host).await {
            Ok(engine) => {
                tracing::info!(endpoint = %ep.host, from = %ep.from, "following the Docker engine");
                set_engine(&d, &mut report, "connected".into());
                *d.docker.locked() = Some(engine.clone());
                backoff = BACKOFF_MIN;
                let mut w = Watcher::new(d.clone(), engine, opts);
                let end = tokio::select! {
                    e = w.run() => e,
                    _ = shutdown.cancelled() => return,
                };
                *d.docker.locked() = None;
                hold_all(&d).await;
                format!("lost: {end}")
            }
            Err(e) => format!("unavailable: {e}"),
        };
        if report.engine != outcome {
            tracing::info!(endpoint = %ep.host, "Docker engine {outcome}; asking again with backoff");
            set_engine(&d, &mut report, outcome);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// The dashboard's Restart and Stop of a container route, through the engine.
pub async fn act(d: &DaemonState, id: &str, restart: bool) -> Result<(), String> {
    let Some(engine) = d.docker.locked().clone() else {
        return Err("the Docker engine is not connected (see `portok doctor`)".into());
    };
    let done = if restart {
        engine.restart_container(id, None).await
    } else {
        engine.stop_container(id, None).await
    };
    done.map_err(|e| format!("the Docker engine refused: {e}"))
}

async fn connect(host: &str) -> Result<Docker, bollard::errors::Error> {
    let engine = Docker::connect_with_host(host)?.negotiate_version().await?;
    engine.ping().await?;
    Ok(engine)
}

fn set_engine(d: &DaemonState, report: &mut Report, engine: String) {
    report.engine = engine;
    write_report(&d.ctx.state, report);
}

fn write_report(state: &StateDir, report: &Report) {
    if let Ok(json) = serde_json::to_vec_pretty(report) {
        let _ = crate::fsutil::write_atomic(&report_path(state), &json, 0o600);
    }
}

/// The engine went away: its containers' routes hold their requests until it is back.
async fn hold_all(d: &Arc<DaemonState>) {
    d.change_routes(|routes| {
        let mut changed = false;
        for r in routes.iter_mut().filter(|r| r.container.is_some()) {
            if r.state != Some(RouteState::Starting) {
                r.state = Some(RouteState::Starting);
                changed = true;
            }
        }
        changed
    })
    .await;
}

/// Why the watcher stopped: the engine's event stream ended or failed.
type End = String;

struct Watcher {
    d: Arc<DaemonState>,
    engine: Docker,
    opts: Options,
    /// Containers stopped on purpose (`docker stop`): gone, not crashed, once down.
    stopped: HashSet<String>,
    /// Containers refused a name, by id: the reason.
    refused: HashMap<String, String>,
    /// Containers running but not serving yet, since when (given up after [`GIVE_UP`]).
    starting: HashMap<String, std::time::Instant>,
    /// Those with a [`RECHECK`] look on its way (one at a time).
    rechecking: HashSet<String>,
    /// Looks to take later (after [`SETTLE`] or [`RECHECK`]).
    later: tokio::sync::mpsc::UnboundedSender<String>,
    later_rx: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Watcher {
    fn new(d: Arc<DaemonState>, engine: Docker, opts: Options) -> Self {
        let (later, later_rx) = tokio::sync::mpsc::unbounded_channel();
        Watcher {
            d,
            engine,
            opts,
            stopped: HashSet::new(),
            refused: HashMap::new(),
            starting: HashMap::new(),
            rechecking: HashSet::new(),
            later,
            later_rx,
        }
    }

    async fn run(&mut self) -> End {
        let filters = HashMap::from([("type".to_string(), vec!["container".to_string()])]);
        // The stream asks the engine only when first polled, after the list: `since` (a
        // second before it) has the engine replay what happened in between.
        let since = crate::routes::unix_now().saturating_sub(1);
        let options = bollard::query_parameters::EventsOptions {
            filters: Some(filters),
            since: Some(since.to_string()),
            ..Default::default()
        };
        let mut events = Box::pin(self.engine.events(Some(options)));
        let listed = self
            .engine
            .list_containers(None::<bollard::query_parameters::ListContainersOptions>)
            .await;
        let running: Vec<String> = match listed {
            Ok(list) => list.into_iter().filter_map(|c| c.id).collect(),
            Err(e) => return e.to_string(),
        };
        let known: Vec<String> = self
            .d
            .ctx
            .routes
            .load()
            .sorted()
            .iter()
            .filter_map(|l| l.route.container.as_ref().map(|c| c.id.clone()))
            .collect();
        for id in running
            .iter()
            .chain(known.iter().filter(|k| !running.contains(k)))
        {
            self.look(id).await;
        }
        // A refused name may free up (an app stops, a recreated container's old route goes).
        let mut retry = tokio::time::interval(RETRY_REFUSED);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(e)) => self.event(e).await,
                    Some(Err(e)) => return e.to_string(),
                    None => return "the event stream ended".into(),
                },
                Some(id) = self.later_rx.recv() => {
                    self.rechecking.remove(&id);
                    self.look(&id).await;
                }
                _ = retry.tick() => {
                    let refused: Vec<String> = self.refused.keys().cloned().collect();
                    for id in refused {
                        self.look(&id).await;
                    }
                }
            }
        }
    }

    async fn event(&mut self, e: bollard::models::EventMessage) {
        let (Some(action), Some(id)) = (e.action, e.actor.and_then(|a| a.id)) else {
            return;
        };
        match action.as_str() {
            // Not `kill`: `docker kill -s HUP` (a reload) does not stop the container.
            "die" => {
                self.hold(&id).await;
                self.look_after(id, SETTLE);
            }
            "stop" => {
                self.stopped.insert(id.clone());
                self.hold(&id).await;
                self.look_after(id, SETTLE);
            }
            "destroy" => self.remove(&id).await,
            "start" | "restart" | "unpause" | "rename" => {
                self.stopped.remove(&id);
                self.look(&id).await;
            }
            a if a.starts_with("health_status") => self.look(&id).await,
            _ => {}
        }
    }

    /// A look in [`RECHECK`], unless one is on its way.
    fn recheck(&mut self, id: &str) {
        if self.rechecking.insert(id.to_string()) {
            self.look_after(id.to_string(), RECHECK);
        }
    }

    fn look_after(&self, id: String, after: Duration) {
        let later = self.later.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = later.send(id);
        });
    }

    /// Look at a container and bring its route in line.
    async fn look(&mut self, id: &str) {
        let inspected = self.engine.inspect_container(id, None).await;
        let facts = match inspected {
            Ok(i) => match serde_json::to_value(i) {
                Ok(v) => docker::facts_of(&v),
                Err(_) => return self.remove(id).await,
            },
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return self.remove(id).await,
            // A busy or restarting engine: the route stays as it is; look again.
            Err(e) => {
                tracing::debug!(id, error = %e, "inspecting a container failed; looking again");
                return self.look_after(id.to_string(), SETTLE);
            }
        };
        if facts.running {
            return self.serve(facts).await;
        }
        self.starting.remove(id);
        self.accept(id);
        if self.stopped.contains(id) {
            self.remove(id).await;
        } else if facts.restarting {
            // Its restart policy is bringing it back: requests wait for it.
            self.hold(id).await;
            self.look_after(id.to_string(), SETTLE);
        } else {
            self.crashed(facts).await;
        }
    }

    async fn serve(&mut self, f: Facts) {
        let name = match docker::naming(&f, self.opts.all) {
            Naming::Named(n) => n,
            Naming::Disabled | Naming::Unlabelled => return self.remove(&f.id).await,
        };
        let host = match crate::names::hostname_served(&name, &self.d.tlds) {
            Ok(h) => h,
            Err(e) => {
                return self
                    .refuse(&f, format!("its name {name:?} cannot be served: {e}"))
                    .await
            }
        };
        let since = *self
            .starting
            .entry(f.id.clone())
            .or_insert_with(std::time::Instant::now);
        let port = match self.port_of(&f, &host).await {
            Ok(Some(p)) => p,
            Ok(None) if since.elapsed() < GIVE_UP => {
                // Nothing listens yet (host network): look again shortly.
                return self.recheck(&f.id);
            }
            Ok(None) => {
                let why = "none of its processes listens on a TCP port portok can see; label it portok.port=PORT";
                return self.refuse(&f, why.into()).await;
            }
            Err(why) => return self.refuse(&f, why).await,
        };
        let ready = if f.health_starting {
            None
        } else {
            crate::probe::ready_as(port, &host, None, false, None).await
        };
        match ready {
            Some(_) => {
                self.starting.remove(&f.id);
            }
            None if f.health_starting || since.elapsed() < GIVE_UP => self.recheck(&f.id),
            None => {
                let why = format!("port {port} does not answer HTTP (a database?); label it portok.enable=false, or portok.port=PORT for the HTTP one");
                return self.refuse(&f, why).await;
            }
        }
        let route = Route {
            state: Some(if ready.is_some() {
                RouteState::Live
            } else {
                RouteState::Starting
            }),
            upstream: ready.unwrap_or_default(),
            since: Some(crate::routes::unix_now()),
            container: Some(Container {
                id: f.id.clone(),
                name: f.name.clone(),
                image: f.image.clone(),
                project: f.compose_project().map(String::from),
            }),
            ..Route::alias(host.clone(), port)
        };
        let table = self.d.ctx.routes.load();
        // The exact name: lookup() alone would answer a parent's route for a free subdomain.
        let owner = table
            .lookup(&host)
            .filter(|l| l.route.hostname == host)
            .map(|l| &l.route)
            .filter(|r| r.container.as_ref().is_none_or(|c| c.id != f.id))
            .map(|r| match (&r.container, r.pid) {
                (Some(_), _) => "another container".to_string(),
                (None, 0) => "an alias".to_string(),
                (None, pid) => format!("the app of `portok run` (pid {pid})"),
            });
        if let Some(owner) = owner {
            let why = format!("{host} belongs to {owner}; give the container another name with the label portok.name=NAME");
            return self.refuse(&f, why).await;
        }
        self.accept(&f.id);
        let id = f.id.clone();
        self.d
            .change_routes(move |routes| {
                let mine = |r: &Route| r.container.as_ref().is_some_and(|c| c.id == id);
                if routes
                    .iter()
                    .any(|r| r.hostname == route.hostname && !mine(r))
                {
                    return false;
                }
                let before = routes.iter().find(|r| mine(r)).cloned();
                let unchanged = before.as_ref().is_some_and(|b| {
                    b.hostname == route.hostname
                        && b.port == route.port
                        && b.state == route.state
                        && b.upstream == route.upstream
                });
                if unchanged {
                    return false;
                }
                routes.retain(|r| !mine(r));
                routes.push(route.clone());
                true
            })
            .await;
    }

    /// The port to serve: the label's, the published one that answers HTTP (else the first),
    /// or on the host network the one its processes listen on (None: none yet).
    async fn port_of(&self, f: &Facts, host: &str) -> Result<Option<u16>, String> {
        let candidates = match docker::port_source(f)? {
            PortSource::Label(p) => return Ok(Some(p)),
            PortSource::Published(ports) => ports,
            PortSource::HostNetwork => {
                let pid = f.pid;
                tokio::task::spawn_blocking(move || crate::sys::tree_listening_ports(pid))
                    .await
                    .unwrap_or_default()
            }
            PortSource::None => {
                return Err(
                    "it publishes no TCP port and is not on the host network; publish one (-p 127.0.0.1:8080:80) or label it portok.port=PORT".into(),
                )
            }
        };
        for &p in &candidates {
            if crate::probe::ready_as(p, host, None, false, None)
                .await
                .is_some()
            {
                return Ok(Some(p));
            }
        }
        Ok(candidates.first().copied())
    }

    async fn crashed(&mut self, f: Facts) {
        let host = {
            let table = self.d.ctx.routes.load();
            let route = table
                .sorted()
                .into_iter()
                .find(|l| l.route.container.as_ref().is_some_and(|c| c.id == f.id));
            match route {
                Some(l) => l.route.hostname.clone(),
                None => return,
            }
        };
        let tail = self.logs(&f.id).await;
        let message = format!(
            "the container {} ({}) exited with code {}",
            f.name,
            f.short_id(),
            f.exit_code
        );
        self.d.record_crash(host.clone(), message, tail);
        self.set_state(&f.id, RouteState::Crashed).await;
    }

    async fn logs(&self, id: &str) -> Vec<String> {
        let options = bollard::query_parameters::LogsOptions {
            stdout: true,
            stderr: true,
            tail: TAIL.to_string(),
            ..Default::default()
        };
        let mut out = String::new();
        let mut stream = Box::pin(self.engine.logs(id, Some(options)));
        while let Some(Ok(chunk)) = stream.next().await {
            out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        out.lines().map(String::from).collect()
    }

    /// A container going down: its requests wait (held) until it is looked at again.
    async fn hold(&self, id: &str) {
        self.set_state(id, RouteState::Starting).await;
    }

    async fn set_state(&self, id: &str, state: RouteState) {
        let id = id.to_string();
        self.d
            .change_routes(move |routes| {
                let r = routes
                    .iter_mut()
                    .find(|r| r.container.as_ref().is_some_and(|c| c.id == id));
                match r {
                    Some(r) if r.state != Some(state) => {
                        r.state = Some(state);
                        true
                    }
                    _ => false,
                }
            })
            .await;
    }

    async fn remove(&mut self, id: &str) {
        self.accept(id);
        self.drop_route(id).await;
        // Its name may be one a refused container asked for.
        for other in self.refused.keys() {
            self.look_after(other.clone(), Duration::ZERO);
        }
    }

    async fn drop_route(&self, id: &str) {
        let id = id.to_string();
        self.d
            .change_routes(move |routes| {
                let before = routes.len();
                routes.retain(|r| r.container.as_ref().is_none_or(|c| c.id != id));
                routes.len() != before
            })
            .await;
    }

    async fn refuse(&mut self, f: &Facts, why: String) {
        let line = format!("container {} ({}): {why}", f.name, f.short_id());
        if self.refused.get(&f.id) != Some(&line) {
            tracing::warn!("{line}");
            self.refused.insert(f.id.clone(), line);
            self.save_refused();
        }
        self.drop_route(&f.id).await;
    }

    fn accept(&mut self, id: &str) {
        if self.refused.remove(id).is_some() {
            self.save_refused();
        }
    }

    fn save_refused(&self) {
        let state = &self.d.ctx.state;
        let mut report = report(state).unwrap_or_default();
        report.refused = self.refused.values().cloned().collect();
        report.refused.sort();
        write_report(state, &report);
    }
}
