//! The project's portok settings: `portok.toml` in the folder, else a
//! `[package.metadata.portok]` table in its Cargo.toml, else a `"portok"` key in its
//! package.json. Command-line flags win over them; they win over inference.
//!
//! Keys may be written snake_case, kebab-case or camelCase (`ready_timeout`,
//! `ready-timeout`, `readyTimeout`), so each file can follow its own conventions. An
//! unknown key is a warning (a typo must not stop the app); a wrong type or value is an
//! error naming the file, the key and what it should be.

mod apps;

pub use apps::order;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Every key, in the order the docs list them.
pub const KEYS: &[&str] = &[
    "name",
    "command",
    "health",
    "watch",
    "watch_all",
    "upstream",
    "ignore",
    "debounce",
    "drain",
    "ready_timeout",
    "rollback_window",
    "kill_timeout",
    "hold",
    "app_port",
    "reload",
    "instances",
    "tcp",
    "lazy",
    "idle_stop",
    "env",
    "inspect_bodies",
    "share",
    "apps",
];

/// Keys only an app of `[apps.NAME]` has.
pub const APP_KEYS: &[&str] = &["dir", "depends_on"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path} is not valid TOML (fix it, or move it away, and run again)")]
    Toml {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{file}: `{key}` must be {expected}, not {found}; fix it in {file} and run again")]
    Type {
        file: String,
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{file}: `{key}` {why}; fix it in {file} and run again")]
    Value {
        file: String,
        key: String,
        why: String,
    },
    #[error("{file}: the apps depend on each other in a cycle ({cycle}); remove one of those `depends_on` entries")]
    Cycle { file: String, cycle: String },
}

/// What the project's settings say; None where they say nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// Where the settings came from, as the messages name it (`portok.toml`,
    /// `Cargo.toml [package.metadata.portok]`); None when there are none.
    pub source: Option<String>,
    pub name: Option<String>,
    pub command: Option<Vec<String>>,
    pub health: Option<String>,
    /// Relative to the project folder.
    pub watch: Option<Vec<PathBuf>>,
    /// `watch = false`: do not watch files.
    pub no_watch: bool,
    pub ignore: Option<Vec<String>>,
    pub debounce: Option<u64>,
    pub drain: Option<f64>,
    pub ready_timeout: Option<f64>,
    pub rollback_window: Option<f64>,
    pub kill_timeout: Option<f64>,
    pub hold: Option<u64>,
    pub app_port: Option<u16>,
    pub reload: Option<bool>,
    /// Generations served side by side (another issue acts on it).
    pub instances: Option<u32>,
    /// A raw TCP port to forward.
    pub tcp: Option<u16>,
    /// Start on the first request (`lazy = true`); stop after `idle_stop` without one.
    pub lazy: Option<bool>,
    pub idle_stop: Option<std::time::Duration>,
    /// Extra environment for the app.
    pub env: Vec<(String, String)>,
    /// The inspector keeps bodies.
    pub inspect_bodies: Option<bool>,
    /// Also redeploy for what apps and dev tools write (`--watch-all`).
    pub watch_all: Option<bool>,
    /// How portok speaks to the app (`--upstream`).
    pub upstream: Option<crate::routes::Upstream>,
    /// Reachable from the LAN (`--share`).
    pub share: Option<bool>,
    /// `[apps.NAME]`: the folder the app runs in, relative to the project.
    pub dir: Option<PathBuf>,
    /// `[apps.NAME]`: apps that must be ready before this one starts.
    pub depends_on: Vec<String>,
    /// The project's apps (`[apps.NAME]` or `[[app]]`), in the file's order.
    pub apps: Vec<App>,
    /// Unknown keys and shadowed sources, for the caller to print.
    pub warnings: Vec<String>,
}

/// One of the project's apps: its name (the table's key) and its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub name: String,
    pub config: Config,
}

/// Read the settings of the project in `dir`. No settings is not an error.
pub fn load(dir: &Path) -> Result<Config, ConfigError> {
    let config = load_file(dir)?;
    apps::check(&config, dir)?;
    Ok(config)
}

