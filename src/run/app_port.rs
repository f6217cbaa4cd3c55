//! The port each generation of an app listens on.

use crate::routes::store;
use crate::state::StateDir;

/// Ports browsers refuse to connect to (Chrome/Firefox), within portok's range.
const BLOCKED: &[u16] = &[4045, 4190];

/// A random free port in 4000-4999: not in routes.json, not in use by us, not blocked.
pub fn pick_port(state: &StateDir, exclude: &[u16]) -> std::io::Result<u16> {
    use rand::Rng;
    let taken: Vec<u16> = store::load(state)
        .map(|r| r.iter().map(|r| r.port).collect())
        .unwrap_or_default();
    let mut rng = rand::rng();
    for _ in 0..200 {
        let port = rng.random_range(4000..=4999);
        if BLOCKED.contains(&port) || taken.contains(&port) || exclude.contains(&port) {
            continue;
        }
        if port_free(port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::other(
        "no free port in 4000-4999; stop some apps or pass --app-port N",
    ))
}

/// Another portok app holds a port this one wants.
#[derive(Debug, Clone)]
pub struct Taken {
    pub port: u16,
    pub hostname: String,
    pub pid: u32,
}

impl std::fmt::Display for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "port {} is taken by the portok app {} (pid {}): stop that app, or give this one another port",
            self.port, self.hostname, self.pid
        )
    }
}

/// Another portok app (not `own_host`) whose instances listen on `port`, if any.
pub fn taken(state: &StateDir, port: u16, own_host: &str) -> Option<Taken> {
    held_by_others(state, own_host)
        .into_iter()
        .find(|t| t.port == port)
}

/// Every port the other portok apps (not `own_host`) listen on. Aliases do not count:
/// they point at a port, they do not hold it.
pub fn held_by_others(state: &StateDir, own_host: &str) -> Vec<Taken> {
    let routes = store::load(state).unwrap_or_default();
    let apps = routes
        .into_iter()
        .filter(|r| r.pid != 0 && r.hostname != own_host);
    apps.flat_map(|r| {
        let ports = std::iter::once(r.port).chain(r.ports.clone());
        ports.map(move |port| Taken {
            port,
            hostname: r.hostname.clone(),
            pid: r.pid,
        })
    })
    .collect()
}

/// Whether a process of another portok app was given `port` as its PORT too (ours share
/// `own_url`). Another portok (another state folder) is not in our routes.json, so each
/// [`pick_port`] can hand out a port the other's app has not listened on yet.
pub fn given_to_another_app(port: u16, own_url: &str) -> bool {
    let (port, own) = (format!("PORT={port}"), format!("PORTOK_URL={own_url}"));
    crate::sys::any_environment(|env| {
        env.iter().any(|e| *e == *port)
            && env.iter().any(|e| {
                e.to_str()
                    .is_some_and(|e| e.starts_with("PORTOK_URL=") && e != own)
            })
    })
}

fn port_free(port: u16) -> bool {
    let v4 = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    // Where there is no IPv6, only the v4 check counts.
    let v6 = match std::net::TcpListener::bind(("::1", port)) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::AddrInUse,
    };
    v4 && v6
}
