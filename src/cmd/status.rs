//! `portok status [NAME]`: the daemon's and each route's counters, from its typed status.

use super::*;

pub(super) fn status(name: Option<&str>, json: bool) -> anyhow::Result<i32> {
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
            status.daemon.version,
            status.daemon.port,
            status.daemon.pid,
            crate::ui::duration(status.daemon.uptime_secs),
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
        if let Some(i) = &r.inspector {
            println!(
                "    inspector: {} of {} requests kept{}, {} KiB",
                i.requests,
                i.capacity,
                if i.bodies { " with bodies" } else { "" },
                i.memory_bytes.div_ceil(1024)
            );
        }
        if let Some(secs) = r.idle_stop {
            println!(
                "    lazy: starts on a request, stops after {} without one",
                crate::ui::duration(secs)
            );
        }
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
