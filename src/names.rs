//! App names and host names: `api` and `api.shop` become `api.localhost` and
//! `api.shop.localhost`, or `api.test` under a custom TLD (`--tld test`). Validation
//! happens before anything is written.

/// The daemon's own host: dashboard, admin API and metrics.
pub const ADMIN_HOST: &str = "portok.localhost";

/// Names portok keeps for itself: its command words, and `portok` for the daemon's own pages.
/// The suffix of names on the LAN (mDNS), served besides the TLDs with `proxy start --lan`.
pub const LAN_TLD: &str = "local";

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
    "service",
    "ports",
    "completions",
    "man",
    "up",
    "down",
    "ps",
    "add",
    "remove",
    "inspect",
    "share",
    "docker",
    "unshare",
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
    #[error("--tld {tld:?} cannot be used: {why}")]
    BadTld { tld: String, why: String },
}

/// How route URLs are written: `http://NAME:PORT`, or, once `portok ports enable` sends
/// loopback 80 and 443 to the daemon and that works, `https://NAME` with no port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlBase {
    pub port: u16,
    pub clean: bool,
}

impl UrlBase {
    /// The URL a user opens.
    pub fn url(&self, host: &str) -> String {
        if self.clean {
            format!("https://{host}")
        } else {
            format!("http://{host}:{}", self.port)
        }
    }

    /// `NAME:PORT`, or `NAME` when ports 80 and 443 reach the daemon.
    pub fn authority(&self, host: &str) -> String {
        if self.clean {
            host.to_string()
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The same over `scheme` (http or https).
    pub fn with_scheme(&self, scheme: &str, host: &str) -> String {
        if self.clean {
            format!("{scheme}://{host}")
        } else {
            format!("{scheme}://{host}:{}", self.port)
        }
    }
}

/// The suffix every portok name has unless a custom TLD is chosen.
pub const LOCALHOST: &str = "localhost";

/// Check a custom TLD (`--tld test`, `PORTOK_TLD=test,dev.example.com`) and return it
/// lowercased. Refused: invalid labels, `local` (mDNS), and public suffixes such as `com`,
/// `dev` or `co.uk`, under which names belong to the internet. A domain below a public
/// suffix (`dev.example.com`) is the user's own choice and allowed.
pub fn check_tld(raw: &str) -> Result<String, NameError> {
    let tld = raw.trim_matches('.').to_ascii_lowercase();
    let bad = |why: String| NameError::BadTld {
        tld: raw.to_string(),
        why,
    };
    if tld.is_empty() {
        return Err(bad("it is empty".into()));
    }
    for label in tld.split('.') {
        check_label(raw, label).map_err(|e| bad(e.to_string()))?;
    }
    if tld == "local" || tld.ends_with(".local") {
        return Err(bad(
            "`.local` is for mDNS (Bonjour, Avahi): names there are announced on the network, not served by portok".into(),
        ));
    }
    if let Some(suffix) = psl::suffix(tld.as_bytes()) {
        if suffix.is_known() && suffix.as_bytes() == tld.as_bytes() {
            return Err(bad(format!(
                "`.{tld}` is a public suffix (a real-world TLD): names under it belong to the internet. Use `test`, or a domain you own such as `dev.example.com`"
            )));
        }
    }
    Ok(tld)
}

/// Whether `name` is a name under `suffix` (`api.test` under `test`; not `test` itself,
/// nor `contest`).
pub fn is_under(name: &str, suffix: &str) -> bool {
    name.strip_suffix(suffix)
        .and_then(|rest| rest.strip_suffix('.'))
        .is_some_and(|label| !label.is_empty())
}

/// The host of a browser's `Origin` (`https://web.localhost:1355` -> `web.localhost`,
/// `http://[::1]:3000` -> `[::1]`); None for `null` and any scheme but http(s).
pub fn origin_host(origin: &str) -> Option<&str> {
    let host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))?;
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty() => h,
        _ => host,
    };
    (!host.is_empty()).then_some(host)
}

/// `name` under `tld` (`localhost` or one [`check_tld`] accepted): `api` -> `api.test`.
/// A name that already ends in `.tld` is taken as is.
pub fn hostname_in(name: &str, tld: &str) -> Result<String, NameError> {
    if tld == LOCALHOST {
        return hostname_for(name);
    }
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    let bare = lower
        .strip_suffix(&format!(".{tld}"))
        .unwrap_or(if lower == tld { "" } else { &lower });
    // The same rules as for .localhost names.
    let checked = hostname_for(bare)?;
    let host = format!("{}.{tld}", short_name(&checked));
    if host.len() > 253 {
        return Err(NameError::TooLong {
            name: name.to_string(),
        });
    }
    Ok(host)
}

