//! Installs the local CA where a developer's tools look for trusted roots:
//! the system store (Linux distributions, macOS) and NSS databases (Chrome/
//! Chromium on Linux, Firefox everywhere).
//!
//! Every step produces a [`TrustLine`]; steps that can't run here (no root,
//! tool missing, commands disabled) carry the command to do them by hand.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::ca::sha256_hex;

const NSS_NICKNAME: &str = "portok local CA";
const MACOS_KEYCHAIN: &str = "/Library/Keychains/System.keychain";

mod nss;
use nss::{nss_add, nss_all_have, nss_databases, nss_delete};

#[derive(Debug, Clone)]
pub struct TrustOptions {
    pub home: PathBuf,
    /// `/` normally; tests point it at a temp dir so nothing real is touched.
    pub system_dirs_root: PathBuf,
    /// Run update-ca-certificates, certutil, security...; tests set false.
    pub run_commands: bool,
}

impl TrustOptions {
    /// The real system, for the current user's HOME. `PORTOK_TRUST_ROOT` moves the system
    /// folders under another root and turns off the update commands: the test suite uses it
    /// so that it never touches the machine's trust store.
    pub fn for_current_user() -> Self {
        let test_root = std::env::var_os("PORTOK_TRUST_ROOT").filter(|v| !v.is_empty());
        TrustOptions {
            home: std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default(),
            run_commands: test_root.is_none(),
            system_dirs_root: test_root
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} has no PEM certificate: {source}")]
    BadCa {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
}

/// One step of trust/untrust, as the CLI prints it.
#[derive(Debug)]
pub enum TrustLine {
    /// What was done (or found already done).
    Done(String),
    /// What, why not, command to do it by hand.
    Skipped(String, String, String),
    /// What, the error, command to do it by hand.
    Failed(String, TrustError, String),
}

#[derive(Debug, Default)]
pub struct TrustReport {
    pub lines: Vec<TrustLine>,
}

impl TrustReport {
    /// True when no step failed (skipped steps are not failures).
    pub fn ok(&self) -> bool {
        !self
            .lines
            .iter()
            .any(|l| matches!(l, TrustLine::Failed(..)))
    }

    fn done(&mut self, what: impl Into<String>) {
        self.lines.push(TrustLine::Done(what.into()));
    }

    fn skipped(&mut self, what: impl Into<String>, why: impl Into<String>, cmd: impl Into<String>) {
        self.lines
            .push(TrustLine::Skipped(what.into(), why.into(), cmd.into()));
    }

    fn failed(&mut self, what: impl Into<String>, err: TrustError, cmd: impl Into<String>) {
        self.lines
            .push(TrustLine::Failed(what.into(), err, cmd.into()));
    }
}

impl fmt::Display for TrustLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by_hand = |f: &mut fmt::Formatter<'_>, cmd: &str| {
            if cmd.is_empty() {
                Ok(())
            } else {
                write!(f, "\n    to do it by hand: {cmd}")
            }
        };
        match self {
            TrustLine::Done(what) => write!(f, "ok       {what}"),
            TrustLine::Skipped(what, why, cmd) => {
                write!(f, "skipped  {what}: {why}")?;
                by_hand(f, cmd)
            }
            TrustLine::Failed(what, err, cmd) => {
                write!(f, "FAILED   {what}: {err}")?;
                by_hand(f, cmd)
            }
        }
    }
}

impl fmt::Display for TrustReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// Facts about the machine that decide what to do; fixed in tests.
#[derive(Debug, Clone, Copy)]
struct Platform {
    root: bool,
    macos: bool,
}

impl Platform {
    fn current() -> Self {
        Platform {
            root: crate::sys::effective_ids().0 == 0,
            macos: cfg!(target_os = "macos"),
        }
    }
}

/// The CA file and the names derived from it.
struct CaFile<'a> {
    path: &'a Path,
    pem: Vec<u8>,
    id: String,
}

