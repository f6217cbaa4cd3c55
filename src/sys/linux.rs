//! Linux's /proc: which process listens on a port, and sysctl values.

use std::str::FromStr;

/// A sysctl under /proc/sys, e.g. "fs/inotify/max_user_watches".
pub(super) fn sysctl<T: FromStr>(name: &str) -> Option<T> {
    std::fs::read_to_string(format!("/proc/sys/{name}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The pid listening on TCP `port`: /proc/net/tcp{,6} gives the socket's inode, /proc/*/fd
/// the process holding it. Best effort: another user's descriptors are not readable.
pub(super) fn listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEX_IP:HEX_PORT; state 0A is LISTEN.
            let local = f.get(1).and_then(|a| a.rsplit(':').next());
            let listening = f.get(3) == Some(&"0A");
            if listening && local.and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port) {
                if let Some(inode) = f.get(9) {
                    inodes.push(format!("socket:[{inode}]"));
                }
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| link.as_os_str() == i.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}
