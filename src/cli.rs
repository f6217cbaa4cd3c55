//! Command-line types (clap derive). Raw values only; no I/O here.

mod run_args;

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;

pub use run_args::{AddArgs, RouteFlags, RunArgs, RUN_VALUE_FLAGS};

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
    /// Print the URL of NAME, or without NAME the URL `portok run` would give this folder
    #[command(
        after_help = "Examples:\n  curl $(portok get api)/health\n  portok get                  (this folder's app: workspace, worktree and portok.toml apply)\n  portok get api --no-worktree"
    )]
    Get {
        /// App name, e.g. `api` or `api.shop` (default: inferred as `portok run` does)
        name: Option<String>,
        /// Print the https URL
        #[arg(long)]
        https: bool,
        /// In a linked git worktree, do not put the branch in front of the name
        #[arg(long)]
        no_worktree: bool,
    },
    /// Run CMD as app NAME: PORT injected, health-gated start, zero-downtime redeploy on change
    #[command(
        after_help = "Examples:\n  portok run myapp -- cargo run\n  portok myapp cargo run                (the same)\n  portok run -- npm run dev             (name from package.json)\n  portok run api --health /health --drain 30 -- ./server"
    )]
    Run(RunArgs),
    /// Start the project's apps ([apps.NAME] in portok.toml) in dependency order, with
    /// their output in one stream; Ctrl-C stops them in reverse order
    #[command(
        after_help = "Examples:\n  portok up                 every app of ./portok.toml\n  portok up web             web and the apps it depends on\n  portok up -d              in the background; `portok down` stops it"
    )]
    Up {
        /// Only these apps (and what they depend on)
        names: Vec<String>,
        /// Detach: keep running after the terminal closes (output in a log file)
        #[arg(short = 'd', long)]
        detach: bool,
        /// Set by `up -d` for the process it starts
        #[arg(long, hide = true)]
        detached: bool,
    },
    /// Stop the project's apps started by `portok up` (all, or the ones named)
    #[command(after_help = "Examples:\n  portok down\n  portok down docs")]
    Down {
        /// Only these apps
        names: Vec<String>,
    },
    /// The project's apps: state, URL, port(s), pid and uptime
    #[command(after_help = "Example:\n  portok ps")]
    Ps {
        #[arg(long)]
        json: bool,
    },
    /// Register a lazy app without a portok.toml: it starts on its first request, stops
    /// when idle, and is kept across restarts until `portok remove`
    #[command(
        after_help = "Examples:\n  portok add blog --dir ~/src/blog -- sh -c 'hugo server --port $PORT'\n  portok add api --idle-stop 5m -- cargo run"
    )]
    Add(AddArgs),
    /// Make an app reachable from other machines (the proxy must run with --lan): as
    /// NAME.local, and at this machine's address when it is the only one shared
    #[command(after_help = "Example:\n  portok proxy start --lan && portok share web")]
    Share {
        /// App name
        name: String,
    },
    /// Stop sharing an app with other machines
    #[command(after_help = "Example:\n  portok unshare web")]
    Unshare {
        /// App name
        name: String,
    },
    /// Forget an app registered with `portok add` (and stop it)
    #[command(after_help = "Example:\n  portok remove blog")]
    Remove {
        /// App name
        name: String,
    },
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
    /// The requests an app got (the inspector's last ones), one line each, like an access log
    #[command(
        after_help = "Examples:\n  portok inspect api -f\n  portok inspect api --json | jq 'select(.status >= 500)'"
    )]
    Inspect {
        /// App name
        name: String,
        /// Keep printing requests as they come
        #[arg(short = 'f', long)]
        follow: bool,
        /// One JSON object per request, with its headers
        #[arg(long)]
        json: bool,
        /// Show Authorization, Cookie and Set-Cookie values (hidden by default)
        #[arg(long)]
        show_secrets: bool,
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
        /// Make a new CA (the old one is untrusted and kept aside), then trust it: for a CA
        /// made before portok constrained its CAs to local names
        #[arg(long, conflicts_with = "check")]
        renew: bool,
    },
    /// Remove what `portok trust` installed
    #[command(after_help = "Example:\n  sudo portok untrust")]
    Untrust,
    /// Check the setup (read-only): state dir, daemon, port, CA, name resolution, routes,
    /// orphaned apps, file-watch limits; exit 1 when a check fails
    #[command(after_help = "Example:\n  portok doctor")]
    Doctor,
    /// Stop apps whose `portok run` is gone and drop their routes
    #[command(
        after_help = "Examples:\n  portok prune\n  portok prune --force     (SIGKILL what SIGTERM did not stop)"
    )]
    Prune {
        /// SIGKILL app processes that are still running 5 s after SIGTERM
        #[arg(long)]
        force: bool,
    },
    /// Undo portok: stop it, untrust the CA, remove its hosts block and its files
    #[command(
        after_help = "Examples:\n  portok clean\n  sudo portok clean --yes  (the CA in the system store and /etc/hosts need root)"
    )]
    Clean {
        /// Do not ask for confirmation
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Keep /etc/hosts entries for the routes, for resolvers that do not map *.localhost
    /// to loopback (Safari, some Linux setups)
    #[command(subcommand)]
    Hosts(HostsCmd),
    /// Start the proxy at login: a systemd user unit (Linux) or a launchd agent (macOS)
    #[command(subcommand)]
    Service(ServiceCmd),
    /// URLs without :1355: send loopback ports 443 and 80 to the daemon (one root step)
    #[command(subcommand)]
    Ports(PortsCmd),
    /// Containers as routes: what makes a container trust portok's CA
    #[command(subcommand)]
    Docker(DockerCmd),
    /// Print a shell completion script
    #[command(
        after_help = "Examples:\n  portok completions bash > ~/.local/share/bash-completion/completions/portok\n  portok completions zsh > ~/.zfunc/_portok\n  portok completions fish > ~/.config/fish/completions/portok.fish"
    )]
    Completions {
        /// bash, zsh, fish, powershell or elvish
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a folder
    #[command(
        after_help = "Examples:\n  portok man | man -l -\n  sudo portok man --dir /usr/local/share/man/man1"
    )]
    Man {
        /// Write portok.1 and portok-COMMAND.1 pages here instead of printing portok.1
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
    /// Internal: the daemon process itself.
    #[command(name = "__daemon", hide = true)]
    Daemon(DaemonArgs),
    /// `portok NAME CMD...`: run CMD as app NAME.
    #[command(external_subcommand)]
    External(Vec<OsString>),
}

