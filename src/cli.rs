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
}

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
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    #[arg(long)]
    pub port: u16,
}
