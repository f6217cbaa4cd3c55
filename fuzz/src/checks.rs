//! What each fuzz target checks, as a plain function of the input bytes, so that the
//! regression tests replay the corpus through exactly the same checks without a fuzzer.
//!
//! Built twice: in the fuzz crate (fuzz/src/lib.rs) and in the integration tests
//! (tests/it/fuzz_regressions.rs includes this file by path). It may use only portok and
//! portok's own dependencies (http, serde_json).

use portok::metrics::Metrics;
use portok::names::{hostname_for, normalize_host, short_name, RESERVED};
use portok::proxy::sniff::{classify, Kind};
use portok::routes::{store, Route, RouteTable};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// `sniff`: the input is what a client sends first on a fresh connection. The first byte
/// goes through `classify`; for plain HTTP the handler's Host path follows: the Host header
/// value as hyper hands it over (`HeaderValue`, then `to_str`), `normalize_host`, and a
/// lookup in a fixed route table.
pub fn sniff(data: &[u8]) {
    let kind = classify(data.first().copied());
    let expected = match data.first() {
        None => Kind::Closed,
        Some(0x16) => Kind::Tls,
        Some(_) => Kind::Plain,
    };
    assert_eq!(kind, expected, "classify({:?})", data.first());
    if kind != Kind::Plain {
        return;
    }
    let Some(raw) = host_header(data) else {
        return;
    };
    // The handler answers 400 for a value that is not visible ASCII.
    let Ok(value) = http::HeaderValue::from_bytes(raw) else {
        return;
    };
    let Ok(raw_host) = value.to_str() else {
        return;
    };
    let host = check_normalized(raw_host);
    if host.is_empty() {
        return; // 400: missing host
    }
    let routes: Vec<Route> = FIXED_HOSTS
        .iter()
        .enumerate()
        .map(|(i, h)| Route::alias(h.to_string(), 1000 + i as u16))
        .collect();
    let table = RouteTable::build(routes, None, &Metrics::default());
    check_lookup(&table, FIXED_HOSTS, &host);
}

const FIXED_HOSTS: &[&str] = &[
    "shop.localhost",
    "api.shop.localhost",
    "a-1.localhost",
    "web.localhost",
    "x.y.z.localhost",
];

/// The first Host header of an HTTP/1 request head: lines after the request line, up to
/// the blank line, name matched without case, value without surrounding blanks.
fn host_header(data: &[u8]) -> Option<&[u8]> {
    let mut lines = data.split(|&b| b == b'\n');
    lines.next()?;
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(b"host") {
            return Some(line[colon + 1..].trim_ascii());
        }
    }
    None
}

/// `names`: the input as a name given on the command line (`hostname_for`) and as a Host
/// header value (`normalize_host`).
pub fn names(data: &[u8]) {
    let name = String::from_utf8_lossy(data);
    check_normalized(&name);

    let result = hostname_for(&name);
    if let Ok(out) = &result {
        check_hostname(out);
    }
    // Case and trailing dots make no difference to the outcome.
    assert_eq!(
        hostname_for(&name.to_ascii_uppercase()).ok(),
        result.as_ref().ok().cloned(),
        "hostname_for is case-sensitive for {name:?}"
    );
    assert_eq!(
        hostname_for(&format!("{name}.")).ok(),
        result.as_ref().ok().cloned(),
        "a trailing dot changes hostname_for({name:?})"
    );
}

/// `normalize_host(raw)`, checking what holds for every input.
fn check_normalized(raw: &str) -> Cow<'_, str> {
    let host = normalize_host(raw);
    assert!(
        !host.bytes().any(|b| b.is_ascii_uppercase()),
        "normalize_host({raw:?}) = {host:?} has upper case"
    );
    assert!(
        raw.to_ascii_lowercase().contains(host.as_ref()),
        "normalize_host({raw:?}) = {host:?} is not a part of its input"
    );
    if !raw.bytes().any(|b| b.is_ascii_uppercase()) {
        assert!(
            matches!(&host, Cow::Borrowed(_)),
            "normalize_host({raw:?}) allocated for a lower-case input"
        );
    }
    assert_eq!(
        normalize_host(&host),
        host.as_ref(),
        "normalize_host is not idempotent on {raw:?}"
    );
    host
}

/// What holds for every host name that `hostname_for` returns.
fn check_hostname(out: &str) {
    let bare = out
        .strip_suffix(".localhost")
        .unwrap_or_else(|| panic!("{out:?} does not end with .localhost"));
    assert!(out.len() <= 253, "{out:?} is longer than 253");
    for label in out.split('.') {
        assert!(
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-'),
            "{out:?} has a bad label {label:?}"
        );
    }
    assert_eq!(short_name(out), bare);
    assert!(!RESERVED.contains(&bare), "{out:?} is reserved");
    assert_ne!(
        bare.rsplit('.').next(),
        Some("portok"),
        "{out:?} is reserved"
    );
    assert_eq!(hostname_for(out).as_deref(), Ok(out), "not a fixed point");
    // The Host header forms of it normalise back to it, without allocating when lower case.
    assert!(matches!(normalize_host(out), Cow::Borrowed(h) if h == out));
    for raw in [
        format!("{out}:1355"),
        format!("{out}."),
        format!("{}.:443", out.to_ascii_uppercase()),
    ] {
        assert_eq!(normalize_host(&raw), out, "normalize_host({raw:?})");
    }
}

