//! portok: a local-development router. `portok myapp cargo run` serves the app at
//! `http://myapp.localhost:1355` through one detached proxy daemon per state directory.
//!
//! # Layout
//! Layers, each importing only the ones below it: the command line (`cli`, `cmd`), what
//! runs for a while (`run`, `daemon`, `up`), the proxy (the hot path), the model (routes,
//! names, the CA, metrics, settings, the project) and small utilities. The map of them, the
//! two trips a newcomer needs (a request, a port) and the invariants are in
//! ARCHITECTURE.md at the repository's root: one copy, kept true by a test.

// The binary (main.rs) needs the command line; the fuzz targets and tests reach the
// parsers they exercise (names, sniff, routes, metrics). The rest is the crate's own.
pub(crate) mod added;
pub(crate) mod ca;
pub(crate) mod clean_urls;
pub mod cli;
pub mod cmd;
pub(crate) mod cmdline;
pub(crate) mod config;
pub(crate) mod control;
pub(crate) mod daemon;
pub(crate) mod docker;
pub(crate) mod fsutil;
pub(crate) mod grpc;
pub(crate) mod hosts;
pub mod inspect;
pub mod metrics;
pub mod names;
pub(crate) mod probe;
pub(crate) mod project;
pub mod proxy;
pub(crate) mod qr;
pub mod routes;
pub(crate) mod run;
pub(crate) mod service;
pub(crate) mod state;
pub(crate) mod sync;
pub(crate) mod sys;
pub(crate) mod trust;
pub(crate) mod ui;
pub(crate) mod up;

pub use sys::default_sigpipe;
