//! Command-line types (clap derive). Raw values only; no I/O here.

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;

#[derive(Debug, Parser)]
#[command(
    name = "portok",
    version,
    about = "Stable NAME.localhost URLs for your dev servers, on one loopback port, with zero-downtime redeploys",
    after_help = "Examples:\n  portok myapp cargo run          run an app at http://myapp.localhost:1355\n  portok alias api 8080           route api.localhost to a server already on port 8080\n  portok list                     show every route"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start, stop or inspect the proxy daemon
    #[command(subcommand)]
    Proxy(ProxyCmd),
    /// Route NAME.localhost to a server already listening on a loopback port
    #[command(after_help = "Examples:\n  portok alias api 8080\n  portok alias --remove api")]
    Alias(AliasArgs),
    /// List the routes
    #[command(after_help = "Example:\n  portok list --json | jq '.[].url'")]
    List {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Print the URL of NAME (for scripts: curl $(portok get api)/health)
    Get {
        /// App name, e.g. `api` or `api.shop`
        name: String,
        /// Print the https URL
        #[arg(long)]
        https: bool,
    },
    /// Run CMD as app NAME: PORT injected, health-gated start, zero-downtime redeploy on change
    #[command(
        after_help = "Examples:\n  portok run myapp -- cargo run\n  portok myapp cargo run                (the same)\n  portok run -- npm run dev             (name from package.json)\n  portok run api --health /health --drain 30 -- ./server"
    )]
    Run(RunArgs),
    /// Redeploy a running app now (zero downtime); exit 1 with the reason if it fails
    #[command(after_help = "Example:\n  portok restart myapp")]
    Restart {
        /// App name
        name: String,
    },
    /// Print the recent output of an app started with `portok run`
    #[command(after_help = "Example:\n  portok logs myapp -n 50")]
    Logs {
        /// App name
        name: String,
        /// How many lines
        #[arg(short = 'n', long, default_value_t = 200)]
        lines: usize,
        /// Keep printing new lines
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Routes with their state, counters and last redeploy (what the dashboard shows)
    #[command(after_help = "Examples:\n  portok status\n  portok status myapp --json")]
    Status {
        /// Only this app
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Move an alias to a new port once it passes a health check; roll back if it fails after
    #[command(
        after_help = "Example:\n  portok switch api 8081 --health /health --drain 30 --rollback-window 60"
    )]
    Switch {
        /// App name (an alias route)
        name: String,
        /// The new loopback port
        port: u16,
        /// Health path (2xx/3xx counts as healthy; default: any HTTP answer on /)
        #[arg(long, value_name = "PATH")]
        health: Option<String>,
        /// Wait this long for requests on the old port to finish
        #[arg(long, default_value_t = 10.0, value_name = "SECS")]
        drain: f64,
        /// Keep checking the new port this long; roll back when it keeps failing
        #[arg(long, default_value_t = 30.0, value_name = "SECS")]
        rollback_window: f64,
        /// Consecutive failed checks that trigger the rollback
        #[arg(long, default_value_t = 3, value_name = "N")]
        fail_threshold: u32,
    },
    /// Install portok's local CA where browsers and tools trust it
    #[command(
        after_help = "Examples:\n  sudo portok trust       (system store and NSS)\n  portok trust --check    (exit 0 when trusted)"
    )]
    Trust {
        /// Only check: exit 0 when the CA is trusted, 1 otherwise
        #[arg(long)]
        check: bool,
    },
    /// Remove what `portok trust` installed
    Untrust,
    /// Internal: the daemon process itself.
    #[command(name = "__daemon", hide = true)]
    Daemon(DaemonArgs),
    /// `portok NAME CMD...`: run CMD as app NAME.
    #[command(external_subcommand)]
    External(Vec<OsString>),
}

