//! Where the Docker engine is, as the `docker` command finds it: `DOCKER_HOST`, else the
//! current context (`DOCKER_CONTEXT`, else `currentContext` in `~/.docker/config.json`),
//! else the default socket. Podman's Docker-compatible socket, Colima and Docker Desktop
//! are found the same way, through a context or `DOCKER_HOST`.

use std::path::{Path, PathBuf};

pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// The engine's address and where it came from (for `portok doctor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub from: String,
}

/// The engine of this environment; `home` is the user's home (contexts live under it).
pub fn find(home: Option<&Path>) -> Endpoint {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    if let Some(host) = env("DOCKER_HOST") {
        return Endpoint {
            host,
            from: "DOCKER_HOST".into(),
        };
    }
    let config_dir = env("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| home.map(|h| h.join(".docker")));
    let context = env("DOCKER_CONTEXT").or_else(|| {
        let config = std::fs::read(config_dir.as_ref()?.join("config.json")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&config).ok()?;
        v["currentContext"].as_str().map(String::from)
    });
    if let (Some(name), Some(dir)) = (context.filter(|c| c != "default"), config_dir) {
        if let Some(host) = context_host(&dir, &name) {
            return Endpoint {
                host,
                from: format!("docker context {name:?}"),
            };
        }
    }
    Endpoint {
        host: DEFAULT_HOST.into(),
        from: "the default socket".into(),
    }
}

/// Why an engine at `host` is not followed, or None: a local one. A remote engine's
/// published ports and processes are another machine's, and portok serves loopback only.
pub fn not_local(host: &str) -> Option<String> {
    let Some((scheme, rest)) = host.split_once("://") else {
        return Some(format!(
            "{host:?} is not an address portok knows (unix:// or tcp://)"
        ));
    };
    match scheme {
        "unix" | "npipe" => None,
        "tcp" | "http" | "https" => {
            let authority = rest.split('/').next().unwrap_or(rest);
            let name = match authority.rsplit_once(':') {
                Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
                None => authority,
            };
            let local = name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            (!local).then(|| format!("it is on another machine ({name}): its containers' ports are not on this machine's loopback"))
        }
        other => Some(format!(
            "portok follows local engines only, not {other}:// ones"
        )),
    }
}

/// A context's engine address: `contexts/meta/SHA256(NAME)/meta.json`'s
/// `Endpoints.docker.Host`, as the docker CLI stores it.
fn context_host(config_dir: &Path, name: &str) -> Option<String> {
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let meta = config_dir.join("contexts/meta").join(hex).join("meta.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(meta).ok()?).ok()?;
    v["Endpoints"]["docker"]["Host"].as_str().map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_engines_are_followed() {
        assert_eq!(not_local("unix:///var/run/docker.sock"), None);
        assert_eq!(not_local("tcp://127.0.0.1:2375"), None);
        assert_eq!(not_local("tcp://localhost:2375"), None);
        assert_eq!(not_local("tcp://[::1]:2375"), None);
        assert!(not_local("tcp://10.0.0.5:2376")
            .unwrap()
            .contains("another machine"));
        assert!(not_local("ssh://me@box")
            .unwrap()
            .contains("local engines only"));
    }

    /// A context as `docker context create colima --docker host=unix:///x.sock` stores it.
    #[test]
    fn a_context_is_read_where_the_docker_cli_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, b"colima");
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let meta = dir.path().join("contexts/meta").join(hex);
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("meta.json"),
            r#"{"Name":"colima","Endpoints":{"docker":{"Host":"unix:///x.sock","SkipTLSVerify":false}}}"#,
        )
        .unwrap();
        assert_eq!(
            context_host(dir.path(), "colima").as_deref(),
            Some("unix:///x.sock")
        );
        assert_eq!(context_host(dir.path(), "other"), None);
    }
}
