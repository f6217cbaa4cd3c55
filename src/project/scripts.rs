//! Package scripts: what `npm run dev`, `pnpm dev`, `yarn workspace web dev` or `bun run
//! dev` finally runs. The script is read from the right package.json and followed through
//! chains (`npm run a` calling `npm run b`, `run-s`, `a && b`) and through environment
//! prefixes (`FOO=1`, `cross-env`, `dotenv --`) to the command that serves, so portok can
//! treat that tool as if it had been typed directly. Only files are read.

use crate::cmdline::{basename, split_shell_words};
use std::path::{Path, PathBuf};

/// The package managers whose `run` portok reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Npm,
    Pnpm,
    Yarn,
    Bun,
}

impl Manager {
    fn of(word: &str) -> Option<Manager> {
        match word {
            "npm" => Some(Manager::Npm),
            "pnpm" => Some(Manager::Pnpm),
            "yarn" => Some(Manager::Yarn),
            "bun" => Some(Manager::Bun),
            _ => None,
        }
    }

    /// Whether arguments after the script's name reach the script only after `--`
    /// (npm takes the others as its own options).
    pub fn needs_dashdash(self) -> bool {
        self == Manager::Npm
    }

    pub fn name(self) -> &'static str {
        match self {
            Manager::Npm => "npm",
            Manager::Pnpm => "pnpm",
            Manager::Yarn => "yarn",
            Manager::Bun => "bun",
        }
    }
}

/// What a command that runs a package script comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Script {
    /// The script ends in `tool`: its words, environment prefixes taken off, with the
    /// arguments the command line added. `passes` is whether arguments appended to the
    /// command line reach the tool (false when a nested `npm run` or `run-s` is between).
    Tool {
        manager: Manager,
        /// The scripts followed, outermost first (`["dev", "serve"]`).
        chain: Vec<String>,
        tool: Vec<String>,
        passes: bool,
    },
    /// The script cannot be read as one command (a shell script, `concurrently`, a pipe).
    Opaque {
        manager: Manager,
        script: String,
        text: String,
        why: &'static str,
    },
    /// The script named is not in package.json.
    Missing {
        manager: Manager,
        script: String,
        package_json: PathBuf,
    },
}

/// A call of a package script read from a command line.
struct Call {
    manager: Manager,
    script: String,
    /// The package's folder (a workspace member's, with `-w`/`--filter`/`workspace`).
    dir: PathBuf,
    /// The words after the script's name (without npm's `--`).
    args: Vec<String>,
}

/// Scripts calling scripts deeper than this are taken as a loop.
const MAX_DEPTH: usize = 8;

/// If `argv` runs a package script (in `cwd`), what it runs; None for any other command,
/// including `npx TOOL`, `pnpm exec`, `pnpm dlx`, `yarn dlx` and `bunx` (the tool follows
/// them on the command line itself).
pub fn resolve(argv: &[String], cwd: &Path) -> Option<Script> {
    let call = read_call(argv, cwd)?;
    Some(follow(call, Vec::new(), true))
}

fn follow(call: Call, mut chain: Vec<String>, passes: bool) -> Script {
    let package_json = call.dir.join("package.json");
    let text = crate::project::read_json(&package_json).and_then(|p| {
        p.get("scripts")?
            .get(&call.script)?
            .as_str()
            .map(String::from)
    });
    let Some(text) = text else {
        return Script::Missing {
            manager: call.manager,
            script: call.script,
            package_json,
        };
    };
    chain.push(call.script.clone());
    let opaque = |why| Script::Opaque {
        manager: call.manager,
        script: call.script.clone(),
        text: text.clone(),
        why,
    };
    if chain.len() > MAX_DEPTH {
        return opaque("it calls scripts in a loop");
    }
    let Some(last) = last_command(&text) else {
        return opaque(
            "it is more than one command joined by the shell (a pipe, `&`, `||` or a subshell)",
        );
    };
    let mut words = strip_env(&last);
    // Arguments added to a script are appended to its text, so they land on its last command.
    words.extend(call.args.iter().cloned());
    let Some(first) = words.first().map(|w| basename(w).to_string()) else {
        return opaque("it has no command after its environment settings");
    };
    match first.as_str() {
        "concurrently" | "run-p" | "npm-run-all" if !serial(&words) => {
            return opaque("it runs several commands at once");
        }
        "run-s" | "npm-run-all" => {
            let Some(name) = words[1..].iter().rev().find(|w| !w.starts_with('-')) else {
                return opaque("run-s names no script");
            };
            let next = Call {
                manager: call.manager,
                script: name.clone(),
                dir: call.dir.clone(),
                args: Vec::new(),
            };
            return follow(next, chain, false);
        }
        "sh" | "bash" | "zsh" | "node-dev" => {
            return opaque("it runs a shell or a script portok cannot read")
        }
        w if w.ends_with(".sh") => return opaque("it runs a shell script"),
        _ => {}
    }
    if let Some(inner) = read_call(&words, &call.dir) {
        // `npm run b --port N` would take --port as npm's own option: only the managers
        // that append arguments directly pass them on.
        let passes = passes && (!inner.manager.needs_dashdash() || words.iter().any(|w| w == "--"));
        return follow(inner, chain, passes);
    }
    Script::Tool {
        manager: call.manager,
        chain,
        tool: words,
        passes,
    }
}

