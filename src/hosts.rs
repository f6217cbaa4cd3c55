//! portok's block in the hosts file, for resolvers that do not map `*.localhost` to
//! loopback by themselves (Safari, glibc without nss-myhostname, some CLI tools):
//!
//! ```text
//! # portok-start
//! 127.0.0.1 api.localhost
//! ::1 api.localhost
//! # portok-end
//! ```
//!
//! The file belongs to the user and the system: portok only ever replaces the bytes from
//! its start marker to the end of its end marker, writes atomically (temp file + rename,
//! keeping mode and owner), and refuses to touch a file whose markers do not pair up.

use crate::state::StateDir;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const START: &str = "# portok-start";
pub const END: &str = "# portok-end";
const NOTE: &str = "# Managed by portok: `portok hosts sync` rewrites and `portok hosts clean` removes this block.";

/// The hosts file portok manages: `$PORTOK_HOSTS_FILE` (tests point it at a temp file),
/// else /etc/hosts.
pub fn hosts_path() -> PathBuf {
    std::env::var_os("PORTOK_HOSTS_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/hosts"))
}

#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}{}", write_hint(.source))]
    Write { path: PathBuf, source: io::Error },
    #[error("{path} line {line}: `{START}` has no `{END}` after it, so portok cannot tell where its block ends; delete the stray marker by hand and run the command again")]
    Unclosed { path: PathBuf, line: usize },
    #[error("{path} line {line}: unexpected `{marker}` (portok writes one block, `{START}` then `{END}`); remove the extra marker by hand and run the command again")]
    Stray {
        path: PathBuf,
        line: usize,
        marker: &'static str,
    },
}

fn write_hint(e: &io::Error) -> &'static str {
    if e.kind() == io::ErrorKind::PermissionDenied {
        " (the hosts file belongs to root: run it with sudo, e.g. `sudo portok hosts sync`)"
    } else {
        ""
    }
}

/// Where portok's block sits in a file: the byte range from the start of the start marker
/// line to the end of the end marker line (its newline included).
fn locate(path: &Path, content: &[u8]) -> Result<Option<std::ops::Range<usize>>, HostsError> {
    let mut start: Option<(usize, usize)> = None;
    let mut found = None;
    let mut offset = 0;
    for (i, line) in content.split_inclusive(|&b| b == b'\n').enumerate() {
        let text = line.trim_ascii();
        let line_no = i + 1;
        if text == START.as_bytes() {
            if start.is_some() || found.is_some() {
                return Err(HostsError::Stray {
                    path: path.into(),
                    line: line_no,
                    marker: START,
                });
            }
            start = Some((offset, line_no));
        } else if text == END.as_bytes() {
            match start.take() {
                Some((s, _)) => found = Some(s..offset + line.len()),
                None => {
                    return Err(HostsError::Stray {
                        path: path.into(),
                        line: line_no,
                        marker: END,
                    })
                }
            }
        }
        offset += line.len();
    }
    if let Some((_, line)) = start {
        return Err(HostsError::Unclosed {
            path: path.into(),
            line,
        });
    }
    Ok(found)
}

/// Only names made of host-name characters go in, so a hand-edited routes.json can never
/// inject other lines into the hosts file.
fn safe_host(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// The block for these names (sorted, deduplicated), or None when there is nothing to map.
fn render(hostnames: &[String]) -> Option<Vec<u8>> {
    let mut names: Vec<&str> = hostnames
        .iter()
        .map(String::as_str)
        .filter(|n| safe_host(n))
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        return None;
    }
    let mut out = format!("{START}\n{NOTE}\n");
    for n in names {
        out.push_str(&format!("127.0.0.1 {n}\n::1 {n}\n"));
    }
    out.push_str(END);
    out.push('\n');
    Some(out.into_bytes())
}

/// The names in portok's block, for `doctor`. A missing file has none.
pub fn block_names(path: &Path) -> Result<Vec<String>, HostsError> {
    let content = read(path)?;
    let Some(range) = locate(path, &content)? else {
        return Ok(Vec::new());
    };
    let mut names: Vec<String> = String::from_utf8_lossy(&content[range])
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
        .collect();
    names.dedup();
    Ok(names)
}

/// Make portok's block hold exactly these host names (each on 127.0.0.1 and ::1); with no
/// names the block is removed. Returns whether the file changed: an unchanged block is
/// not rewritten, so the daemon can call this after every route change.
pub fn sync_routes<I, S>(path: &Path, hostnames: I) -> Result<bool, HostsError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let names: Vec<String> = hostnames
        .into_iter()
        .map(|s| s.as_ref().to_ascii_lowercase())
        .collect();
    let block = render(&names);
    let content = read(path)?;
    let mut new = content.clone();
    match (locate(path, &content)?, block) {
        (Some(range), Some(block)) => {
            new.splice(range, block);
        }
        (Some(range), None) => {
            new.drain(range);
        }
        (None, Some(block)) => {
            // Appending after a last line without its newline would glue our marker onto it.
            if !new.is_empty() && !new.ends_with(b"\n") {
                new.push(b'\n');
            }
            new.extend_from_slice(&block);
        }
        (None, None) => {}
    }
    if new == content {
        return Ok(false);
    }
    write(path, &new)?;
    Ok(true)
}

