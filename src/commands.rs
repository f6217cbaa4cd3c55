//! What each command does. Commands return an exit code or an error; `main` prints the
//! error once and maps it to an exit code with [`exit_code`].

use crate::cli::{AliasArgs, Cli, Command, ProxyCmd, StartArgs};
use crate::control;
use crate::daemon::{self, runtime, StartOptions, Started};
use crate::names::{self, NameError};
use crate::routes::{store, Route};
use crate::state::{self, StateDir};
use anyhow::{bail, Context as _};
use serde::Serialize;

/// A mistake in how a command was called: exit 2, like clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Debug, thiserror::Error)]
pub enum AliasError {
    #[error("{host} belongs to a running app (pid {pid}); stop it first or pass --force to take the name")]
    Owned { host: String, pid: u32 },
    #[error("no route named {host}; `portok list` shows the routes")]
    Missing { host: String },
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err.downcast_ref::<NameError>().is_some() || err.downcast_ref::<UsageError>().is_some() {
        2
    } else {
        1
    }
}

pub fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Daemon(args) => {
            let state = StateDir::from_env()?;
            init_daemon_logging();
            let config = runtime::DaemonConfig {
                port: args.port,
                limits: Default::default(),
                tls: None,
            };
            runtime::main(state, config)?;
            Ok(0)
        }
        Command::Proxy(cmd) => proxy(cmd),
        Command::Alias(args) => alias(args),
        Command::List { json } => list(json),
        Command::Get { name, https } => get(&name, https),
        Command::External(args) => {
            let first = args.first().map(|a| a.to_string_lossy().into_owned());
            Err(UsageError(format!(
                "`portok {} ...` will run an app once `portok run` lands; for now use `portok alias NAME PORT`",
                first.unwrap_or_default()
            ))
            .into())
        }
    }
}

fn proxy(cmd: ProxyCmd) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    match cmd {
        ProxyCmd::Start(args) => proxy_start(&state, &args),
        ProxyCmd::Stop => {
            if daemon::stop(&state)? {
                eprintln!("portok: proxy stopped");
            } else {
                eprintln!("portok: proxy is not running");
            }
            Ok(0)
        }
        ProxyCmd::Status { json } => match control::status(&state) {
            Some(s) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&s)?);
                } else {
                    println!(
                        "portok proxy running: pid {}, port {}, up {}, {} route{}, listening on {}",
                        s.pid,
                        s.port,
                        human_duration(s.uptime_secs),
                        s.routes,
                        if s.routes == 1 { "" } else { "s" },
                        s.listening.join(" and ")
                    );
                }
                Ok(0)
            }
            None => {
                if json {
                    println!("null");
                }
                eprintln!("portok: proxy is not running (start it with `portok proxy start`)");
                Ok(1)
            }
        },
    }
}

fn proxy_start(state: &StateDir, args: &StartArgs) -> anyhow::Result<i32> {
    let port = state::proxy_port(args.port)?;
    let opts = StartOptions {
        port,
        extra_args: Vec::new(),
    };
    match daemon::start(state, &opts)? {
        Started::Now(s) => eprintln!(
            "portok: proxy listening on http://localhost:{} (pid {})",
            s.port, s.pid
        ),
        Started::Already(s) => {
            eprintln!(
                "portok: proxy already running on http://localhost:{} (pid {})",
                s.port, s.pid
            );
            if s.port != port {
                eprintln!("portok: note: it listens on {}, not {port}; `portok proxy stop` first to change the port", s.port);
            }
        }
    }
    Ok(0)
}

fn alias(args: AliasArgs) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    let host = names::hostname_for(&args.name)?;
    if args.remove {
        let ((), notes) = store::update(&state, |routes| {
            let before = routes.len();
            routes.retain(|r| r.hostname != host);
            if routes.len() == before {
                return Err(AliasError::Missing { host: host.clone() });
            }
            Ok(())
        })?;
        report_moved(&notes);
        daemon::reload_if_running(&state)?;
        eprintln!("portok: removed {host}");
        return Ok(0);
    }
    let port = args.port.context("a port is required")?;
    if port == 0 {
        bail!(UsageError(
            "port 0 is not a port an app can listen on".into()
        ));
    }
    let ((), notes) = store::update(&state, |routes| {
        if let Some(r) = routes.iter().find(|r| r.hostname == host) {
            if r.pid != 0 && !args.force {
                return Err(AliasError::Owned {
                    host: host.clone(),
                    pid: r.pid,
                });
            }
        }
        routes.retain(|r| r.hostname != host);
        routes.push(Route::alias(host.clone(), port));
        Ok(())
    })?;
    report_moved(&notes);
    let proxy_port = state::proxy_port(None)?;
    let status = daemon::ensure_and_reload(&state, proxy_port)?;
    println!("http://{host}:{}", status.port);
    eprintln!("portok: {host} -> 127.0.0.1:{port}");
    Ok(0)
}

fn report_moved(notes: &store::UpdateNotes) {
    if let Some(aside) = &notes.moved_aside {
        eprintln!(
            "portok: warning: routes.json did not parse; moved it to {} and started a new one",
            aside.display()
        );
    }
}

#[derive(Serialize)]
struct ListEntry<'a> {
    hostname: &'a str,
    url: String,
    port: u16,
    pid: u32,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a str>,
}

/// The port URLs should use: the running daemon's, else the configured one.
fn url_port(state: &StateDir) -> anyhow::Result<u16> {
    match state.recorded_port() {
        Some(p) => Ok(p),
        None => Ok(state::proxy_port(None)?),
    }
}

fn list(json: bool) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    let routes = store::load(&state)?;
    let port = url_port(&state)?;
    let entries: Vec<ListEntry> = routes
        .iter()
        .map(|r: &Route| ListEntry {
            hostname: &r.hostname,
            url: format!("http://{}:{port}", r.hostname),
            port: r.port,
            pid: r.pid,
            kind: r.kind(),
            state: r.state.as_deref(),
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(0);
    }
    if entries.is_empty() {
        eprintln!("portok: no routes yet (add one: `portok alias NAME PORT` or `portok NAME CMD`)");
        return Ok(0);
    }
    let w = entries
        .iter()
        .map(|e| e.url.len())
        .max()
        .unwrap_or(3)
        .max(3);
    println!(
        "{:<w$}  {:>5}  {:>7}  {:<5}  STATE",
        "URL", "PORT", "PID", "KIND"
    );
    for e in &entries {
        println!(
            "{:<w$}  {:>5}  {:>7}  {:<5}  {}",
            e.url,
            e.port,
            e.pid,
            e.kind,
            e.state.unwrap_or("-")
        );
    }
    Ok(0)
}

fn get(name: &str, https: bool) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    let host = names::hostname_for(name)?;
    let scheme = if https { "https" } else { "http" };
    println!("{scheme}://{host}:{}", url_port(&state)?);
    Ok(0)
}

fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

/// The daemon logs to stderr, which `proxy start` points at proxy.log.
fn init_daemon_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTOK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
