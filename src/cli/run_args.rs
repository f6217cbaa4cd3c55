//! The options of `portok run` (and of `portok add`, which registers a run for later),
//! with how the project's settings fill what the command line left out.

use clap::Args;

/// Options of `portok run`. Durations are in seconds (fractions allowed). Options a
/// portok.toml may also set are `Option`s, so "not given" can be told from "given": the
/// defaults are applied by the accessors below, after the project's settings.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// App name (default: portok.toml's `name`, else PKG.WORKSPACE for a Cargo or npm
    /// workspace member, else the package, the git repository or the folder)
    pub name: Option<String>,
    /// In a linked git worktree, do not put the branch in front of the name
    #[arg(long)]
    pub no_worktree: bool,
    /// Register the name under this suffix instead of .localhost (`--tld test`: NAME.test);
    /// the proxy serves it (`proxy start --tld test`, or PORTOK_TLD)
    #[arg(long, value_name = "SUFFIX")]
    pub tld: Option<String>,
    /// Fixed app port instead of a random one in 4000-4999 (redeploys then stop before starting)
    #[arg(long, env = "PORTOK_APP_PORT", value_name = "N")]
    pub app_port: Option<u16>,
    /// Ready only when this path answers 2xx/3xx (default: any HTTP answer on /); `grpc`:
    /// when gRPC's health service answers SERVING
    #[arg(long, value_name = "PATH")]
    pub health: Option<String>,
    /// How long a generation may take to become ready [default: 120]
    #[arg(long, value_name = "SECS")]
    pub ready_timeout: Option<f64>,
    /// How long non-browser requests wait for a starting app before a 503 [default: 30]
    #[arg(long, value_name = "SECS")]
    pub hold: Option<u64>,
    /// Watch these paths instead of the current folder (repeatable)
    #[arg(long, value_name = "PATH")]
    pub watch: Vec<std::path::PathBuf>,
    /// Ignore changes to paths matching this glob (repeatable, gitignore syntax)
    #[arg(long, value_name = "GLOB")]
    pub ignore: Vec<String>,
    /// Do not watch files; exit when the app exits
    #[arg(long)]
    pub no_watch: bool,
    /// Also redeploy for what apps and dev tools write (logs, databases, __pycache__,
    /// dist, .next...), which portok skips by default
    #[arg(long)]
    pub watch_all: bool,
    /// Quiet period that merges a burst of file events [default: 300]
    #[arg(long, value_name = "MS")]
    pub debounce: Option<u64>,
    /// Keep the previous generation this long after a switch, to roll back if the new one
    /// dies (0: off) [default: 5]
    #[arg(long, value_name = "SECS")]
    pub rollback_window: Option<f64>,
    /// Longest wait, from the switch, for the old generation's requests to finish [default: 10]
    #[arg(long, value_name = "SECS")]
    pub drain: Option<f64>,
    #[command(flatten)]
    pub route: RouteFlags,
    /// Run N copies of the app (PORTOK_INSTANCE=0..N-1), each on its own port; requests
    /// (and TCP connections) go to the least busy, redeploys replace one at a time
    /// [default: 1]
    #[arg(long, value_name = "N")]
    pub instances: Option<u32>,
    /// Time between SIGTERM and SIGKILL when stopping a generation [default: 5]
    #[arg(long, value_name = "SECS")]
    pub kill_timeout: Option<f64>,
    /// Run the app NAME of portok.toml's [apps.NAME] tables, with its settings and in its dir
    #[arg(long, value_name = "NAME")]
    pub app: Option<String>,
    /// Start the app on the first request instead of now, and stop it when idle
    #[arg(long)]
    pub lazy: bool,
    /// With --lazy: stop after this long with no request (90, 30s, 15m, 1h) [default: 15m]
    #[arg(long, value_name = "DURATION", value_parser = crate::ui::parse_duration)]
    pub idle_stop: Option<std::time::Duration>,
    /// Set an environment variable for the app (repeatable)
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// The request inspector keeps the first 64 KiB of each request and response body
    #[arg(long)]
    pub inspect_bodies: bool,
    /// The command and its arguments (default: portok.toml's `command`)
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// What a route is, beyond its port: the flags `portok run` and `portok alias` share, declared
/// once. The help here is run's; [`crate::cli::AliasArgs`] words four of them for an alias.
#[derive(Debug, Args, Clone)]
pub struct RouteFlags {
    /// Take the name from another running `portok run` (it is stopped)
    #[arg(long)]
    pub force: bool,
    /// Live reload: browsers showing this app's pages reload after each redeploy and show
    /// failed builds in an overlay
    #[arg(long)]
    pub reload: bool,
    /// A TCP app: the daemon listens on 127.0.0.1:LISTEN_PORT and relays to the live
    /// generation; ready means it accepts a connection (unless --health)
    #[arg(long, value_name = "LISTEN_PORT")]
    pub tcp: Option<u16>,
    /// TCP apps: send a PROXY protocol v1 header first
    #[arg(long, requires = "tcp")]
    pub proxy_protocol: bool,
    /// Reachable from other machines when the proxy runs with --lan (see `portok share`)
    #[arg(long)]
    pub share: bool,
    /// How portok speaks to the app: h2 (HTTP/2 with prior knowledge: gRPC and other
    /// HTTP/2-only servers) or http1 [default: http1, or h2 when the app answers only that]
    #[arg(long, value_name = "PROTOCOL", value_parser = parse_upstream)]
    pub upstream: Option<crate::routes::Upstream>,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// App name (NAME.localhost)
    pub name: String,
    /// The folder the app runs in [default: the current folder]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
    /// Stop after this long with no request (90, 30s, 15m, 1h) [default: 15m]
    #[arg(long, value_name = "DURATION", value_parser = crate::ui::parse_duration)]
    pub idle_stop: Option<std::time::Duration>,
    /// Ready only when this path answers 2xx/3xx
    #[arg(long, value_name = "PATH")]
    pub health: Option<String>,
    /// How long non-browser requests wait for the app to start [default: 30]
    #[arg(long, value_name = "SECS")]
    pub hold: Option<u64>,
    /// Set an environment variable for the app (repeatable)
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Redeploy on changes while it runs (off by default for added apps)
    #[arg(long)]
    pub watch: bool,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

fn parse_upstream(s: &str) -> Result<crate::routes::Upstream, String> {
    crate::routes::Upstream::parse(s).ok_or_else(|| {
        format!("{s:?} is not a protocol: give h2 (HTTP/2-only apps, e.g. gRPC) or http1")
    })
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

impl RunArgs {
    /// The project's settings (portok.toml...) where no flag was given: flags win. Lists
    /// given on the command line replace the file's lists rather than adding to them.
    pub fn fill_from(&mut self, config: &crate::config::Config) {
        if self.command.is_empty() {
            if let Some(c) = &config.command {
                self.command = c.clone();
            }
        }
        self.health = self.health.take().or_else(|| config.health.clone());
        if self.watch.is_empty() {
            self.watch = config.watch.clone().unwrap_or_default();
        }
        self.no_watch |= config.no_watch && self.watch.is_empty();
        if self.ignore.is_empty() {
            self.ignore = config.ignore.clone().unwrap_or_default();
        }
        self.debounce = self.debounce.or(config.debounce);
        self.drain = self.drain.or(config.drain);
        self.ready_timeout = self.ready_timeout.or(config.ready_timeout);
        self.rollback_window = self.rollback_window.or(config.rollback_window);
        self.kill_timeout = self.kill_timeout.or(config.kill_timeout);
        self.hold = self.hold.or(config.hold);
        self.app_port = self.app_port.or(config.app_port);
        self.route.reload |= config.reload.unwrap_or(false);
        self.route.tcp = self.route.tcp.or(config.tcp);
        self.instances = self.instances.or(config.instances);
        self.lazy |= config.lazy.unwrap_or(false);
        self.inspect_bodies |= config.inspect_bodies.unwrap_or(false);
        self.route.share |= config.share.unwrap_or(false);
        self.watch_all |= config.watch_all.unwrap_or(false);
        self.route.upstream = self.route.upstream.or(config.upstream);
        self.idle_stop = self.idle_stop.or(config.idle_stop);
        // The flags' variables win: they come last.
        let flags = std::mem::take(&mut self.env);
        self.env = config.env.iter().cloned().chain(flags).collect();
    }

    /// How long a lazy app may sit idle; None when it is not lazy.
    pub fn idle_stop(&self) -> Option<std::time::Duration> {
        (self.lazy || self.idle_stop.is_some()).then(|| {
            self.idle_stop
                .unwrap_or(std::time::Duration::from_secs(15 * 60))
        })
    }

    pub fn ready_timeout(&self) -> f64 {
        self.ready_timeout.unwrap_or(120.0)
    }
    pub fn hold(&self) -> u64 {
        self.hold.unwrap_or(30)
    }
    pub fn instances(&self) -> u32 {
        self.instances.unwrap_or(1)
    }
    pub fn debounce(&self) -> u64 {
        self.debounce.unwrap_or(300)
    }
    pub fn rollback_window(&self) -> f64 {
        self.rollback_window.unwrap_or(5.0)
    }
    pub fn drain(&self) -> f64 {
        self.drain.unwrap_or(10.0)
    }
    pub fn kill_timeout(&self) -> f64 {
        self.kill_timeout.unwrap_or(5.0)
    }
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
    "--tld",
    "--tcp",
    "--instances",
    "--app",
    "--idle-stop",
    "--env",
    "--upstream",
];

#[cfg(test)]
mod tests {
    use clap::Args;

    /// [`super::RUN_VALUE_FLAGS`] is every option of `portok run` that takes a value, the
    /// flattened route flags' too: `portok NAME --tcp 5432 CMD` must not take 5432 for CMD.
    #[test]
    fn run_value_flags_are_the_options_that_take_a_value() {
        let cmd = super::RunArgs::augment_args(clap::Command::new("run"));
        let mut taking: Vec<String> = cmd
            .get_arguments()
            .filter(|a| !a.is_positional() && a.get_action().takes_values())
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect();
        let mut listed: Vec<String> = super::RUN_VALUE_FLAGS
            .iter()
            .map(|f| f.to_string())
            .collect();
        taking.sort();
        listed.sort();
        assert_eq!(taking, listed);
    }
}
