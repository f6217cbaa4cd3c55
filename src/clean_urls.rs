//! Ports 80 and 443 without running the daemon as root (`sudo portok ports enable`).
//!
//! The one privileged step is a loopback-only nftables redirect: locally made connections to
//! 127.0.0.1 or ::1 on port 443 or 80 go to the daemon's port. Why this mechanism:
//!
//! - it touches nothing but loopback (`net.ipv4.ip_unprivileged_port_start` would let every
//!   user bind low ports on every address);
//! - it survives upgrades of the binary (file capabilities are lost on every `cargo install`);
//! - the daemon keeps its one unprivileged port, and sniffs TLS there as always.
//!
//! The rules live in `/etc/portok/ports.nft`, loaded now with `nft -f` and at every boot by
//! `/etc/systemd/system/portok-ports.service`. Both files start with [`MARKER`], so disable
//! removes exactly what enable added. `PORTOK_SYSTEM_ROOT` moves both under another folder
//! (the tests use one, inside a network namespace of their own).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const MARKER: &str = "Written by `portok ports enable`; `portok ports disable` removes it.";
/// The nftables tables portok owns (one per address family).
const TABLE: &str = "portok";

#[derive(Debug, thiserror::Error)]
pub enum PortsError {
    #[error("`portok ports {0}` changes the firewall's loopback rules, which needs root: `sudo portok ports {0}`")]
    NotRoot(&'static str),
    #[error("nftables' `nft` is not installed: install it (Debian/Ubuntu `sudo apt-get install nftables`, Fedora `sudo dnf install nftables`), then run this again")]
    NoNft,
    #[error("port {port} on loopback is taken by {holder}: stop it (or move it to another port), then run this again")]
    Taken { port: u16, holder: String },
    #[error("`nft -f {path}` failed: {why}")]
    Nft { path: PathBuf, why: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path} was not written by portok; it is left alone")]
    NotOurs { path: PathBuf },
}

/// Where the rules and the boot unit go.
#[derive(Debug, Clone)]
pub struct Paths {
    pub rules: PathBuf,
    pub unit: PathBuf,
}

impl Paths {
    pub fn system() -> Paths {
        let root = std::env::var_os("PORTOK_SYSTEM_ROOT")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        Paths {
            rules: root.join("etc/portok/ports.nft"),
            unit: root.join("etc/systemd/system/portok-ports.service"),
        }
    }
}

/// The nftables script: replaces portok's tables (and only them) with redirects of
/// loopback 80 and 443 to `to`.
pub fn ruleset(to: u16) -> String {
    let mut s = format!("# {MARKER}\n");
    for (family, daddr) in [("ip", "ip daddr 127.0.0.1"), ("ip6", "ip6 daddr ::1")] {
        s.push_str(&format!(
            "table {family} {TABLE}\ndelete table {family} {TABLE}\ntable {family} {TABLE} {{\n  chain output {{\n    type nat hook output priority -100; policy accept;\n    {daddr} tcp dport {{ 80, 443 }} redirect to :{to}\n  }}\n}}\n"
        ));
    }
    s
}

/// The boot unit that loads the rules.
pub fn unit(rules: &Path, nft: &Path) -> String {
    format!(
        "# {MARKER}\n[Unit]\nDescription=portok: loopback ports 80 and 443 to the portok daemon\nAfter=network-pre.target\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart={nft} -f {rules}\nExecStop=-{nft} delete table ip {TABLE}\nExecStop=-{nft} delete table ip6 {TABLE}\n\n[Install]\nWantedBy=multi-user.target\n",
        nft = nft.display(),
        rules = rules.display()
    )
}

/// The port the rules in `text` redirect to.
pub fn target_of(text: &str) -> Option<u16> {
    text.split("redirect to :")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn nft() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]);
    dirs.map(|d| d.join("nft")).find(|p| p.is_file())
}

fn ours(path: &Path) -> Result<Option<String>, PortsError> {
    match std::fs::read_to_string(path) {
        Ok(t) if t.lines().next().is_some_and(|l| l.contains(MARKER)) => Ok(Some(t)),
        Ok(_) => Err(PortsError::NotOurs { path: path.into() }),
        Err(_) => Ok(None),
    }
}

