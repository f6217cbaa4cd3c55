//! What a command finally runs, and who restarts it on a change. A package script is read
//! through to its tool ([`crate::project::scripts`]); the tool is then treated as if it had
//! been typed directly. Of two restarters only one may act:
//! - dev servers with in-process HMR (Vite, Next...) keep it, and portok does not watch;
//! - servers that restart their whole process have that switched off (`--noreload`,
//!   `--no-reload`, `--reload` dropped, `nodemon x.js` run as `node x.js`), so portok's
//!   blue/green restart, which fails no request, is the only one;
//! - where neither can be done, portok does not watch.

use crate::cmdline::{basename, words};
use crate::project::scripts::{self, Script};
use std::path::Path;

/// Who restarts the app on a change of its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restarter {
    /// Nobody but portok.
    Portok,
    /// The dev server updates the page in place (HMR); portok does not watch.
    Hmr { tool: String },
    /// The server's own restarter was switched off; portok restarts.
    TurnedOff { tool: String, how: String },
    /// The server restarts itself and that cannot be switched off from here.
    Itself { tool: String, why: String },
}

/// Where port flags for the tool go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The tool is on the command line itself.
    Direct,
    /// The tool ends a package script: flags are appended (after `--` for npm) and reach it.
    Script { dashdash: bool },
    /// The tool ends a script the flags cannot reach (a nested `npm run`, `run-s`).
    Unreachable,
}

/// A command, understood.
#[derive(Debug, Clone)]
pub struct Understood {
    /// The command as portok starts it (its own restarter switched off where it can be).
    pub command: Vec<String>,
    /// The tool's words as if typed directly (the command's own words when no script).
    pub tool: Vec<String>,
    pub via: Via,
    pub restarter: Restarter,
    /// The package script read, if any.
    pub script: Option<Script>,
}

impl Understood {
    /// One line on the script read, when the command runs one: `"npm run dev" runs `vite`
    /// (package.json's "dev" script)`; `chosen` says why portok chose the command itself.
    pub fn describe(&self, given: &[String], chosen: Option<&str>) -> Option<String> {
        let shown = given.join(" ");
        let script = match &self.script {
            None => return chosen.map(|why| format!("running \"{shown}\" ({why})")),
            Some(s) => s,
        };
        let note = match script {
            Script::Tool { chain, tool, .. } => {
                let names: Vec<String> = chain.iter().map(|c| format!("{c:?}")).collect();
                let scripts = if names.len() > 1 { "scripts" } else { "script" };
                let runs = format!("runs `{}`", tool.join(" "));
                return Some(match chosen {
                    Some(why) => format!("running \"{shown}\" ({why}; it {runs})"),
                    None => format!(
                        "\"{shown}\" {runs} (package.json's {} {scripts})",
                        names.join(" -> ")
                    ),
                });
            }
            Script::Opaque {
                script, text, why, ..
            } => format!(
                "package.json's {script:?} script ({text}) is too complex to read: {why}; portok finds the port the app listens on instead"
            ),
            Script::Missing {
                script,
                package_json,
                manager,
            } => format!(
                "{} has no {script:?} script; `{} run` lists the ones it has",
                package_json.display(),
                manager.name()
            ),
        };
        Some(match chosen {
            Some(why) => format!("running \"{shown}\" ({why}); {note}"),
            None => format!("\"{shown}\": {note}"),
        })
    }

    /// What to say about restarts, once, when portok does not do them all by itself.
    pub fn restarter_note(&self) -> Option<String> {
        match &self.restarter {
            Restarter::Portok => None,
            Restarter::Hmr { tool } => Some(format!(
                "{tool} updates the page itself (HMR), so portok does not watch files (pass --watch PATH to redeploy on changes anyway)"
            )),
            Restarter::TurnedOff { tool, how } => Some(format!(
                "{tool} restarts itself on changes; portok {how}, so each change is one zero-downtime redeploy by portok"
            )),
            Restarter::Itself { tool, why } => Some(format!(
                "{tool} restarts itself on changes and {why}, so portok does not watch files (its own restarts may drop requests)"
            )),
        }
    }
}

