//! Doctor's checks of what portok installs outside its state dir: hosts entries for names
//! under a custom TLD, the ports 80/443 redirect, and the login service.

use super::{chain, fail, ok, resolve, warn, Finding};
use crate::control::DaemonStatus;
use crate::routes::Route;
use std::path::Path;
use std::time::Duration;

/// Names under a custom TLD (`--tld`) resolve only through the hosts file.
pub(super) fn custom_names(routes: &[Route], hosts: &Path) -> Option<Finding> {
    const C: &str = "custom TLD";
    let custom: Vec<&str> = routes
        .iter()
        .map(|r| r.hostname.as_str())
        .filter(|h| !h.ends_with(".localhost") && h.contains('.'))
        .collect();
    if custom.is_empty() {
        return None;
    }
    let block = crate::hosts::block_names(hosts).unwrap_or_default();
    let unresolved: Vec<&str> = custom
        .iter()
        .copied()
        .filter(|h| !block.iter().any(|b| b == h))
        .filter(|h| {
            resolve(h, Duration::from_secs(2)).is_none_or(|a| !a.iter().all(|a| a.is_loopback()))
        })
        .collect();
    Some(if unresolved.is_empty() {
        ok(C, format!("{} resolve to loopback", custom.join(", ")))
    } else {
        fail(
            C,
            format!(
                "{} do not resolve to loopback: names under a custom TLD need entries in {}, which the daemon writes only when it may",
                unresolved.join(", "),
                hosts.display()
            ),
            "`sudo portok hosts sync` adds them (again after new routes), or run the daemon where it may write the hosts file",
        )
    })
}

/// `portok ports enable`: off, on, installed but not loaded, or installed for another port.
pub(super) fn ports_check(daemon: Option<&DaemonStatus>) -> Finding {
    use crate::clean_urls::{self, Paths, State};
    const C: &str = "ports 80/443";
    let paths = Paths::system();
    let Some(d) = daemon else {
        return match clean_urls::state(&paths, 0, || false) {
            State::Off => ok(
                C,
                "not enabled: URLs carry the daemon's port (`sudo portok ports enable` drops it)",
            ),
            _ => ok(
                C,
                format!(
                    "installed ({}); checked once the daemon runs",
                    paths.rules.display()
                ),
            ),
        };
    };
    match clean_urls::state(&paths, d.port, || d.clean_urls) {
        State::Off => ok(C, "not enabled: URLs carry the daemon's port (`sudo portok ports enable` drops it)"),
        State::On => ok(C, format!("loopback 443 and 80 reach the daemon on port {}", d.port)),
        State::NotLoaded => fail(
            C,
            format!("installed ({}) but loopback port 80 does not reach the daemon: the rules are not loaded", paths.rules.display()),
            "`sudo portok ports enable` loads them again (and at boot through portok-ports.service)",
        ),
        State::Stale { rules_to } => fail(
            C,
            format!("the loopback redirect goes to port {rules_to}, but the daemon listens on {}", d.port),
            "`sudo portok ports enable` points it at the daemon's port",
        ),
    }
}

/// The login service (`portok service install`), if any: does it start a portok that exists?
pub(super) fn service_check() -> Finding {
    use crate::service::{self, Installed};
    const C: &str = "service";
    let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) else {
        return ok(C, "no HOME, so no login service to check");
    };
    let path = service::unit_path(Path::new(&home));
    match service::installed(&path) {
        Ok(Installed::No) => ok(
            C,
            "not installed (optional: `portok service install` starts the proxy at login)",
        ),
        Ok(Installed::NotOurs) => warn(
            C,
            format!("{} exists but was not written by portok", path.display()),
            "portok leaves it alone; remove it if it is stale",
        ),
        Ok(Installed::Ours(text)) => match service::binary_of(&text) {
            Some(bin) if !bin.exists() => fail(
                C,
                format!(
                    "{} starts {}, which does not exist (moved or uninstalled)",
                    path.display(),
                    bin.display()
                ),
                "`portok service install` points it at this portok",
            ),
            Some(bin) => ok(
                C,
                format!("{} starts {} at login", path.display(), bin.display()),
            ),
            None => fail(
                C,
                format!("{} has no command to start", path.display()),
                "`portok service install` writes it again",
            ),
        },
        Err(e) => fail(C, chain(&e), "check the file's permissions"),
    }
}

/// `proxy start --lan` with nothing shared: listening on the network for nothing. None
/// when the daemon does not listen on the LAN.
pub(super) fn lan_check(
    daemon: Option<&crate::control::DaemonStatus>,
    routes: &[crate::routes::Route],
) -> Option<Finding> {
    let lan = crate::cmd::proxy::lan_addresses(&daemon?.listening);
    if lan.is_empty() {
        return None;
    }
    let shared: Vec<&str> = routes
        .iter()
        .filter(|r| r.share)
        .map(|r| crate::names::short_name(&r.hostname))
        .collect();
    Some(if shared.is_empty() {
        warn(
            "lan",
            format!(
                "the proxy listens on the LAN ({}) but shares no route",
                lan.join(", ")
            ),
            "share one with `portok share NAME`, or restart the proxy without --lan",
        )
    } else {
        ok(
            "lan",
            format!("sharing {} on {}", shared.join(", "), lan.join(", ")),
        )
    })
}
