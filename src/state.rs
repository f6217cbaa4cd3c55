//! The state directory: where portok keeps routes, the daemon's pid/port files, its log,
//! the control socket and (later) the CA. One daemon serves one state directory.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Default proxy port, as in portless.
pub const DEFAULT_PORT: u16 = 1355;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create the state directory {path}: {source} (set PORTOK_STATE_DIR to a writable folder)")]
    Create { path: PathBuf, source: io::Error },
    #[error("no state directory: neither PORTOK_STATE_DIR nor HOME is set")]
    NoHome,
    #[error("{path} belongs to uid {owner}, not to you (uid {me}); portok will not use a state dir another user controls. Set PORTOK_STATE_DIR to a folder of your own")]
    NotOwner { path: PathBuf, owner: u32, me: u32 },
    #[error("{var}={value:?} is not a port number (1-65535)")]
    BadPort { var: &'static str, value: String },
}

/// Paths inside one state directory. Cheap to clone; creating it touches no disk.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// `$PORTOK_STATE_DIR`, else `~/.portok`.
    pub fn from_env() -> Result<Self, StateError> {
        if let Some(dir) = std::env::var_os("PORTOK_STATE_DIR").filter(|v| !v.is_empty()) {
            return Ok(Self::at(PathBuf::from(dir)));
        }
        let home = std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .ok_or(StateError::NoHome)?;
        Ok(Self::at(PathBuf::from(home).join(".portok")))
    }

    pub fn at(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Create the directory (mode 0700) if needed. A looser existing mode is tightened,
    /// because the directory holds the CA key and the control socket.
    pub fn ensure(&self) -> Result<(), StateError> {
        let err = |source| StateError::Create {
            path: self.root.clone(),
            source,
        };
        match fs::metadata(&self.root) {
            Ok(meta) => {
                use std::os::unix::fs::MetadataExt;
                let me = crate::sys::effective_ids().0;
                if meta.uid() != me {
                    return Err(StateError::NotOwner {
                        path: self.root.clone(),
                        owner: meta.uid(),
                        me,
                    });
                }
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    // Best effort: a directory owned by someone else cannot be changed, and
                    // the later writes will report that clearly.
                    let _ = fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700));
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.root)
                .map_err(err),
            Err(e) => Err(err(e)),
        }
    }

    pub fn routes_json(&self) -> PathBuf {
        self.root.join("routes.json")
    }
    pub fn routes_lock(&self) -> PathBuf {
        self.root.join("routes.lock")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("proxy.pid")
    }
    pub fn port_file(&self) -> PathBuf {
        self.root.join("proxy.port")
    }
    pub fn log_file(&self) -> PathBuf {
        self.root.join("proxy.log")
    }
    pub fn control_socket(&self) -> PathBuf {
        self.root.join("control.sock")
    }
    pub fn stats_file(&self) -> PathBuf {
        self.root.join("stats.json")
    }
    pub fn admin_token_file(&self) -> PathBuf {
        self.root.join("admin.token")
    }

    /// Keys and tokens must be 0600: tighten any that are looser, and say so. Returns what
    /// was fixed, for the daemon's log.
    pub fn secure_files(&self) -> Vec<PathBuf> {
        let mut fixed = Vec::new();
        let mut secrets = vec![self.root.join("ca-key.pem"), self.root.join("admin.token")];
        if let Ok(entries) = fs::read_dir(self.root.join("certs")) {
            secrets.extend(
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.to_string_lossy().ends_with("-key.pem")),
            );
        }
        for path in secrets {
            if let Ok(meta) = fs::metadata(&path) {
                if meta.permissions().mode() & 0o077 != 0
                    && fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).is_ok()
                {
                    fixed.push(path);
                }
            }
        }
        fixed
    }

    /// The port the running daemon wrote, if any.
    pub fn recorded_port(&self) -> Option<u16> {
        fs::read_to_string(self.port_file())
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
}

/// The proxy port from `--port`, else `$PORTOK_PORT`, else 1355.
pub fn proxy_port(flag: Option<u16>) -> Result<u16, StateError> {
    if let Some(p) = flag {
        return Ok(p);
    }
    match std::env::var("PORTOK_PORT") {
        Ok(v) if !v.trim().is_empty() => match v.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(StateError::BadPort {
                var: "PORTOK_PORT",
                value: v,
            }),
        },
        _ => Ok(DEFAULT_PORT),
    }
}
