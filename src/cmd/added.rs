//! `portok add` and `portok remove`: lazy apps without a portok.toml (see [`crate::added`]).

use super::*;
use crate::added::{self, Added};
use crate::cli::AddArgs;
use crate::ui::{say, UsageError};
use std::time::{Duration, Instant};

pub(super) fn add(args: AddArgs) -> anyhow::Result<i32> {
    let hostname = names::hostname_for(&args.name)?;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir().context("reading the current folder")?,
    };
    let dir = dir.canonicalize().map_err(|e| {
        UsageError(format!(
            "--dir {}: {e}; give the folder the app runs in",
            dir.display()
        ))
    })?;
    if !dir.is_dir() {
        bail!(UsageError(format!(
            "--dir {} is not a folder",
            dir.display()
        )));
    }
    let idle = args.idle_stop.unwrap_or(Duration::from_secs(15 * 60));
    if idle.is_zero() {
        bail!(UsageError(
            "--idle-stop 0 would stop the app at once; give e.g. 15m".into()
        ));
    }
    let mut flags = vec!["--idle-stop".to_string(), format!("{}s", idle.as_secs())];
    if !args.watch {
        flags.push("--no-watch".into());
    }
    if let Some(h) = &args.health {
        flags.extend(["--health".into(), h.clone()]);
    }
    if let Some(h) = args.hold {
        flags.extend(["--hold".into(), h.to_string()]);
    }
    for (k, v) in &args.env {
        flags.extend(["--env".into(), format!("{k}={v}")]);
    }
    let state = StateDir::from_env()?;
    let added_before = added::load(&state)?;
    let previous = added_before.iter().find(|a| a.hostname == hostname);
    // A name a `portok run` of its own serves is not taken over.
    if let Some(r) = store::load(&state)?
        .iter()
        .find(|r| r.hostname == hostname && r.pid != 0 && previous.is_none_or(|p| p.owner != r.pid))
    {
        bail!(
            "{hostname} is already run by portok (pid {}); stop that one first, or pick another name",
            r.pid
        );
    }
    if let Some(p) = previous {
        stop_owner(&state, p)?;
    }
    let app = Added {
        name: args.name.clone(),
        hostname: hostname.clone(),
        dir,
        command: args.command.clone(),
        flags,
        owner: 0,
    };
    let pid = added::update(&state, |apps| {
        apps.retain(|a| a.hostname != hostname);
        let pid = added::spawn_owner(&state, &app);
        if let Ok(pid) = pid {
            apps.push(Added {
                owner: pid,
                ..app.clone()
            });
        }
        pid
    })?
    .with_context(|| format!("starting the portok run of {}", args.name))?;
    // Its route says idle once the owner has registered it.
    let until = Instant::now() + Duration::from_secs(20);
    let log = added::log_path(&state, &hostname);
    loop {
        let routes = store::load(&state)?;
        if routes
            .iter()
            .any(|r| r.hostname == hostname && r.pid == pid)
        {
            break;
        }
        if !crate::sys::pid_alive(pid) || Instant::now() > until {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "the portok run of {} did not register its route; its output ({}):\n{}",
                args.name,
                log.display(),
                text.lines()
                    .rev()
                    .take(10)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let base = url_base(&state)?;
    say(&format!(
        "{} -> {} (lazy: starts on the first request, stops after {} without one)",
        args.name,
        base.url(&hostname),
        crate::ui::duration(idle.as_secs())
    ));
    say(&format!(
        "output: {}; `portok remove {}` forgets it",
        log.display(),
        args.name
    ));
    Ok(0)
}

pub(super) fn remove(name: &str) -> anyhow::Result<i32> {
    let hostname = names::hostname_for(name)?;
    let state = StateDir::from_env()?;
    let removed = added::update(&state, |apps| {
        let found = apps.iter().position(|a| a.hostname == hostname);
        found.map(|i| apps.remove(i))
    })?;
    let Some(app) = removed else {
        let known: Vec<String> = added::load(&state)?.into_iter().map(|a| a.name).collect();
        bail!(UsageError(format!(
            "{name} is not an app added with `portok add` ({})",
            if known.is_empty() {
                "there are none".to_string()
            } else {
                format!("added: {}", known.join(", "))
            }
        )));
    };
    stop_owner(&state, &app)?;
    say(&format!("removed {name}"));
    Ok(0)
}

/// Stop the `portok run` serving an added app (it stops the app and drops the route).
fn stop_owner(state: &StateDir, app: &Added) -> anyhow::Result<()> {
    let mut pids: Vec<u32> = store::load(state)?
        .iter()
        .filter(|r| r.hostname == app.hostname && r.pid != 0)
        .map(|r| r.pid)
        .collect();
    if app.owner != 0 && crate::sys::pid_alive(app.owner) {
        pids.push(app.owner);
    }
    if !crate::sys::terminate_and_wait(&pids, Duration::from_secs(60)) {
        bail!(
            "the portok run of {} did not stop within 60s; `portok prune --force` kills it",
            app.name
        );
    }
    Ok(())
}
