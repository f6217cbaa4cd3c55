//! The dev command a project declares, for `portok run` with no command and no
//! portok.toml: package.json's dev or start script, a Procfile's web line, Django's
//! manage.py, a Cargo binary, a Go module, or Rails, in that order. Only files are read;
//! no package manager or toolchain is run.

use std::io;
use std::path::{Path, PathBuf};

/// What the project in `dir` declares as its dev command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// argv to run, e.g. `["npm", "run", "dev"]`.
    pub command: Vec<String>,
    /// Why, in the user's words, e.g. "package.json's dev script".
    pub why: String,
}

/// Why no command could be found.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// Nothing to run: no rule matched.
    #[error("no command to run: found no package.json with a dev or start script, no Procfile with a web: line, no manage.py, no Cargo.toml with a binary, no go.mod and no Gemfile with Rails in {dir}; give the command after `--` (`portok run -- cargo run`) or set `command` in portok.toml")]
    Nothing { dir: PathBuf },
    /// Cargo.toml has several binaries and no default-run, so `cargo run` would refuse.
    #[error("cannot tell which binary to run: {dir}/Cargo.toml has several ({}) and no default-run; pick one with `portok run -- cargo run --bin NAME`, or set `default-run = \"NAME\"` in its [package]", .bins.join(", "))]
    Ambiguous { dir: PathBuf, bins: Vec<String> },
    /// A file is there but cannot be read.
    #[error("cannot read {path}: {source}; make it readable, or give the command after `--` (`portok run -- CMD`)")]
    Io { path: PathBuf, source: io::Error },
    /// package.json does not parse.
    #[error("{path} is not valid JSON ({source}); fix it, or give the command after `--` (`portok run -- CMD`)")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// Cargo.toml does not parse.
    #[error("{path} is not valid TOML ({source}); fix it, or give the command after `--` (`portok run -- CMD`)")]
    Toml {
        path: PathBuf,
        source: toml::de::Error,
    },
}

/// The command the project in `dir` declares; the first rule that matches wins.
// Until `portok run` calls it, the crate-private module would be reported as dead code.
pub fn detect(dir: &Path) -> Result<Detected, DetectError> {
    if let Some(d) = from_package_json(dir)? {
        return Ok(d);
    }
    if let Some(d) = from_procfile(dir)? {
        return Ok(d);
    }
    if dir.join("manage.py").is_file() {
        return Ok(from_manage_py(dir));
    }
    if let Some(d) = from_cargo(dir)? {
        return Ok(d);
    }
    if dir.join("go.mod").is_file() {
        return Ok(found(&["go", "run", "."], "go.mod"));
    }
    if let Some(d) = from_gemfile(dir)? {
        return Ok(d);
    }
    Err(DetectError::Nothing {
        dir: dir.to_path_buf(),
    })
}

fn found(command: &[&str], why: &str) -> Detected {
    Detected {
        command: command.iter().map(|s| s.to_string()).collect(),
        why: why.to_string(),
    }
}

/// The file's text, or None when it does not exist (a missing file is not an error: the
/// rule just does not apply).
fn read(path: &Path) -> Result<Option<String>, DetectError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DetectError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Manager {
    Npm,
    Pnpm,
    Yarn,
    Bun,
}

