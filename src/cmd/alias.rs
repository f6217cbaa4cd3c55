//! `portok alias NAME PORT` (and `--remove`): routes to ports portok does not run.

use super::*;

#[derive(Debug, thiserror::Error)]
pub enum AliasError {
    #[error("{host} belongs to a running app (pid {pid}); stop it first or pass --force to take the name")]
    Owned { host: String, pid: u32 },
    #[error("no route named {host}; `portok list` shows the routes")]
    Missing { host: String },
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

pub(super) fn alias(args: AliasArgs) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    // A name under a TLD the daemon serves (`app.test` with `--tld test`) is taken as given.
    let mut tlds = served_tlds(&state)?;
    tlds.retain(|t| t != names::LAN_TLD);
    let host = names::hostname_served(&args.name, &tlds)?;
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
    if let Some(listen) = args.route.tcp {
        crate::proxy::tcp::check_listen_port(&state, &host, listen, proxy_port, port)?;
    }
    let ((), notes) = store::update(&state, |routes| {
        if let Some(r) = routes.iter().find(|r| r.hostname == host) {
            if r.pid != 0 && !args.route.force {
                return Err(AliasError::Owned {
                    host: host.clone(),
                    pid: r.pid,
                });
            }
        }
        routes.retain(|r| r.hostname != host);
        routes.push(Route {
            reload: args.route.reload,
            tcp: args.route.tcp,
            proxy_protocol: args.route.proxy_protocol,
            share: args.route.share,
            upstream: args.route.upstream.unwrap_or_default(),
            ..Route::alias(host.clone(), port)
        });
        Ok(())
    })?;
    report_moved(&notes);
    let status = match daemon::ensure_and_reload(&state, proxy_port) {
        Ok(s) => s,
        Err(e) => {
            // The daemon could not apply it (a TCP port it cannot bind): take it back.
            if args.route.tcp.is_some() {
                let _ = store::update::<_, store::StoreError>(&state, |routes| {
                    routes.retain(|r| r.hostname != host);
                    Ok(())
                });
                let _ = daemon::reload_if_running(&state);
            }
            return Err(e.into());
        }
    };
    match args.route.tcp {
        Some(listen) => {
            println!("127.0.0.1:{listen}");
            eprintln!("portok: {host}: tcp 127.0.0.1:{listen} -> 127.0.0.1:{port}");
        }
        None => {
            let base = crate::names::UrlBase {
                port: status.port,
                clean: status.clean_urls,
            };
            println!("{}", base.url(&host));
            eprintln!("portok: {host} -> 127.0.0.1:{port}");
        }
    }
    Ok(0)
}

pub(super) fn report_moved(notes: &store::UpdateNotes) {
    if let Some(aside) = &notes.moved_aside {
        eprintln!(
            "portok: warning: routes.json did not parse; moved it to {} and started a new one",
            aside.display()
        );
    }
}
