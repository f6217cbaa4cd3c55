//! A project's apps: `[apps.NAME]` tables (or `[[app]]` entries with a `name`) in
//! portok.toml, each with the settings of one `portok run` plus `dir` and `depends_on`;
//! and the order `portok up` starts them in.

use super::{kind, parse_table, App, Config, ConfigError};
use serde_json::Value;
use std::path::Path;

pub(super) fn parse(file: &str, value: &Value) -> Result<Vec<App>, ConfigError> {
    let entries: Vec<(String, &Value)> = match value {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(list) => {
            list.iter()
                .enumerate()
                .map(|(i, v)| {
                    let name = v.get("name").and_then(Value::as_str).ok_or_else(|| {
                        ConfigError::Value {
                            file: file.into(),
                            key: format!("app[{i}].name"),
                            why: "is missing; each [[app]] needs a name".into(),
                        }
                    })?;
                    Ok((name.to_string(), v))
                })
                .collect::<Result<_, ConfigError>>()?
        }
        other => {
            return Err(ConfigError::Type {
                file: file.into(),
                key: "apps".into(),
                expected: "a table of [apps.NAME] tables",
                found: kind(other),
            })
        }
    };
    let mut apps = Vec::new();
    for (name, v) in entries {
        let label = format!("{file} [apps.{name}]");
        if let Err(e) = crate::names::hostname_for(&name) {
            return Err(ConfigError::Value {
                file: file.into(),
                key: format!("apps.{name}"),
                why: format!("is not a usable app name: {e}"),
            });
        }
        if !v.is_object() {
            return Err(ConfigError::Type {
                file: label,
                key: name,
                expected: "a table of settings",
                found: kind(v),
            });
        }
        let config = parse_table(&label, v, true)?;
        apps.push(App { name, config });
    }
    Ok(apps)
}

/// What cannot be right whatever the command: a `dir` that is not there, a dependency
/// on an app that is not defined, a dependency cycle.
pub(super) fn check(config: &Config, project: &Path) -> Result<(), ConfigError> {
    let file = config
        .source
        .clone()
        .unwrap_or_else(|| "portok.toml".into());
    for app in &config.apps {
        let label = format!("{file} [apps.{}]", app.name);
        if let Some(dir) = &app.config.dir {
            if !project.join(dir).is_dir() {
                return Err(ConfigError::Value {
                    file: label,
                    key: "dir".into(),
                    why: format!(
                        "is {:?}, which is not a folder in {}",
                        dir.display().to_string(),
                        project.display()
                    ),
                });
            }
        }
        for dep in &app.config.depends_on {
            if !config.apps.iter().any(|a| &a.name == dep) {
                return Err(ConfigError::Value {
                    file: label,
                    key: "depends_on".into(),
                    why: format!(
                        "names {dep:?}, which is not an app here (apps: {})",
                        names(&config.apps)
                    ),
                });
            }
            if dep == &app.name {
                return Err(ConfigError::Cycle {
                    file,
                    cycle: format!("{0} -> {0}", app.name),
                });
            }
        }
    }
    order(config, &[]).map(|_| ())
}