#[derive(Debug, Subcommand)]
pub enum DockerCmd {
    /// Print the mount and environment that make a container trust portok's CA
    #[command(after_help = "Examples:
  docker run $(portok docker env) node:24 node app.js
  portok docker env --compose      (for a service in compose.yaml)")]
    Env {
        /// As YAML for a Compose service (volumes and environment)
        #[arg(long)]
        compose: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PortsCmd {
    /// Redirect 127.0.0.1 and ::1 ports 443 and 80 to the daemon's port (nftables, loaded
    /// now and at boot); the daemon keeps running as you
    #[command(after_help = "Example:\n  sudo portok ports enable")]
    Enable,
    /// Remove exactly what enable added
    #[command(after_help = "Example:\n  sudo portok ports disable")]
    Disable,
    /// on, off, installed but not working, or installed for another port
    #[command(after_help = "Example:\n  portok ports status")]
    Status,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCmd {
    /// Write the unit (~/.config/systemd/user/portok.service) and enable and start it when a
    /// user manager runs; the environment (PORTOK_PORT, PORTOK_STATE_DIR, PORTOK_TLD...) is
    /// passed through
    #[command(after_help = "Example:\n  PORTOK_TLD=test portok service install")]
    Install,
    /// Stop, disable and remove exactly what install wrote
    #[command(after_help = "Example:\n  portok service uninstall")]
    Uninstall,
    /// Installed, enabled, running, and which binary it starts
    #[command(after_help = "Example:\n  portok service status")]
    Status,
}

#[derive(Debug, Subcommand)]
pub enum HostsCmd {
    /// Write a block with 127.0.0.1 and ::1 lines for every route (between
    /// `# portok-start` and `# portok-end`; nothing else in the file is touched)
    #[command(after_help = "Example:\n  sudo portok hosts sync")]
    Sync,
    /// Remove portok's block
    #[command(after_help = "Example:\n  sudo portok hosts clean")]
    Clean,
}

#[derive(Debug, Subcommand)]
pub enum ProxyCmd {
    /// Start the daemon (detached); exit 0 if it is already running
    #[command(after_help = "Example:\n  portok proxy start --port 1355")]
    Start(StartArgs),
    /// Stop the daemon: no new connections, requests in flight finish (up to --timeout)
    #[command(after_help = "Examples:\n  portok proxy stop\n  portok proxy stop --timeout 30")]
    Stop {
        /// Seconds requests in flight get to finish before they are cut
        #[arg(long, value_name = "SECS", default_value_t = crate::control::STOP_GRACE.as_secs_f64())]
        timeout: f64,
    },
    /// Show whether the daemon runs: pid, port, uptime, routes (exit 1 when not running)
    #[command(after_help = "Example:\n  portok proxy status --json")]
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
    /// Keep /etc/hosts entries for every route while the daemon runs (see `portok hosts`)
    #[arg(long, env = "PORTOK_SYNC_HOSTS")]
    pub sync_hosts: bool,
    /// Also serve names under this suffix (repeatable, or PORTOK_TLD=test,dev.example.com):
    /// with `--tld test`, `portok run api --tld test` serves https://api.test
    #[arg(
        long = "tld",
        value_name = "SUFFIX",
        env = "PORTOK_TLD",
        value_delimiter = ','
    )]
    pub tlds: Vec<String>,
    #[command(flatten)]
    pub lan: LanArgs,
    #[command(flatten)]
    pub docker: DockerArgs,
}

/// Containers as routes (see docs/containers.md).
#[derive(Debug, Args, Clone, Default)]
pub struct DockerArgs {
    /// Do not route Docker containers (also PORTOK_DOCKER=0)
    #[arg(long)]
    pub no_docker: bool,
    /// Also route containers with no portok label that are not Compose services, at their
    /// container name
    #[arg(long, env = "PORTOK_DOCKER_ALL", value_parser = clap::builder::FalseyValueParser::new())]
    pub docker_all: bool,
}

impl DockerArgs {
    /// Whether the daemon follows the engine: unless `--no-docker` or PORTOK_DOCKER=0.
    pub fn enabled(&self) -> bool {
        let env = std::env::var("PORTOK_DOCKER").unwrap_or_default();
        !self.no_docker && !matches!(env.trim(), "0" | "false" | "no" | "off")
    }