fn write(path: &Path, text: &str) -> Result<(), PortsError> {
    ours(path)?;
    let err = |source| PortsError::Write {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    crate::fsutil::write_atomic(path, text.as_bytes(), 0o644).map_err(err)
}

/// What `enable` did, for the user.
pub struct Enabled {
    pub rules: PathBuf,
    /// Whether the boot unit was enabled (false: no systemd; the rules last until reboot).
    pub at_boot: bool,
}

/// Install and load the redirect of loopback 80/443 to `to` (the daemon's port).
pub fn enable(to: u16, paths: &Paths) -> Result<Enabled, PortsError> {
    if crate::sys::effective_ids().0 != 0 {
        return Err(PortsError::NotRoot("enable"));
    }
    let nft = nft().ok_or(PortsError::NoNft)?;
    for port in [80, 443] {
        // Someone listening there would be shadowed by the redirect: say who.
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            if e.kind() == io::ErrorKind::AddrInUse {
                let holder =
                    crate::sys::port_holder(port).unwrap_or_else(|| "another program".into());
                return Err(PortsError::Taken { port, holder });
            }
        }
    }
    write(&paths.rules, &ruleset(to))?;
    let out = Command::new(&nft)
        .arg("-f")
        .arg(&paths.rules)
        .output()
        .map_err(|e| PortsError::Nft {
            path: paths.rules.clone(),
            why: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(PortsError::Nft {
            path: paths.rules.clone(),
            why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    write(&paths.unit, &unit(&paths.rules, &nft))?;
    let systemd = crate::service::Systemctl::find(false);
    let at_boot = systemd.is_some_and(|s| {
        s.run(&["daemon-reload"]).is_ok() && s.run(&["enable", "portok-ports.service"]).is_ok()
    });
    Ok(Enabled {
        rules: paths.rules.clone(),
        at_boot,
    })
}

/// Remove the redirect and exactly the files enable wrote. Returns whether anything was on.
pub fn disable(paths: &Paths) -> Result<bool, PortsError> {
    if crate::sys::effective_ids().0 != 0 {
        return Err(PortsError::NotRoot("disable"));
    }
    let had_rules = ours(&paths.rules)?.is_some();
    let had_unit = ours(&paths.unit)?.is_some();
    if had_unit {
        if let Some(s) = crate::service::Systemctl::find(false) {
            let _ = s.run(&["disable", "portok-ports.service"]);
        }
    }
    let mut live = false;
    if let Some(nft) = nft() {
        for family in ["ip", "ip6"] {
            let out = Command::new(&nft)
                .args(["delete", "table", family, TABLE])
                .output();
            live |= out.is_ok_and(|o| o.status.success());
        }
    }
    for (had, path) in [(had_rules, &paths.rules), (had_unit, &paths.unit)] {
        if had {
            std::fs::remove_file(path).map_err(|source| PortsError::Write {
                path: path.clone(),
                source,
            })?;
        }
    }
    if had_unit {
        if let Some(s) = crate::service::Systemctl::find(false) {
            let _ = s.run(&["daemon-reload"]);
        }
    }
    Ok(had_rules || had_unit || live)
}

/// What is set up, as far as an unprivileged process can tell.
#[derive(Debug, PartialEq, Eq)]
pub enum State {
    /// Nothing installed.
    Off,
    /// The rules are installed for the daemon's port, and 127.0.0.1:80 reaches it.
    On,
    /// Installed, but loopback port 80 does not reach the daemon (not loaded, or no daemon).
    NotLoaded,
    /// Installed for another port than the daemon's (`PORTOK_PORT` changed since).
    Stale { rules_to: u16 },
}

/// `daemon_port`: the port the daemon listens on; `reaches`: whether a request to
/// 127.0.0.1:80 is answered by that daemon.
pub fn state(paths: &Paths, daemon_port: u16, reaches: impl FnOnce() -> bool) -> State {
    let Ok(Some(text)) = ours(&paths.rules) else {
        return State::Off;
    };
    match target_of(&text) {
        Some(to) if to != daemon_port => State::Stale { rules_to: to },
        _ if reaches() => State::On,
        _ => State::NotLoaded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_redirect_only_loopback_80_and_443() {
        let r = ruleset(1355);
        assert!(r.starts_with(&format!("# {MARKER}\n")));
        assert!(r.contains("ip daddr 127.0.0.1 tcp dport { 80, 443 } redirect to :1355"));
        assert!(r.contains("ip6 daddr ::1 tcp dport { 80, 443 } redirect to :1355"));
        assert!(r.contains("type nat hook output priority -100"));
        assert_eq!(target_of(&r), Some(1355));
        let u = unit(
            Path::new("/etc/portok/ports.nft"),
            Path::new("/usr/sbin/nft"),
        );
        assert!(u.contains("ExecStart=/usr/sbin/nft -f /etc/portok/ports.nft"));
        assert!(u.contains("WantedBy=multi-user.target"));
    }
}