fn from_package_json(dir: &Path) -> Result<Option<Detected>, DetectError> {
    let path = dir.join("package.json");
    let Some(text) = read(&path)? else {
        return Ok(None);
    };
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| DetectError::Json { path, source })?;
    // An empty script would run nothing, so it does not count.
    let has = |name: &str| {
        json.pointer(&format!("/scripts/{name}"))
            .and_then(|v| v.as_str())
            .is_some_and(|s| !s.trim().is_empty())
    };
    let script = match () {
        _ if has("dev") => "dev",
        _ if has("start") => "start",
        _ => return Ok(None),
    };
    let manager = json
        .get("packageManager")
        .and_then(|v| v.as_str())
        .and_then(manager_named)
        .or_else(|| manager_from_lock(dir))
        .unwrap_or(Manager::Npm);
    let command: &[&str] = match (manager, script) {
        // `npm dev` is not a command, and `npm start` is the usual spelling.
        (Manager::Npm, "start") => &["npm", "start"],
        (Manager::Npm, _) => &["npm", "run", script],
        (Manager::Pnpm, _) => &["pnpm", script],
        (Manager::Yarn, _) => &["yarn", script],
        // `bun dev` would look for a file first; `bun run` always means the script.
        (Manager::Bun, _) => &["bun", "run", script],
    };
    Ok(Some(found(
        command,
        &format!("package.json's {script} script"),
    )))
}

/// The manager in a `packageManager` field such as `pnpm@9.1.0` (corepack's format).
fn manager_named(spec: &str) -> Option<Manager> {
    match spec.split('@').next()?.trim() {
        "npm" => Some(Manager::Npm),
        "pnpm" => Some(Manager::Pnpm),
        "yarn" => Some(Manager::Yarn),
        "bun" => Some(Manager::Bun),
        _ => None,
    }
}

/// The manager whose lock file is nearest, in `dir` or a parent: a workspace member has
/// no lock file of its own, its workspace root does.
fn manager_from_lock(dir: &Path) -> Option<Manager> {
    const LOCKS: &[(&str, Manager)] = &[
        ("pnpm-lock.yaml", Manager::Pnpm),
        ("yarn.lock", Manager::Yarn),
        ("bun.lockb", Manager::Bun),
        ("bun.lock", Manager::Bun),
        ("package-lock.json", Manager::Npm),
    ];
    dir.ancestors().find_map(|d| {
        LOCKS
            .iter()
            .find(|(file, _)| d.join(file).is_file())
            .map(|&(_, m)| m)
    })
}

fn from_procfile(dir: &Path) -> Result<Option<Detected>, DetectError> {
    let Some(text) = read(&dir.join("Procfile"))? else {
        return Ok(None);
    };
    let web = text
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("web:"))
        .map(str::trim)
        .find(|cmd| !cmd.is_empty());
    // One argv element: the line is shell (`$PORT`, `&&`), and portok runs it with `sh -c`.
    Ok(web.map(|cmd| Detected {
        command: vec![cmd.to_string()],
        why: "Procfile's web line".into(),
    }))
}

fn from_manage_py(dir: &Path) -> Detected {
    // The project's virtualenv has Django; the system python3 usually does not.
    let python = [".venv/bin/python", "venv/bin/python"]
        .into_iter()
        .find(|p| dir.join(p).is_file())
        .unwrap_or("python3");
    found(
        &[python, "manage.py", "runserver"],
        "manage.py: Django's runserver",
    )
}

fn from_cargo(dir: &Path) -> Result<Option<Detected>, DetectError> {
    let path = dir.join("Cargo.toml");
    let Some(text) = read(&path)? else {
        return Ok(None);
    };
    let manifest: toml::Table =
        toml::from_str(&text).map_err(|source| DetectError::Toml { path, source })?;
    // A virtual workspace manifest has nothing to run itself.
    let Some(package) = manifest.get("package").and_then(|p| p.as_table()) else {
        return Ok(None);
    };
    let bin = match package.get("default-run").and_then(|v| v.as_str()) {
        Some(name) => name.to_string(),
        None => {
            let mut bins = cargo_bins(dir, &manifest, package);
            match bins.len() {
                // A library: `cargo run` would fail, so let a later rule have it.
                0 => return Ok(None),
                1 => bins.remove(0),
                _ => {
                    return Err(DetectError::Ambiguous {
                        dir: dir.to_path_buf(),
                        bins,
                    })
                }
            }
        }
    };
    Ok(Some(found(
        &["cargo", "run"],
        &format!("Cargo.toml: cargo run runs the binary `{bin}`"),
    )))
}

