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

fn port_free(port: u16) -> bool {
    let v4 = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    // Where there is no IPv6, only the v4 check counts.
    let v6 = match std::net::TcpListener::bind(("::1", port)) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::AddrInUse,
    };
    v4 && v6
}