/// Read `command` (run in `cwd`): the script it runs, the tool, and who restarts.
pub fn understand(command: &[String], cwd: &Path) -> Understood {
    // One argument with shell syntax runs under `sh -c` as it is: not read as a script.
    let shell = matches!(command, [one] if crate::cmdline::shell_syntax(one));
    let script = (!shell).then(|| scripts::resolve(command, cwd)).flatten();
    let (tool, via) = match &script {
        Some(Script::Tool {
            tool,
            passes,
            manager,
            ..
        }) => (
            tool.clone(),
            if *passes {
                Via::Script {
                    dashdash: manager.needs_dashdash(),
                }
            } else {
                Via::Unreachable
            },
        ),
        Some(_) => (Vec::new(), Via::Unreachable),
        None => (words(command), Via::Direct),
    };
    // `portok web "npm run dev"`: a script call is run as its words, so flags can follow.
    let mut command = match &script {
        Some(_) => words(command),
        None => command.to_vec(),
    };
    let restarter = match via {
        Via::Direct if shell => match turn_off(&mut command.clone()) {
            Restarter::TurnedOff { tool: name, .. } => Restarter::Itself {
                tool: name,
                why: "portok does not rewrite a command that runs under `sh -c`".into(),
            },
            r => r,
        },
        Via::Direct => turn_off(&mut command),
        Via::Script { dashdash } => {
            // Only flags can be added through a script: a restarter that takes a flag.
            let mut t = tool.clone();
            let r = turn_off(&mut t);
            match (&r, t.strip_prefix(tool.as_slice())) {
                (Restarter::TurnedOff { .. }, Some(added)) if !added.is_empty() => {
                    append(&mut command, added, dashdash);
                    r
                }
                (Restarter::TurnedOff { tool: name, .. }, _) => Restarter::Itself {
                    tool: name.clone(),
                    why: "its switch cannot be reached through the package script".into(),
                },
                _ => r,
            }
        }
        Via::Unreachable => match turn_off(&mut tool.clone()) {
            Restarter::TurnedOff { tool: name, .. } => Restarter::Itself {
                tool: name,
                why: "its switch cannot be reached through the package script".into(),
            },
            r => r,
        },
    };
    Understood {
        command,
        tool,
        via,
        restarter,
        script,
    }
}

/// Append `flags` to a command that runs a script: after `--` for npm (one `--` only).
pub fn append(command: &mut Vec<String>, flags: &[String], dashdash: bool) {
    if flags.is_empty() {
        return;
    }
    if dashdash && !command.iter().any(|a| a == "--") {
        command.push("--".into());
    }
    command.extend(flags.iter().cloned());
}

/// Words in front of the tool itself (`npx vite`, `python -m flask`, `uv run uvicorn`).
pub const WRAPPERS: &[&str] = &[
    "npx", "pnpm", "pnpx", "yarn", "bun", "bunx", "exec", "dlx", "x", "run", "uv", "poetry",
    "pipenv", "bundle", "python", "python3", "-m",
];

/// Where the tool is in `argv` (past the wrappers), and its name.
pub fn tool_of(argv: &[String]) -> Option<(usize, String)> {
    let i = argv.iter().position(|a| !WRAPPERS.contains(&basename(a)))?;
    Some((i, basename(&argv[i]).to_string()))
}

/// The dev server with in-process HMR that `words` runs, if any.
fn hmr(words: &[String]) -> Option<&'static str> {
    let (i, tool) = tool_of(words)?;
    let sub = words[i + 1..]
        .iter()
        .find(|a| !a.starts_with('-'))
        .map(String::as_str);
    let name = match (tool.as_str(), sub) {
        // `vite`, `vite dev`, `vite serve`: not `vite build` or `vite preview`.
        ("vite", None | Some("dev" | "serve")) => "Vite",
        ("vite", Some(s)) if !matches!(s, "build" | "preview" | "optimize") => "Vite",
        ("next", Some("dev")) => "Next.js",
        ("astro", Some("dev")) => "Astro",
        ("nuxt" | "nuxi", Some("dev")) => "Nuxt",
        ("react-router", Some("dev")) => "React Router",
        ("remix", Some("dev" | "vite:dev")) => "Remix",
        ("ng", Some("serve")) => "Angular",
        ("expo", Some("start")) => "Expo",
        ("webpack-dev-server", _) | ("webpack" | "webpack-cli", Some("serve")) => {
            "webpack-dev-server"
        }
        ("rspack", Some("serve" | "dev")) => "Rspack",
        ("parcel", s) if !matches!(s, Some("build")) => "Parcel",
        ("rsbuild", Some("dev")) => "Rsbuild",
        _ => return None,
    };
    Some(name)
}