#[derive(Debug, Subcommand)]
pub enum ProxyCmd {
    /// Start the daemon (detached); exit 0 if it is already running
    #[command(after_help = "Example:\n  portok proxy start --port 1355")]
    Start(StartArgs),
    /// Stop the daemon
    Stop,
    /// Show whether the daemon runs: pid, port, uptime, routes (exit 1 when not running)
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args, Clone)]
pub struct StartArgs {
    /// Port to listen on (default: $PORTOK_PORT, else 1355)
    #[arg(long)]
    pub port: Option<u16>,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Deadlines and limits of the daemon.
#[derive(Debug, Args, Clone, Default)]
pub struct LimitArgs {
    /// Close a connection that has not sent its first byte and finished the TLS handshake
    /// within this many seconds
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub handshake_timeout: f64,
    /// Do not count requests per route (only to measure what counting costs)
    #[arg(long)]
    pub no_metrics: bool,
}

impl LimitArgs {
    /// As daemon arguments, only where they differ from the defaults.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.handshake_timeout != 10.0 {
            v.push("--handshake-timeout".into());
            v.push(self.handshake_timeout.to_string());
        }
        if self.no_metrics {
            v.push("--no-metrics".into());
        }
        v
    }
}

#[derive(Debug, Args, Clone, Default)]
pub struct TlsArgs {
    /// Serve this certificate (PEM chain) instead of portok's own CA's
    #[arg(long, requires = "key", value_name = "FILE")]
    pub cert: Option<std::path::PathBuf>,
    /// The private key (PEM) for --cert
    #[arg(long, requires = "cert", value_name = "FILE")]
    pub key: Option<std::path::PathBuf>,
    /// Answer browsers' plain-HTTP navigations with a 308 to https
    #[arg(long)]
    pub redirect_https: bool,
}

/// Options of `portok run`. Durations are in seconds (fractions allowed).
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// App name (default: from Cargo.toml, package.json, the git root or the folder)
    pub name: Option<String>,
    /// Take the name from another running `portok run` (it is stopped)
    #[arg(long)]
    pub force: bool,
    /// Fixed app port instead of a random one in 4000-4999 (redeploys then stop before starting)
    #[arg(long, env = "PORTOK_APP_PORT", value_name = "N")]
    pub app_port: Option<u16>,
    /// Ready only when this path answers 2xx/3xx (default: any HTTP answer on /)
    #[arg(long, value_name = "PATH")]
    pub health: Option<String>,
    /// How long a generation may take to become ready
    #[arg(long, default_value_t = 120.0, value_name = "SECS")]
    pub ready_timeout: f64,
    /// How long non-browser requests wait for a starting app before a 503
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub hold: u64,
    /// Watch these paths instead of the current folder (repeatable)
    #[arg(long, value_name = "PATH")]
    pub watch: Vec<std::path::PathBuf>,
    /// Ignore changes to paths matching this glob (repeatable, gitignore syntax)
    #[arg(long, value_name = "GLOB")]
    pub ignore: Vec<String>,
    /// Do not watch files; exit when the app exits
    #[arg(long)]
    pub no_watch: bool,
    /// Quiet period that merges a burst of file events
    #[arg(long, default_value_t = 300, value_name = "MS")]
    pub debounce: u64,
    /// Keep the previous generation this long after a switch, to roll back if the new one dies (0: off)
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub rollback_window: f64,
    /// Longest wait, from the switch, for the old generation's requests to finish
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub drain: f64,
    /// Live reload: browsers showing this app's pages reload after each redeploy and show
    /// failed builds in an overlay
    #[arg(long)]
    pub reload: bool,
    /// Time between SIGTERM and SIGKILL when stopping a generation
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub kill_timeout: f64,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Options of `portok run` that take a value, for splitting `portok NAME [OPTS] CMD...`.
pub const RUN_VALUE_FLAGS: &[&str] = &[
    "--app-port",
    "--health",
    "--ready-timeout",
    "--hold",
    "--watch",
    "--ignore",
    "--debounce",
    "--rollback-window",
    "--drain",
    "--kill-timeout",
];

#[derive(Debug, Args)]
pub struct AliasArgs {
    /// App name: `api` becomes api.localhost
    pub name: String,
    /// The loopback port the server listens on
    #[arg(required_unless_present = "remove")]
    pub port: Option<u16>,
    /// Remove the alias instead
    #[arg(long, conflicts_with = "port")]
    pub remove: bool,
    /// Take the name even if a running app owns it
    #[arg(long)]
    pub force: bool,
    /// Live reload for this alias's HTML pages (see `portok run --reload`)
    #[arg(long)]
    pub reload: bool,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    #[arg(long)]
    pub port: u16,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}
