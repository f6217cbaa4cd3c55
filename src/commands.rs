//! What each command does. Commands return an exit code or an error; `main` prints the
//! error once and maps it to an exit code with [`exit_code`].

use crate::cli::{AliasArgs, Cli, Command, ProxyCmd, RunArgs, StartArgs, RUN_VALUE_FLAGS};
use crate::control::{self, AppReply, AppRequest};
use crate::daemon::status::{RouteStatus, Status};
use crate::daemon::{self, runtime, StartOptions, Started};
use crate::names::{self, NameError};
use crate::routes::{store, Route, RouteState};
use crate::state::{self, StateDir};
use anyhow::{bail, Context as _};
use serde::Serialize;

pub use crate::ui::UsageError;

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
    if err.downcast_ref::<NameError>().is_some()
        || err.downcast_ref::<UsageError>().is_some()
        || err.downcast_ref::<crate::config::ConfigError>().is_some()
    {
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
            let tls = match (args.tls.cert, args.tls.key) {
                (Some(cert), Some(key)) => runtime::TlsSource::Files { cert, key },
                _ => runtime::TlsSource::LocalCa,
            };
            let config = runtime::DaemonConfig {
                port: args.port,
                limits: args.limits.to_limits(),
                tls,
                redirect_https: args.tls.redirect_https,
                metrics: !args.limits.no_metrics,
                sync_hosts: args.sync_hosts,
            };
            runtime::main(state, config)?;
            Ok(0)
        }
        Command::Run(args) => crate::run::main(args),
        Command::Restart { name } => restart(&name),
        Command::Logs {
            name,
            lines,
            follow,
        } => logs(&name, lines, follow),
        Command::Trust { check } => trust(check),
        Command::Status { name, json } => status(name.as_deref(), json),
        Command::Switch {
            name,
            port,
            health,
            drain,
            rollback_window,
            fail_threshold,
        } => switch(
            &name,
            crate::switch::SwitchRequest {
                port,
                health,
                drain_secs: drain,
                rollback_secs: rollback_window,
                fail_threshold,
                reason: "portok switch".into(),
            },
        ),
        Command::Untrust => untrust(),
        Command::Proxy(cmd) => proxy(cmd),
        Command::Alias(args) => alias(args),
        Command::List { json } => list(json),
        Command::Get {
            name,
            https,
            no_worktree,
        } => get(name.as_deref(), https, no_worktree),
        Command::Doctor => crate::doctor::main(),
        Command::Prune { force } => crate::prune::main(force),
        Command::Clean { yes } => crate::clean::main(yes),
        Command::Hosts(cmd) => crate::hosts::command(cmd),
        Command::Completions { shell } => crate::generate::completions(shell),
        Command::Man { dir } => crate::generate::man(dir.as_deref()),
        Command::External(args) => crate::run::main(external_run_args(args)?),
    }
}