/// Switch off `argv`'s own restarter where it has a switch, rewriting `argv`.
fn turn_off(argv: &mut Vec<String>) -> Restarter {
    let mut v = words(argv);
    if let Some(name) = hmr(&v) {
        return Restarter::Hmr { tool: name.into() };
    }
    // bun is a wrapper (`bun x vite`) and a runtime: `bun --watch app.ts` restarts itself.
    if v.first().is_some_and(|b| basename(b) == "bun") && v.iter().any(|a| a == "--watch") {
        drop_options(&mut v, 1, &["--watch"], &[]);
        *argv = v;
        return Restarter::TurnedOff {
            tool: "bun".into(),
            how: "runs it without --watch".into(),
        };
    }
    let Some((i, tool)) = tool_of(&v) else {
        return Restarter::Portok;
    };
    let rest: Vec<String> = v[i + 1..].to_vec();
    let has = |f: &str| {
        rest.iter()
            .any(|a| a == f || a.starts_with(&format!("{f}=")))
    };
    let off = |how: &str| Restarter::TurnedOff {
        tool: tool.clone(),
        how: how.into(),
    };
    let r = match tool.as_str() {
        "manage.py" | "django-admin" if rest.iter().any(|a| a == "runserver") => {
            if has("--noreload") {
                return Restarter::Portok;
            }
            v.push("--noreload".into());
            off("starts it with --noreload")
        }
        "flask" if rest.iter().any(|a| a == "run") => {
            let debug = has("--debug") || has("--reload") || flask_debug_env();
            if !debug || has("--no-reload") || has("--no-debug") {
                return Restarter::Portok;
            }
            v.push("--no-reload".into());
            off("starts it with --no-reload (the debugger stays on)")
        }
        "uvicorn" | "gunicorn" | "hypercorn" if rest.iter().any(|a| a.starts_with("--reload")) => {
            drop_options(&mut v, i + 1, &["--reload"], &RELOAD_VALUES);
            off("starts it without --reload")
        }
        "nodemon" => match nodemon_target(&rest) {
            Some(target) => {
                v.splice(i.., target);
                off("runs its target directly")
            }
            None => Restarter::Itself {
                tool,
                why: "portok cannot tell what it runs".into(),
            },
        },
        "node" | "deno" if rest.iter().any(|a| a.starts_with("--watch")) => {
            drop_options(
                &mut v,
                i + 1,
                &["--watch", "--watch-preserve-output"],
                &["--watch-path"],
            );
            off("runs it without --watch")
        }
        "tsx" if rest.first().is_some_and(|a| a == "watch") => {
            v.remove(i + 1);
            drop_options(
                &mut v,
                i + 1,
                &["--clear-screen=false"],
                &["--include", "--exclude"],
            );
            off("runs it without watch")
        }
        "cargo" if rest.first().is_some_and(|a| a == "watch") => {
            match cargo_watch_target(&rest[1..]) {
                Some(target) => {
                    v.truncate(i);
                    v.extend(target);
                    off("runs `cargo run` directly")
                }
                None => Restarter::Itself {
                    tool: "cargo watch".into(),
                    why: "it runs no `-x run`".into(),
                },
            }
        }
        "cargo-watch" => Restarter::Itself {
            tool,
            why: "portok cannot tell what it runs".into(),
        },
        "air" | "reflex" | "watchexec" | "entr" | "gow" => Restarter::Itself {
            tool,
            why: "it has no switch to turn that off".into(),
        },
        _ => Restarter::Portok,
    };
    if matches!(r, Restarter::TurnedOff { .. }) {
        *argv = v;
    }
    r
}

