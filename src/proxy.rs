//! The proxy, the hot path. It imports nothing above the model layer. Read it top-down,
//! as a request travels:
//!
//! - `accept`: accept loops, one task per connection; `sniff` (TLS or plain by the first
//!   byte), `tls` (rustls, certificates from the local CA), `conn` (HTTP/1 or h2, deadlines);
//! - the front-ends: `fast` (plain HTTP/1.1 relayed without hyper), `relay` (gRPC calls
//!   from h2 clients to HTTP/2 apps, frame by frame) and `handler` (hyper's HTTP/1.1 and
//!   h2), which act on one routing decision, `decide`;
//! - towards the app: `request_head` (the one writer of request heads), `upstream` (the
//!   exchange), `h2_upstream` (the exchange with apps that speak only HTTP/2, on the
//!   connections `h2_conns` keeps), `upgrade` (WebSocket and extended CONNECT tunnels),
//!   `tcp` (TCP routes);
//! - back: `app_body` (the body read off the app), `response_head` (the one filter of
//!   response heads), `capture` (the inspector's records), `pages`, `error`, `reload`, `lan`;
//! - leaves the rest build on: `ctx` (the shared vocabulary: `Ctx`, `Limits`, `ConnError`),
//!   `conn_info`, `body` (`ProxyBody`), `header` (the header rules both directions share),
//!   `app_conn` (a connection to an app: dialed on loopback only, kept idle), `chunked`,
//!   `streams`.
//!
//! Two pairs import each other, and must: `body` and `capture` (a `Tee` is one kind of
//! `ProxyBody` and wraps another), `ctx` and `tcp` (`Ctx` owns the TCP listeners; a TCP
//! relay picks its instance through `Ctx`).

pub(crate) mod accept;
pub(crate) mod app_body;
pub(crate) mod app_conn;
pub(crate) mod body;
pub(crate) mod capture;
pub(crate) mod chunked;
pub(crate) mod conn;
pub(crate) mod conn_info;
pub(crate) mod ctx;
pub(crate) mod decide;
pub(crate) mod error;
pub(crate) mod fast;
pub(crate) mod grpc_web;
pub(crate) mod h2_conns;
pub(crate) mod h2_upstream;
pub(crate) mod handler;
pub(crate) mod header;
pub(crate) mod lan;
pub(crate) mod pages;
pub(crate) mod relay;
pub(crate) mod reload;
pub(crate) mod request_head;
pub(crate) mod response_head;
pub mod sniff;
pub(crate) mod streams;
pub(crate) mod tcp;
pub(crate) mod tls;
pub(crate) mod upgrade;
pub(crate) mod upstream;

pub use accept::serve;
pub use ctx::{ConnError, ConnInfo, CrashInfo, Ctx, DaemonPages, LimitFlag, Limits, LIMIT_FLAGS};
