//! Dev servers that ignore `PORT` are told the port (and to bind loopback) the way each
//! one takes it, so they run beside an older generation on a port of portok's choosing:
//! Vite and the Node tools like it, Python's http.server, Flask, uvicorn, gunicorn, Django,
//! Rails, rackup, Hugo, mkdocs and `php -S`. A port or address the command already gives
//! is left alone. Wrappers (npx, `python -m`, `uv run`, `bundle exec`...) are looked
//! through.

use super::tool::{self, tool_of, Via};

/// The tools [`inject`] tells the port.
const TOOLS: &[&str] = &[
    "vite",
    "next",
    "astro",
    "ng",
    "react-router",
    "rsbuild",
    "expo",
    "http.server",
    "flask",
    "uvicorn",
    "gunicorn",
    "manage.py",
    "django-admin",
    "rails",
    "rackup",
    "hugo",
    "mkdocs",
    "php",
];

/// For an app found listening on a port of its own: how to let it run beside its next
/// generation instead, in the words of the command the user gave.
pub fn port_fix(name: &str, u: &tool::Understood) -> String {
    let known = tool_of(&u.tool).filter(|(_, t)| TOOLS.contains(&t.as_str()));
    let script = match &u.script {
        Some(crate::project::scripts::Script::Tool { chain, manager, .. }) => {
            Some((chain.clone(), manager.name()))
        }
        _ => None,
    };
    match (known, &u.via, script) {
        (Some((_, tool)), Via::Direct, _) => format!(
            "leave the port out of the command, and portok tells {tool} one (on 127.0.0.1)"
        ),
        (Some((_, tool)), Via::Script { .. }, Some((chain, _))) => format!(
            "leave the port out of package.json's {:?} script, and portok tells {tool} one (on 127.0.0.1)",
            chain.last().cloned().unwrap_or_default()
        ),
        (Some((_, tool)), Via::Unreachable, Some((chain, pm))) => format!(
            "portok cannot pass {tool} its port through package.json's scripts ({}): run the last one directly (`portok run {name} -- {pm} run {}`), or write `--port $PORT` into it",
            chain.join(" -> "),
            chain.last().cloned().unwrap_or_default()
        ),
        _ => format!("make the app listen on $PORT (portok sets it), or pass it in the command, e.g. `portok run {name} -- sh -c 'server --port $PORT'`"),
    }
}

/// Tell the tool its port: on its own command line, or through the package script.
pub fn inject(argv: &mut Vec<String>, u: &tool::Understood, port: u16) {
    match u.via {
        Via::Direct => {
            if let Some(edit) = flags_for(argv, port) {
                edit.apply(argv);
            }
        }
        Via::Script { dashdash } => {
            if let Some(Edit::Append(add)) = flags_for(&u.tool, port) {
                tool::append(argv, &add, dashdash);
            }
        }
        Via::Unreachable => {}
    }
}

/// What tells a tool its port: flags appended, or an address put in after a word.
enum Edit {
    Append(Vec<String>),
    Insert(usize, String),
}

impl Edit {
    fn apply(self, argv: &mut Vec<String>) {
        match self {
            Edit::Append(add) => argv.extend(add),
            Edit::Insert(at, word) => argv.insert(at, word),
        }
    }
}

