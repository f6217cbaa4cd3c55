//! `portok up`, `portok down` and `portok ps`: the project's apps (`[apps.NAME]` in
//! portok.toml) together. The apps themselves are run by [`crate::up`].

use super::*;
use crate::config::{self, App};
use crate::ui::{say, UsageError};
use crate::up::{self, record, AppPlan};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The project folder and its settings; an error when it defines no apps.
fn project() -> anyhow::Result<(PathBuf, config::Config)> {
    let cwd = std::env::current_dir().context("reading the current folder")?;
    let project = cwd.canonicalize().unwrap_or(cwd);
    let config = config::load(&project)?;
    if config.apps.is_empty() {
        bail!(UsageError(format!(
            "{} has no apps: add an [apps.NAME] table per app to its portok.toml (see docs/many-apps.md), or run one app with `portok run`",
            project.display()
        )));
    }
    Ok((project, config))
}

/// The name and host name `portok run --app NAME` gives the app (the same rule).
fn hostname(project: &Path, app: &App) -> anyhow::Result<String> {
    let dir = app
        .config
        .dir
        .as_ref()
        .map_or_else(|| project.to_path_buf(), |d| project.join(d));
    let name = app.config.name.as_deref().unwrap_or(&app.name);
    let (_, host) = crate::project::app_name(&dir, Some(name), None, true, names::LOCALHOST)?;
    Ok(host)
}

fn secs(s: Option<f64>, default: f64) -> Duration {
    Duration::from_secs_f64(s.unwrap_or(default).max(0.0))
}