/// The package's binaries, sorted: its `[[bin]]` entries plus, as cargo infers them,
/// src/main.rs (named after the package), src/bin/NAME.rs and src/bin/NAME/main.rs.
fn cargo_bins(dir: &Path, manifest: &toml::Table, package: &toml::Table) -> Vec<String> {
    let mut names = Vec::new();
    let mut paths = Vec::new();
    for bin in manifest
        .get("bin")
        .and_then(|b| b.as_array())
        .into_iter()
        .flatten()
        .filter_map(|b| b.as_table())
    {
        if let Some(name) = bin.get("name").and_then(|n| n.as_str()) {
            names.push(name.to_string());
        }
        if let Some(p) = bin.get("path").and_then(|p| p.as_str()) {
            paths.push(dir.join(p.trim_start_matches("./")));
        }
    }
    // `autobins = false` turns inference off; only the [[bin]] entries remain.
    if package.get("autobins").and_then(|v| v.as_bool()) != Some(false) {
        let package_name = package
            .get("name")
            .and_then(|n| n.as_str())
            .map(str::to_string)
            .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        for (name, path) in inferred_bins(dir, package_name) {
            // A [[bin]] of the same name or path replaces the inferred target, as in cargo.
            if !names.contains(&name) && !paths.contains(&path) {
                names.push(name);
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

fn inferred_bins(dir: &Path, package_name: String) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    let main = dir.join("src/main.rs");
    if main.is_file() {
        found.push((package_name, main));
    }
    let Ok(entries) = std::fs::read_dir(dir.join("src/bin")) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
            if let Some(stem) = path.file_stem() {
                found.push((stem.to_string_lossy().into_owned(), path));
            }
        } else if path.join("main.rs").is_file() {
            found.push((
                entry.file_name().to_string_lossy().into_owned(),
                path.join("main.rs"),
            ));
        }
    }
    found
}

fn from_gemfile(dir: &Path) -> Result<Option<Detected>, DetectError> {
    let Some(text) = read(&dir.join("Gemfile"))? else {
        return Ok(None);
    };
    if !text.lines().any(is_rails_gem) {
        return Ok(None);
    }
    // bin/rails is the app's own binstub; without it, go through Bundler.
    let command: &[&str] = if dir.join("bin/rails").is_file() {
        &["bin/rails", "server"]
    } else {
        &["bundle", "exec", "rails", "server"]
    };
    Ok(Some(found(command, "Gemfile: Rails")))
}

/// `gem "rails"` or `gem 'rails', "~> 7.1"`, but not `gem "rails-html-sanitizer"`.
fn is_rails_gem(line: &str) -> bool {
    let Some(rest) = line.trim_start().strip_prefix("gem") else {
        return false;
    };
    if !rest.starts_with([' ', '\t']) {
        return false;
    }
    let rest = rest.trim_start();
    ["\"rails\"", "'rails'"]
        .iter()
        .any(|quoted| rest.starts_with(quoted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(dir: &Path, file: &str, text: &str) {
        let path = dir.join(file);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn command(dir: &Path) -> Vec<String> {
        detect(dir).unwrap().command
    }

    fn v(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    const DEV_AND_START: &str = r#"{"scripts": {"dev": "vite", "start": "node server.js"}}"#;
    const START_ONLY: &str = r#"{"scripts": {"start": "node server.js"}}"#;

    #[test]
    fn package_json_dev_script_with_npm_by_default() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "package.json", DEV_AND_START);
        let found = detect(d.path()).unwrap();
        assert_eq!(found.command, v(&["npm", "run", "dev"]));
        assert_eq!(found.why, "package.json's dev script");
    }

    #[test]
    fn package_json_start_script_when_no_dev() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "package.json", START_ONLY);
        let found = detect(d.path()).unwrap();
        assert_eq!(found.command, v(&["npm", "start"]));
        assert_eq!(found.why, "package.json's start script");
    }

    #[test]
    fn package_json_without_scripts_falls_through() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "package.json",
            r#"{"scripts": {"build": "tsc", "dev": ""}}"#,
        );
        write(d.path(), "go.mod", "module x\n");
        assert_eq!(detect(d.path()).unwrap().why, "go.mod");
    }

    #[test]
    fn package_manager_field_picks_the_manager() {
        let cases = [
            (
                "pnpm@9.1.0",
                ["pnpm", "dev"].as_slice(),
                ["pnpm", "start"].as_slice(),
            ),
            ("yarn@4.0.2", &["yarn", "dev"], &["yarn", "start"]),
            (
                "bun@1.1.0",
                &["bun", "run", "dev"],
                &["bun", "run", "start"],
            ),
            ("npm@10.2.0", &["npm", "run", "dev"], &["npm", "start"]),
        ];
        for (spec, dev, start) in cases {
            let d = tempfile::tempdir().unwrap();
            // A lock file of another manager loses to the declared one.
            write(d.path(), "package-lock.json", "{}");
            write(
                d.path(),
                "package.json",
                &format!(r#"{{"packageManager": "{spec}", "scripts": {{"dev": "x"}}}}"#),
            );
            assert_eq!(command(d.path()), v(dev), "{spec}");
            write(
                d.path(),
                "package.json",
                &format!(r#"{{"packageManager": "{spec}", "scripts": {{"start": "x"}}}}"#),
            );
            assert_eq!(command(d.path()), v(start), "{spec}");
        }
    }

    #[test]
    fn lock_file_picks_the_manager() {
        let cases = [
            ("pnpm-lock.yaml", ["pnpm", "dev"].as_slice()),
            ("yarn.lock", &["yarn", "dev"]),
            ("bun.lockb", &["bun", "run", "dev"]),
            ("bun.lock", &["bun", "run", "dev"]),
            ("package-lock.json", &["npm", "run", "dev"]),
        ];
        for (lock, want) in cases {
            let d = tempfile::tempdir().unwrap();
            write(d.path(), "package.json", DEV_AND_START);
            write(d.path(), lock, "");
            assert_eq!(command(d.path()), v(want), "{lock}");
        }
    }

    #[test]
    fn unknown_package_manager_falls_back_to_the_lock_file() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "package.json",
            r#"{"packageManager": "deno@2", "scripts": {"dev": "x"}}"#,
        );
        write(d.path(), "yarn.lock", "");
        assert_eq!(command(d.path()), v(&["yarn", "dev"]));
    }

    #[test]
    fn lock_file_in_a_parent_folder() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "pnpm-lock.yaml", "");
        let app = d.path().join("packages/web");
        write(&app, "package.json", START_ONLY);
        assert_eq!(command(&app), v(&["pnpm", "start"]));
    }

    #[test]
    fn nearest_lock_file_wins() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "pnpm-lock.yaml", "");
        let app = d.path().join("web");
        write(&app, "yarn.lock", "");
        write(&app, "package.json", DEV_AND_START);
        assert_eq!(command(&app), v(&["yarn", "dev"]));
    }

    #[test]
    fn package_json_beats_procfile() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "package.json", START_ONLY);
        write(d.path(), "Procfile", "web: node index.js\n");
        assert_eq!(detect(d.path()).unwrap().why, "package.json's start script");
    }

    #[test]
    fn procfile_web_line_is_one_shell_argument() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "Procfile",
            "# processes\nworker: bundle exec sidekiq\nweb:   bundle exec puma -p $PORT  \r\n",
        );
        let found = detect(d.path()).unwrap();
        assert_eq!(found.command, v(&["bundle exec puma -p $PORT"]));
        assert_eq!(found.why, "Procfile's web line");
    }

    #[test]
    fn procfile_without_web_line_falls_through() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "Procfile", "worker: bundle exec sidekiq\n");
        write(d.path(), "go.mod", "module x\n");
        assert_eq!(detect(d.path()).unwrap().why, "go.mod");
    }

    #[test]
    fn procfile_beats_manage_py() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "Procfile", "web: gunicorn app.wsgi\n");
        write(d.path(), "manage.py", "");
        assert_eq!(command(d.path()), v(&["gunicorn app.wsgi"]));
    }

    #[test]
    fn manage_py_with_python3() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "manage.py", "");
        let found = detect(d.path()).unwrap();
        assert_eq!(found.command, v(&["python3", "manage.py", "runserver"]));
        assert_eq!(found.why, "manage.py: Django's runserver");
    }

    #[test]
    fn manage_py_prefers_the_virtualenv() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "manage.py", "");
        write(d.path(), "venv/bin/python", "");
        assert_eq!(
            command(d.path()),
            v(&["venv/bin/python", "manage.py", "runserver"])
        );
        write(d.path(), ".venv/bin/python", "");
        assert_eq!(
            command(d.path()),
            v(&[".venv/bin/python", "manage.py", "runserver"])
        );
    }

    #[test]
    fn manage_py_beats_cargo() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "manage.py", "");
        write(d.path(), "Cargo.toml", "[package]\nname = \"x\"\n");
        write(d.path(), "src/main.rs", "");
        assert_eq!(command(d.path())[1], "manage.py");
    }

    #[test]
    fn cargo_default_run_names_the_binary() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "Cargo.toml",
            "[package]\nname = \"shop\"\ndefault-run = \"api\"\n",
        );
        write(d.path(), "src/main.rs", "");
        write(d.path(), "src/bin/api.rs", "");
        let found = detect(d.path()).unwrap();
        assert_eq!(found.command, v(&["cargo", "run"]));
        assert_eq!(found.why, "Cargo.toml: cargo run runs the binary `api`");
    }

    #[test]
    fn cargo_single_main_rs_is_named_after_the_package() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "Cargo.toml", "[package]\nname = \"api\"\n");
        write(d.path(), "src/main.rs", "");
        let found = detect(d.path()).unwrap();
        assert_eq!(found.command, v(&["cargo", "run"]));
        assert_eq!(found.why, "Cargo.toml: cargo run runs the binary `api`");
    }

    #[test]
    fn cargo_bin_entry_replaces_the_inferred_main() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "Cargo.toml",
            "[package]\nname = \"shop\"\n[[bin]]\nname = \"server\"\npath = \"src/main.rs\"\n",
        );
        write(d.path(), "src/main.rs", "");
        assert_eq!(
            detect(d.path()).unwrap().why,
            "Cargo.toml: cargo run runs the binary `server`"
        );
    }

    #[test]
    fn cargo_bin_entries_and_src_bin_are_ambiguous() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "Cargo.toml",
            "[package]\nname = \"shop\"\n[[bin]]\nname = \"admin\"\npath = \"tools/admin.rs\"\n",
        );
        write(d.path(), "src/main.rs", "");
        write(d.path(), "src/bin/worker.rs", "");
        write(d.path(), "src/bin/api/main.rs", "");
        write(d.path(), "src/bin/notes.txt", "");
        let err = detect(d.path()).unwrap_err();
        let DetectError::Ambiguous { bins, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(bins, &v(&["admin", "api", "shop", "worker"]));
        let msg = err.to_string();
        assert!(msg.contains("(admin, api, shop, worker)"), "{msg}");
        assert!(msg.contains("portok run -- cargo run --bin NAME"), "{msg}");
        assert!(msg.contains("default-run"), "{msg}");
    }

    #[test]
    fn cargo_single_src_bin_without_main() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "Cargo.toml", "[package]\nname = \"shop\"\n");
        write(d.path(), "src/lib.rs", "");
        write(d.path(), "src/bin/api/main.rs", "");
        assert_eq!(
            detect(d.path()).unwrap().why,
            "Cargo.toml: cargo run runs the binary `api`"
        );
    }

    #[test]
    fn cargo_workspace_only_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "Cargo.toml", "[workspace]\nmembers = [\"api\"]\n");
        write(d.path(), "go.mod", "module x\n");
        assert_eq!(detect(d.path()).unwrap().why, "go.mod");
    }

    #[test]
    fn cargo_library_without_binaries_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "Cargo.toml", "[package]\nname = \"lib\"\n");
        write(d.path(), "src/lib.rs", "");
        assert!(matches!(detect(d.path()), Err(DetectError::Nothing { .. })));
    }

    #[test]
    fn cargo_beats_go_mod() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "Cargo.toml", "[package]\nname = \"api\"\n");
        write(d.path(), "src/main.rs", "");
        write(d.path(), "go.mod", "module x\n");
        assert_eq!(command(d.path()), v(&["cargo", "run"]));
    }

    #[test]
    fn go_mod_runs_the_module() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "go.mod", "module example.com/api\n");
        let found = detect(d.path()).unwrap();
        assert_eq!(found.command, v(&["go", "run", "."]));
        assert_eq!(found.why, "go.mod");
    }

    #[test]
    fn go_mod_beats_gemfile() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "go.mod", "module x\n");
        write(d.path(), "Gemfile", "gem \"rails\"\n");
        assert_eq!(detect(d.path()).unwrap().why, "go.mod");
    }

    #[test]
    fn gemfile_with_rails_uses_bundler() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "Gemfile",
            "source \"https://rubygems.org\"\ngem 'rails', '~> 7.1'\n",
        );
        let found = detect(d.path()).unwrap();
        assert_eq!(found.command, v(&["bundle", "exec", "rails", "server"]));
        assert_eq!(found.why, "Gemfile: Rails");
    }

    #[test]
    fn gemfile_with_rails_prefers_bin_rails() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "Gemfile", "  gem \"rails\"\n");
        write(d.path(), "bin/rails", "");
        assert_eq!(command(d.path()), v(&["bin/rails", "server"]));
    }

    #[test]
    fn gemfile_without_rails_is_nothing() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "Gemfile",
            "gem \"rails-html-sanitizer\"\n# gem \"rails\"\ngem \"sinatra\"\n",
        );
        assert!(matches!(detect(d.path()), Err(DetectError::Nothing { .. })));
    }

    #[test]
    fn nothing_says_what_was_looked_for_and_what_to_do() {
        let d = tempfile::tempdir().unwrap();
        let msg = detect(d.path()).unwrap_err().to_string();
        for part in [
            "no command to run",
            "package.json with a dev or start script",
            "Procfile with a web: line",
            "manage.py",
            "Cargo.toml",
            "go.mod",
            "Gemfile with Rails",
            &d.path().display().to_string(),
            "portok run -- cargo run",
            "`command` in portok.toml",
        ] {
            assert!(msg.contains(part), "{part:?} missing from {msg}");
        }
    }

    #[test]
    fn invalid_package_json_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "package.json", "{\"scripts\": ");
        let err = detect(d.path()).unwrap_err();
        assert!(matches!(err, DetectError::Json { .. }));
        let msg = err.to_string();
        assert!(msg.contains("package.json is not valid JSON"), "{msg}");
        assert!(msg.contains("fix it"), "{msg}");
    }

    #[test]
    fn invalid_cargo_toml_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "Cargo.toml", "[package\n");
        let err = detect(d.path()).unwrap_err();
        assert!(matches!(err, DetectError::Toml { .. }));
        assert!(err.to_string().contains("Cargo.toml is not valid TOML"));
    }

    #[test]
    fn unreadable_file_is_an_io_error() {
        let d = tempfile::tempdir().unwrap();
        // A folder where a file is expected cannot be read as one.
        fs::create_dir(d.path().join("Procfile")).unwrap();
        let err = detect(d.path()).unwrap_err();
        assert!(matches!(err, DetectError::Io { .. }), "{err}");
        assert!(err.to_string().contains("cannot read"));
    }
}