/// `npm-run-all` runs in order unless told `-p`/`--parallel`; `concurrently` and `run-p`
/// never do.
fn serial(words: &[String]) -> bool {
    basename(&words[0]) == "npm-run-all"
        && !words
            .iter()
            .any(|w| w == "-p" || w == "--parallel" || w.starts_with("--parallel"))
}

/// Read `npm run X -w WS`, `pnpm --filter WS X`, `yarn workspace WS X`, `bun run X`...
fn read_call(argv: &[String], cwd: &Path) -> Option<Call> {
    let words = crate::cmdline::words(argv);
    let manager = Manager::of(basename(words.first()?))?;
    let mut dir = cwd.to_path_buf();
    let mut workspace: Option<String> = None;
    let mut i = 1;
    let mut script: Option<String> = None;
    // Options before the script's name; the ones with a value take the next word.
    while i < words.len() {
        let w = words[i].as_str();
        let next = words.get(i + 1).cloned();
        let mut step = 1;
        match (manager, w) {
            (Manager::Npm, "-w" | "--workspace")
            | (Manager::Pnpm, "--filter" | "-F")
            | (Manager::Yarn, "workspace") => {
                workspace = Some(next?);
                step = 2;
            }
            (Manager::Npm | Manager::Pnpm | Manager::Yarn, _)
                if w.starts_with("--workspace=") || w.starts_with("--filter=") =>
            {
                workspace = w.split_once('=').map(|(_, v)| v.to_string());
            }
            (Manager::Npm | Manager::Pnpm, "-C" | "--dir" | "--prefix")
            | (Manager::Yarn | Manager::Bun, "--cwd") => {
                dir = cwd.join(next?);
                step = 2;
            }
            (Manager::Npm, "run" | "run-script" | "rum" | "urn") | (_, "run") => {
                script = Some(next?);
                i += 2;
                break;
            }
            // Runs in every workspace member: more than one server.
            (_, "-r" | "--recursive" | "--workspaces" | "-ws" | "workspaces") => return None,
            (Manager::Npm, "start" | "test" | "restart" | "stop") => {
                script = Some(w.to_string());
                i += 1;
                break;
            }
            (_, _) if w.starts_with('-') => {}
            // npm runs scripts only through `run` and the four above.
            (Manager::Npm, _) => return None,
            // pnpm, yarn and bun run a script named as their first word.
            (
                Manager::Bun,
                "build" | "test" | "x" | "pm" | "init" | "create" | "install" | "add" | "remove"
                | "update" | "link" | "upgrade",
            ) => return None,
            _ if BUILTINS.contains(&w) => return None,
            _ => {
                script = Some(w.to_string());
                i += 1;
                break;
            }
        }
        i += step;
    }
    let script = script?;
    if manager == Manager::Npm {
        // npm reads its own options after the script's name too, up to `--`.
        let own = words[i.min(words.len())..]
            .iter()
            .take_while(|w| *w != "--");
        let mut own = own.peekable();
        while let Some(w) = own.next() {
            if w == "-w" || w == "--workspace" {
                workspace = own.peek().map(|v| v.to_string());
            } else if let Some(v) = w.strip_prefix("--workspace=") {
                workspace = Some(v.to_string());
            }
        }
    }
    if let Some(ws) = workspace {
        dir = member_dir(cwd, &ws)?;
    }
    let mut args: Vec<String> = words[i.min(words.len())..].to_vec();
    if manager.needs_dashdash() || args.first().is_some_and(|a| a == "--") {
        // npm: only what follows `--` reaches the script; pnpm, yarn and bun drop a
        // leading `--` too.
        args = match args.iter().position(|a| a == "--") {
            Some(at) => args[at + 1..].to_vec(),
            None => Vec::new(),
        };
    }
    // `bun X` runs a file X when there is no script X; such a call is no script.
    if manager == Manager::Bun && !has_script(&dir, &script) {
        return None;
    }
    Some(Call {
        manager,
        script,
        dir,
        args,
    })
}

/// Commands of pnpm, yarn and bun that are not scripts (`pnpm install`, `yarn add`...).
const BUILTINS: &[&str] = &[
    "install", "i", "add", "remove", "rm", "update", "up", "upgrade", "link", "unlink", "init",
    "import", "list", "ls", "outdated", "why", "audit", "publish", "pack", "patch", "store",
    "config", "set", "info", "exec", "dlx", "create", "node",
];

