//! `portok ports enable | disable | status`: loopback 443 and 80 sent to the daemon, so URLs
//! need no port.

use crate::clean_urls::{self, Paths, State};
use crate::cli::PortsCmd;
use crate::state::{self, StateDir};
use crate::ui::say;

pub fn main(cmd: PortsCmd) -> anyhow::Result<i32> {
    let paths = Paths::system();
    if cfg!(target_os = "macos") {
        say("nothing to do on macOS: since Mojave any process may listen on ports below 1024, so start the daemon with `portok proxy start --port 443` instead");
        return Ok(0);
    }
    // Under sudo, the port is the invoking user's (PORTOK_PORT is usually kept by sudo -E
    // only; the recorded port of their daemon is read from their state dir).
    let state = crate::hosts::state_dir()?;
    let port = state
        .recorded_port()
        .map_or_else(|| state::proxy_port(None), Ok)?;
    match cmd {
        PortsCmd::Enable => {
            let done = clean_urls::enable(port, &paths)?;
            say(&format!(
                "127.0.0.1 and ::1 ports 443 and 80 now go to port {port} ({})",
                done.rules.display()
            ));
            if done.at_boot {
                say("loaded again at every boot by portok-ports.service");
            } else {
                say("no systemd here: the rules last until reboot; run `sudo portok ports enable` again after one");
            }
            say("URLs drop the port within a few seconds: https://NAME.localhost");
            Ok(0)
        }
        PortsCmd::Disable => {
            if clean_urls::disable(&paths)? {
                say("removed the loopback redirect of ports 443 and 80 and its files");
            } else {
                say("nothing to remove: `portok ports enable` was not run here");
            }
            Ok(0)
        }
        PortsCmd::Status => status(&state, &paths, port),
    }
}

fn status(state: &StateDir, paths: &Paths, port: u16) -> anyhow::Result<i32> {
    let daemon = crate::control::status(state);
    let reaches = || daemon.as_ref().is_some_and(|s| s.clean_urls);
    match clean_urls::state(paths, port, reaches) {
        State::Off => {
            say("off: URLs carry the port; `sudo portok ports enable` sends loopback 443 and 80 to the daemon");
            Ok(1)
        }
        State::On => {
            say(&format!(
                "on: 127.0.0.1 and ::1 ports 443 and 80 reach the daemon on port {port}"
            ));
            Ok(0)
        }
        State::NotLoaded if daemon.is_none() => {
            say("installed, but no daemon runs to check it: `portok proxy start`");
            Ok(1)
        }
        State::NotLoaded => {
            say(&format!("installed ({}), but loopback port 80 does not reach the daemon: the rules are not loaded (`sudo portok ports enable` loads them again)", paths.rules.display()));
            Ok(1)
        }
        State::Stale { rules_to } => {
            say(&format!("installed for port {rules_to}, but the daemon listens on {port}: `sudo portok ports enable` points the rules at {port}"));
            Ok(1)
        }
    }
}
