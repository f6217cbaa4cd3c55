//! `portok run NAME -- CMD` (and `portok NAME CMD`): settle what to run from the flags, the
//! project's settings and inference, then hand it to [`crate::run`].

use crate::cli::RunArgs;
use crate::run::tool::{Restarter, Understood};
use crate::run::{self, supervisor::Options, Plan, WatchPlan};
use crate::state::{self, StateDir};
use crate::ui::{say, UsageError};
use anyhow::Context as _;
use std::path::PathBuf;
use std::time::Duration;

pub fn main(mut args: RunArgs) -> anyhow::Result<i32> {
    let project = std::env::current_dir().context("reading the current folder")?;
    // Flags win over the project's settings, which win over inference.
    let mut config = crate::config::load(&project)?;
    for w in &config.warnings {
        say(&format!("warning: {w}"));
    }
    // `--app NAME`: one of the project's apps, in its own folder, named after its table.
    let mut cwd = project.clone();
    if let Some(app) = &args.app {
        let found = crate::config::order(&config, std::slice::from_ref(app))?;
        let app = found.last().expect("order returns the app asked for");
        for w in &app.config.warnings {
            say(&format!("warning: {w}"));
        }
        if let Some(dir) = &app.config.dir {
            cwd = project.join(dir);
        }
        let name = app.config.name.clone().unwrap_or_else(|| app.name.clone());
        config = crate::config::Config {
            name: Some(name),
            ..app.config.clone()
        };
    }
    args.fill_from(&config);
    // `portok run` alone: what the project declares (package.json's dev script...).
    let chosen = if args.command.is_empty() {
        let found = crate::project::detect::detect(&cwd).map_err(|e| UsageError(e.to_string()))?;
        args.command = found.command;
        Some(found.why)
    } else {
        None
    };
    let instances = args.instances();
    if instances == 0 {
        return Err(UsageError(
            "--instances must be at least 1 (it is how many copies of the app run)".into(),
        )
        .into());
    }
    if instances > 1 && args.app_port.is_some() {
        return Err(UsageError(
            "--app-port cannot be combined with --instances: each instance needs its own port (leave --app-port out and portok picks them)".into(),
        )
        .into());
    }
    if std::env::var("PORTOK").is_ok_and(|v| v == "0") {
        return run::run_plain(&args.command);
    }
    let tld = match &args.tld {
        Some(t) => Some(crate::names::check_tld(t)?).filter(|t| t != crate::names::LOCALHOST),
        None => None,
    };
    let state = StateDir::from_env()?;
    let proxy_port = state::proxy_port(None)?;
    let (name, hostname) = crate::project::app_name(
        &cwd,
        args.name.as_deref(),
        config.name.as_deref(),
        !args.no_worktree,
        tld.as_deref().unwrap_or(crate::names::LOCALHOST),
    )?;
    let tool = run::tool::understand(&args.command, &cwd);
    if let Some(line) = tool.describe(&args.command, chosen.as_deref()) {
        say(&line);
    }
    let mut plan = plan(args, tool, cwd, name, hostname);
    plan.tld = tld;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run::run(plan, state, proxy_port))
}

fn plan(args: RunArgs, tool: Understood, cwd: PathBuf, name: String, hostname: String) -> Plan {
    // One restarter: portok watches only when the app does not restart itself.
    let portok_restarts = matches!(
        tool.restarter,
        Restarter::Portok | Restarter::TurnedOff { .. }
    );
    let watching = !args.no_watch && (portok_restarts || !args.watch.is_empty());
    if !args.no_watch {
        if let Some(note) = tool.restarter_note() {
            say(&note);
        }
    }
    let watch = watching.then(|| WatchPlan {
        roots: if args.watch.is_empty() {
            vec![cwd.clone()]
        } else {
            args.watch.iter().map(|p| cwd.join(p)).collect()
        },
        ignore: args.ignore.clone(),
        debounce: Duration::from_millis(args.debounce()),
        all: args.watch_all,
    });
    let opts = Options {
        health: args.health.clone(),
        ready_timeout: secs(args.ready_timeout()),
        hold: args.hold(),
        rollback_window: secs(args.rollback_window()),
        drain: secs(args.drain()),
        kill_timeout: secs(args.kill_timeout()),
        fixed_port: args.app_port,
        watching,
        reload: args.route.reload,
        tcp: args.route.tcp,
        proxy_protocol: args.route.proxy_protocol,
        idle_stop: args.idle_stop(),
        restart_crashed: args.app.is_some() || args.idle_stop().is_some(),
        inspect_bodies: args.inspect_bodies,
        share: args.route.share,
        upstream: args.route.upstream,
    };
    Plan {
        tld: None,
        instances: args.instances() as usize,
        tool,
        cwd,
        name,
        hostname,
        force: args.route.force,
        watch,
        opts,
        env: args.env,
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}
