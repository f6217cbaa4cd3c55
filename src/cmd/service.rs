//! `portok service install | uninstall | status`: the daemon started at login by the
//! user's service manager (systemd user unit on Linux, launchd agent on macOS).

use crate::cli::ServiceCmd;
use crate::service::{self, Installed, Launch, Systemctl};
use crate::state::{self, StateDir};
use crate::ui::say;
use std::path::PathBuf;

const UNIT: &str = "portok.service";

pub fn main(cmd: ServiceCmd) -> anyhow::Result<i32> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or(service::ServiceError::NoHome)?;
    let path = service::unit_path(&home);
    match cmd {
        ServiceCmd::Install => install(&path),
        ServiceCmd::Uninstall => uninstall(&path),
        ServiceCmd::Status => status(&path),
    }
}

fn install(path: &std::path::Path) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    let port = state::proxy_port(None)?;
    // Checked now, so the service does not fail at every login.
    super::env_tlds()?;
    let launch = Launch::current(port)?;
    if service::write(path, &service::unit_text(&launch))? {
        say(&format!(
            "wrote {} (starts {} on port {port})",
            path.display(),
            launch.binary.display()
        ));
    } else {
        say(&format!("{} is already installed", path.display()));
    }
    if cfg!(target_os = "macos") {
        say(&format!(
            "launchd starts it at the next login; now: `launchctl bootstrap gui/$(id -u) {}`",
            path.display()
        ));
        return Ok(0);
    }
    let Some(systemctl) = Systemctl::find(true) else {
        say("no systemd user manager runs here, so nothing is enabled yet: after logging in with one, `systemctl --user enable --now portok`; `loginctl enable-linger $USER` starts it at boot without a login");
        return Ok(0);
    };
    systemctl.run(&["daemon-reload"])?;
    systemctl.run(&["enable", UNIT])?;
    if let Some(s) = crate::control::status(&state) {
        say(&format!("enabled; a proxy already runs (pid {}), so the service starts it from the next login (or now: `portok proxy stop && systemctl --user start portok`)", s.pid));
    } else {
        systemctl.run(&["start", UNIT])?;
        say("enabled and started: `systemctl --user status portok` shows it, `journalctl --user -u portok` its log");
    }
    Ok(0)
}

fn uninstall(path: &std::path::Path) -> anyhow::Result<i32> {
    if let Installed::Ours(_) = service::installed(path)? {
        if let Some(systemctl) = Systemctl::find(true) {
            // A unit that was never enabled or started is not an error here.
            let _ = systemctl.run(&["disable", "--now", UNIT]);
        }
    }
    if service::remove(path)? {
        if let Some(systemctl) = Systemctl::find(true) {
            systemctl.run(&["daemon-reload"])?;
        }
        say(&format!("removed {}", path.display()));
    } else {
        say(&format!(
            "nothing to remove: {} does not exist",
            path.display()
        ));
    }
    Ok(0)
}

fn status(path: &std::path::Path) -> anyhow::Result<i32> {
    let text = match service::installed(path)? {
        Installed::No => {
            say(&format!(
                "not installed ({} does not exist); `portok service install` starts the proxy at login",
                path.display()
            ));
            return Ok(1);
        }
        Installed::NotOurs => {
            say(&format!(
                "{} exists but was not written by portok",
                path.display()
            ));
            return Ok(1);
        }
        Installed::Ours(text) => text,
    };
    say(&format!("installed: {}", path.display()));
    if let Some(bin) = service::binary_of(&text) {
        let here = std::env::current_exe().ok();
        let note = if !bin.exists() {
            " (missing: run `portok service install` again)"
        } else if here.as_deref() != Some(bin.as_path()) {
            " (not this portok; `portok service install` points it here)"
        } else {
            ""
        };
        say(&format!("starts: {}{note}", bin.display()));
    }
    if let Some(systemctl) = Systemctl::find(true) {
        let enabled = systemctl.ask(&["is-enabled", UNIT]);
        let active = systemctl.ask(&["is-active", UNIT]);
        say(&format!("enabled: {enabled}; running: {active}"));
    } else if !cfg!(target_os = "macos") {
        say("no systemd user manager runs here, so it is not running under one");
    }
    Ok(0)
}