fn proxy(cmd: ProxyCmd) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    match cmd {
        ProxyCmd::Start(args) => proxy_start(&state, &args),
        ProxyCmd::Stop { timeout } => {
            let grace = std::time::Duration::from_secs_f64(timeout.max(0.0));
            match daemon::stop(&state, Some(grace))? {
                None => eprintln!("portok: proxy is not running"),
                Some(0) => eprintln!("portok: proxy stopped (every request in flight finished)"),
                Some(cut) => eprintln!(
                    "portok: proxy stopped; {cut} request{} still in flight after {timeout} s {} cut",
                    if cut == 1 { "" } else { "s" },
                    if cut == 1 { "was" } else { "were" }
                ),
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
                        crate::ui::duration(s.uptime_secs),
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
    let mut extra_args = Vec::new();
    if let (Some(cert), Some(key)) = (&args.tls.cert, &args.tls.key) {
        // Check here too, so a bad file is reported before anything is started.
        crate::proxy::tls::server_config_from_files(cert, key)?;
        let abs =
            |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        extra_args.push("--cert".into());
        extra_args.push(abs(cert).display().to_string());
        extra_args.push("--key".into());
        extra_args.push(abs(key).display().to_string());
    }
    if args.tls.redirect_https {
        extra_args.push("--redirect-https".into());
    }
    extra_args.extend(args.limits.to_args());
    if args.sync_hosts {
        extra_args.push("--sync-hosts".into());
    }
    let opts = StartOptions { port, extra_args };
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
    let proxy_port = state::proxy_port(None)?;
    if let Some(listen) = args.tcp {
        crate::proxy::tcp::check_listen_port(&state, &host, listen, proxy_port, port)?;
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
        routes.push(Route {
            reload: args.reload,
            tcp: args.tcp,
            proxy_protocol: args.proxy_protocol,
            ..Route::alias(host.clone(), port)
        });
        Ok(())
    })?;
    report_moved(&notes);
    let status = match daemon::ensure_and_reload(&state, proxy_port) {
        Ok(s) => s,
        Err(e) => {
            // The daemon could not apply it (a TCP port it cannot bind): take it back.
            if args.tcp.is_some() {
                let _ = store::update::<_, store::StoreError>(&state, |routes| {
                    routes.retain(|r| r.hostname != host);
                    Ok(())
                });
                let _ = daemon::reload_if_running(&state);
            }
            return Err(e.into());
        }
    };
    match args.tcp {
        Some(listen) => {
            println!("127.0.0.1:{listen}");
            eprintln!("portok: {host}: tcp 127.0.0.1:{listen} -> 127.0.0.1:{port}");
        }
        None => {
            println!("http://{host}:{}", status.port);
            eprintln!("portok: {host} -> 127.0.0.1:{port}");
        }
    }
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
    /// Every port requests go to: a pool's instances in rotation, else `port` alone.
    ports: Vec<u16>,
    /// A pool's size (`--instances N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    instances: Option<u32>,
    pid: u32,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<RouteState>,
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
            ports: r.upstream_ports(),
            instances: r.instances,
            pid: r.pid,
            kind: r.kind(),
            state: r.state,
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
    // A pool shows every instance's port.
    let ports: Vec<String> = entries
        .iter()
        .map(|e| {
            let list: Vec<String> = e.ports.iter().map(|p| p.to_string()).collect();
            list.join(",")
        })
        .collect();
    let pw = ports.iter().map(|p| p.len()).max().unwrap_or(4).max(5);
    println!(
        "{:<w$}  {:>pw$}  {:>7}  {:<5}  STATE",
        "URL", "PORT", "PID", "KIND"
    );
    for (e, ports) in entries.iter().zip(&ports) {
        let state = match (e.state, e.instances) {
            (Some(RouteState::Live), Some(n)) => {
                format!("live ({} of {n} instances)", e.ports.len())
            }
            (Some(s), Some(n)) => format!("{s} (pool of {n})"),
            (Some(s), None) => s.to_string(),
            (None, _) => "-".into(),
        };
        println!(
            "{:<w$}  {:>pw$}  {:>7}  {:<5}  {state}",
            e.url, ports, e.pid, e.kind,
        );
    }
    Ok(0)
}

/// The URL `portok run` would give: the same name rules (worktree prefix, portok.toml's
/// `name`, workspace inference) for NAME or, without it, for the current folder.
fn get(name: Option<&str>, https: bool, no_worktree: bool) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    let cwd = std::env::current_dir().context("reading the current folder")?;
    let configured = match name {
        Some(_) => None,
        None => {
            let config = crate::config::load(&cwd)?;
            for w in &config.warnings {
                eprintln!("portok: warning: {w}");
            }
            config.name
        }
    };
    let (_, host) = crate::project::app_name(&cwd, name, configured.as_deref(), !no_worktree)?;
    let scheme = if https { "https" } else { "http" };
    println!("{scheme}://{host}:{}", url_port(&state)?);
    Ok(0)
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

/// `portok NAME [OPTIONS] CMD [ARGS...]`: options before the command belong to portok,
/// everything from the first other word on is the command.
fn external_run_args(args: Vec<std::ffi::OsString>) -> anyhow::Result<RunArgs> {
    use clap::Parser;
    let args: Vec<String> = args
        .into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|a| UsageError(format!("argument {a:?} is not UTF-8")))
        })
        .collect::<Result<_, _>>()?;
    let Some((name, rest)) = args.split_first() else {
        bail!(UsageError("usage: portok NAME CMD [ARGS...]".into()));
    };
    let mut opts = Vec::new();
    let mut i = 0;
    while i < rest.len() && rest[i].starts_with('-') {
        if rest[i] == "--" {
            i += 1;
            break;
        }
        opts.push(rest[i].clone());
        if RUN_VALUE_FLAGS.contains(&rest[i].as_str()) && i + 1 < rest.len() {
            opts.push(rest[i + 1].clone());
            i += 1;
        }
        i += 1;
    }
    let command = &rest[i..];
    if command.is_empty() {
        bail!(UsageError(format!(
            "no command to run for {name:?}; usage: portok {name} CMD [ARGS...] (portok --help lists portok's own commands)"
        )));
    }
    #[derive(clap::Parser)]
    struct RunOnly {
        #[command(flatten)]
        run: RunArgs,
    }
    let argv = std::iter::once("portok".to_string())
        .chain(std::iter::once(name.clone()))
        .chain(opts)
        .chain(std::iter::once("--".to_string()))
        .chain(command.iter().cloned());
    match RunOnly::try_parse_from(argv) {
        Ok(r) => Ok(r.run),
        Err(e) => Err(UsageError(e.to_string().trim_end().to_string()).into()),
    }
}