impl<'a> CaFile<'a> {
    fn read(path: &'a Path) -> Result<Self, TrustError> {
        let pem = fs::read(path).map_err(|source| TrustError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let der = CertificateDer::from_pem_slice(&pem).map_err(|source| TrustError::BadCa {
            path: path.to_path_buf(),
            source,
        })?;
        let id = sha256_hex(&der)[..16].to_string();
        Ok(CaFile { path, pem, id })
    }

    /// The id keeps a regenerated CA from colliding with an old one.
    fn anchor_name(&self) -> String {
        format!("portok-{}.crt", self.id)
    }

    fn nickname(&self) -> String {
        format!("{NSS_NICKNAME} {}", self.id)
    }
}

/// A Linux distribution family's anchor directory and refresh command.
struct LinuxStore {
    family: &'static str,
    anchor_dir: &'static str,
    /// Alternatives, first found on PATH wins.
    refresh: &'static [&'static [&'static str]],
}

/// Checked in order; the first whose directory exists is used.
const LINUX_STORES: [LinuxStore; 4] = [
    LinuxStore {
        family: "Fedora/RHEL",
        anchor_dir: "etc/pki/ca-trust/source/anchors",
        refresh: &[&["update-ca-trust"]],
    },
    LinuxStore {
        family: "Arch",
        anchor_dir: "etc/ca-certificates/trust-source/anchors",
        refresh: &[&["update-ca-trust"], &["trust", "extract-compat"]],
    },
    LinuxStore {
        family: "SUSE",
        anchor_dir: "etc/pki/trust/anchors",
        refresh: &[&["update-ca-certificates"]],
    },
    LinuxStore {
        family: "Debian/Ubuntu",
        anchor_dir: "usr/local/share/ca-certificates",
        refresh: &[&["update-ca-certificates"]],
    },
];

fn linux_store(opts: &TrustOptions) -> Option<&'static LinuxStore> {
    LINUX_STORES
        .iter()
        .find(|s| opts.system_dirs_root.join(s.anchor_dir).is_dir())
}

/// Installs the CA in the system store and the NSS databases found in HOME.
pub fn trust(ca_pem: &Path, opts: &TrustOptions) -> TrustReport {
    trust_on(ca_pem, opts, Platform::current())
}

/// Removes exactly what [`trust`] installed for this CA.
pub fn untrust(ca_pem: &Path, opts: &TrustOptions) -> TrustReport {
    untrust_on(ca_pem, opts, Platform::current())
}

/// Whether the CA is trusted by the system store (and by every NSS database
/// found, when certutil can be run).
pub fn check(ca_pem: &Path, opts: &TrustOptions) -> bool {
    check_on(ca_pem, opts, Platform::current())
}

/// The CA certificate to (un)install; a failure is the report's first line.
fn read_ca<'a>(ca_pem: &'a Path, report: &mut TrustReport) -> Option<CaFile<'a>> {
    match CaFile::read(ca_pem) {
        Ok(ca) => Some(ca),
        Err(err) => {
            report.failed("read local CA", err, "");
            None
        }
    }
}

fn trust_on(ca_pem: &Path, opts: &TrustOptions, platform: Platform) -> TrustReport {
    let mut report = TrustReport::default();
    let Some(ca) = read_ca(ca_pem, &mut report) else {
        return report;
    };
    if platform.macos {
        macos_trust(&ca, opts, platform, &mut report);
    } else {
        linux_trust(&ca, opts, platform, &mut report);
    }
    for db in nss_databases(&opts.home) {
        nss_add(&ca, &db, opts, platform, &mut report);
    }
    report
}

fn untrust_on(ca_pem: &Path, opts: &TrustOptions, platform: Platform) -> TrustReport {
    let mut report = TrustReport::default();
    let Some(ca) = read_ca(ca_pem, &mut report) else {
        return report;
    };
    if platform.macos {
        macos_untrust(&ca, opts, platform, &mut report);
    } else {
        linux_untrust(&ca, opts, platform, &mut report);
    }
    for db in nss_databases(&opts.home) {
        nss_delete(&ca, &db, opts, platform, &mut report);
    }
    report
}