/// A name as given where the daemon serves `tlds` besides .localhost: one already under a
/// served TLD (`app.test` with `--tld test`) is taken as it is; any other goes under
/// .localhost. The one rule for every name a route gets without a `--tld` of its own
/// (aliases, containers).
pub fn hostname_served(name: &str, tlds: &[String]) -> Result<String, NameError> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    match tlds.iter().find(|tld| is_under(&lower, tld)) {
        Some(tld) => hostname_in(&lower, tld),
        None => hostname_for(name),
    }
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
/// A route's name on the LAN, the NAME of `NAME.local`: its host name without
/// `.localhost` or the custom TLD it is under (`api.shop.localhost` -> `api.shop`,
/// `api.test` -> `api`).
pub fn lan_label<'a>(hostname: &'a str, tlds: &[String]) -> &'a str {
    if let Some(s) = hostname.strip_suffix(".localhost") {
        return s;
    }
    tlds.iter()
        .find_map(|t| hostname.strip_suffix(t.as_str())?.strip_suffix('.'))
        .unwrap_or(hostname)
}

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
    fn an_origins_host_is_its_name_without_scheme_or_port() {
        assert_eq!(
            origin_host("https://web.localhost:1355"),
            Some("web.localhost")
        );
        assert_eq!(
            origin_host("http://portok.localhost"),
            Some("portok.localhost")
        );
        assert_eq!(origin_host("http://[::1]:3000"), Some("[::1]"));
        assert_eq!(origin_host("http://[::1]"), Some("[::1]"));
        assert_eq!(origin_host("null"), None);
        assert_eq!(origin_host("file:///x"), None);
        assert_eq!(origin_host("https://"), None);
    }

    #[test]
    fn a_name_under_a_served_tld_is_taken_as_given() {
        let tlds = vec!["test".to_string(), "dev.example.com".to_string()];
        assert_eq!(hostname_served("app.test", &tlds).unwrap(), "app.test");
        assert_eq!(hostname_served("App.Test.", &tlds).unwrap(), "app.test");
        assert_eq!(
            hostname_served("a.dev.example.com", &tlds).unwrap(),
            "a.dev.example.com"
        );
        assert_eq!(hostname_served("app", &tlds).unwrap(), "app.localhost");
        assert_eq!(
            hostname_served("app.test", &[]).unwrap(),
            "app.test.localhost"
        );
        assert_eq!(
            hostname_served("contest", &tlds).unwrap(),
            "contest.localhost"
        );
    }

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

    #[test]
    fn custom_tlds_are_checked_and_public_suffixes_refused() {
        assert_eq!(check_tld("test").unwrap(), "test");
        assert_eq!(check_tld(".Dev.Example.com.").unwrap(), "dev.example.com");
        for bad in [
            "com",
            "dev",
            "co.uk",
            "github.io",
            "local",
            "x.local",
            "a_b",
            "",
            "-x",
        ] {
            assert!(
                matches!(check_tld(bad), Err(NameError::BadTld { .. })),
                "{bad} was accepted"
            );
        }
        let why = check_tld("dev").unwrap_err().to_string();
        assert!(
            why.contains("public suffix") && why.contains("`test`"),
            "{why}"
        );
    }

    #[test]
    fn names_under_a_custom_tld() {
        assert_eq!(hostname_in("api", "test").unwrap(), "api.test");
        assert_eq!(
            hostname_in("API.shop.test", "test").unwrap(),
            "api.shop.test"
        );
        assert_eq!(hostname_in("api", "localhost").unwrap(), "api.localhost");
        assert!(hostname_in("portok", "test").is_err());
        assert!(hostname_in("a_b", "test").is_err());
        assert_eq!(
            hostname_in("web", "dev.example.com").unwrap(),
            "web.dev.example.com"
        );
    }

    #[test]
    fn names_under_a_suffix() {
        assert!(is_under("api.test", "test") && is_under("a.b.test", "test"));
        assert!(!is_under("test", "test") && !is_under("contest", "test"));
        assert!(!is_under(".test", "test"));
    }
}