fn restart(name: &str) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    let host = names::hostname_for(name)?;
    let reply = control::ask_app(
        &state,
        &host,
        &AppRequest::Restart,
        std::time::Duration::from_secs(3600),
    )?;
    match reply {
        AppReply::Redeployed { message } => {
            eprintln!("portok: {host} redeployed: {message}");
            Ok(0)
        }
        AppReply::Failed { message } => {
            eprintln!("portok: redeploy of {host} failed: {message}");
            Ok(1)
        }
        AppReply::Logs { .. } => Err(anyhow::anyhow!(
            "{host}'s portok run answered a restart with logs; is it a different portok version?"
        )),
    }
}

fn logs(name: &str, lines: usize, follow: bool) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    let host = names::hostname_for(name)?;
    let timeout = std::time::Duration::from_secs(10);
    let ask =
        |lines: usize| match control::ask_app(&state, &host, &AppRequest::Logs { lines }, timeout)?
        {
            AppReply::Logs { lines } => Ok(lines),
            AppReply::Failed { message } | AppReply::Redeployed { message } => Err(
                anyhow::anyhow!("{host}'s portok run did not give its logs: {message}"),
            ),
        };
    let mut last: Vec<String> = ask(lines)?;
    for l in &last {
        println!("{l}");
    }
    if !follow {
        return Ok(0);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now: Vec<String> = match ask(crate::run::child::KEEP_LINES) {
            Ok(lines) => lines,
            Err(_) => return Ok(0),
        };
        // Print what follows the last line we printed (the buffer slides).
        let start = match last.last() {
            Some(tail) => now
                .iter()
                .rposition(|l| l == tail)
                .map(|i| i + 1)
                .unwrap_or(0),
            None => 0,
        };
        for l in &now[start..] {
            println!("{l}");
        }
        last = now;
    }
}

fn trust(check: bool) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    state.ensure()?;
    let ca = crate::ca::Ca::load_or_create(state.root())?;
    let _ = ca;
    let pem = crate::ca::ca_pem_path(state.root());
    let opts = crate::trust::TrustOptions::for_current_user();
    if check {
        let ok = crate::trust::check(&pem, &opts);
        eprintln!(
            "portok: the local CA ({}) is {}trusted by the system store",
            pem.display(),
            if ok { "" } else { "not " }
        );
        return Ok(if ok { 0 } else { 1 });
    }
    let report = crate::trust::trust(&pem, &opts);
    print!("{report}");
    Ok(if report.ok() { 0 } else { 1 })
}

