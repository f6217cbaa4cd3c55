//! `portok list` and `portok get`: the routes and their URLs.

use super::*;

#[derive(Serialize)]
pub(super) struct ListEntry<'a> {
    hostname: &'a str,
    url: String,
    port: u16,
    /// Every port requests go to: a pool's instances in rotation, else `port` alone.
    ports: Vec<u16>,
    /// A pool's size (`--instances N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    instances: Option<u32>,
    pid: u32,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<RouteState>,
    /// Reachable from other machines when the proxy listens on the LAN.
    shared: bool,
    /// How portok speaks to the app: `http1`, or `h2` (an HTTP/2-only app such as gRPC).
    upstream: &'static str,
    /// A container's image, short id and Compose project.
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    project: Option<&'a str>,
}

pub(super) fn list(json: bool) -> anyhow::Result<i32> {
    let state_dir = StateDir::from_env()?;
    let state = &state_dir;
    let routes = store::load(state)?;
    let base = url_base(state)?;
    let entries: Vec<ListEntry> = routes
        .iter()
        .map(|r: &Route| ListEntry {
            hostname: &r.hostname,
            url: base.url(&r.hostname),
            port: r.port,
            ports: r.upstream_ports(),
            instances: r.instances,
            pid: r.pid,
            kind: r.kind(),
            state: r.state,
            shared: r.share,
            upstream: r.upstream.as_str(),
            image: r.container.as_ref().map(|c| c.image.as_str()),
            container_id: r.container.as_ref().map(|c| c.short_id()),
            project: r.container.as_ref().and_then(|c| c.project.as_deref()),
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(0);
    }
    if entries.is_empty() {
        eprintln!("portok: no routes yet (add one: `portok alias NAME PORT` or `portok NAME CMD`)");
        return Ok(0);
    }
    let w = entries
        .iter()
        .map(|e| e.url.len())
        .max()
        .unwrap_or(3)
        .max(3);
    // A pool shows every instance's port.
    let ports: Vec<String> = entries
        .iter()
        .map(|e| {
            let list: Vec<String> = e.ports.iter().map(|p| p.to_string()).collect();
            list.join(",")
        })
        .collect();
    let pw = ports.iter().map(|p| p.len()).max().unwrap_or(4).max(5);
    println!(
        "{:<w$}  {:>pw$}  {:>7}  {:<9}  STATE",
        "URL", "PORT", "PID", "KIND"
    );
    for (e, ports) in entries.iter().zip(&ports) {
        let state = match (e.state, e.instances) {
            (Some(RouteState::Live), Some(n)) => {
                format!("live ({} of {n} instances)", e.ports.len())
            }
            (Some(s), Some(n)) => format!("{s} (pool of {n})"),
            (Some(s), None) => s.to_string(),
            (None, _) => "-".into(),
        };
        let mut state = if e.shared {
            format!("{state}, shared on the LAN")
        } else {
            state
        };
        if let (Some(image), Some(id)) = (e.image, e.container_id) {
            state = format!("{state} ({image}, {id})");
        }
        println!(
            "{:<w$}  {:>pw$}  {:>7}  {:<9}  {state}",
            e.url, ports, e.pid, e.kind,
        );
    }
    for clash in crate::daemon::containers::clashes(&state_dir) {
        println!("not served: {clash}");
    }
    Ok(0)
}

/// The URL `portok run` would give: the same name rules (worktree prefix, portok.toml's
/// `name`, workspace inference) for NAME or, without it, for the current folder.
pub(super) fn get(name: Option<&str>, https: bool, no_worktree: bool) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    let cwd = std::env::current_dir().context("reading the current folder")?;
    let configured = match name {
        Some(_) => None,
        None => {
            let config = crate::config::load(&cwd)?;
            for w in &config.warnings {
                eprintln!("portok: warning: {w}");
            }
            config.name
        }
    };
    let (_, host) = crate::project::app_name(
        &cwd,
        name,
        configured.as_deref(),
        !no_worktree,
        crate::names::LOCALHOST,
    )?;
    let scheme = if https { "https" } else { "http" };
    println!("{}", url_base(&state)?.with_scheme(scheme, &host));
    Ok(0)
}
