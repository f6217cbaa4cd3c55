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
        let key = normalize_key(raw_key);
        let ty = |expected| ConfigError::Type {
            file: file.into(),
            key: raw_key.clone(),
            expected,
            found: kind(v),
        };
        let bad = |why: String| ConfigError::Value {
            file: file.into(),
            key: raw_key.clone(),
            why,
        };
        let string = || v.as_str().map(String::from).ok_or_else(|| ty("a string"));
        let strings = |expected| match v {
            Value::String(s) => Ok(vec![s.clone()]),
            Value::Array(a) => a
                .iter()
                .map(|x| x.as_str().map(String::from).ok_or_else(|| ty(expected)))
                .collect(),
            _ => Err(ty(expected)),
        };
        let int = |max: u64| -> Result<u64, ConfigError> {
            let n = v.as_u64().ok_or_else(|| ty("a whole number"))?;
            if n > max {
                return Err(bad(format!("is {n}, above the maximum of {max}")));
            }
            Ok(n)
        };
        let secs = || -> Result<f64, ConfigError> {
            let n = v.as_f64().ok_or_else(|| ty("a number of seconds"))?;
            if !(0.0..=86_400.0).contains(&n) {
                return Err(bad(format!("is {n}; give 0 to 86400 seconds")));
            }
            Ok(n)
        };
        match key.as_str() {
            "name" => {
                let n = string()?;
                crate::names::hostname_for(&n).map_err(|e| bad(format!("is not usable: {e}")))?;
                c.name = Some(n);
            }
            "command" => {
                let cmd = match v {
                    Value::String(s) => split_command(s),
                    _ => strings("a string or a list of strings")?,
                };
                if cmd.iter().all(|s| s.trim().is_empty()) {
                    return Err(bad("is empty; give the command that starts the app".into()));
                }
                c.command = Some(cmd);
            }
            "health" => {
                let h = string()?;
                if !h.starts_with('/') {
                    return Err(bad(format!("is {h:?}; a health path starts with '/'")));
                }
                c.health = Some(h);
            }
            "watch" => match v {
                Value::Bool(false) => c.no_watch = true,
                Value::Bool(true) => {}
                _ => {
                    c.watch = Some(
                        strings("a path, a list of paths, or false")?
                            .into_iter()
                            .map(PathBuf::from)
                            .collect(),
                    )
                }
            },
            "ignore" => c.ignore = Some(strings("a glob or a list of globs")?),
            "debounce" => c.debounce = Some(int(60_000)?),
            "drain" => c.drain = Some(secs()?),
            "ready_timeout" => c.ready_timeout = Some(secs()?),
            "rollback_window" => c.rollback_window = Some(secs()?),
            "kill_timeout" => c.kill_timeout = Some(secs()?),
            "hold" => c.hold = Some(int(86_400)?),
            "app_port" | "tcp" => {
                let p = int(65_535)?;
                if p == 0 {
                    return Err(bad("is 0; give a port from 1 to 65535".into()));
                }
                if key == "tcp" {
                    c.tcp = Some(p as u16);
                } else {
                    c.app_port = Some(p as u16);
                }
            }
            "instances" => {
                let n = int(64)?;
                if n == 0 {
                    return Err(bad("is 0; at least one instance runs".into()));
                }
                c.instances = Some(n as u32);
            }
            "reload" => c.reload = Some(v.as_bool().ok_or_else(|| ty("true or false"))?),
            "lazy" => c.lazy = Some(v.as_bool().ok_or_else(|| ty("true or false"))?),
            "share" => c.share = Some(v.as_bool().ok_or_else(|| ty("true or false"))?),
            "watch_all" => c.watch_all = Some(v.as_bool().ok_or_else(|| ty("true or false"))?),
            "inspect_bodies" => {
                c.inspect_bodies = Some(v.as_bool().ok_or_else(|| ty("true or false"))?)
            }
            "idle_stop" => {
                let d = match v {
                    Value::String(s) => crate::ui::parse_duration(s).map_err(bad)?,
                    _ => std::time::Duration::from_secs(int(86_400 * 30)?),
                };
                if d.is_zero() {
                    return Err(bad(
                        "is 0; give how long an app may sit idle, e.g. \"15m\"".into()
                    ));
                }
                c.idle_stop = Some(d);
            }
            "env" => {
                let Value::Object(vars) = v else {
                    return Err(ty("a table of NAME = \"value\""));
                };
                for (k, val) in vars {
                    let val = match val {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        other => {
                            return Err(bad(format!(
                                "has {k} = {}; give a string, a number or a boolean",
                                kind(other)
                            )))
                        }
                    };
                    c.env.push((k.clone(), val));
                }
            }
            "apps" | "app" if !app => c.apps = apps::parse(file, v)?,
            "dir" if app => c.dir = Some(PathBuf::from(string()?)),
            "depends_on" if app => c.depends_on = strings("an app name or a list of app names")?,
            _ => c.warnings.push(format!(
                "{file}: unknown key `{raw_key}` is ignored (known keys: {})",
                if app {
                    [KEYS, APP_KEYS].concat()
                } else {
                    KEYS.to_vec()
                }
                .join(", ")
            )),
        }
    }
    Ok(c)
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
