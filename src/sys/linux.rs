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

/// Every listening TCP socket: its port and the link its descriptors show
/// (`socket:[INODE]`), from /proc/net/tcp{,6}.
fn listening_sockets() -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEX_IP:HEX_PORT; state 0A is LISTEN.
            let port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if let (Some(port), Some(inode), true) = (port, f.get(9), f.get(3) == Some(&"0A")) {
                out.push((port, format!("socket:[{inode}]")));
            }
        }
    }
    out
}

/// The TCP ports the processes of group `pgid` listen on, sorted.
pub(super) fn group_listening_ports(pgid: i32) -> Vec<u16> {
    let sockets = listening_sockets();
    let mut ports = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return ports;
    };
    for entry in procs.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // /proc/PID/stat: "PID (COMM) STATE PPID PGRP ..."; COMM may hold spaces.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let pgrp = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(2))
            .and_then(|g| g.parse::<i32>().ok());
        if pgrp != Some(pgid) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if let Some((port, _)) =
                    sockets.iter().find(|(_, i)| link.as_os_str() == i.as_str())
                {
                    ports.push(*port);
                }
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The pid listening on TCP `port`: /proc/net/tcp{,6} gives the socket's inode, /proc/*/fd
/// the process holding it. Best effort: another user's descriptors are not readable.
pub(super) fn listener_pid(port: u16) -> Option<u32> {
    let inodes: Vec<String> = listening_sockets()
        .into_iter()
        .filter(|(p, _)| *p == port)
        .map(|(_, i)| i)
        .collect();
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
