//! Containers as routes: which containers portok serves, at which name and port, and where
//! the engine is. The rules only; the daemon follows the engine ([`crate::daemon`]'s
//! `containers`) and applies them.
//!
//! - A container labelled `portok.name=N` is served at `N.localhost` (or `N` as given when
//!   it is under a TLD the daemon serves).
//! - A Compose service with no label is served at `SERVICE.PROJECT.localhost`.
//! - `portok.enable=false` is never served; any other container only with `--docker-all`,
//!   at its container name.
//! - The port: `portok.port=P`, else the published TCP ports on loopback or every address,
//!   else (host network) the ports the container's processes listen on. portok dials only
//!   127.0.0.1: a container's bridge address is never used.

pub mod endpoint;

use std::collections::HashMap;

pub const LABEL_NAME: &str = "portok.name";
pub const LABEL_PORT: &str = "portok.port";
pub const LABEL_ENABLE: &str = "portok.enable";
pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";

/// What portok needs to know of a container, from the engine's inspect answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub id: String,
    /// Without the engine's leading `/`.
    pub name: String,
    pub image: String,
    pub labels: HashMap<String, String>,
    pub host_network: bool,
    /// Published TCP ports reachable on loopback: host port, container port.
    pub published: Vec<(u16, u16)>,
    pub running: bool,
    /// The HEALTHCHECK says `starting`.
    pub health_starting: bool,
    /// Down, and its restart policy is bringing it back.
    pub restarting: bool,
    /// The container's main process on the host (0 when not running).
    pub pid: u32,
    pub exit_code: i64,
}

impl Facts {
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }

    pub fn compose_project(&self) -> Option<&str> {
        self.labels.get(COMPOSE_PROJECT).map(String::as_str)
    }
}

/// Why a container is not served, or the name it asks for (before the host name rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Naming {
    Named(String),
    /// `portok.enable=false`.
    Disabled,
    /// No label, not a Compose service, and no `--docker-all`.
    Unlabelled,
}

pub fn naming(c: &Facts, all: bool) -> Naming {
    let label = |k: &str| c.labels.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    if label(LABEL_ENABLE).is_some_and(|v| v.eq_ignore_ascii_case("false") || v == "0") {
        return Naming::Disabled;
    }
    if let Some(name) = label(LABEL_NAME) {
        return Naming::Named(name.to_string());
    }
    if let (Some(service), Some(project)) = (label(COMPOSE_SERVICE), label(COMPOSE_PROJECT)) {
        return Naming::Named(format!("{service}.{project}"));
    }
    if all && !c.name.is_empty() {
        return Naming::Named(c.name.clone());
    }
    Naming::Unlabelled
}

/// Where the port comes from, in the order tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSource {
    /// `portok.port=P`.
    Label(u16),
    /// Published TCP ports (host side), to be asked which answers HTTP.
    Published(Vec<u16>),
    /// Host network: the ports the container's processes listen on.
    HostNetwork,
    /// Nothing portok can reach on loopback.
    None,
}

/// A `portok.port` that is not a port is an error for the container, not a guess.
pub fn port_source(c: &Facts) -> Result<PortSource, String> {
    if let Some(raw) = c.labels.get(LABEL_PORT) {
        return match raw.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(PortSource::Label(p)),
            _ => Err(format!(
                "its label {LABEL_PORT}={raw:?} is not a port number"
            )),
        };
    }
    if !c.published.is_empty() {
        let mut ports: Vec<u16> = c.published.iter().map(|&(host, _)| host).collect();
        ports.dedup();
        return Ok(PortSource::Published(ports));
    }
    if c.host_network {
        return Ok(PortSource::HostNetwork);
    }
    Ok(PortSource::None)
}

/// The published TCP ports of an inspect answer's `NetworkSettings.Ports` that portok can
/// reach on loopback: bound on 127.0.0.1, ::1 or every address (never a bridge address).
pub fn published_ports(ports: &serde_json::Value) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let Some(map) = ports.as_object() else {
        return out;
    };
    for (key, bindings) in map {
        let Some((inner, "tcp")) = key.split_once('/') else {
            continue;
        };
        let Ok(inner) = inner.parse::<u16>() else {
            continue;
        };
        for b in bindings.as_array().into_iter().flatten() {
            let ip = b["HostIp"].as_str().unwrap_or("");
            let loopback_reachable = matches!(ip, "" | "0.0.0.0" | "127.0.0.1" | "::" | "::1");
            let host = b["HostPort"].as_str().and_then(|p| p.parse::<u16>().ok());
            if let (true, Some(host)) = (loopback_reachable, host) {
                if !out.contains(&(host, inner)) {
                    out.push((host, inner));
                }
            }
        }
    }
    out.sort_unstable();
    out
}