    pub fn to_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.no_docker {
            v.push("--no-docker".into());
        }
        if self.docker_all {
            v.push("--docker-all".into());
        }
        v
    }
}

/// Sharing with other machines.
#[derive(Debug, Args, Clone, Default)]
pub struct LanArgs {
    /// Also listen on this machine's network addresses, for the routes shared with
    /// `portok share NAME` (no other route, and not the dashboard, answers there)
    #[arg(long, env = "PORTOK_LAN", value_parser = clap::builder::FalseyValueParser::new())]
    pub lan: bool,
    /// Only this interface's addresses (repeatable; implies --lan)
    #[arg(long, value_name = "NAME")]
    pub lan_interface: Vec<String>,
}

impl LanArgs {
    /// None: loopback only; Some(interfaces): --lan (every interface when empty).
    pub fn interfaces(&self) -> Option<Vec<String>> {
        (self.lan || !self.lan_interface.is_empty()).then(|| self.lan_interface.clone())
    }

    pub fn to_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.lan {
            v.push("--lan".into());
        }
        for i in &self.lan_interface {
            v.extend(["--lan-interface".into(), i.clone()]);
        }
        v
    }
}

/// Deadlines and limits of the daemon: each limit's flag from the proxy's
/// [`crate::proxy::LIMIT_FLAGS`], and what the metrics and the inspector keep.
#[derive(Debug, Args, Clone)]
pub struct LimitArgs {
    #[command(flatten)]
    pub limits: LimitFlags,
    /// Do not count requests per route (only to measure what counting costs)
    #[arg(long)]
    pub no_metrics: bool,
    /// Keep no requests for the inspector (to measure what it costs)
    #[arg(long)]
    pub no_inspect: bool,
    /// Requests the inspector keeps per route
    #[arg(long, value_name = "N", default_value_t = crate::inspect::DEFAULT_CAPACITY)]
    pub inspect_capacity: usize,
}

impl LimitArgs {
    /// As daemon arguments, only where they differ from the defaults.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = self.limits.to_args();
        if self.no_metrics {
            v.push("--no-metrics".into());
        }
        if self.no_inspect {
            v.push("--no-inspect".into());
        }
        if self.inspect_capacity != crate::inspect::DEFAULT_CAPACITY {
            v.extend([
                "--inspect-capacity".into(),
                self.inspect_capacity.to_string(),
            ]);
        }
        v
    }

    pub fn to_limits(&self) -> crate::proxy::Limits {
        (*self.limits.0).clone()
    }
}

/// The proxy's limits as flags, built from [`crate::proxy::LIMIT_FLAGS`] (clap's derive
/// cannot read a table, so these two traits are written out).
#[derive(Debug, Clone, Default)]
pub struct LimitFlags(pub Box<crate::proxy::Limits>);