/// uvicorn's, gunicorn's and hypercorn's reload options that take a value.
const RELOAD_VALUES: [&str; 6] = [
    "--reload-dir",
    "--reload-include",
    "--reload-exclude",
    "--reload-delay",
    "--reload-engine",
    "--reload-extra-file",
];

/// Take out of `argv[from..]` the flags `bare` and the options `valued` with their values.
fn drop_options(argv: &mut Vec<String>, from: usize, bare: &[&str], valued: &[&str]) {
    let mut i = from;
    while i < argv.len() {
        let a = argv[i].as_str();
        if bare.contains(&a) || valued.iter().any(|v| a.starts_with(&format!("{v}="))) {
            argv.remove(i);
        } else if valued.contains(&a) {
            argv.drain(i..(i + 2).min(argv.len()));
        } else {
            i += 1;
        }
    }
}

/// FLASK_DEBUG=1 in portok's environment turns Flask's reloader on as `--debug` does.
fn flask_debug_env() -> bool {
    std::env::var("FLASK_DEBUG").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// What nodemon runs: `--exec CMD ARGS`, else the script with node (ts-node for .ts),
/// else the package's main (`node .`).
fn nodemon_target(rest: &[String]) -> Option<Vec<String>> {
    const VALUED: &[&str] = &[
        "-w", "--watch", "-e", "--ext", "-i", "--ignore", "-d", "--delay", "--signal", "-x",
        "--exec", "--config", "-C", "-V",
    ];
    let mut exec: Option<Vec<String>> = None;
    let mut i = 0;
    while i < rest.len() {
        let a = rest[i].as_str();
        if a == "--" {
            i += 1;
            break;
        }
        if a == "-x" || a == "--exec" {
            exec = Some(words(std::slice::from_ref(rest.get(i + 1)?)));
            i += 2;
        } else if VALUED.contains(&a) && a != "-V" && a != "-C" {
            i += 2;
        } else if a.starts_with('-') {
            i += 1;
        } else {
            break;
        }
    }
    let tail = rest[i..].to_vec();
    Some(match exec {
        Some(mut e) => {
            e.extend(tail);
            e
        }
        None if tail.first().is_some_and(|s| s.ends_with(".ts")) => {
            std::iter::once("ts-node".to_string()).chain(tail).collect()
        }
        None if tail.is_empty() => vec!["node".into(), ".".into()],
        None => std::iter::once("node".to_string()).chain(tail).collect(),
    })
}

/// The `cargo run ...` that `cargo watch` runs (its last `-x run...`).
fn cargo_watch_target(opts: &[String]) -> Option<Vec<String>> {
    let mut run = None;
    let mut i = 0;
    while i < opts.len() {
        let a = opts[i].as_str();
        let value = match a {
            "-x" | "--exec" => opts.get(i + 1).cloned(),
            _ => a
                .strip_prefix("--exec=")
                .or_else(|| a.strip_prefix("-x").filter(|v| !v.is_empty()))
                .map(String::from),
        };
        if let Some(v) = value {
            let cmd: Vec<String> = v.split_whitespace().map(String::from).collect();
            if cmd.first().is_some_and(|c| c == "run" || c == "r") {
                run = Some(cmd);
            }
            i += if a == "-x" || a == "--exec" { 2 } else { 1 };
        } else {
            i += 1;
        }
    }
    run.map(|r| std::iter::once("cargo".to_string()).chain(r).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    fn direct(cmd: &str) -> (String, Restarter) {
        let dir = tempfile::tempdir().unwrap();
        let u = understand(&v(cmd), dir.path());
        (u.command.join(" "), u.restarter)
    }

    /// The table of restarters in docs/running-apps.md, row by row.
    #[test]
    fn each_self_restarting_server_has_one_restarter() {
        for (cmd, runs) in [
            (
                "python manage.py runserver",
                "python manage.py runserver --noreload",
            ),
            (
                "flask --app app run --debug",
                "flask --app app run --debug --no-reload",
            ),
            (
                "python -m flask run --reload",
                "python -m flask run --reload --no-reload",
            ),
            ("uvicorn main:app --reload", "uvicorn main:app"),
            (
                "uvicorn main:app --reload --reload-dir src --port 1",
                "uvicorn main:app --port 1",
            ),
            ("gunicorn --reload app:wsgi", "gunicorn app:wsgi"),
            ("nodemon server.js", "node server.js"),
            (
                "npx nodemon --watch src -e js,json server.js --x 1",
                "npx node server.js --x 1",
            ),
            ("nodemon --exec ts-node src/main.ts", "ts-node src/main.ts"),
            ("nodemon", "node ."),
            ("node --watch server.js", "node server.js"),
            ("node --watch-path=src --watch server.js", "node server.js"),
            ("tsx watch src/index.ts", "tsx src/index.ts"),
            ("bun --watch run server.ts", "bun run server.ts"),
            ("bun --watch app.ts", "bun app.ts"),
            ("cargo watch -x run", "cargo run"),
            ("cargo watch -c -x run", "cargo run"),
        ] {
            let (got, r) = direct(cmd);
            assert_eq!(got, runs, "{cmd}");
            assert!(matches!(r, Restarter::TurnedOff { .. }), "{cmd}: {r:?}");
        }
        // Reloaders that are off already, and servers with none.
        for cmd in [
            "flask --app app run",
            "flask --app app run --debug --no-reload",
            "uvicorn main:app",
            "cargo run",
            "node server.js",
            "python manage.py runserver --noreload",
        ] {
            assert_eq!(direct(cmd), (cmd.to_string(), Restarter::Portok), "{cmd}");
        }
        // Restarters without a switch: portok leaves them be and does not watch.
        for cmd in ["air", "cargo watch -x check"] {
            assert!(matches!(direct(cmd).1, Restarter::Itself { .. }), "{cmd}");
        }
    }

    #[test]
    fn dev_servers_with_hmr_keep_it() {
        for cmd in [
            "npx vite",
            "vite dev",
            "next dev",
            "astro dev",
            "nuxt dev",
            "nuxi dev",
            "react-router dev",
            "remix vite:dev",
            "ng serve",
            "expo start",
            "webpack serve",
            "webpack-dev-server",
            "parcel index.html",
            "rsbuild dev",
            "pnpm exec vite",
        ] {
            assert!(matches!(direct(cmd).1, Restarter::Hmr { .. }), "{cmd}");
        }
        for cmd in [
            "vite build",
            "next start",
            "next build",
            "parcel build index.html",
        ] {
            assert_eq!(direct(cmd).1, Restarter::Portok, "{cmd}");
        }
    }

    #[test]
    fn a_script_is_treated_as_its_tool() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"scripts": {"dev": "vite", "fl": "flask --app app run --debug", "uv": "uvicorn main:app --reload", "nm": "nodemon app.js", "inner": "npm run fl"}}"#,
        )
        .unwrap();
        let u = |cmd: &str| understand(&v(cmd), dir.path());
        assert!(matches!(u("npm run dev").restarter, Restarter::Hmr { .. }));
        assert_eq!(u("pnpm dev").via, Via::Script { dashdash: false });
        // A switch that is a flag is appended the way the manager passes arguments.
        assert_eq!(u("npm run fl").command, v("npm run fl -- --no-reload"));
        assert_eq!(u("yarn fl").command, v("yarn fl --no-reload"));
        // One argument: plain words are read as a script, shell syntax runs as it is.
        let one = |c: &str| understand(&[c.to_string()], dir.path());
        assert_eq!(one("npm run fl").command, v("npm run fl -- --no-reload"));
        assert_eq!(one("npm run fl && echo").command, ["npm run fl && echo"]);
        let sh = one("flask --app app run --debug 2>&1");
        assert_eq!(sh.command, ["flask --app app run --debug 2>&1"]);
        assert!(matches!(sh.restarter, Restarter::Itself { .. }));
        // Flags cannot take --reload out of a script, nor reach through a nested npm run.
        for cmd in ["npm run uv", "npm run nm", "pnpm inner"] {
            let x = u(cmd);
            assert!(
                matches!(x.restarter, Restarter::Itself { .. }),
                "{cmd}: {x:?}"
            );
            assert_eq!(x.command, v(cmd));
        }
    }
}
