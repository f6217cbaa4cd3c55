//! `portok proxy start | stop | status`: the daemon's life.

use super::*;

pub(super) fn proxy(cmd: ProxyCmd) -> anyhow::Result<i32> {
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
                        s.route_count(),
                        if s.route_count() == 1 { "" } else { "s" },
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

pub(super) fn proxy_start(state: &StateDir, args: &StartArgs) -> anyhow::Result<i32> {
    let port = state::proxy_port(args.port)?;
    let tlds = super::checked_tlds(&args.tlds)?;
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
    for tld in &tlds {
        extra_args.extend(["--tld".into(), tld.clone()]);
    }
    extra_args.extend(args.lan.to_args());
    extra_args.extend(args.docker.to_args());
    let opts = StartOptions { port, extra_args };
    let started = daemon::start(state, &opts)?;
    // The CA's name constraints were fixed when it was made.
    let mut ca_names = tlds.clone();
    if args.lan.interfaces().is_some() {
        ca_names.push(crate::names::LAN_TLD.to_string());
    }
    if args.tls.cert.is_none() && !ca_names.is_empty() {
        if let Ok(ca) = crate::ca::Ca::load_or_create(state.root(), &[]) {
            for tld in ca_names.iter().filter(|t| !ca.covers(&format!("x.{t}"))) {
                eprintln!("portok: warning: the local CA was made before .{tld} was served and cannot vouch for it, so https for names under .{tld} fails: `sudo portok trust --renew` makes a CA for every TLD served now (then `portok proxy stop && portok proxy start`)");
            }
        }
    }
    match started {
        Started::Now(s) => {
            eprintln!(
                "portok: proxy listening on http://localhost:{} (pid {})",
                s.port, s.pid
            );
            if args.lan.interfaces().is_some() {
                let lan = lan_addresses(&s.listening);
                if lan.is_empty() {
                    eprintln!("portok: --lan: this machine has no network address besides loopback (or none on the interfaces named), so it serves loopback only");
                } else {
                    eprintln!(
                        "portok: also on the LAN at {}, for the routes you share (`portok share NAME`); nothing else answers there",
                        lan.iter().map(|a| format!("http://{a}")).collect::<Vec<_>>().join(", ")
                    );
                }
            }
        }
        Started::Already(s) => {
            eprintln!(
                "portok: proxy already running on http://localhost:{} (pid {})",
                s.port, s.pid
            );
            if s.port != port {
                eprintln!("portok: note: it listens on {}, not {port}; `portok proxy stop` first to change the port", s.port);
            }
            if args.lan.interfaces().is_some() && lan_addresses(&s.listening).is_empty() {
                eprintln!("portok: note: it does not listen on the LAN; `portok proxy stop` first, then `portok proxy start --lan`");
            }
            let missing: Vec<&String> = tlds.iter().filter(|t| !s.tlds.contains(t)).collect();
            if !missing.is_empty() {
                eprintln!(
                    "portok: note: it does not serve .{}; `portok proxy stop` first to add a TLD",
                    missing
                        .iter()
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(", .")
                );
            }
        }
    }
    Ok(0)
}

/// The listening addresses that are not loopback (`--lan`).
pub(super) fn lan_addresses(listening: &[String]) -> Vec<String> {
    listening
        .iter()
        .filter(|a| {
            a.parse::<std::net::SocketAddr>()
                .is_ok_and(|sa| !crate::proxy::lan::is_local(sa.ip()))
        })
        .cloned()
        .collect()
}
