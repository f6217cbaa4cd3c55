//! Starting the daemon at login: a systemd user unit on Linux, a launchd agent on macOS.
//! This module writes and reads the files; `cmd/service.rs` is the command around it.
//!
//! The service runs `portok __daemon` in the foreground under the service manager, with
//! the environment `portok service install` saw (state dir, port, TLDs), and restarts it
//! when it fails. Every file starts with [`MARKER`], so uninstall removes only what portok
//! wrote.

use std::io;
use std::path::{Path, PathBuf};

/// The first line of every file portok writes here.
pub const MARKER: &str =
    "Written by `portok service install`; `portok service uninstall` removes it.";

/// Environment passed through to the daemon, when set.
pub const PASSED_ENV: &[&str] = &[
    "PORTOK_STATE_DIR",
    "PORTOK_PORT",
    "PORTOK_TLD",
    "PORTOK_SYNC_HOSTS",
    "PORTOK_HOSTS_FILE",
];

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} was not written by portok (no portok marker on its first line); it is left alone: remove it yourself if you want it gone")]
    NotOurs { path: PathBuf },
    #[error("no home folder: set HOME")]
    NoHome,
}

/// What the service starts: the binary, its daemon arguments and the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub binary: PathBuf,
    pub port: u16,
    pub env: Vec<(String, String)>,
}

impl Launch {
    /// From this process: its own binary, the proxy port and the passed-through variables.
    pub fn current(port: u16) -> io::Result<Launch> {
        let binary = std::env::current_exe()?;
        let env = PASSED_ENV
            .iter()
            .filter_map(|k| {
                let v = std::env::var(k).ok().filter(|v| !v.is_empty())?;
                Some((k.to_string(), v))
            })
            .collect();
        Ok(Launch { binary, port, env })
    }

    fn args(&self) -> Vec<String> {
        vec!["__daemon".into(), "--port".into(), self.port.to_string()]
    }
}

/// Where the service file goes for the user whose home is `home`.
pub fn unit_path(home: &Path) -> PathBuf {
    if cfg!(target_os = "macos") {
        home.join("Library/LaunchAgents/dev.portok.daemon.plist")
    } else {
        home.join(".config/systemd/user/portok.service")
    }
}

/// The service file for this platform.
pub fn unit_text(launch: &Launch) -> String {
    if cfg!(target_os = "macos") {
        launchd_plist(launch)
    } else {
        systemd_unit(launch)
    }
}

/// A systemd user unit.
pub fn systemd_unit(launch: &Launch) -> String {
    let mut exec = vec![quote_systemd(&launch.binary.to_string_lossy())];
    exec.extend(launch.args().iter().map(|a| quote_systemd(a)));
    let mut s = format!(
        "# {MARKER}\n[Unit]\nDescription=portok local development router\n\n[Service]\nType=simple\nExecStart={}\nRestart=on-failure\nRestartSec=1\n",
        exec.join(" ")
    );
    for (k, v) in &launch.env {
        s.push_str(&format!(
            "Environment={}\n",
            quote_systemd(&format!("{k}={v}"))
        ));
    }
    s.push_str("\n[Install]\nWantedBy=default.target\n");
    s
}

/// systemd's quoting: double quotes, with `\` `"` escaped and `%` doubled (specifiers).
fn quote_systemd(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-=,:@+".contains(&b));
    if plain {
        return s.to_string();
    }
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%");
    format!("\"{escaped}\"")
}

/// A launchd agent: started at login, restarted when it exits with a failure.
pub fn launchd_plist(launch: &Launch) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut args = vec![esc(&launch.binary.to_string_lossy())];
    args.extend(launch.args().iter().map(|a| esc(a)));
    let program: String = args
        .iter()
        .map(|a| format!("    <string>{a}</string>\n"))
        .collect();
    let env: String = launch
        .env
        .iter()
        .map(|(k, v)| {
            format!(
                "    <key>{}</key>\n    <string>{}</string>\n",
                esc(k),
                esc(v)
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- {MARKER} -->\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\">\n<dict>\n  <key>Label</key>\n  <string>dev.portok.daemon</string>\n  <key>ProgramArguments</key>\n  <array>\n{program}  </array>\n  <key>EnvironmentVariables</key>\n  <dict>\n{env}  </dict>\n  <key>RunAtLoad</key>\n  <true/>\n  <key>KeepAlive</key>\n  <dict>\n    <key>SuccessfulExit</key>\n    <false/>\n  </dict>\n</dict>\n</plist>\n"
    )
}

/// What is at `path`: nothing, a file portok wrote (with its text), or someone else's.
#[derive(Debug, PartialEq, Eq)]
pub enum Installed {
    No,
    Ours(String),
    NotOurs,
}

pub fn installed(path: &Path) -> Result<Installed, ServiceError> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.lines().take(2).any(|l| l.contains(MARKER)) => Ok(Installed::Ours(text)),
        Ok(_) => Ok(Installed::NotOurs),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Installed::No),
        Err(source) => Err(ServiceError::Read {
            path: path.into(),
            source,
        }),
    }
}

