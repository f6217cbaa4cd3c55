//! portok: a local-development router. `portok myapp cargo run` serves the app at
//! `http://myapp.localhost:1355` through one detached proxy daemon per state directory.
//!
//! # Layout
//! - [`cli`]: clap types for every command, no I/O.
//! - [`commands`]: what each CLI command does (alias, list, get, proxy start/stop/status).
//! - [`state`]: the state directory: paths, permissions, pid liveness.
//! - [`names`]: app names -> `NAME.localhost`, validation, Host normalisation.
//! - [`routes`]: `Route` (routes.json entries) and the live `RouteTable`;
//!   [`routes::store`]: locked, atomic read-modify-write of routes.json.
//! - [`control`]: the control socket protocol (newline JSON) and its blocking client.
//! - [`daemon`]: start/stop/status of the detached daemon; [`daemon::runtime`]: the
//!   daemon process (listeners, control server, route reloads, stale sweep).
//! - [`proxy`]: accept loops and per-connection serving; `sniff` (TLS or plain), `decide`
//!   (the one routing decision both front-ends act on, and the resend policy), `error` (what
//!   can fail -> status codes), `handler` (hyper's front-end), `request_head` (the one writer
//!   of the request heads apps receive), `response_head` (the one filter of the response
//!   heads clients receive), `upstream` (kept app connections, the app's response, request
//!   bodies), `forward` (loopback dialing, response bodies, upgrades), `fast` (the
//!   HTTP/1.1 fast path: plain requests relayed without hyper), `streams` (an h2
//!   connection's streams in its own task), `reload` (live-reload injection), `conn`
//!   (HTTP/1 vs h2, the h2 preface, header and idle deadlines), `pages`
//!   (404/502/508/400/starting/crashed), `tls` (rustls config, the SNI resolver that issues
//!   leaves from the local CA), `tcp` (TCP routes: listeners that follow the route table,
//!   splice(2) relay). The proxy imports nothing from the layers above it: the daemon hands
//!   it its own pages ([`proxy::DaemonPages`]).
//! - [`admin`]: the daemon's own host `portok.localhost`: dashboard, JSON API, events,
//!   Prometheus metrics; token-checked restart and switch.
//! - `splice` (Linux): socket -> pipe -> socket moves for TCP routes and large HTTP bodies.
//! - [`switch`]: health-gated switch of an alias route with drain and auto-rollback.
//! - [`metrics`]: per-route counters and histograms (atomics on the hot path), redeploy and
//!   switch history, Prometheus text, persistence in stats.json.
//! - [`ca`]: the local CA (ca.pem, ca-key.pem) and per-host leaf certificates (rcgen).
//! - [`trust`]: `portok trust` / `untrust`: the system store and NSS databases.
//! - [`run`]: `portok run`: name inference, route ownership, the app's run socket;
//!   [`run::supervisor`] (generations, switch, drain, rollback), [`run::child`] (spawn, env,
//!   process groups, output), [`run::watch`] (notify + ignore, debounce), [`run::probe`]
//!   (readiness).
//! - [`project`]: the project around a folder for naming: Cargo/npm/pnpm workspaces
//!   (`api.shop`), linked git worktrees (branch prefix).
//! - [`config`]: the project's settings (portok.toml, `[package.metadata.portok]`, package.json
//!   `"portok"`), checked and merged under the command-line flags.
//! - [`hosts`]: portok's block in /etc/hosts (`portok hosts`, and the daemon's `--sync-hosts`).
//! - [`doctor`]: `portok doctor`, read-only checks with hints.
//! - [`prune`]: `portok prune`, apps whose `portok run` is gone and their routes.
//! - [`clean`]: `portok clean`, undo everything portok set up.
//! - [`generate`]: shell completions and man pages from the clap definitions.
//! - Small utilities: `fsutil` (files written whole: temp, fsync, rename), `sys` (process
//!   group signals and ids, each `unsafe` call with why it is sound), `ui` (portok's
//!   `portok:` lines and durations).

pub mod admin;
pub mod ca;
pub mod clean;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod daemon;
pub mod doctor;
pub(crate) mod fsutil;
pub mod generate;
pub mod hosts;
pub mod metrics;
pub mod names;
pub mod probe;
pub mod project;
pub mod proxy;
pub mod prune;
pub mod routes;
pub mod run;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod state;
pub mod switch;
pub(crate) mod sys;
pub mod trust;
pub(crate) mod ui;