pub(super) fn up(names: Vec<String>, detach: bool, detached: bool) -> anyhow::Result<i32> {
    let (project, config) = project()?;
    for w in &config.warnings {
        say(&format!("warning: {w}"));
    }
    let order = config::order(&config, &names)?;
    let state = StateDir::from_env()?;
    let mut apps = Vec::new();
    for app in &order {
        let c = &app.config;
        apps.push(AppPlan {
            name: app.name.clone(),
            hostname: hostname(&project, app)?,
            depends_on: c.depends_on.clone(),
            ready_timeout: secs(c.ready_timeout, 120.0),
            stop_timeout: secs(c.drain, 10.0)
                + secs(c.kill_timeout, 5.0) * 2
                + Duration::from_secs(5),
        });
    }
    if let Some(running) = record::find(&state, Some(&project)).into_iter().find(|r| {
        r.apps
            .iter()
            .any(|a| a.pid != 0 && apps.iter().any(|p| p.name == a.name))
    }) {
        bail!(
            "portok up (pid {}) already runs apps of {} ({}); `portok down` stops it",
            running.pid,
            project.display(),
            running
                .apps
                .iter()
                .filter(|a| a.pid != 0)
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // A name another project's app (or a `portok run`) serves is refused before anything
    // starts, naming where that one runs.
    let routes = store::load(&state)?;
    for app in &apps {
        if let Some(r) = routes
            .iter()
            .find(|r| r.hostname == app.hostname && r.pid != 0)
        {
            return Err(crate::run::owned(&r.hostname, r.pid).into());
        }
    }
    let log = record::log_path(&state, &project);
    if detach {
        return detach_up(&state, &project, &names, &apps, &log);
    }
    let plan = up::Plan {
        project,
        apps,
        log: detached.then_some(log),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(up::up(plan, state))
}

/// `up -d`: start `portok up` in its own session with its output in `log`, wait until
/// every app serves (or one fails), say where each is, and return.
fn detach_up(
    state: &StateDir,
    project: &Path,
    names: &[String],
    apps: &[AppPlan],
    log: &Path,
) -> anyhow::Result<i32> {
    state.ensure()?;
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("up")
        .args(names)
        .arg("--detached")
        .current_dir(project)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    crate::sys::detach_session(&mut cmd);
    let mut child = cmd
        .spawn()
        .context("starting portok up in the background")?;
    let pid = child.id();
    let limit = apps.iter().map(|a| a.ready_timeout).sum::<Duration>() + Duration::from_secs(30);
    let until = Instant::now() + limit;
    let failed = |why: String| -> anyhow::Result<i32> {
        say(&why);
        for line in tail(log, 20) {
            eprintln!("  {line}");
        }
        say(&format!("the whole output is in {}", log.display()));
        Ok(1)
    };
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return failed(format!(
                "portok up stopped before every app was ready ({})",
                crate::run::child::describe_exit(status)
            ));
        }
        let record = record::find(state, Some(project))
            .into_iter()
            .find(|r| r.pid == pid);
        let routes = store::load(state)?;
        let mut ready = 0;
        for app in apps {
            let owner = record
                .as_ref()
                .and_then(|r| r.apps.iter().find(|a| a.name == app.name));
            if owner.is_some_and(|a| a.pid == 0) {
                return failed(format!("{} stopped before it was ready", app.name));
            }
            let serving = owner.is_some_and(|a| {
                routes.iter().any(|r| {
                    r.hostname == app.hostname
                        && r.pid == a.pid
                        && matches!(r.state, Some(RouteState::Live | RouteState::Idle))
                })
            });
            ready += serving as usize;
        }
        if ready == apps.len() {
            break;
        }
        if Instant::now() > until {
            return failed(format!(
                "not every app was ready within {}s",
                limit.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ps_table(
        state,
        project,
        apps.iter()
            .map(|a| (a.name.clone(), a.hostname.clone()))
            .collect(),
    )?;
    say(&format!(
        "running in the background (pid {pid}); output: {}; `portok down` stops it",
        log.display()
    ));
    Ok(0)
}

fn tail(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

pub(super) fn down(names: Vec<String>) -> anyhow::Result<i32> {
    let (project, config) = project()?;
    for n in &names {
        if !config.apps.iter().any(|a| &a.name == n) {
            config::order(&config, std::slice::from_ref(n))?;
        }
    }
    let state = StateDir::from_env()?;
    let records = record::find(&state, Some(&project));
    // Each `portok run` to stop: (app, pid), and whose `portok up` runs it.
    let mut targets: Vec<(String, u32)> = Vec::new();
    let mut ups: Vec<u32> = Vec::new();
    if names.is_empty() {
        if records.is_empty() {
            say(&format!("no `portok up` runs for {}", project.display()));
            return Ok(0);
        }
        ups = records.iter().map(|r| r.pid).collect();
    } else {
        let routes = store::load(&state)?;
        for n in &names {
            let found = records
                .iter()
                .flat_map(|r| &r.apps)
                .find(|a| &a.name == n && a.pid != 0 && crate::sys::pid_alive(a.pid));
            match found {
                Some(a) => targets.push((n.clone(), a.pid)),
                None => {
                    let app = config
                        .apps
                        .iter()
                        .find(|a| &a.name == n)
                        .expect("checked above");
                    let host = hostname(&project, app)?;
                    match routes.iter().find(|r| r.hostname == host && r.pid != 0) {
                        Some(r) => say(&format!(
                            "{n} was not started by `portok up`: it is run by a `portok run` (pid {}); stop that one (Ctrl-C in its terminal)",
                            r.pid
                        )),
                        None => say(&format!("{n} is not running")),
                    }
                    return Ok(1);
                }
            }
        }
    }
    let mut pids: Vec<u32> = targets.iter().map(|(_, p)| *p).collect();
    pids.extend(&ups);
    if !crate::sys::terminate_and_wait(&pids, Duration::from_secs(120)) {
        bail!("some apps did not stop within 120s; `portok prune --force` kills what is left");
    }
    let stopped: Vec<String> = if names.is_empty() {
        records
            .iter()
            .flat_map(|r| {
                r.apps
                    .iter()
                    .filter(|a| a.pid != 0 && crate::sys::pid_alive(a.pid))
                    .map(|a| a.name.clone())
            })
            .collect()
    } else {
        targets.into_iter().map(|(n, _)| n).collect()
    };
    say(&format!("stopped {}", stopped.join(", ")));
    Ok(0)
}

pub(super) fn ps(json: bool) -> anyhow::Result<i32> {
    let (project, config) = project()?;
    let state = StateDir::from_env()?;
    let apps = config::order(&config, &[])?
        .into_iter()
        .map(|a| Ok((a.name.clone(), hostname(&project, a)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if json {
        let rows = rows(&state, &project, apps)?;
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    ps_table(&state, &project, apps)?;
    Ok(0)
}

#[derive(Serialize)]
struct PsRow {
    name: String,
    hostname: String,
    /// idle, starting, live, crashed, or stopped (no route).
    state: String,
    url: String,
    ports: Vec<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp: Option<u16>,
    /// The app's process (its current generation's), when one runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    /// Seconds since the route was registered.
    #[serde(skip_serializing_if = "Option::is_none")]
    uptime: Option<u64>,
    /// `up` when a `portok up` runs it, `run` for a `portok run` of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    by: Option<&'static str>,
}

fn rows(
    state: &StateDir,
    project: &Path,
    apps: Vec<(String, String)>,
) -> anyhow::Result<Vec<PsRow>> {
    let routes = store::load(state)?;
    let base = url_base(state)?;
    let records = record::find(state, Some(project));
    Ok(apps
        .into_iter()
        .map(|(name, hostname)| {
            let route = routes.iter().find(|r| r.hostname == hostname);
            let by = route.map(|r| {
                let up = records.iter().flat_map(|x| &x.apps).any(|a| a.pid == r.pid);
                if up {
                    "up"
                } else {
                    "run"
                }
            });
            PsRow {
                state: route
                    .and_then(|r| r.state)
                    .map_or("stopped", |s| s.as_str())
                    .to_string(),
                url: match route.and_then(|r| r.tcp) {
                    Some(l) => format!("tcp 127.0.0.1:{l}"),
                    None => base.url(&hostname),
                },
                ports: route.map(|r| r.upstream_ports()).unwrap_or_default(),
                tcp: route.and_then(|r| r.tcp),
                pid: route
                    .filter(|r| !r.is_idle())
                    .and_then(|r| r.pgids.first())
                    .map(|p| *p as u32),
                uptime: route
                    .filter(|r| r.state == Some(RouteState::Live))
                    .and_then(|r| r.since)
                    .map(|s| crate::routes::unix_now().saturating_sub(s)),
                by,
                name,
                hostname,
            }
        })
        .collect())
}

fn ps_table(state: &StateDir, project: &Path, apps: Vec<(String, String)>) -> anyhow::Result<()> {
    let rows = rows(state, project, apps)?;
    let nw = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let uw = rows.iter().map(|r| r.url.len()).max().unwrap_or(3).max(3);
    println!(
        "{:<nw$}  {:<8}  {:<uw$}  {:<11}  {:>7}  UPTIME",
        "NAME", "STATE", "URL", "PORT", "PID"
    );
    for r in rows {
        let ports: Vec<String> = r.ports.iter().map(|p| p.to_string()).collect();
        let ports = if r.state == "stopped" || r.state == "idle" {
            "-".to_string()
        } else {
            ports.join(",")
        };
        println!(
            "{:<nw$}  {:<8}  {:<uw$}  {:<11}  {:>7}  {}",
            r.name,
            r.state,
            r.url,
            ports,
            r.pid.map_or("-".into(), |p| p.to_string()),
            r.uptime.map_or("-".into(), crate::ui::duration)
        );
    }
    Ok(())
}