fn load_file(dir: &Path) -> Result<Config, ConfigError> {
    let portok_toml = dir.join("portok.toml");
    let cargo = read_cargo_table(dir);
    let npm = read_npm_key(dir);
    let mut shadowed = Vec::new();
    let (file, table) = if portok_toml.exists() {
        let text = std::fs::read_to_string(&portok_toml).unwrap_or_default();
        let table: toml::Table = text.parse().map_err(|source| ConfigError::Toml {
            path: portok_toml.clone(),
            source,
        })?;
        if cargo.is_some() {
            shadowed.push("Cargo.toml [package.metadata.portok]");
        }
        if npm.is_some() {
            shadowed.push("package.json \"portok\"");
        }
        (
            "portok.toml".to_string(),
            serde_json::to_value(table).unwrap_or(Value::Null),
        )
    } else if let Some(v) = cargo {
        if npm.is_some() {
            shadowed.push("package.json \"portok\"");
        }
        ("Cargo.toml [package.metadata.portok]".to_string(), v)
    } else if let Some(v) = npm {
        ("package.json \"portok\"".to_string(), v)
    } else {
        return Ok(Config::default());
    };
    let mut config = parse(&file, &table)?;
    for s in shadowed {
        config.warnings.push(format!(
            "ignoring the settings in {s}: {file} takes precedence"
        ));
    }
    Ok(config)
}

/// Cargo.toml's `[package.metadata.portok]`. A Cargo.toml that does not parse is left to
/// cargo to report.
fn read_cargo_table(dir: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join("Cargo.toml")).ok()?;
    let t: toml::Table = text.parse().ok()?;
    let portok = t.get("package")?.get("metadata")?.get("portok")?;
    serde_json::to_value(portok).ok()
}