fn has_script(dir: &Path, name: &str) -> bool {
    crate::project::read_json(&dir.join("package.json"))
        .is_some_and(|p| p.get("scripts").and_then(|s| s.get(name)).is_some())
}

/// The folder of workspace member `ws` (its package name, or its path from the root) of
/// the workspace `cwd` is in.
fn member_dir(cwd: &Path, ws: &str) -> Option<PathBuf> {
    let direct = cwd.join(ws);
    if direct.join("package.json").exists() {
        return Some(direct);
    }
    for root in cwd.ancestors() {
        let Some(globs) = crate::project::workspace_globs(root) else {
            continue;
        };
        for g in globs.iter().filter(|g| !g.starts_with('!')) {
            // One level of `*` is the common shape (`packages/*`, `apps/*`).
            let (parent, star) = match g.trim_end_matches('/').rsplit_once('/') {
                Some((p, "*")) => (root.join(p), true),
                _ => (root.join(g), false),
            };
            let dirs: Vec<PathBuf> = if star {
                std::fs::read_dir(&parent)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .collect()
            } else {
                vec![parent]
            };
            for d in dirs {
                let name = crate::project::read_json(&d.join("package.json"))
                    .and_then(|p| p.get("name")?.as_str().map(String::from));
                let rel = d
                    .strip_prefix(root)
                    .ok()
                    .map(|r| r.to_string_lossy().into_owned());
                if name.as_deref() == Some(ws)
                    || rel.as_deref() == Some(ws.trim_start_matches("./"))
                {
                    return Some(d);
                }
            }
        }
        return None;
    }
    None
}

/// The last command of a script, when the script is commands joined by `&&` or `;` (the
/// one that is left running); None for pipes, `||`, `&` and subshells.
fn last_command(text: &str) -> Option<String> {
    let t = text.trim();
    let unquoted: String = {
        // Look for shell operators outside quotes only.
        let mut out = String::new();
        let mut quote: Option<char> = None;
        for c in t.chars() {
            match (quote, c) {
                (None, '\'' | '"') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, c) => out.push(c),
                _ => out.push('_'),
            }
        }
        out
    };
    if unquoted.contains("||")
        || unquoted
            .replace("&&", "")
            .contains(['&', '|', '(', ')', '`', '<', '>'])
        || unquoted.contains("$(")
    {
        return None;
    }
    // Split at the last `&&` or `;` outside quotes: positions match, quotes were masked.
    let cut = [
        unquoted.rfind("&&").map(|i| i + 2),
        unquoted.rfind(';').map(|i| i + 1),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(0);
    let last = t[cut..].trim();
    (!last.is_empty()).then(|| last.to_string())
}

/// Split a command into words (with '...' and "..." quoting) and take off what only sets
/// the environment: `A=1 B=2`, `env A=1`, `cross-env A=1`, `dotenv [-e FILE] --`.
fn strip_env(command: &str) -> Vec<String> {
    let mut words = split_shell_words(command);
    while let Some(first) = words.first().cloned() {
        let name = basename(&first);
        if is_assignment(&first) {
            words.remove(0);
        } else if matches!(name, "env" | "cross-env" | "cross-env-shell") {
            words.remove(0);
            while words.first().is_some_and(|w| is_assignment(w)) {
                words.remove(0);
            }
        } else if matches!(name, "dotenv" | "dotenvx" | "env-cmd") {
            // Their own options come before `--` (dotenv-cli needs it); without one, the
            // first word that is not an option or its value.
            match words.iter().position(|w| w == "--") {
                Some(at) => {
                    words.drain(..=at);
                }
                None => {
                    words.remove(0);
                    if name == "dotenvx" && words.first().is_some_and(|w| w == "run") {
                        words.remove(0);
                    }
                    while words.first().is_some_and(|w| w.starts_with('-')) {
                        let takes_value = matches!(
                            words[0].as_str(),
                            "-e" | "-f" | "-c" | "-v" | "--file" | "--env-file" | "-r"
                        );
                        words.remove(0);
                        if takes_value && !words.is_empty() {
                            words.remove(0);
                        }
                    }
                }
            }
        } else {
            break;
        }
    }
    words
}

