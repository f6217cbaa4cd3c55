//! App names and host names: `api` and `api.shop` become `api.localhost` and
//! `api.shop.localhost`. Validation happens before anything is written.

/// The daemon's own host: dashboard, admin API and metrics.
pub const ADMIN_HOST: &str = "portok.localhost";

/// Names portok keeps for itself: its command words, and `portok` for the daemon's own pages.
pub const RESERVED: &[&str] = &[
    "portok",
    "proxy",
    "alias",
    "list",
    "get",
    "run",
    "trust",
    "untrust",
    "restart",
    "status",
    "logs",
    "switch",
    "help",
    "doctor",
    "prune",
    "clean",
    "hosts",
    "completions",
    "man",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("the app name is empty; give a name such as `myapp` or `api.shop`")]
    Empty,
    #[error("{name:?} is not a valid name: label {label:?} {why} (labels are a-z, 0-9 and '-', 1-63 characters, no '-' at either end; dots separate labels)")]
    BadLabel {
        name: String,
        label: String,
        why: &'static str,
    },
    #[error("{name:?} is reserved for portok itself; pick another name")]
    Reserved { name: String },
    #[error("{name:?} is too long: a host name is at most 253 characters")]
    TooLong { name: String },
}

/// Turn a user-given name into the full host name (`NAME.localhost`), lowercased.
pub fn hostname_for(name: &str) -> Result<String, NameError> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    let bare = lower
        .strip_suffix(".localhost")
        .unwrap_or(if lower == "localhost" { "" } else { &lower });
    if bare.is_empty() {
        return Err(NameError::Empty);
    }
    for label in bare.split('.') {
        check_label(name, label)?;
    }
    let last = bare.rsplit('.').next().unwrap_or(bare);
    if RESERVED.contains(&bare) || last == "portok" {
        return Err(NameError::Reserved {
            name: name.to_string(),
        });
    }
    let host = format!("{bare}.localhost");
    if host.len() > 253 {
        return Err(NameError::TooLong {
            name: name.to_string(),
        });
    }
    Ok(host)
}

fn check_label(name: &str, label: &str) -> Result<(), NameError> {
    let bad = |why| NameError::BadLabel {
        name: name.to_string(),
        label: label.to_string(),
        why,
    };
    if label.is_empty() {
        return Err(bad("is empty (two dots in a row, or a dot at the start)"));
    }
    if label.len() > 63 {
        return Err(bad("is longer than 63 characters"));
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(bad("has a character other than a-z, 0-9 or '-'"));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(bad("starts or ends with '-'"));
    }
    Ok(())
}

/// The short name of a host: `api.shop.localhost` -> `api.shop`.
pub fn short_name(hostname: &str) -> &str {
    hostname.strip_suffix(".localhost").unwrap_or(hostname)
}

/// Normalise a Host header value for lookup: strip the port, lowercase, drop a trailing dot.
/// Borrows when the value is already in normal form, which is the common case.
pub fn normalize_host(raw: &str) -> std::borrow::Cow<'_, str> {
    // Normalising twice gives the same as once: a second pass finds nothing to strip.
    let host = match raw.strip_prefix('[') {
        // IPv6 literal: keep the brackets' content only.
        Some(rest) => {
            let rest = rest.trim_start_matches('[');
            rest.split(']').next().unwrap_or(rest)
        }
        None => raw,
    };
    let host = host.trim_end_matches('.');
    // A port is `:digits` after a name with no other ':' (a bare IPv6 address has several).
    let host = match host.rfind(':') {
        Some(i)
            if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) && !host[..i].contains(':') =>
        {
            host[..i].trim_end_matches('.')
        }
        _ => host,
    };
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_dotted_and_full_names() {
        assert_eq!(hostname_for("myapp").unwrap(), "myapp.localhost");
        assert_eq!(hostname_for("API.Shop").unwrap(), "api.shop.localhost");
        assert_eq!(hostname_for("web.localhost").unwrap(), "web.localhost");
        assert_eq!(hostname_for("a-1").unwrap(), "a-1.localhost");
    }

    #[test]
    fn refuses_bad_names() {
        for bad in ["", "a b", "a..b", "a/b", "-a", "a-", ".a", "localhost", "é"] {
            assert!(hostname_for(bad).is_err(), "{bad:?} accepted");
        }
        assert!(hostname_for(&"a".repeat(64)).is_err());
        assert!(matches!(
            hostname_for("portok"),
            Err(NameError::Reserved { .. })
        ));
        assert!(matches!(
            hostname_for("proxy"),
            Err(NameError::Reserved { .. })
        ));
        assert!(matches!(
            hostname_for("x.portok"),
            Err(NameError::Reserved { .. })
        ));
    }

    #[test]
    fn normalizes_hosts() {
        assert_eq!(normalize_host("MyApp.localhost:1355"), "myapp.localhost");
        assert_eq!(normalize_host("myapp.localhost."), "myapp.localhost");
        assert_eq!(normalize_host("[::1]:1355"), "::1");
        assert_eq!(normalize_host("a.localhost"), "a.localhost");
    }
}