fn check_on(ca_pem: &Path, opts: &TrustOptions, platform: Platform) -> bool {
    let Ok(ca) = CaFile::read(ca_pem) else {
        return false;
    };
    let system = if platform.macos {
        // Without running `security` there is no way to look.
        opts.run_commands && run(&["security", "verify-cert", "-c", &path_str(ca.path)]).is_ok()
    } else {
        linux_store(opts).is_some_and(|store| {
            let dest = opts
                .system_dirs_root
                .join(store.anchor_dir)
                .join(ca.anchor_name());
            fs::read(dest).is_ok_and(|installed| installed == ca.pem)
        })
    };
    system && nss_all_have(&ca, opts)
}

// ---------- Linux system store ----------

fn linux_trust(ca: &CaFile, opts: &TrustOptions, platform: Platform, report: &mut TrustReport) {
    let Some(store) = linux_store(opts) else {
        report.skipped(
            "system trust store",
            "no known CA directory (Debian/Ubuntu, Fedora/RHEL, Arch, SUSE)",
            "",
        );
        return;
    };
    let dest = opts
        .system_dirs_root
        .join(store.anchor_dir)
        .join(ca.anchor_name());
    let refresh = refresh_command(store);
    let what = format!("{} system trust store", store.family);
    if fs::read(&dest).is_ok_and(|installed| installed == ca.pem) {
        report.done(format!("{what}: already has {}", dest.display()));
        return;
    }
    let by_hand = format!(
        "sudo install -m 644 {} {} && sudo {}",
        quote(&path_str(ca.path)),
        quote(&path_str(&dest)),
        shell_line(&refresh)
    );
    if !platform.root {
        report.skipped(what, "needs root", by_hand);
        return;
    }
    if let Err(err) = install_file(&dest, &ca.pem) {
        report.failed(what, err, by_hand);
        return;
    }
    report.done(format!("installed {}", dest.display()));
    run_step(&format!("refresh {what}"), &refresh, opts, report);
}

fn linux_untrust(ca: &CaFile, opts: &TrustOptions, platform: Platform, report: &mut TrustReport) {
    let Some(store) = linux_store(opts) else {
        return;
    };
    let dest = opts
        .system_dirs_root
        .join(store.anchor_dir)
        .join(ca.anchor_name());
    let what = format!("{} system trust store", store.family);
    if !dest.exists() {
        report.done(format!("{what}: {} not installed", dest.display()));
        return;
    }
    let refresh = refresh_command(store);
    let by_hand = format!(
        "sudo rm {} && sudo {}",
        quote(&path_str(&dest)),
        shell_line(&refresh)
    );
    if !platform.root {
        report.skipped(what, "needs root", by_hand);
        return;
    }
    if let Err(source) = fs::remove_file(&dest) {
        let err = TrustError::Io { path: dest, source };
        report.failed(what, err, by_hand);
        return;
    }
    report.done(format!("removed {}", dest.display()));
    run_step(&format!("refresh {what}"), &refresh, opts, report);
}

fn refresh_command(store: &LinuxStore) -> Vec<String> {
    let chosen = store
        .refresh
        .iter()
        .find(|cmd| find_program(cmd[0]).is_some())
        .unwrap_or(&store.refresh[0]);
    chosen.iter().map(|s| s.to_string()).collect()
}

/// Written whole, 0644: update-ca-certificates must never see half a file.
fn install_file(dest: &Path, data: &[u8]) -> Result<(), TrustError> {
    crate::fsutil::write_atomic(dest, data, 0o644).map_err(|source| TrustError::Io {
        path: dest.to_path_buf(),
        source,
    })
}

// ---------- macOS system keychain ----------

fn macos_trust(ca: &CaFile, opts: &TrustOptions, platform: Platform, report: &mut TrustReport) {
    let cmd = strings(&[
        "security",
        "add-trusted-cert",
        "-d",
        "-r",
        "trustRoot",
        "-k",
        MACOS_KEYCHAIN,
        &path_str(ca.path),
    ]);
    root_step("macOS system keychain", &cmd, opts, platform, report);
}

fn macos_untrust(ca: &CaFile, opts: &TrustOptions, platform: Platform, report: &mut TrustReport) {
    let cmd = strings(&["security", "remove-trusted-cert", "-d", &path_str(ca.path)]);
    root_step("macOS system keychain", &cmd, opts, platform, report);
}