/// What to add for the tool `argv` runs, given the port; None when it is told already.
fn flags_for(argv: &[String], port: u16) -> Option<Edit> {
    let (i, tool) = tool_of(argv)?;
    let rest = &argv[i + 1..];
    let has = |flags: &[&str]| {
        rest.iter().any(|a| {
            flags
                .iter()
                .any(|f| a == f || a.starts_with(&format!("{f}=")))
        })
    };
    let sub = rest
        .iter()
        .find(|a| !a.starts_with('-'))
        .map(String::as_str);
    let p = port.to_string();
    let addr = format!("127.0.0.1:{port}");
    let add: Vec<String> = match tool.as_str() {
        "vite" | "astro" | "ng" | "react-router" | "rsbuild" | "expo" => {
            let mut v = Vec::new();
            if !has(&["--port"]) {
                v.extend(["--port".into(), p]);
            }
            if tool == "vite" && !has(&["--strictPort"]) {
                v.push("--strictPort".into());
            }
            if !has(&["--host"]) {
                v.extend(["--host".into(), "127.0.0.1".into()]);
            }
            v
        }
        // Next reads PORT, but binds every interface unless told the host.
        "next" if matches!(sub, Some("dev" | "start")) => {
            both(&has, &["--port", "-p"], &p, &["--hostname", "-H"])
        }
        // python3 -m http.server [PORT] [--bind ADDR]
        "http.server" => {
            let mut v = Vec::new();
            if !rest.iter().any(|a| a.parse::<u16>().is_ok()) {
                v.push(p);
            }
            if !has(&["--bind", "-b"]) {
                v.extend(["--bind".into(), "127.0.0.1".into()]);
            }
            v
        }
        // `flask --app app run`: the subcommand may follow options with values.
        "flask" if rest.iter().any(|a| a == "run") => {
            both(&has, &["--port", "-p"], &p, &["--host", "-h"])
        }
        "uvicorn" => both(&has, &["--port"], &p, &["--host"]),
        "gunicorn" if !has(&["--bind", "-b"]) => vec!["--bind".into(), addr],
        // manage.py runserver [ADDRPORT]
        "manage.py" | "django-admin" if sub == Some("runserver") => {
            let after: Vec<&String> = rest
                .iter()
                .skip_while(|a| a.as_str() != "runserver")
                .skip(1)
                .filter(|a| !a.starts_with('-'))
                .collect();
            if after.is_empty() {
                vec![addr]
            } else {
                Vec::new()
            }
        }
        "rails" if matches!(sub, Some("server" | "s")) => {
            both(&has, &["-p", "--port"], &p, &["-b", "--binding"])
        }
        "rackup" => both(&has, &["-p", "--port"], &p, &["-o", "--host"]),
        "hugo" if matches!(sub, Some("server" | "serve")) => {
            both(&has, &["--port", "-p"], &p, &["--bind"])
        }
        "mkdocs" if sub == Some("serve") && !has(&["-a", "--dev-addr"]) => {
            vec!["--dev-addr".into(), addr]
        }
        // php -S with no address after it
        "php" => match rest.iter().position(|a| a == "-S") {
            Some(at) if rest.get(at + 1).is_none_or(|a| a.starts_with('-')) => {
                return Some(Edit::Insert(i + 1 + at + 1, addr));
            }
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    (!add.is_empty()).then_some(Edit::Append(add))
}

/// `PORT_FLAG N` and `HOST_FLAG 127.0.0.1`, each unless one of its spellings is given.
fn both(has: &dyn Fn(&[&str]) -> bool, port: &[&str], p: &str, host: &[&str]) -> Vec<String> {
    let mut v = Vec::new();
    if !has(port) {
        v.extend([port[0].to_string(), p.to_string()]);
    }
    if !has(host) {
        v.extend([host[0].to_string(), "127.0.0.1".to_string()]);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::super::tool::understand;

    /// A project whose package.json has the scripts the tests run.
    fn project() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"scripts": {"dev": "vite", "fixed": "vite --port 3000", "serve": "npm run dev"}}"#,
        )
        .unwrap();
        dir
    }

    fn after(cmd: &str) -> String {
        let dir = project();
        let mut a: Vec<String> = cmd.split(' ').map(String::from).collect();
        let u = understand(&a, dir.path());
        super::inject(&mut a, &u, 4100);
        a.join(" ")
    }

    fn fix(cmd: &str) -> String {
        let dir = project();
        let words: Vec<String> = cmd.split(' ').map(String::from).collect();
        super::port_fix("app", &understand(&words, dir.path()))
    }

    #[test]
    fn the_fix_for_a_found_port_names_the_tool_when_portok_knows_it() {
        assert!(fix("python3 -m http.server 8000").contains("portok tells http.server one"));
        assert!(fix("bundle exec rails server -p 3000").contains("tells rails one"));
        assert!(fix("./server --listen 9000").contains("make the app listen on $PORT"));
        // A nested `npm run` would take the flags as npm's own: none are added, and the fix
        // says why in the user's terms.
        assert_eq!(after("npm run serve"), "npm run serve");
        assert!(
            fix("npm run serve").contains("cannot pass vite its port"),
            "{}",
            fix("npm run serve")
        );
    }

    #[test]
    fn each_dev_server_is_told_the_port_its_own_way() {
        for (cmd, want) in [
            (
                "npx vite",
                "npx vite --port 4100 --strictPort --host 127.0.0.1",
            ),
            ("astro dev --port=1", "astro dev --port=1 --host 127.0.0.1"),
            (
                "python3 -m http.server",
                "python3 -m http.server 4100 --bind 127.0.0.1",
            ),
            (
                "python -m http.server 8000",
                "python -m http.server 8000 --bind 127.0.0.1",
            ),
            (
                "flask --app app run",
                "flask --app app run --port 4100 --host 127.0.0.1",
            ),
            (
                "python -m flask run -p 5000",
                "python -m flask run -p 5000 --host 127.0.0.1",
            ),
            (
                "uvicorn app:asgi",
                "uvicorn app:asgi --port 4100 --host 127.0.0.1",
            ),
            (
                "uv run uvicorn app:asgi --reload",
                "uv run uvicorn app:asgi --reload --port 4100 --host 127.0.0.1",
            ),
            (
                "gunicorn app:wsgi",
                "gunicorn app:wsgi --bind 127.0.0.1:4100",
            ),
            ("gunicorn -b :8000 app:wsgi", "gunicorn -b :8000 app:wsgi"),
            (
                "python manage.py runserver",
                "python manage.py runserver 127.0.0.1:4100",
            ),
            (
                "python manage.py runserver 8001",
                "python manage.py runserver 8001",
            ),
            ("bin/rails server", "bin/rails server -p 4100 -b 127.0.0.1"),
            (
                "bundle exec rails s",
                "bundle exec rails s -p 4100 -b 127.0.0.1",
            ),
            ("rackup", "rackup -p 4100 -o 127.0.0.1"),
            (
                "hugo server -D",
                "hugo server -D --port 4100 --bind 127.0.0.1",
            ),
            ("mkdocs serve", "mkdocs serve --dev-addr 127.0.0.1:4100"),
            ("php -S", "php -S 127.0.0.1:4100"),
            ("php -S -t public", "php -S 127.0.0.1:4100 -t public"),
            ("php -S localhost:8000", "php -S localhost:8000"),
            ("cargo run", "cargo run"),
            (
                "npx next dev",
                "npx next dev --port 4100 --hostname 127.0.0.1",
            ),
            ("next build", "next build"),
            // Package scripts: the way each manager passes arguments.
            (
                "npm run dev",
                "npm run dev -- --port 4100 --strictPort --host 127.0.0.1",
            ),
            (
                "pnpm dev",
                "pnpm dev --port 4100 --strictPort --host 127.0.0.1",
            ),
            (
                "yarn dev",
                "yarn dev --port 4100 --strictPort --host 127.0.0.1",
            ),
            (
                "bun run dev",
                "bun run dev --port 4100 --strictPort --host 127.0.0.1",
            ),
            (
                "npm run fixed",
                "npm run fixed -- --strictPort --host 127.0.0.1",
            ),
            ("flask routes", "flask routes"),
            ("hugo build", "hugo build"),
        ] {
            assert_eq!(after(cmd), want, "{cmd}");
            // A tool told the port here is one `port_fix` names (TOOLS lists each).
            if want != cmd {
                let fix = fix(cmd);
                assert!(fix.contains("portok tells"), "{cmd}: {fix}");
            }
        }
    }
}