/// Facts from the engine's inspect answer (`GET /containers/ID/json`) as JSON.
pub fn facts_of(inspect: &serde_json::Value) -> Facts {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let labels = inspect["Config"]["Labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    let state = &inspect["State"];
    Facts {
        id: s(&inspect["Id"]),
        name: s(&inspect["Name"]).trim_start_matches('/').to_string(),
        image: s(&inspect["Config"]["Image"]),
        labels,
        host_network: inspect["HostConfig"]["NetworkMode"].as_str() == Some("host"),
        published: published_ports(&inspect["NetworkSettings"]["Ports"]),
        running: state["Running"].as_bool().unwrap_or(false),
        health_starting: state["Health"]["Status"].as_str() == Some("starting"),
        restarting: state["Restarting"].as_bool().unwrap_or(false),
        pid: state["Pid"].as_u64().unwrap_or(0) as u32,
        exit_code: state["ExitCode"].as_i64().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with_labels(labels: &[(&str, &str)]) -> Facts {
        Facts {
            id: "0123456789abcdef".into(),
            name: "box-1".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Facts::default()
        }
    }

    #[test]
    fn names_come_from_the_label_then_compose_then_docker_all() {
        let named = with_labels(&[(LABEL_NAME, "box"), (COMPOSE_SERVICE, "web")]);
        assert_eq!(naming(&named, false), Naming::Named("box".into()));
        let compose = with_labels(&[(COMPOSE_SERVICE, "web"), (COMPOSE_PROJECT, "shop")]);
        assert_eq!(naming(&compose, false), Naming::Named("web.shop".into()));
        let off = with_labels(&[(LABEL_ENABLE, "false"), (LABEL_NAME, "box")]);
        assert_eq!(naming(&off, true), Naming::Disabled);
        let plain = with_labels(&[]);
        assert_eq!(naming(&plain, false), Naming::Unlabelled);
        assert_eq!(naming(&plain, true), Naming::Named("box-1".into()));
        assert_eq!(named.short_id(), "0123456789ab");
    }

    #[test]
    fn the_port_label_wins_and_must_be_a_port() {
        let mut c = with_labels(&[(LABEL_PORT, "8080")]);
        c.published = vec![(32768, 80)];
        assert_eq!(port_source(&c), Ok(PortSource::Label(8080)));
        c.labels.insert(LABEL_PORT.into(), "http".into());
        assert!(port_source(&c).unwrap_err().contains("not a port number"));
        c.labels.clear();
        assert_eq!(port_source(&c), Ok(PortSource::Published(vec![32768])));
        c.published.clear();
        c.host_network = true;
        assert_eq!(port_source(&c), Ok(PortSource::HostNetwork));
        c.host_network = false;
        assert_eq!(port_source(&c), Ok(PortSource::None));
    }

    /// A bridged container's answer, as the engine gives it (`docker run -p
    /// 127.0.0.1:8080:80 -p 9000:9000 -p 192.168.1.5:7000:7000 -p 5353:53/udp`): only the
    /// ports reachable on loopback count, and never the bridge address.
    #[test]
    fn published_ports_are_read_from_the_engines_json() {
        let inspect = json!({
            "Id": "4f66ad9a0b2e6f3c5b8a7d9e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c",
            "Name": "/shop-web-1",
            "State": {"Running": true, "Pid": 4242, "ExitCode": 0,
                      "Health": {"Status": "starting"}},
            "Config": {"Image": "nginx:alpine",
                       "Labels": {"com.docker.compose.project": "shop",
                                  "com.docker.compose.service": "web"}},
            "HostConfig": {"NetworkMode": "shop_default"},
            "NetworkSettings": {
                "IPAddress": "",
                "Networks": {"shop_default": {"IPAddress": "172.18.0.2"}},
                "Ports": {
                    "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
                    "9000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "9000"},
                                 {"HostIp": "::", "HostPort": "9000"}],
                    "7000/tcp": [{"HostIp": "192.168.1.5", "HostPort": "7000"}],
                    "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}],
                    "443/tcp": null
                }
            }
        });
        let f = facts_of(&inspect);
        assert_eq!(f.name, "shop-web-1");
        assert_eq!(f.published, vec![(8080, 80), (9000, 9000)]);
        assert!(!f.host_network && f.running && f.health_starting);
        assert_eq!((f.pid, f.image.as_str()), (4242, "nginx:alpine"));
        assert_eq!(naming(&f, false), Naming::Named("web.shop".into()));
        assert_eq!(port_source(&f), Ok(PortSource::Published(vec![8080, 9000])));
    }
}
