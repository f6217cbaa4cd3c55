//! Dev servers that ignore `PORT` are told the port (and to bind loopback) the way each
//! one takes it, so they run beside an older generation on a port of portok's choosing:
//! Vite and the Node tools like it, Python's http.server, Flask, uvicorn, gunicorn, Django,
//! Rails, rackup, Hugo, mkdocs and `php -S`. A port or address the command already gives
//! is left alone. Wrappers (npx, `python -m`, `uv run`, `bundle exec`...) are looked
//! through.

use super::child::basename;

/// Words in front of the tool itself.
const WRAPPERS: &[&str] = &[
    "npx", "pnpm", "pnpx", "yarn", "bunx", "bun", "exec", "dlx", "x", "run", "uv", "poetry",
    "pipenv", "bundle", "python", "python3", "-m",
];

/// The tools [`inject`] tells the port.
const TOOLS: &[&str] = &[
    "vite",
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

/// Where the tool is in `argv` (past the wrappers), and its name.
fn tool_of(argv: &[String]) -> Option<(usize, String)> {
    let i = argv.iter().position(|a| !WRAPPERS.contains(&basename(a)))?;
    Some((i, basename(&argv[i]).to_string()))
}

/// For an app found listening on a port of its own: how to let it run beside its next
/// generation instead.
pub fn port_fix(name: &str, command: &[String]) -> String {
    let words: Vec<String> = match command {
        [one] => one.split_whitespace().map(String::from).collect(),
        many => many.to_vec(),
    };
    match tool_of(&words) {
        Some((_, tool)) if TOOLS.contains(&tool.as_str()) => format!(
            "leave the port out of the command, and portok tells {tool} one (on 127.0.0.1)"
        ),
        _ => format!("make the app listen on $PORT (portok sets it), or pass it in the command, e.g. `portok run {name} -- sh -c 'server --port $PORT'`"),
    }
}

/// What to add for the tool at `argv[i]`, given the port.
pub fn inject(argv: &mut Vec<String>, port: u16) {
    let Some((i, tool)) = tool_of(argv) else {
        return;
    };
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
                argv.insert(i + 1 + at + 1, addr);
                return;
            }
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    argv.extend(add);
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
    fn after(cmd: &str) -> String {
        let mut a: Vec<String> = cmd.split(' ').map(String::from).collect();
        super::inject(&mut a, 4100);
        a.join(" ")
    }

    #[test]
    fn the_fix_for_a_found_port_names_the_tool_when_portok_knows_it() {
        let fix = |cmd: &str| super::port_fix("app", &[cmd.to_string()]);
        assert!(fix("python3 -m http.server 8000").contains("portok tells http.server one"));
        assert!(fix("bundle exec rails server -p 3000").contains("tells rails one"));
        assert!(fix("./server --listen 9000").contains("make the app listen on $PORT"));
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
            ("flask routes", "flask routes"),
            ("hugo build", "hugo build"),
        ] {
            assert_eq!(after(cmd), want, "{cmd}");
            // A tool told the port here is one `port_fix` names (TOOLS lists each).
            if want != cmd {
                let fix = super::port_fix("app", &[cmd.to_string()]);
                assert!(fix.contains("portok tells"), "{cmd}: {fix}");
            }
        }
    }
}
