//! The fuzz corpora (fuzz/corpus/TARGET) and the inputs fuzzing found (fuzz/regressions/
//! TARGET) replayed through the very checks the fuzz targets run (fuzz/src/checks.rs), as
//! plain tests: no fuzzer, no daemon. See fuzz/README.md.

#[path = "../../fuzz/src/checks.rs"]
mod checks;

use portok::names::normalize_host;
use std::path::{Path, PathBuf};

/// Run every committed input of a target through its check; name each one that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        files.extend(entries.map(|e| e.unwrap().path()));
    }
    files.sort();
    assert!(
        !files.is_empty(),
        "no inputs for {target} under {}",
        root.display()
    );
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).unwrap();
            std::panic::catch_unwind(|| check(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} inputs failed (panic messages above): {failed:#?}",
        failed.len(),
        files.len()
    );
}

#[test]
fn sniff_corpus() {
    replay("sniff", checks::sniff);
}

#[test]
fn names_corpus() {
    replay("names", checks::names);
}

#[test]
fn route_lookup_corpus() {
    replay("route_lookup", checks::route_lookup);
}

#[test]
fn routes_json_corpus() {
    replay("routes_json", checks::routes_json);
}

/// Found writing the names fuzz check: a second pass of normalize_host used to strip again
/// what the first left (one trailing dot at a time, the last ':' of an IPv6 literal, a
/// second '[').
#[test]
fn normalize_host_is_idempotent() {
    for raw in [
        "a.localhost..",
        "a.localhost:1:2",
        "[::1]:1355",
        "[[a.localhost]",
        "a:1.",
        "a.:1.",
        "[a:1]",
        "a:",
    ] {
        let once = normalize_host(raw).into_owned();
        assert_eq!(normalize_host(&once), once, "normalize_host({raw:?})");
    }
}