/// Write the unit unless an identical one is there; refuses a file portok did not write.
/// Returns whether anything changed.
pub fn write(path: &Path, text: &str) -> Result<bool, ServiceError> {
    match installed(path)? {
        Installed::Ours(old) if old == text => return Ok(false),
        Installed::NotOurs => return Err(ServiceError::NotOurs { path: path.into() }),
        _ => {}
    }
    let err = |source| ServiceError::Write {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    crate::fsutil::write_atomic(path, text.as_bytes(), 0o644).map_err(err)?;
    Ok(true)
}

/// Remove the unit if portok wrote it. Returns whether there was one.
pub fn remove(path: &Path) -> Result<bool, ServiceError> {
    match installed(path)? {
        Installed::No => Ok(false),
        Installed::NotOurs => Err(ServiceError::NotOurs { path: path.into() }),
        Installed::Ours(_) => {
            std::fs::remove_file(path).map_err(|source| ServiceError::Write {
                path: path.into(),
                source,
            })?;
            Ok(true)
        }
    }
}

/// The binary a unit starts (its ExecStart's, or ProgramArguments' first word).
pub fn binary_of(text: &str) -> Option<PathBuf> {
    if let Some(line) = text.lines().find_map(|l| l.strip_prefix("ExecStart=")) {
        let first = match line.strip_prefix('"') {
            Some(rest) => rest.split('"').next()?.replace("\\\\", "\\"),
            None => line.split_whitespace().next()?.to_string(),
        };
        return Some(first.into());
    }
    let after = text.split("<key>ProgramArguments</key>").nth(1)?;
    let first = after.split("<string>").nth(1)?.split("</string>").next()?;
    Some(
        first
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
            .into(),
    )
}

/// `systemctl`, for the user's manager (`--user`) or the system's, when one runs.
/// `PORTOK_SYSTEMCTL` names another program (the tests use a stand-in); empty means none.
pub struct Systemctl {
    program: String,
    user: bool,
}

impl Systemctl {
    pub fn find(user: bool) -> Option<Systemctl> {
        let program = std::env::var("PORTOK_SYSTEMCTL").unwrap_or_else(|_| "systemctl".into());
        if program.is_empty() {
            return None;
        }
        let s = Systemctl { program, user };
        let runs = if user {
            s.call(&["show-environment"])
                .is_ok_and(|o| o.status.success())
        } else {
            s.program != "systemctl" || Path::new("/run/systemd/system").exists()
        };
        runs.then_some(s)
    }

    fn call(&self, args: &[&str]) -> io::Result<std::process::Output> {
        let mut cmd = std::process::Command::new(&self.program);
        if self.user {
            cmd.arg("--user");
        }
        cmd.args(args).output()
    }

    pub fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = self.call(args)?;
        if !out.status.success() {
            anyhow::bail!(
                "`systemctl{} {}` failed: {}",
                if self.user { " --user" } else { "" },
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The one-word answer of `is-enabled` / `is-active`.
    pub fn ask(&self, args: &[&str]) -> String {
        self.call(args)
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch() -> Launch {
        Launch {
            binary: "/home/me/.cargo/bin/portok".into(),
            port: 1355,
            env: vec![
                ("PORTOK_TLD".into(), "test".into()),
                ("PORTOK_STATE_DIR".into(), "/home/me/my state".into()),
            ],
        }
    }

    #[test]
    fn the_systemd_unit_runs_the_daemon_with_the_environment() {
        let u = systemd_unit(&launch());
        assert!(u.starts_with(&format!("# {MARKER}\n")));
        assert!(u.contains("ExecStart=/home/me/.cargo/bin/portok __daemon --port 1355\n"));
        assert!(u.contains("Restart=on-failure\n"));
        assert!(u.contains("Environment=PORTOK_TLD=test\n"));
        assert!(u.contains("Environment=\"PORTOK_STATE_DIR=/home/me/my state\"\n"));
        assert!(u.contains("WantedBy=default.target"));
        assert_eq!(binary_of(&u), Some("/home/me/.cargo/bin/portok".into()));
        assert_eq!(quote_systemd("50%"), "\"50%%\"");
    }

    #[test]
    fn the_launchd_agent_starts_at_login_and_restarts_on_failure() {
        let p = launchd_plist(&launch());
        assert!(p.contains(&format!("<!-- {MARKER} -->")));
        assert!(p.contains("<key>Label</key>\n  <string>dev.portok.daemon</string>"));
        assert!(p.contains("<string>/home/me/.cargo/bin/portok</string>\n    <string>__daemon</string>\n    <string>--port</string>\n    <string>1355</string>"));
        assert!(p.contains("<key>PORTOK_TLD</key>\n    <string>test</string>"));
        assert!(p.contains("<key>RunAtLoad</key>\n  <true/>"));
        assert!(p.contains("<key>SuccessfulExit</key>\n    <false/>"));
        assert_eq!(binary_of(&p), Some("/home/me/.cargo/bin/portok".into()));
    }

    #[test]
    fn write_is_idempotent_and_never_touches_a_file_it_did_not_write() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("sub/portok.service");
        let text = systemd_unit(&launch());
        assert!(write(&path, &text).unwrap());
        assert!(!write(&path, &text).unwrap(), "the same unit twice");
        assert!(matches!(installed(&path).unwrap(), Installed::Ours(_)));
        assert!(remove(&path).unwrap());
        assert!(!remove(&path).unwrap());
        std::fs::write(&path, "[Unit]\nDescription=mine\n").unwrap();
        assert!(matches!(
            write(&path, &text),
            Err(ServiceError::NotOurs { .. })
        ));
        assert!(matches!(remove(&path), Err(ServiceError::NotOurs { .. })));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[Unit]\nDescription=mine\n"
        );
    }
}
