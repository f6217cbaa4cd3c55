//! What the proxy knows of a client connection, in a leaf: the inspector's records
//! ([`super::capture`]) and every front-end take it.

use std::net::SocketAddr;

/// Per-connection facts the handler needs.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}