impl LimitFlags {
    /// `--FLAG VALUE` for each limit that differs from the default.
    fn to_args(&self) -> Vec<String> {
        let default = crate::proxy::Limits::default();
        crate::proxy::LIMIT_FLAGS
            .iter()
            .filter(|f| (f.get)(&self.0) != (f.get)(&default))
            .flat_map(|f| [format!("--{}", f.flag), (f.get)(&self.0)])
            .collect()
    }
}

impl clap::FromArgMatches for LimitFlags {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = LimitFlags::default();
        flags.update_from_arg_matches(m)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        for f in &crate::proxy::LIMIT_FLAGS {
            if let Some(v) = m.get_one::<String>(f.flag) {
                (f.set)(&mut self.0, v).map_err(|e| {
                    clap::Error::raw(
                        clap::error::ErrorKind::InvalidValue,
                        format!("invalid value for --{}: {e}\n", f.flag),
                    )
                })?;
            }
        }
        Ok(())
    }
}

impl clap::Args for LimitFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let default = crate::proxy::Limits::default();
        crate::proxy::LIMIT_FLAGS.iter().fold(cmd, |cmd, f| {
            cmd.arg(
                clap::Arg::new(f.flag)
                    .long(f.flag)
                    .value_name(f.value_name)
                    .help(f.help)
                    .default_value((f.get)(&default)),
            )
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
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

/// `portok alias`: the route flags are run's ([`RouteFlags`]), four of them worded for an
/// alias here.
#[derive(Debug, Args)]
#[command(
    mut_arg("force", |a| a.help("Take the name even if a running app owns it")),
    mut_arg("reload", |a| a.help("Live reload for this alias's HTML pages (see `portok run --reload`)")),
    mut_arg("tcp", |a| a.help("A TCP route: listen on 127.0.0.1:LISTEN_PORT and relay every connection to PORT")),
    mut_arg("proxy_protocol", |a| a.help("TCP routes: send a PROXY protocol v1 header first, so the app sees the client's address")),
)]
pub struct AliasArgs {
    /// App name: `api` becomes api.localhost
    pub name: String,
    /// The loopback port the server listens on
    #[arg(required_unless_present = "remove")]
    pub port: Option<u16>,
    /// Remove the alias instead
    #[arg(long, conflicts_with = "port")]
    pub remove: bool,
    #[command(flatten)]
    pub route: RouteFlags,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    #[arg(long)]
    pub port: u16,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Keep the hosts file's portok block in step with the routes (a daemon auto-started
    /// with PORTOK_SYNC_HOSTS=1 in its environment gets it from there)
    #[arg(long, env = "PORTOK_SYNC_HOSTS")]
    pub sync_hosts: bool,
    /// Suffixes served besides .localhost
    #[arg(
        long = "tld",
        value_name = "SUFFIX",
        env = "PORTOK_TLD",
        value_delimiter = ','
    )]
    pub tlds: Vec<String>,
    #[command(flatten)]
    pub lan: LanArgs,
    #[command(flatten)]
    pub docker: DockerArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags' defaults are the proxy's: nothing to pass on, and the same limits back.
    #[test]
    fn limit_flags_default_to_the_proxys_limits() {
        let start = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Proxy(ProxyCmd::Start(start)) => start,
            _ => panic!("proxy start"),
        };
        let d = start(&["portok", "proxy", "start"]).limits;
        assert!(d.to_args().is_empty(), "{:?}", d.to_args());
        let l = d.to_limits();
        let want = crate::proxy::Limits::default();
        assert_eq!(
            (l.handshake, l.header_read, l.idle, l.connect),
            (want.handshake, want.header_read, want.idle, want.connect)
        );
        assert_eq!(
            (l.max_header_bytes, l.max_connections, l.max_inflight),
            (
                want.max_header_bytes,
                want.max_connections,
                want.max_inflight
            )
        );
        let changed = start(&["portok", "proxy", "start", "--max-inflight", "9"]).limits;
        assert_eq!(changed.to_args(), ["--max-inflight", "9"]);
        assert_eq!(changed.to_limits().max_inflight, 9);
        let bad = Cli::try_parse_from(["portok", "proxy", "start", "--idle-timeout", "soon"]);
        let err = bad.unwrap_err().to_string();
        assert!(
            err.contains("--idle-timeout") && err.contains("seconds"),
            "{err}"
        );
    }
}