fn is_assignment(w: &str) -> bool {
    match w.split_once('=') {
        Some((k, _)) => {
            !k.is_empty()
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !k.starts_with(|c: char| c.is_ascii_digit())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    fn tool(cmd: &str, dir: &Path) -> (Vec<String>, bool) {
        match resolve(&words(cmd), dir) {
            Some(Script::Tool { tool, passes, .. }) => (tool, passes),
            other => panic!("{cmd}: {other:?}"),
        }
    }

    const PKG: &str = r#"{"scripts": {
        "dev": "vite",
        "start": "NODE_ENV=production node server.js",
        "serve": "npm run dev",
        "pserve": "pnpm dev",
        "both": "tsc -b && cross-env PORT=1 DEBUG=x vite --open",
        "envd": "dotenv -e .env.local -- next dev --turbo",
        "seq": "run-s build dev",
        "build": "vite build",
        "par": "concurrently \"vite\" \"tsc -w\"",
        "sh": "./scripts/dev.sh",
        "pipe": "vite | tee log",
        "loop": "npm run loop2",
        "loop2": "npm run loop"
    }}"#;

    #[test]
    fn each_managers_way_of_running_a_script_is_read() {
        let d = project(&[("package.json", PKG)]);
        let dir = d.path();
        for cmd in [
            "npm run dev",
            "npm run-script dev",
            "pnpm dev",
            "pnpm run dev",
            "yarn dev",
            "yarn run dev",
            "bun run dev",
            "bun dev",
        ] {
            assert_eq!(tool(cmd, dir).0, ["vite"], "{cmd}");
        }
        assert_eq!(tool("npm start", dir).0, ["node", "server.js"]);
        // Arguments: after `--` for npm, directly for the others.
        assert_eq!(
            tool("npm run dev -- --port 1", dir).0,
            ["vite", "--port", "1"]
        );
        assert_eq!(tool("npm run dev --silent", dir).0, ["vite"]);
        assert_eq!(tool("pnpm dev --port 1", dir).0, ["vite", "--port", "1"]);
        assert_eq!(tool("yarn dev --port 1", dir).0, ["vite", "--port", "1"]);
        // Not scripts: the tool follows on the command line.
        for cmd in [
            "npx vite",
            "pnpm exec vite",
            "pnpm dlx vite",
            "yarn dlx vite",
            "pnpm install",
            "npm install",
            "bun server.ts",
            "cargo run",
        ] {
            assert_eq!(resolve(&words(cmd), dir), None, "{cmd}");
        }
    }

    #[test]
    fn chains_and_env_prefixes_are_followed_to_the_tool() {
        let d = project(&[("package.json", PKG)]);
        let dir = d.path();
        assert_eq!(tool("npm run both", dir), (words("vite --open"), true));
        assert_eq!(tool("npm run envd", dir).0, words("next dev --turbo"));
        // A nested `npm run` takes appended arguments as its own: they do not pass.
        assert_eq!(tool("pnpm serve", dir), (words("vite"), false));
        assert_eq!(tool("npm run pserve", dir), (words("vite"), true));
        assert_eq!(tool("npm run seq", dir), (words("vite"), false));
        match resolve(&words("npm run serve"), dir) {
            Some(Script::Tool { chain, .. }) => assert_eq!(chain, ["serve", "dev"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scripts_too_complex_to_read_say_why() {
        let d = project(&[("package.json", PKG)]);
        for (cmd, why) in [
            ("npm run par", "several commands at once"),
            ("npm run sh", "shell script"),
            ("npm run pipe", "joined by the shell"),
            ("npm run loop", "loop"),
        ] {
            match resolve(&words(cmd), d.path()) {
                Some(Script::Opaque { why: w, .. }) => assert!(w.contains(why), "{cmd}: {w}"),
                other => panic!("{cmd}: {other:?}"),
            }
        }
        assert!(matches!(
            resolve(&words("npm run nope"), d.path()),
            Some(Script::Missing { .. })
        ));
    }

    #[test]
    fn workspace_members_are_found_by_name_or_path() {
        let d = project(&[
            (
                "package.json",
                r#"{"name": "shop", "workspaces": ["apps/*"]}"#,
            ),
            (
                "apps/web/package.json",
                r#"{"name": "@shop/web", "scripts": {"dev": "vite"}}"#,
            ),
            (
                "apps/api/package.json",
                r#"{"name": "api", "scripts": {"dev": "node --watch api.js"}}"#,
            ),
        ]);
        let dir = d.path();
        assert_eq!(tool("npm run dev -w @shop/web", dir).0, ["vite"]);
        assert_eq!(tool("npm run dev --workspace=apps/web", dir).0, ["vite"]);
        assert_eq!(
            tool("yarn workspace api dev", dir).0,
            words("node --watch api.js")
        );
        let p = project(&[
            ("pnpm-workspace.yaml", "packages:\n  - 'apps/*'\n"),
            ("package.json", r#"{"name": "shop"}"#),
            (
                "apps/web/package.json",
                r#"{"name": "web", "scripts": {"dev": "next dev"}}"#,
            ),
        ]);
        assert_eq!(tool("pnpm --filter web dev", p.path()).0, words("next dev"));
        assert_eq!(tool("pnpm -F web run dev", p.path()).0, words("next dev"));
    }
}