fn read_npm_key(dir: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join("package.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v.get("portok").cloned()
}

/// `readyTimeout`, `ready-timeout` -> `ready_timeout`; `tcp_port` -> `tcp`.
fn normalize_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else if c == '-' {
            out.push('_');
        } else {
            out.push(c);
        }
    }
    match out.as_str() {
        "tcp_port" => "tcp".into(),
        _ => out,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a fraction",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

/// Checks one file's settings. `file` is how messages name it.
pub fn parse(file: &str, value: &Value) -> Result<Config, ConfigError> {
    parse_table(file, value, false)
}

/// `app`: the table is one of `[apps.NAME]`, which may also say `dir` and `depends_on`.
fn parse_table(file: &str, value: &Value, app: bool) -> Result<Config, ConfigError> {
    let Value::Object(map) = value else {
        return Err(ConfigError::Type {
            file: file.into(),
            key: "portok".into(),
            expected: "a table of settings",
            found: kind(value),
        });
    };
    let mut c = Config {
        source: Some(file.to_string()),
        ..Config::default()
    };
    for (raw_key, v) in map {
        let s = Setting {
            file,
            key: raw_key,
            v,
        };
        if !set(&mut c, &normalize_key(raw_key), &s, app)? {
            c.warnings.push(format!(
                "{file}: unknown key `{raw_key}` is ignored (known keys: {})",
                if app {
                    [KEYS, APP_KEYS].concat()
                } else {
                    KEYS.to_vec()
                }
                .join(", ")
            ));
        }
    }
    Ok(c)
}

/// Set `key` (normalized) of `c` from `s`; false when it is not a key of this table.
fn set(c: &mut Config, key: &str, s: &Setting, app: bool) -> Result<bool, ConfigError> {
    match key {
        "name" => c.name = Some(s.name()?),
        "command" => c.command = Some(s.command()?),
        "health" => c.health = Some(s.health()?),
        "watch" => match s.v {
            Value::Bool(false) => c.no_watch = true,
            Value::Bool(true) => {}
            _ => {
                c.watch = Some(
                    s.strings("a path, a list of paths, or false")?
                        .into_iter()
                        .map(PathBuf::from)
                        .collect(),
                )
            }
        },
        "ignore" => c.ignore = Some(s.strings("a glob or a list of globs")?),
        "debounce" => c.debounce = Some(s.int(60_000)?),
        "drain" => c.drain = Some(s.secs()?),
        "ready_timeout" => c.ready_timeout = Some(s.secs()?),
        "rollback_window" => c.rollback_window = Some(s.secs()?),
        "kill_timeout" => c.kill_timeout = Some(s.secs()?),
        "hold" => c.hold = Some(s.int(86_400)?),
        "app_port" => c.app_port = Some(s.port()?),
        "tcp" => c.tcp = Some(s.port()?),
        "instances" => c.instances = Some(s.instances()?),
        "reload" => c.reload = Some(s.boolean()?),
        "lazy" => c.lazy = Some(s.boolean()?),
        "share" => c.share = Some(s.boolean()?),
        "watch_all" => c.watch_all = Some(s.boolean()?),
        "upstream" => c.upstream = Some(s.upstream()?),
        "inspect_bodies" => c.inspect_bodies = Some(s.boolean()?),
        "idle_stop" => c.idle_stop = Some(s.idle_stop()?),
        "env" => c.env.extend(s.env()?),
        "apps" | "app" if !app => c.apps = apps::parse(s.file, s.v)?,
        "dir" if app => c.dir = Some(PathBuf::from(s.string()?)),
        "depends_on" if app => c.depends_on = s.strings("an app name or a list of app names")?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// One `key = value` of a settings table, and how its errors name it.
struct Setting<'a> {
    file: &'a str,
    /// The key as written.
    key: &'a str,
    v: &'a Value,
}

impl Setting<'_> {
    /// The value is not of the type `expected`.
    fn ty(&self, expected: &'static str) -> ConfigError {
        ConfigError::Type {
            file: self.file.into(),
            key: self.key.into(),
            expected,
            found: kind(self.v),
        }
    }

    /// The value is of the right type, but `why` it will not do.
    fn bad(&self, why: String) -> ConfigError {
        ConfigError::Value {
            file: self.file.into(),
            key: self.key.into(),
            why,
        }
    }

    fn string(&self) -> Result<String, ConfigError> {
        self.v
            .as_str()
            .map(String::from)
            .ok_or_else(|| self.ty("a string"))
    }

    /// A string or a list of strings.
    fn strings(&self, expected: &'static str) -> Result<Vec<String>, ConfigError> {
        match self.v {
            Value::String(s) => Ok(vec![s.clone()]),
            Value::Array(a) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(String::from)
                        .ok_or_else(|| self.ty(expected))
                })
                .collect(),
            _ => Err(self.ty(expected)),
        }
    }

    fn int(&self, max: u64) -> Result<u64, ConfigError> {
        let n = self.v.as_u64().ok_or_else(|| self.ty("a whole number"))?;
        if n > max {
            return Err(self.bad(format!("is {n}, above the maximum of {max}")));
        }
        Ok(n)
    }

    fn secs(&self) -> Result<f64, ConfigError> {
        let n = self
            .v
            .as_f64()
            .ok_or_else(|| self.ty("a number of seconds"))?;
        if !(0.0..=86_400.0).contains(&n) {
            return Err(self.bad(format!("is {n}; give 0 to 86400 seconds")));
        }
        Ok(n)
    }

    fn boolean(&self) -> Result<bool, ConfigError> {
        self.v.as_bool().ok_or_else(|| self.ty("true or false"))
    }

    fn name(&self) -> Result<String, ConfigError> {
        let n = self.string()?;
        crate::names::hostname_for(&n).map_err(|e| self.bad(format!("is not usable: {e}")))?;
        Ok(n)
    }

    /// A command: a list of words, or one string (split as [`split_command`] does).
    fn command(&self) -> Result<Vec<String>, ConfigError> {
        let cmd = match self.v {
            Value::String(s) => split_command(s),
            _ => self.strings("a string or a list of strings")?,
        };
        if cmd.iter().all(|s| s.trim().is_empty()) {
            return Err(self.bad("is empty; give the command that starts the app".into()));
        }
        Ok(cmd)
    }

    /// `upstream`: "h2" or "http1".
    fn upstream(&self) -> Result<crate::routes::Upstream, ConfigError> {
        let u = self.string()?;
        crate::routes::Upstream::parse(&u).ok_or_else(|| {
            self.bad(format!(
                "is {u:?}; give \"h2\" (an HTTP/2-only app, e.g. gRPC) or \"http1\""
            ))
        })
    }

    fn health(&self) -> Result<String, ConfigError> {
        let h = self.string()?;
        if !h.starts_with('/') && h != crate::probe::GRPC_HEALTH {
            return Err(self.bad(format!(
                "is {h:?}; a health path starts with '/' (or \"grpc\" for gRPC's health service)"
            )));
        }
        Ok(h)
    }

    /// `app_port` and `tcp`: 1 to 65535.
    fn port(&self) -> Result<u16, ConfigError> {
        let p = self.int(65_535)?;
        if p == 0 {
            return Err(self.bad("is 0; give a port from 1 to 65535".into()));
        }
        Ok(p as u16)
    }

    fn instances(&self) -> Result<u32, ConfigError> {
        let n = self.int(64)?;
        if n == 0 {
            return Err(self.bad("is 0; at least one instance runs".into()));
        }
        Ok(n as u32)
    }

    /// A duration (`"15m"`) or whole seconds, not 0.
    fn idle_stop(&self) -> Result<std::time::Duration, ConfigError> {
        let d = match self.v {
            Value::String(s) => crate::ui::parse_duration(s).map_err(|e| self.bad(e))?,
            _ => std::time::Duration::from_secs(self.int(86_400 * 30)?),
        };
        if d.is_zero() {
            return Err(self.bad("is 0; give how long an app may sit idle, e.g. \"15m\"".into()));
        }
        Ok(d)
    }

    /// `NAME = "value"` pairs; numbers and booleans are taken as their text.
    fn env(&self) -> Result<Vec<(String, String)>, ConfigError> {
        let Value::Object(vars) = self.v else {
            return Err(self.ty("a table of NAME = \"value\""));
        };
        vars.iter()
            .map(|(k, val)| match val {
                Value::String(s) => Ok((k.clone(), s.clone())),
                Value::Number(n) => Ok((k.clone(), n.to_string())),
                Value::Bool(b) => Ok((k.clone(), b.to_string())),
                other => Err(self.bad(format!(
                    "has {k} = {}; give a string, a number or a boolean",
                    kind(other)
                ))),
            })
            .collect()
    }
}

