//! What portok asks of the operating system, behind safe functions: signals, ids, process
//! facts (through `sysinfo`), the daemon's resource limits, and the Linux-only parts
//! (splice, the parent-death signal, malloc tuning, /proc lookups) behind `cfg`, with what
//! other Unixes do instead. Every `unsafe` libc call of the crate is here, with why it is
//! sound.

#[cfg(target_os = "linux")]
mod linux;
#[cfg_attr(not(target_os = "linux"), path = "sys/splice_none.rs")]
pub mod splice;

use std::time::Duration;

/// The signals portok sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
}

impl Signal {
    fn raw(self) -> i32 {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        }
    }
}

/// Send `sig` to process group `pgid`; false when there is no such group (or it is not
/// ours to signal). Groups 0 and 1 are never signalled: they would be our own group and
/// every process.
pub fn signal_group(pgid: i32, sig: Signal) -> bool {
    pgid > 1 && kill(-pgid, sig.raw())
}

/// Whether process group `pgid` still has a process we may signal.
pub fn group_alive(pgid: i32) -> bool {
    pgid > 1 && kill(-pgid, 0)
}

/// Send `sig` to process `pid` (a `portok run` or the daemon, recorded by portok).
pub fn signal_pid(pid: u32, sig: Signal) -> bool {
    i32::try_from(pid).is_ok_and(|pid| kill(pid, sig.raw()))
}

fn kill(target: i32, sig: i32) -> bool {
    // SAFETY: kill(2) touches no memory. 0, 1 and -1 (our group, init, every process) are
    // refused here, so a zero or garbage id can never reach them.
    !matches!(target, -1..=1) && target != i32::MIN && unsafe { libc::kill(target, sig) } == 0
}

/// SIGTERM to the group, then SIGKILL after `grace` if any of it is left (in a task of
/// the current tokio runtime). Used for the app of a `portok run` that died without
/// stopping it.
pub fn terminate_group(pgid: i32, grace: Duration) {
    if !signal_group(pgid, Signal::Term) {
        return;
    }
    tracing::info!(pgid, "stopped the app of a dead `portok run`");
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        signal_group(pgid, Signal::Kill);
    });
}