/// Remove portok's block, leaving every other byte as it was. Returns whether there was one.
pub fn remove_block(path: &Path) -> Result<bool, HostsError> {
    sync_routes(path, std::iter::empty::<&str>())
}

fn read(path: &Path) -> Result<Vec<u8>, HostsError> {
    match fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(HostsError::Read {
            path: path.into(),
            source,
        }),
    }
}

/// Replace the file atomically, keeping its mode and owner. /etc/hosts may be a symlink
/// (written through to its target), or a bind mount inside a container, where rename
/// fails with EBUSY: then, and when the folder is not writable but the file is, the file
/// is rewritten in place.
fn write(path: &Path, data: &[u8]) -> Result<(), HostsError> {
    let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let err = |source| HostsError::Write {
        path: path.into(),
        source,
    };
    let meta = fs::metadata(&target).ok();
    let mode = meta
        .as_ref()
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    let owner = meta.as_ref().map(|m| (m.uid(), m.gid()));
    match crate::fsutil::write_atomic_owned(&target, data, mode, owner) {
        Ok(()) => Ok(()),
        Err(e)
            if meta.is_some()
                && (e.kind() == io::ErrorKind::PermissionDenied
                    || matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EXDEV))) =>
        {
            write_in_place(&target, data).map_err(err)
        }
        Err(e) => Err(err(e)),
    }
}

fn write_in_place(target: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(target)?;
    f.write_all(data)?;
    f.sync_all()
}

/// The state dir to act on. Under `sudo` HOME is usually root's, but the routes (and the
/// files `clean` removes) are the invoking user's: use `SUDO_USER`'s home unless
/// PORTOK_STATE_DIR says otherwise.
pub fn state_dir() -> Result<StateDir, crate::state::StateError> {
    let root = crate::sys::effective_ids().0 == 0;
    if root && std::env::var_os("PORTOK_STATE_DIR").is_none() {
        if let Some(home) = std::env::var("SUDO_USER").ok().and_then(|u| home_of(&u)) {
            return Ok(StateDir::at(home.join(".portok")));
        }
    }
    StateDir::from_env()
}

fn home_of(user: &str) -> Option<PathBuf> {
    crate::sys::home_of(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn adds_replaces_and_removes_only_its_block() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("hosts");
        // No trailing newline, odd spacing, a comment mentioning portok: all kept.
        let original = b"127.0.0.1\tlocalhost\n# portok is great\n10.0.0.1  db  # mine";
        fs::write(&p, original).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();

        assert!(sync_routes(&p, names(&["b.localhost", "a.localhost", "a.localhost"])).unwrap());
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.starts_with(std::str::from_utf8(original).unwrap()));
        assert!(text.contains("\n# portok-start\n"));
        assert!(text.contains("127.0.0.1 a.localhost\n::1 a.localhost\n127.0.0.1 b.localhost\n"));
        assert_eq!(text.matches("a.localhost").count(), 2);
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );

        // The same names again: nothing is rewritten.
        assert!(!sync_routes(&p, names(&["a.localhost", "b.localhost"])).unwrap());

        // Lines the user adds after the block survive a rewrite byte for byte.
        let mut with_tail = fs::read(&p).unwrap();
        with_tail.extend_from_slice(b"192.168.1.5 nas\n");
        fs::write(&p, &with_tail).unwrap();
        assert!(sync_routes(&p, names(&["c.localhost"])).unwrap());
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.ends_with("# portok-end\n192.168.1.5 nas\n"));
        assert!(!text.contains("a.localhost"));

        assert!(remove_block(&p).unwrap());
        let mut expected = original.to_vec();
        expected.extend_from_slice(b"\n192.168.1.5 nas\n");
        assert_eq!(fs::read(&p).unwrap(), expected);
        assert!(!remove_block(&p).unwrap());
    }

    #[test]
    fn unpaired_markers_are_refused_and_nothing_is_written() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("hosts");
        for (content, want) in [
            (
                "a\n# portok-start\n127.0.0.1 x.localhost\n",
                "no `# portok-end`",
            ),
            ("# portok-end\n", "unexpected `# portok-end`"),
            (
                "# portok-start\n# portok-end\n# portok-start\n# portok-end\n",
                "unexpected `# portok-start`",
            ),
        ] {
            fs::write(&p, content).unwrap();
            let err = sync_routes(&p, names(&["a.localhost"])).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
            assert_eq!(fs::read_to_string(&p).unwrap(), content);
        }
    }

    #[test]
    fn unsafe_names_never_reach_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("hosts");
        sync_routes(
            &p,
            names(&["ok.localhost", "evil.localhost\n1.2.3.4 bank.com"]),
        )
        .unwrap();
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.contains("ok.localhost"));
        assert!(!text.contains("bank"));
        assert_eq!(block_names(&p).unwrap(), vec!["ok.localhost"]);
    }
}