/// A command written as one string: split on spaces when it has no shell syntax (so it is
/// executed directly), else kept whole for `sh -c`.
fn split_command(s: &str) -> Vec<String> {
    let shell = s.chars().any(|c| "|&;<>()$`\\\"'*?[]#~=%{}\n".contains(c));
    if shell {
        vec![s.to_string()]
    } else {
        s.split_whitespace().map(String::from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_every_key_in_any_case_style() {
        let c = parse(
            "portok.toml",
            &json!({
                "name": "api.shop", "command": "cargo run -p api", "health": "/health",
                "watch": ["src", "templates"], "ignore": "*.tmp", "debounce": 150,
                "drain": 2.5, "ready-timeout": 30, "rollbackWindow": 0, "kill_timeout": 1,
                "hold": 5, "appPort": 4100, "reload": true, "instances": 2, "tcp_port": 5432,
                "helth": "/typo"
            }),
        )
        .unwrap();
        assert_eq!(c.name.as_deref(), Some("api.shop"));
        assert_eq!(
            c.command,
            Some(vec![
                "cargo".into(),
                "run".into(),
                "-p".into(),
                "api".into()
            ])
        );
        assert_eq!(c.watch, Some(vec!["src".into(), "templates".into()]));
        assert_eq!(c.ignore, Some(vec!["*.tmp".into()]));
        assert_eq!(c.debounce, Some(150));
        assert_eq!(c.drain, Some(2.5));
        assert_eq!(c.ready_timeout, Some(30.0));
        assert_eq!(c.rollback_window, Some(0.0));
        assert_eq!(c.app_port, Some(4100));
        assert_eq!(c.instances, Some(2));
        assert_eq!(c.tcp, Some(5432));
        assert_eq!(c.reload, Some(true));
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("`helth`"), "{:?}", c.warnings);
    }

    #[test]
    fn wrong_types_and_values_name_file_key_and_expectation() {
        for (v, want) in [
            (
                json!({"debounce": "fast"}),
                "`debounce` must be a whole number, not a string",
            ),
            (
                json!({"app_port": 70000}),
                "`app_port` is 70000, above the maximum of 65535",
            ),
            (json!({"tcp": 0}), "`tcp` is 0"),
            (
                json!({"instances": -1}),
                "`instances` must be a whole number",
            ),
            (
                json!({"command": [1, 2]}),
                "`command` must be a string or a list of strings",
            ),
            (json!({"health": "health"}), "starts with '/'"),
            (json!({"drain": -1}), "`drain` is -1"),
            (json!({"name": "a b"}), "`name` is not usable"),
            (
                json!("cargo run"),
                "`portok` must be a table of settings, not a string",
            ),
        ] {
            let err = parse("portok.toml", &v).unwrap_err().to_string();
            assert!(err.starts_with("portok.toml: "), "{err}");
            assert!(err.contains(want), "{err} lacks {want}");
        }
    }

    #[test]
    fn shell_syntax_keeps_the_command_whole() {
        assert_eq!(split_command("npm run dev"), vec!["npm", "run", "dev"]);
        assert_eq!(
            split_command("cd web && npm run dev"),
            vec!["cd web && npm run dev"]
        );
    }
}
