//! portok: a local-development router. `portok myapp cargo run` serves the app at
//! `http://myapp.localhost:1355` through one detached proxy daemon per state directory.
//!
//! # Layout
//! Layers, each importing only the ones below it:
//!
//! 1. The command line.
//!    - `main.rs`: parse, dispatch, print the error once, exit with its code.
//!    - [`cli`]: clap types for every command, no I/O.
//!    - [`cmd`] (`cmd.rs`: dispatch and exit codes), one file per command: `run` (flags,
//!      project settings and inference settled into a `run::Plan`), `alias`, `list`
//!      (list, get), `proxy` (start, stop, status), `app` (restart, logs over the run
//!      socket), `status`, `switch`, `trust`, `hosts`, `service`, `ports`, `doctor` (read-only
//!      checks with hints; `doctor/installed`: what portok put outside its state dir),
//!      `prune` (apps whose `portok run` is gone), `up` (up, down, ps), `added` (add, remove), `inspect` (the
//!      inspector in the terminal), `share` (share, unshare), `clean` (undo everything), `generate`
//!      (completions and man pages from the clap definitions).
//! 2. The processes that run for a while.
//!    - `up` (`up.rs`: `portok up`, one `portok run --app NAME` child per app in dependency
//!      order, output merged under `name |` prefixes, stopped in reverse order), `up/record`
//!      (what a running `portok up` leaves for `down` and `ps`). It starts `run`s; it does not
//!      import their insides beyond `child::describe_exit`.
//!    - `run` (`run.rs`: a `Plan` carried out: route ownership, the run socket):
//!      `supervisor` (one actor over the app's N instances, 1 by default: events and the
//!      loop), `supervisor/deploy` (start, rolling redeploy, switch, rollback window,
//!      drain), `supervisor/exits` (rollback, crash page, restart back-off, failed start),
//!      `supervisor/route` (what the route says, process groups, redeploy reports),
//!      `supervisor/slots` (slots, instances, back-off), `supervisor/lazy` (a lazy app's
//!      wake and idle stop), `supervisor/discover` (an app that ignores PORT found where it
//!      listens; one that listens nowhere said early), `tool` (what a command runs, through
//!      package scripts, and who restarts it: HMR kept, a self-restarter switched off),
//!      `flags` (how each dev server is told the port), `child` (spawn, env, process
//!      groups, output), `watch` (notify + ignore, default skips, debounce), `loop_guard`
//!      (paths an app writes on every start stop being watched), `daemon_link`
//!      (what a run tells the daemon, and the watchdog), `app_port` (each generation's port).
//!    - [`daemon`] (`daemon.rs`: start/stop/status of the detached daemon): `runtime` (the
//!      daemon process: listeners, control server, route reloads, stale sweep, graceful
//!      stop), `state` (the daemon's own facts beside the proxy's context: events, the
//!      dashboard's token, where it listens), `admin` (its own host `portok.localhost`:
//!      dashboard, JSON API, events, Prometheus metrics, token-checked actions; `admin/pages`
//!      (the dashboard, a route's page and the inspector, rendered on the server, with
//!      `dashboard.html`, `route.html`, `inspect.html`, `style.css`), `admin/history` (the
//!      history API and SVG charts), `admin/requests` (the inspector's JSON views, SSE stream
//!      and replay), `admin/app` (restart, roll back, stop and the log tail over the app's
//!      run socket)), `mdns` (shared routes announced as NAME.local with `--lan`), `status` (the one status type of the API, the dashboard and
//!      `portok status`, with control's `DaemonStatus` flattened in), `route_sync` (the table and routes.json in step: re-reads, the
//!      daemon's own changes applied in memory then persisted, its own writes not re-read), `switch` (health-gated switch of an alias route with drain and
//!      auto-rollback), `lazy` (waking an idle lazy app's `portok run`, and asking a live one
//!      to stop after its idle_stop).
//!    - [`probe`]: readiness (does the app answer on its port?).
//!    - [`hosts`]: portok's block in /etc/hosts (for `portok hosts` and `--sync-hosts`).
//!    - `service`: the login unit (systemd user unit, launchd agent) portok writes.
//!    - `clean_urls`: the loopback-only nftables redirect of ports 80 and 443 to the daemon,
//!      its boot unit, and whether it works.
//! 3. The proxy, the hot path: [`proxy`] (`proxy.rs`: `Ctx`, accept loops, one task per
//!    connection, drain and graceful stop) with `sniff` (TLS or plain), `conn` (HTTP/1 vs
//!    h2, the h2 preface, header and idle deadlines), `tls` (rustls, the SNI resolver that
//!    issues leaves from the local CA), `fast` and `fast/request` (the HTTP/1.1 fast path,
//!    plain requests relayed without hyper), `handler` (hyper's front-end), `decide` (the one
//!    routing decision both front-ends act on, and the resend policy), `error` (what can fail
//!    -> status codes), `request_head` (the one writer of the request heads apps receive),
//!    `response_head` (the one filter of the response heads clients receive), `upstream`
//!    (kept app connections, the app's response head, requests with bodies), `capture` (what
//!    both front-ends tell the request inspector), `lan` (what clients on other machines may
//!    reach, `--lan`), `app_body` (a
//!    response body read off the app's connection), `chunked` (chunked coding), `forward`
//!    (loopback dialing, response bodies, upgrades), `streams` (an h2 connection's streams in
//!    its own task), `reload` (live-reload injection), `pages` (404/502/508/400/starting/
//!    crashed), `tcp` (TCP routes: listeners that follow the route table, splice relay). It
//!    imports nothing from the layers above: the daemon hands it its own pages
//!    ([`proxy::DaemonPages`]).
//! 4. The model.
//!    - [`routes`]: `Route` (routes.json entries, typed `RouteState`) and the live
//!      `RouteTable`; `routes/store`: locked, atomic read-modify-write of routes.json.
//!    - [`control`]: the control socket and the per-app run socket: one codec, typed
//!      messages.
//!    - [`metrics`]: per-route counters and histograms (atomics on the hot path), redeploy
//!      and switch history with typed outcomes, Prometheus text, stats.json;
//!      `metrics/timeline`: per-second and per-minute points for the charts.
//!    - [`inspect`]: the request inspector's ring of recent requests per route.
//!    - [`ca`]: the local CA and per-host leaf certificates (rcgen); [`trust`] and
//!      `trust/nss`: the system store and NSS databases.
//!    - [`names`]: app names -> `NAME.localhost`, validation, Host normalisation.
//!    - [`state`]: the state directory: paths, permissions, the proxy port.
//!    - [`config`]: the project's settings (portok.toml, Cargo metadata, package.json);
//!      `config/apps`: its `[apps.NAME]` and their start order.
//!    - `added`: apps registered with `portok add` (apps.json) and how their owner starts.
//!    - [`project`]: the project around a folder for naming (workspaces, git worktrees);
//!      `project/scripts` (what `npm run dev`, `pnpm dev`... run, read from package.json),
//!      `project/detect` (what `portok run` alone runs).
//! 5. Small utilities: `cmdline` (command lines as words), `fsutil` (files written whole:
//!    temp, fsync, rename), `sync` (the one lock helper, `LockExt::locked`: a poisoned mutex
//!    taken as it is), [`sys`] (what portok asks of the OS: signals, ids, process facts
//!    through sysinfo, resource limits; every `unsafe` libc call, with why it is sound),
//!    `sys/linux` (/proc: port owners, sysctls), `sys/splice` (Linux: socket -> pipe ->
//!    socket moves for TCP routes and large bodies; `sys/splice_none` elsewhere), `ui`
//!    (`portok:` lines, durations, the usage error that exits 2), `qr` (QR codes of URLs).
//!    Linux-only code is behind `cfg` there alone; `.ci/check-macos` checks the crate for
//!    macOS.

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
pub(crate) mod fsutil;
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