/// `route_lookup`: two route tables, the second built over the first as a reload does, and
/// lookups in both. Each input line is a route (a byte choosing the table and port, a byte
/// for the generation, then the host name) or, starting with '?', a host to look up.
pub fn route_lookup(data: &[u8]) {
    let mut first = Vec::new();
    let mut second = Vec::new();
    let mut queries = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        match line {
            [b'?', q @ ..] => queries.push(String::from_utf8_lossy(q).into_owned()),
            [sel, generation, host @ ..] => {
                let route = Route {
                    // None and Some(0) both appear: a route without a generation is gen 0.
                    generation: match generation % 3 {
                        0 => None,
                        g => Some(u64::from(g - 1)),
                    },
                    ..Route::alias(
                        String::from_utf8_lossy(host).into_owned(),
                        u16::from(sel % 4),
                    )
                };
                match sel >> 6 {
                    0 => first.push(route),
                    1 => second.push(route),
                    _ => {
                        first.push(route.clone());
                        second.push(route);
                    }
                }
            }
            _ => {}
        }
    }
    let metrics = Metrics::default();
    let t1 = RouteTable::build(first.clone(), None, &metrics);
    let t2 = RouteTable::build(second.clone(), Some(&t1), &metrics);
    let by1 = check_table(&t1, &first);
    let by2 = check_table(&t2, &second);

    // A backend (and so its in-flight count) carries over exactly when the host keeps its
    // port and generation; the host's stats always carry over.
    for (host, r2) in &by2 {
        let l2 = t2.lookup(host).expect("registered host");
        let Some(r1) = by1.get(host) else {
            continue;
        };
        let l1 = t1.lookup(host).expect("registered host");
        if r1.ports.is_empty() && r2.ports.is_empty() {
            let same =
                r1.port == r2.port && r1.generation.unwrap_or(0) == r2.generation.unwrap_or(0);
            assert_eq!(
                Arc::ptr_eq(&l1.backends[0], &l2.backends[0]),
                same,
                "backend reuse for {host:?}: {r1:?} -> {r2:?}"
            );
        }
        assert!(Arc::ptr_eq(&l1.stats, &l2.stats), "stats of {host:?}");
    }

    let hosts1: Vec<&str> = by1.keys().copied().collect();
    let hosts2: Vec<&str> = by2.keys().copied().collect();
    let derived = hosts1.iter().chain(&hosts2).take(64).flat_map(|h| {
        [
            h.to_string(),
            format!("x.{h}"),
            format!("x{h}"),
            format!(".{h}"),
            h.split_once('.')
                .map_or(String::new(), |(_, rest)| rest.into()),
        ]
    });
    for q in queries.iter().cloned().chain(derived) {
        check_lookup(&t1, &hosts1, &q);
        check_lookup(&t2, &hosts2, &q);
    }
}

/// The table holds the last route given for each host, with a backend on its port and
/// generation. Returns that last route by host.
fn check_table<'a>(table: &RouteTable, routes: &'a [Route]) -> HashMap<&'a str, &'a Route> {
    let mut last = HashMap::new();
    for r in routes {
        last.insert(r.hostname.as_str(), r);
    }
    assert_eq!(table.len(), last.len());
    assert_eq!(table.is_empty(), routes.is_empty());
    for (host, route) in &last {
        let live = table.lookup(host).expect("registered host");
        assert_eq!(&live.route, *route);
        let ports: Vec<u16> = live.backends.iter().map(|b| b.port).collect();
        assert_eq!(ports, route.upstream_ports());
        if route.ports.is_empty() {
            assert_eq!(live.backends[0].generation, route.generation.unwrap_or(0));
        }
    }
    let sorted = table.sorted();
    assert_eq!(sorted.len(), last.len());
    assert!(sorted
        .windows(2)
        .all(|w| w[0].route.hostname < w[1].route.hostname));
    last
}

/// The lookup oracle: the host itself if registered, else the longest registered name that
/// the host ends with after a '.', else nothing.
fn check_lookup(table: &RouteTable, hosts: &[&str], q: &str) {
    let matches = |h: &str| q == h || q.strip_suffix(h).is_some_and(|head| head.ends_with('.'));
    let best = hosts
        .iter()
        .copied()
        .filter(|h| matches(h))
        .max_by_key(|h| h.len());
    let got = table.lookup(q).map(|l| l.route.hostname.as_str());
    assert_eq!(got, best, "lookup({q:?}) among {hosts:?}");
}

/// `routes_json`: the input as routes.json. Parsing never panics; whitespace is an empty
/// list; what parses survives the daemon's own write (pretty, newline) and a compact one,
/// and builds a table that finds every route.
pub fn routes_json(data: &[u8]) {
    let parsed = store::parse(data);
    if data.iter().all(u8::is_ascii_whitespace) {
        assert!(matches!(&parsed, Ok(v) if v.is_empty()), "{parsed:?}");
    }
    let Ok(routes) = parsed else {
        return;
    };
    let mut pretty = serde_json::to_vec_pretty(&routes).expect("routes serialise");
    pretty.push(b'\n');
    let compact = serde_json::to_vec(&routes).expect("routes serialise");
    for bytes in [pretty, compact] {
        let again = store::parse(&bytes)
            .unwrap_or_else(|e| panic!("{e}: re-parsing {:?}", String::from_utf8_lossy(&bytes)));
        assert_eq!(again, routes);
    }
    let table = RouteTable::build(routes.clone(), None, &Metrics::default());
    check_table(&table, &routes);
}