fn root_step(
    what: &str,
    cmd: &[String],
    opts: &TrustOptions,
    platform: Platform,
    report: &mut TrustReport,
) {
    if !platform.root {
        report.skipped(what, "needs root", format!("sudo {}", shell_line(cmd)));
        return;
    }
    run_step(what, cmd, opts, report);
}

// ---------- running commands ----------

fn run_step(what: &str, cmd: &[String], opts: &TrustOptions, report: &mut TrustReport) {
    let line = shell_line(cmd);
    if !opts.run_commands {
        report.skipped(what, "running commands is disabled", line);
        return;
    }
    let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
    match run(&args) {
        Ok(()) => report.done(format!("{what} ({line})")),
        Err(err) => report.failed(what, err, line),
    }
}

fn run(cmd: &[&str]) -> Result<(), TrustError> {
    let (program, args) = cmd.split_first().ok_or_else(|| TrustError::Spawn {
        program: String::new(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "empty command"),
    })?;
    // sbin may be missing from a non-root PATH; look there too.
    let exe = find_program(program).unwrap_or_else(|| PathBuf::from(program));
    let output = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| TrustError::Spawn {
            program: program.to_string(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(TrustError::Command {
        command: shell_line(&strings(cmd)),
        status: output.status,
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    })
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

/// For copy-pasting into a POSIX shell.
fn shell_line(cmd: &[String]) -> String {
    cmd.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
}

fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:,=@+".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{ca_pem_path, Ca};

    const ROOT: Platform = Platform {
        root: true,
        macos: false,
    };
    const USER: Platform = Platform {
        root: false,
        macos: false,
    };

    struct Fixture {
        _dir: tempfile::TempDir,
        ca_pem: PathBuf,
        opts: TrustOptions,
    }

    /// A CA, a fake `/` with the given distribution's anchor dir, a fake HOME.
    fn fixture(anchor_dir: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        Ca::load_or_create(&state, &[]).unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join(anchor_dir)).unwrap();
        let home = dir.path().join("home");
        fs::create_dir_all(&home).unwrap();
        Fixture {
            ca_pem: ca_pem_path(&state),
            opts: TrustOptions {
                home,
                system_dirs_root: root,
                run_commands: false,
            },
            _dir: dir,
        }
    }

    fn anchor(f: &Fixture, anchor_dir: &str) -> PathBuf {
        let id = CaFile::read(&f.ca_pem).unwrap().id;
        f.opts
            .system_dirs_root
            .join(anchor_dir)
            .join(format!("portok-{id}.crt"))
    }

    fn skipped_commands(report: &TrustReport) -> Vec<&str> {
        report
            .lines
            .iter()
            .filter_map(|l| match l {
                TrustLine::Skipped(_, _, cmd) => Some(cmd.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn debian_trust_check_untrust() {
        let dir = "usr/local/share/ca-certificates";
        let f = fixture(dir);
        let other = f.opts.system_dirs_root.join(dir).join("someone-else.crt");
        fs::write(&other, "x").unwrap();
        assert!(!check_on(&f.ca_pem, &f.opts, ROOT));

        let report = trust_on(&f.ca_pem, &f.opts, ROOT);
        assert!(report.ok(), "{report}");
        let dest = anchor(&f, dir);
        assert_eq!(fs::read(&dest).unwrap(), fs::read(&f.ca_pem).unwrap());
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert!(matches!(&report.lines[0], TrustLine::Done(_)));
        assert_eq!(skipped_commands(&report), ["update-ca-certificates"]);
        assert!(check_on(&f.ca_pem, &f.opts, ROOT));

        // Idempotent.
        let again = trust_on(&f.ca_pem, &f.opts, ROOT);
        assert!(format!("{again}").contains("already"), "{again}");

        let report = untrust_on(&f.ca_pem, &f.opts, ROOT);
        assert!(report.ok(), "{report}");
        assert!(!dest.exists());
        assert!(other.exists(), "untrust must remove only our file");
        assert!(!check_on(&f.ca_pem, &f.opts, ROOT));
    }

    #[test]
    fn changed_anchor_is_not_trusted() {
        let dir = "etc/pki/ca-trust/source/anchors";
        let f = fixture(dir);
        let report = trust_on(&f.ca_pem, &f.opts, ROOT);
        assert_eq!(skipped_commands(&report), ["update-ca-trust"]);
        fs::write(anchor(&f, dir), "tampered").unwrap();
        assert!(!check_on(&f.ca_pem, &f.opts, ROOT));
    }

    #[test]
    fn other_distributions_use_their_dirs() {
        for dir in [
            "etc/ca-certificates/trust-source/anchors",
            "etc/pki/trust/anchors",
        ] {
            let f = fixture(dir);
            assert!(trust_on(&f.ca_pem, &f.opts, ROOT).ok());
            assert!(anchor(&f, dir).exists(), "{dir}");
        }
    }

    #[test]
    fn non_root_gets_sudo_command_and_writes_nothing() {
        let dir = "usr/local/share/ca-certificates";
        let f = fixture(dir);
        let report = trust_on(&f.ca_pem, &f.opts, USER);
        let cmds = skipped_commands(&report);
        assert_eq!(cmds.len(), 1, "{report}");
        assert!(cmds[0].starts_with("sudo install -m 644 "), "{}", cmds[0]);
        assert!(
            cmds[0].ends_with("&& sudo update-ca-certificates"),
            "{}",
            cmds[0]
        );
        assert!(!anchor(&f, dir).exists());
    }

    #[test]
    fn no_known_store_is_skipped() {
        let f = fixture("some/unrelated/dir");
        let report = trust_on(&f.ca_pem, &f.opts, ROOT);
        assert!(
            matches!(&report.lines[..], [TrustLine::Skipped(..)]),
            "{report}"
        );
        assert!(!check_on(&f.ca_pem, &f.opts, ROOT));
    }

    #[test]
    fn missing_ca_fails() {
        let f = fixture("usr/local/share/ca-certificates");
        let missing = f.ca_pem.with_file_name("nope.pem");
        let report = trust_on(&missing, &f.opts, ROOT);
        assert!(!report.ok());
        assert!(matches!(
            &report.lines[0],
            TrustLine::Failed(_, TrustError::Io { .. }, _)
        ));
    }

    #[test]
    fn nss_databases_get_certutil_commands() {
        let f = fixture("usr/local/share/ca-certificates");
        let chrome = f.opts.home.join(".pki/nssdb");
        let firefox = f.opts.home.join(".mozilla/firefox/abcd.default-release");
        let not_a_profile = f.opts.home.join(".mozilla/firefox/Crash Reports");
        for db in [&chrome, &firefox, &not_a_profile] {
            fs::create_dir_all(db).unwrap();
        }
        fs::write(chrome.join("cert9.db"), "").unwrap();
        fs::write(firefox.join("cert9.db"), "").unwrap();

        let id = CaFile::read(&f.ca_pem).unwrap().id;
        let report = trust_on(&f.ca_pem, &f.opts, ROOT);
        let cmds = skipped_commands(&report);
        assert_eq!(cmds.len(), 3, "{report}");
        let expected = format!(
            "certutil -A -d sql:{} -t C,, -n 'portok local CA {id}' -i {}",
            chrome.display(),
            f.ca_pem.display()
        );
        assert_eq!(cmds[1], expected);
        assert!(cmds[2].contains(&format!("sql:{}", firefox.display())));
        assert!(format!("{report}").contains("Firefox NSS database"));

        let report = untrust_on(&f.ca_pem, &f.opts, ROOT);
        let cmds = skipped_commands(&report);
        assert!(cmds[1].starts_with("certutil -D -d sql:"), "{report}");
    }

    #[test]
    fn macos_commands() {
        let f = fixture("unused");
        let mac = Platform {
            root: false,
            macos: true,
        };
        let report = trust_on(&f.ca_pem, &f.opts, mac);
        assert_eq!(
            skipped_commands(&report),
            [format!(
                "sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {}",
                f.ca_pem.display()
            )]
        );
        let report = untrust_on(&f.ca_pem, &f.opts, mac);
        assert!(skipped_commands(&report)[0].starts_with("sudo security remove-trusted-cert -d "));
        assert!(!check_on(&f.ca_pem, &f.opts, mac));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a/b-c.pem"), "a/b-c.pem");
        assert_eq!(quote("it's here"), r"'it'\''s here'");
        assert_eq!(quote(""), "''");
    }
}