fn names(apps: &[App]) -> String {
    apps.iter()
        .map(|a| a.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The apps to start for `wanted` (every app when empty), each after the apps it depends
/// on: `wanted` plus their dependencies, dependencies first.
pub fn order<'a>(config: &'a Config, wanted: &[String]) -> Result<Vec<&'a App>, ConfigError> {
    let file = config
        .source
        .clone()
        .unwrap_or_else(|| "portok.toml".into());
    let find = |name: &str| config.apps.iter().find(|a| a.name == name);
    for w in wanted {
        if find(w).is_none() {
            return Err(ConfigError::Value {
                file,
                key: "apps".into(),
                why: format!(
                    "has no app {w:?} (apps: {}); add [apps.{w}] or pick one of those",
                    names(&config.apps)
                ),
            });
        }
    }
    let roots: Vec<&App> = if wanted.is_empty() {
        config.apps.iter().collect()
    } else {
        wanted.iter().filter_map(|w| find(w)).collect()
    };
    // Depth-first, dependencies first; `path` is the chain being visited, for the cycle.
    fn visit<'a>(
        app: &'a App,
        find: &dyn Fn(&str) -> Option<&'a App>,
        path: &mut Vec<&'a str>,
        out: &mut Vec<&'a App>,
    ) -> Result<(), String> {
        if out.iter().any(|a| a.name == app.name) {
            return Ok(());
        }
        if let Some(at) = path.iter().position(|n| *n == app.name) {
            let mut cycle: Vec<&str> = path[at..].to_vec();
            cycle.push(&app.name);
            return Err(cycle.join(" -> "));
        }
        path.push(&app.name);
        for dep in &app.config.depends_on {
            if let Some(d) = find(dep) {
                visit(d, find, path, out)?;
            }
        }
        path.pop();
        out.push(app);
        Ok(())
    }
    let mut out = Vec::new();
    for app in roots {
        visit(app, &find, &mut Vec::new(), &mut out).map_err(|cycle| ConfigError::Cycle {
            file: file.clone(),
            cycle,
        })?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;
    use serde_json::json;

    fn config(v: Value) -> Config {
        parse("portok.toml", &v).unwrap()
    }

    #[test]
    fn apps_start_after_their_dependencies() {
        let c = config(json!({"apps": {
            "web": {"command": "npm run dev", "depends_on": ["api"], "lazy": false},
            "api": {"command": "cargo run", "dir": "api", "env": {"RUST_LOG": "debug", "N": 2}},
            "docs": {"command": "mkdocs serve", "lazy": true, "idle_stop": "15m"},
        }}));
        let all: Vec<&str> = order(&c, &[])
            .unwrap()
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(all, ["api", "docs", "web"]);
        let web: Vec<&str> = order(&c, &["web".into()])
            .unwrap()
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(web, ["api", "web"]);
        let docs = &c.apps.iter().find(|a| a.name == "docs").unwrap().config;
        assert_eq!(docs.idle_stop, Some(std::time::Duration::from_secs(900)));
        let api = &c.apps.iter().find(|a| a.name == "api").unwrap().config;
        assert_eq!(
            api.env,
            vec![
                ("N".into(), "2".into()),
                ("RUST_LOG".into(), "debug".into())
            ]
        );
        let err = order(&c, &["nope".into()]).unwrap_err().to_string();
        assert!(err.contains("no app \"nope\""), "{err}");
    }

    #[test]
    fn a_cycle_is_named() {
        let c = config(json!({"apps": {
            "a": {"command": "x", "depends_on": "b"},
            "b": {"command": "x", "depends_on": ["c"]},
            "c": {"command": "x", "depends_on": ["a"]},
        }}));
        let err = order(&c, &[]).unwrap_err().to_string();
        assert!(err.contains("a -> b -> c -> a"), "{err}");
    }

    #[test]
    fn bad_app_values_name_file_app_and_key() {
        let err = parse(
            "portok.toml",
            &json!({"apps": {"web": {"idle_stop": "soon"}}}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("portok.toml [apps.web]: `idle_stop`"),
            "{err}"
        );
        let c = config(json!({"apps": {"web": {"command": "x", "depends_on": ["db"]}}}));
        let err = check(&c, Path::new("/")).unwrap_err().to_string();
        assert!(
            err.contains("[apps.web]: `depends_on` names \"db\""),
            "{err}"
        );
        let c = config(json!({"apps": {"web": {"command": "x", "dir": "no/such/dir"}}}));
        let err = check(&c, Path::new("/")).unwrap_err().to_string();
        assert!(
            err.contains("[apps.web]: `dir` is \"no/such/dir\""),
            "{err}"
        );
        let c = config(json!({"apps": {"web": {"command": "x", "helth": "/"}}}));
        assert!(c.apps[0].config.warnings[0].contains("unknown key `helth`"));
    }
}