fn untrust() -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    let pem = crate::ca::ca_pem_path(state.root());
    let report = crate::trust::untrust(&pem, &crate::trust::TrustOptions::for_current_user());
    print!("{report}");
    Ok(if report.ok() { 0 } else { 1 })
}

fn status(name: Option<&str>, json: bool) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    let host = name.map(names::hostname_for).transpose()?;
    let reply = match control::call(
        &state,
        &control::Request::Detail,
        std::time::Duration::from_secs(5),
    ) {
        Ok(r) => r,
        Err(control::ControlError::NotRunning { .. }) => {
            eprintln!("portok: the proxy is not running (start it with `portok proxy start`)");
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    };
    let status: Status = serde_json::from_value(reply.data.unwrap_or_default())
        .context("the daemon's status is not in a form this portok reads")?;
    let routes: Vec<&RouteStatus> = match &host {
        Some(host) => match status.routes.iter().find(|r| &r.hostname == host) {
            Some(one) => vec![one],
            None => {
                eprintln!("portok: no route named {host}; `portok list` shows the routes");
                return Ok(1);
            }
        },
        None => status.routes.iter().collect(),
    };
    if json {
        let out = match (&host, routes.first()) {
            (Some(_), Some(one)) => serde_json::to_string_pretty(one)?,
            _ => serde_json::to_string_pretty(&status)?,
        };
        println!("{out}");
        return Ok(0);
    }
    if host.is_none() {
        println!(
            "portok {} on port {} (pid {}), up {}, {} requests, dashboard {}",
            status.version,
            status.port,
            status.pid,
            crate::ui::duration(status.uptime_secs),
            status.totals.requests,
            status.dashboard
        );
    }
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for r in routes {
        println!(
            "{:<28} {:<9} {:<5} port {:<5} gen {:<3} req {:<7} 2xx {} 4xx {} 5xx {}  inflight {}  {} rps  p50 {} ms  p99 {} ms",
            r.hostname,
            r.state.as_str(),
            r.kind,
            r.port,
            opt(r.generation.map(|g| g.to_string())),
            r.requests,
            r.responses.success,
            r.responses.client_error,
            r.responses.server_error,
            r.inflight,
            r.rps,
            opt(r.p50_ms.map(|v| v.to_string())),
            opt(r.p99_ms.map(|v| v.to_string())),
        );
        if let Some(n) = r.instances {
            let each: Vec<String> = r
                .backends
                .iter()
                .map(|b| format!("{} ({} req, {} in flight)", b.port, b.requests, b.inflight))
                .collect();
            println!(
                "    instances: {} of {n} in rotation: {}",
                each.len(),
                each.join(", ")
            );
        }
        if let Some(d) = &r.last_redeploy {
            println!(
                "    last redeploy: {} ({}), generation {}, {} ms",
                d.outcome.as_str(),
                d.reason,
                d.generation,
                d.millis
            );
        }
        if let Some(sw) = r.switches.back() {
            println!(
                "    last switch: #{} {} -> {} {}{}",
                sw.id,
                sw.from_port,
                sw.to_port,
                sw.outcome.as_str(),
                sw.rollback
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
        }
        if let Some(c) = &r.crash {
            println!("    crashed: {}", c.message);
        }
    }
    Ok(0)
}

fn switch(name: &str, request: crate::switch::SwitchRequest) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    let hostname = names::hostname_for(name)?;
    if request.port == 0 {
        bail!(UsageError(
            "port 0 is not a port an app can listen on".into()
        ));
    }
    let wait = std::time::Duration::from_secs_f64(request.drain_secs.max(0.0) + 30.0);
    daemon::ensure_and_reload(&state, state::proxy_port(None)?)?;
    match control::call(
        &state,
        &control::Request::Switch { hostname, request },
        wait,
    ) {
        Ok(reply) => {
            eprintln!("portok: {}", reply.message.unwrap_or_default());
            Ok(0)
        }
        Err(control::ControlError::Refused { message }) => {
            eprintln!("portok: switch refused: {message}");
            Ok(1)
        }
        Err(e) => Err(e.into()),
    }
}