/// SIGTERM each of `pids`, then wait until every one has ended or `within` passes;
/// whether they all ended.
pub fn terminate_and_wait(pids: &[u32], within: Duration) -> bool {
    for pid in pids {
        signal_pid(*pid, Signal::Term);
    }
    let until = std::time::Instant::now() + within;
    while pids.iter().any(|p| pid_alive(*p)) {
        if std::time::Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// The regular files portok's stdout and stderr write to, as (device, inode): a redirect
/// like `portok run ... > out.log` into the watched folder.
pub fn own_output_files() -> Vec<(u64, u64)> {
    let mut files = Vec::new();
    for fd in [1, 2] {
        // SAFETY: fstat only writes the struct it is given.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut st) } == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFREG
        {
            #[allow(clippy::unnecessary_cast)]
            let id = (st.st_dev as u64, st.st_ino as u64);
            if !files.contains(&id) {
                files.push(id);
            }
        }
    }
    files
}

/// The wall clock in Unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Is this pid a live process? Zombies count as dead: a killed `portok run` whose parent
/// has not reaped it yet no longer owns anything.
pub fn pid_alive(pid: u32) -> bool {
    let Some(raw) = i32::try_from(pid).ok().filter(|&p| p > 0) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(raw, 0) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    // A process the system will not describe to us still exists.
    process(pid).is_none_or(|p| !p.zombie)
}

/// What portok needs to know about another process.
#[derive(Debug, Clone)]
pub struct Process {
    pub cmd: Vec<String>,
    pub zombie: bool,
    /// The folder it runs in, when the system says.
    pub cwd: Option<std::path::PathBuf>,
}

/// The process `pid`, if there is one we may look at.
pub fn process(pid: u32) -> Option<Process> {
    use sysinfo::{ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, UpdateKind};
    let mut sys = sysinfo::System::new().ok()?;
    let pid = sysinfo::Pid::from_u32(pid);
    let kind = ProcessRefreshKind::nothing()
        .with_cmd(UpdateKind::Always)
        .with_cwd(UpdateKind::Always);
    sys.refresh_processes_specifics(ProcessesToUpdate::Some(&[pid]), true, kind);
    let p = sys.process(pid)?;
    Some(Process {
        cmd: p
            .cmd()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        zombie: matches!(p.status(), ProcessStatus::Zombie | ProcessStatus::Dead),
        cwd: p.cwd().map(|c| c.to_path_buf()),
    })
}

/// Whether the environment of any process we may look at `matches` (its `NAME=value`
/// entries).
pub fn any_environment(matches: impl Fn(&[std::ffi::OsString]) -> bool) -> bool {
    use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, UpdateKind};
    let Ok(mut sys) = sysinfo::System::new() else {
        return false;
    };
    let kind = ProcessRefreshKind::nothing().with_environ(UpdateKind::Always);
    sys.refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
    sys.processes().values().any(|p| matches(p.environ()))
}

/// The TCP ports the processes of group `pgid` (an app's generation) listen on, sorted:
/// from Linux's /proc, elsewhere (macOS) from `lsof`; empty when neither says.
pub fn group_listening_ports(pgid: i32) -> Vec<u16> {
    #[cfg(target_os = "linux")]
    {
        linux::group_listening_ports(pgid)
    }
    #[cfg(not(target_os = "linux"))]
    {
        lsof_listening_ports(pgid)
    }
}

/// The TCP ports process `root` and its descendants listen on, sorted (a container's
/// processes on the host network); only where the system says (Linux's /proc).
pub fn tree_listening_ports(root: u32) -> Vec<u16> {
    #[cfg(target_os = "linux")]
    {
        linux::tree_listening_ports(root)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = root;
        Vec::new()
    }
}

/// `lsof -a -g PGID -iTCP -sTCP:LISTEN`, which every macOS has: one `nADDR:PORT` line per
/// listening socket with `-Fn`.
#[cfg(any(not(target_os = "linux"), test))]
fn lsof_listening_ports(pgid: i32) -> Vec<u16> {
    let out = std::process::Command::new("lsof")
        .args([
            "-nP",
            "-a",
            "-g",
            &pgid.to_string(),
            "-iTCP",
            "-sTCP:LISTEN",
            "-Fn",
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    let Ok(out) = out else { return Vec::new() };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut ports: Vec<u16> = text
        .lines()
        .filter_map(|l| l.strip_prefix('n'))
        .filter_map(|name| name.rsplit(':').next()?.parse().ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Who listens on TCP `port` on this machine, as "name (pid N)"; best effort (another
/// user's processes are not readable), and only where the system says (Linux's /proc).
pub fn port_holder(port: u16) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        let pid = linux::listener_pid(port)?;
        let cmd = process(pid).map(|p| p.cmd).unwrap_or_default();
        let program = cmd.first().map(std::path::Path::new);
        let name = program.and_then(|p| p.file_name()).unwrap_or_default();
        Some(format!("{} (pid {pid})", name.to_string_lossy()))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = port;
        None
    }
}

/// Linux's inotify allowance per user (fs.inotify.max_user_watches); None elsewhere.
pub fn inotify_watch_limit() -> Option<usize> {
    #[cfg(target_os = "linux")]
    return linux::sysctl("fs/inotify/max_user_watches");
    #[cfg(not(target_os = "linux"))]
    None
}

/// The first port an unprivileged process may listen on (Linux's
/// net.ipv4.ip_unprivileged_port_start; 1024 elsewhere, and where it cannot be read).
pub fn unprivileged_port_start() -> u16 {
    #[cfg(target_os = "linux")]
    return linux::sysctl("net/ipv4/ip_unprivileged_port_start").unwrap_or(1024);
    #[cfg(not(target_os = "linux"))]
    1024
}

/// Whether a bind failed because this machine has no IPv6 (no ::1, or no AF_INET6):
/// listening on IPv4 alone is then right.
pub fn no_ipv6(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EADDRNOTAVAIL | libc::EAFNOSUPPORT)
    )
}

/// The effective user and group ids.
pub fn effective_ids() -> (u32, u32) {
    // SAFETY: geteuid and getegid cannot fail and touch no memory.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// Whether we may create and enter files in `dir` (access(2) with W_OK | X_OK).
pub fn can_write_dir(dir: &std::path::Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access() only reads the path, a valid C string.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// The user's login name: $USER, else the passwd database (no $USER in cron, systemd...),
/// else "uidN".
pub fn user_name() -> String {
    if let Some(user) = std::env::var("USER").ok().filter(|u| !u.is_empty()) {
        return user;
    }
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    passwd_name(uid).unwrap_or_else(|| format!("uid{uid}"))
}

fn passwd_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: passwd is plain data; zeroed is a valid (empty) value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers reference live, correctly sized buffers; on success pw_name
    // points into `buf`, which outlives the CStr borrow below.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// `user`'s home folder, from the passwd database.
pub fn home_of(user: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(user).ok()?;
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: passwd is plain data; zeroed is a valid (empty) value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: as in passwd_name: live, correctly sized buffers.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_dir.is_null() {
        return None;
    }
    // SAFETY: pw_dir is a NUL-terminated string inside `buf`.
    let dir = unsafe { std::ffi::CStr::from_ptr(pwd.pw_dir) };
    Some(std::ffi::OsStr::from_bytes(dir.to_bytes()).into())
}

/// Half-close a socket for writing: the peer sees EOF and may still answer.
pub fn shutdown_write(s: &impl std::os::fd::AsRawFd) {
    // SAFETY: shutdown(2) on an open socket the caller owns; it touches no memory.
    unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_WR) };
}

/// This machine's host name ("localhost" if it has none).
pub fn host_name() -> String {
    sysinfo::System::host_name()
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Make the command's process leave our session and process group when it starts, so
/// Ctrl-C in the shell that started us does not reach it.
pub fn detach_session(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
}

/// The app gets SIGTERM if its `portok run` dies, even by SIGKILL (Linux's parent-death
/// signal). Elsewhere the daemon's sweep stops it, about a second later.
pub fn die_with_parent(cmd: &mut tokio::process::Command) {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// Writing to a closed pipe (`portok list | head`) ends the process quietly, as for any
/// command-line tool, instead of failing the write. Call before any thread starts.
pub fn default_sigpipe() {
    // SAFETY: restoring the default disposition before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Point stdout at /dev/null (the daemon, once the CLI that started it stopped reading).
pub fn stdout_to_null() {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto fd 1 with a valid open fd.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
}

/// Lift the soft limit on open files to the hard limit (as nginx's worker_rlimit_nofile
/// does): the default 1024 would run out long before `--max-connections` (4096) is reached.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(1 << 20);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// glibc gives each thread its own malloc arena; with thousands of connections moving between
/// worker threads that fragments into memory that is never given back. Two arenas keep the
/// daemon's footprint close to what it actually holds. Call before any thread starts.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt before the runtime starts any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Hand freed memory back to the OS after a burst of connections (glibc keeps it otherwise).
pub fn trim_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The machine's addresses that are not loopback, with their interface's name: IPv4, and
/// IPv6 other than link-local (which needs a scope to bind). Empty when the system will not
/// say.
pub fn interface_addresses() -> Vec<(String, std::net::IpAddr)> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list it allocates, freed below with
    // freeifaddrs; each node is read only while the list is alive, and `ifa_addr` is checked
    // for null and read as the family it says it is.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut node = list;
        while !node.is_null() {
            let ifa = &*node;
            node = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
                continue;
            }
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name)
                .to_string_lossy()
                .into_owned();
            let ip = match (*ifa.ifa_addr).sa_family as i32 {
                libc::AF_INET => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr))
                }
                _ => continue,
            };
            let link_local = matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
            if !ip.is_loopback() && !link_local && !ip.is_unspecified() {
                out.push((name, ip));
            }
        }
        libc::freeifaddrs(list);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn groups_0_and_1_are_never_signalled_and_a_gone_group_is_dead() {
        assert!(!group_alive(0));
        assert!(!group_alive(1));
        assert!(!group_alive(-5));
        assert!(!signal_pid(0, Signal::Term));
        assert!(!signal_pid(u32::MAX, Signal::Term));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id() as i32;
        assert!(group_alive(pgid));
        assert!(pid_alive(child.id()));
        assert!(signal_group(pgid, Signal::Kill));
        // Dead but not reaped: a zombie, which owns nothing.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pid_alive(child.id()) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!pid_alive(child.id()), "a zombie is not alive");
        child.wait().unwrap();
        assert!(!group_alive(pgid));
    }

    #[test]
    fn process_facts_come_from_the_system() {
        let me = process(std::process::id()).unwrap();
        assert!(!me.zombie);
        assert!(me.cmd[0].contains("portok"), "{me:?}");
        assert!(!me.cmd.is_empty());
        assert!(process(u32::MAX - 1).is_none());
    }

    /// /proc (Linux) and lsof (macOS, also on Linux) find the same listening port of a
    /// process group, and nothing of a group that listens nowhere.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_groups_listening_ports_are_found_by_proc_and_by_lsof() {
        use std::io::BufRead;
        let script = "import socket, sys, time\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()\nprint(s.getsockname()[1], flush=True)\ntime.sleep(30)";
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().unwrap();
        let pgid = child.id() as i32;
        assert_eq!(linux::group_listening_ports(pgid), vec![port]);
        assert_eq!(
            lsof_listening_ports(pgid),
            vec![port],
            "lsof (apt-get install lsof)"
        );
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(lsof_listening_ports(pgid), Vec::<u16>::new());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_listening_port_names_its_process() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let holder = port_holder(port).unwrap();
        assert!(
            holder.contains(&format!("(pid {})", std::process::id())),
            "{holder}"
        );
    }
}
