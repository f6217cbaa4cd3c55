//! What each command does. Commands return an exit code or an error; `main` prints the
//! error once and maps it to an exit code with [`exit_code`].

use crate::cli::{
    AliasArgs, Cli, Command, DockerCmd, ProxyCmd, RunArgs, StartArgs, RUN_VALUE_FLAGS,
};
use crate::control::{self, AppReply, AppRequest};
use crate::daemon::status::{RouteStatus, Status};
use crate::daemon::{self, runtime, StartOptions, Started};
use crate::names::{self, NameError};
use crate::routes::{store, Route, RouteState};
use crate::state::{self, StateDir};
use anyhow::{bail, Context as _};
use serde::Serialize;

pub use crate::ui::UsageError;

mod added;
mod alias;
mod app;
pub(crate) mod clean;
mod docker;
pub(crate) mod doctor;
pub(crate) mod generate;
mod hosts;
mod inspect;
mod list;
mod ports;
mod proxy;
pub(crate) mod prune;
mod run;
mod service;
mod share;
mod status;
mod switch;
mod trust;
mod up;

use alias::alias;
use app::{logs, restart};
use list::{get, list};
use proxy::proxy;
use status::status;
use switch::switch;
use trust::{trust, untrust};

/// How `main` prints an error: with its causes, each said once.
pub fn error_text(err: &anyhow::Error) -> String {
    crate::ui::join_causes(err.chain().map(|c| c.to_string()))
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
                inspect_capacity: if args.limits.no_inspect {
                    0
                } else {
                    args.limits.inspect_capacity
                },
                sync_hosts: args.sync_hosts,
                tlds: checked_tlds(&args.tlds)?,
                lan: args.lan.interfaces(),
                docker: args
                    .docker
                    .enabled()
                    .then_some(crate::daemon::containers::Options {
                        all: args.docker.docker_all,
                    }),
            };
            crate::daemon::containers::forget(&state);
            runtime::main(state, config)?;
            Ok(0)
        }
        Command::Run(args) => run::main(args),
        Command::Up {
            names,
            detach,
            detached,
        } => up::up(names, detach, detached),
        Command::Down { names } => up::down(names),
        Command::Ps { json } => up::ps(json),
        Command::Add(args) => added::add(args),
        Command::Remove { name } => added::remove(&name),
        Command::Share { name } => share::share(&name, true),
        Command::Unshare { name } => share::share(&name, false),
        Command::Inspect {
            name,
            follow,
            json,
            show_secrets,
        } => inspect::main(&name, follow, json, show_secrets),
        Command::Restart { name } => restart(&name),
        Command::Logs {
            name,
            lines,
            follow,
        } => logs(&name, lines, follow),
        Command::Trust { check, renew } => trust(check, renew),
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
            crate::daemon::switch::SwitchRequest {
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
        Command::Doctor => crate::cmd::doctor::main(),
        Command::Prune { force } => crate::cmd::prune::main(force),
        Command::Clean { yes } => crate::cmd::clean::main(yes),
        Command::Hosts(cmd) => hosts::main(cmd),
        Command::Service(cmd) => service::main(cmd),
        Command::Ports(cmd) => ports::main(cmd),
        Command::Docker(DockerCmd::Env { compose }) => docker::env(compose),
        Command::Completions { shell } => crate::cmd::generate::completions(shell),
        Command::Man { dir } => crate::cmd::generate::man(dir.as_deref()),
        Command::External(args) => run::main(external_run_args(args)?),
    }
}

/// The port URLs should use: the running daemon's, else the configured one.
fn url_port(state: &StateDir) -> anyhow::Result<u16> {
    match state.recorded_port() {
        Some(p) => Ok(p),
        None => Ok(state::proxy_port(None)?),
    }
}

/// How to write route URLs: as the running daemon says (no port once `portok ports
/// enable` works), else with the port it will use.
fn url_base(state: &StateDir) -> anyhow::Result<names::UrlBase> {
    Ok(match control::status(state) {
        Some(s) => names::UrlBase {
            port: s.port,
            clean: s.clean_urls,
        },
        None => names::UrlBase {
            port: url_port(state)?,
            clean: false,
        },
    })
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

/// The custom TLDs from `--tld`/PORTOK_TLD, checked ([`names::check_tld`]), without repeats
/// or `localhost` (always served).
pub(crate) fn checked_tlds(raw: &[String]) -> Result<Vec<String>, NameError> {
    let mut tlds: Vec<String> = Vec::new();
    for t in raw.iter().filter(|t| !t.trim().is_empty()) {
        let tld = names::check_tld(t)?;
        if tld != names::LOCALHOST && !tlds.contains(&tld) {
            tlds.push(tld);
        }
    }
    Ok(tlds)
}

/// The custom TLDs portok serves: the running daemon's, else PORTOK_TLD's.
pub(crate) fn served_tlds(state: &StateDir) -> Result<Vec<String>, NameError> {
    // With LAN sharing on, `.local` is served too (the CA must cover it).
    let (mut tlds, lan) = match control::status(state) {
        Some(status) => {
            let lan = !proxy::lan_addresses(&status.listening).is_empty();
            (status.tlds, lan)
        }
        None => (
            env_tlds()?,
            std::env::var("PORTOK_LAN").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false")),
        ),
    };
    if lan {
        tlds.push(names::LAN_TLD.to_string());
    }
    Ok(tlds)
}

/// PORTOK_TLD (comma-separated), checked.
pub(crate) fn env_tlds() -> Result<Vec<String>, NameError> {
    let env = std::env::var("PORTOK_TLD").unwrap_or_default();
    let raw: Vec<String> = env.split(',').map(String::from).collect();
    checked_tlds(&raw)
}
