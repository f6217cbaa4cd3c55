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
    listening_ports_of(|_, fields| fields.pgrp == pgid)
}

/// The TCP ports process `root` and its descendants listen on, sorted: a container's
/// processes, whose group is not the main process's own.
pub(super) fn tree_listening_ports(root: u32) -> Vec<u16> {
    let parents = parents();
    listening_ports_of(|pid, _| {
        let mut p = pid;
        // Bounded: a cycle in a racing read of /proc must not loop.
        for _ in 0..64 {
            if p == root {
                return true;
            }
            match parents.get(&p) {
                Some(&parent) if parent != 0 && parent != p => p = parent,
                _ => return false,
            }
        }
        false
    })
}

/// The fields of /proc/PID/stat portok reads: "PID (COMM) STATE PPID PGRP ..."; COMM may
/// hold spaces.
struct Stat {
    ppid: u32,
    pgrp: i32,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = text.rsplit_once(") ")?.1.split_whitespace().skip(1);
    Some(Stat {
        ppid: rest.next()?.parse().ok()?,
        pgrp: rest.next()?.parse().ok()?,
    })
}

fn pids() -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

fn parents() -> std::collections::HashMap<u32, u32> {
    pids()
        .into_iter()
        .filter_map(|pid| Some((pid, stat(pid)?.ppid)))
        .collect()
}

/// The TCP ports the processes `pick` selects listen on, sorted.
fn listening_ports_of(pick: impl Fn(u32, &Stat) -> bool) -> Vec<u16> {
    let sockets = listening_sockets();
    let mut ports = Vec::new();
    for pid in pids() {
        if !stat(pid).is_some_and(|s| pick(pid, &s)) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
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
