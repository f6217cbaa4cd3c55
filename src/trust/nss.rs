//! NSS databases (Chrome and Chromium on Linux, Firefox): where they are, and `certutil`
//! to add, delete and look for portok's CA in each.

use super::*;

/// NSS databases (directories holding cert9.db) under `home`.
pub(super) fn nss_databases(home: &Path) -> Vec<PathBuf> {
    let mut dbs = Vec::new();
    for dir in [".pki/nssdb", "snap/chromium/current/.pki/nssdb"] {
        dbs.push(home.join(dir));
    }
    for profiles in [
        ".mozilla/firefox",
        "snap/firefox/common/.mozilla/firefox",
        "Library/Application Support/Firefox/Profiles",
    ] {
        let Ok(entries) = fs::read_dir(home.join(profiles)) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        found.sort();
        dbs.extend(found);
    }
    dbs.retain(|db| db.join("cert9.db").is_file());
    dbs
}

fn nss_what(db: &Path) -> String {
    let browser = if db.components().any(|c| c.as_os_str() == ".pki") {
        "Chrome/Chromium"
    } else {
        "Firefox"
    };
    format!("{browser} NSS database {}", db.display())
}

fn nss_db_arg(db: &Path) -> String {
    format!("sql:{}", db.display())
}

pub(super) fn nss_add(
    ca: &CaFile,
    db: &Path,
    opts: &TrustOptions,
    platform: Platform,
    report: &mut TrustReport,
) {
    let cmd = strings(&[
        "certutil",
        "-A",
        "-d",
        &nss_db_arg(db),
        "-t",
        "C,,",
        "-n",
        &ca.nickname(),
        "-i",
        &path_str(ca.path),
    ]);
    nss_step(&nss_what(db), db, &cmd, opts, platform, report);
}

pub(super) fn nss_delete(
    ca: &CaFile,
    db: &Path,
    opts: &TrustOptions,
    platform: Platform,
    report: &mut TrustReport,
) {
    let what = nss_what(db);
    if opts.run_commands && find_program("certutil").is_some() && !nss_has(ca, db) {
        report.done(format!("{what}: not installed"));
        return;
    }
    let cmd = strings(&[
        "certutil",
        "-D",
        "-d",
        &nss_db_arg(db),
        "-n",
        &ca.nickname(),
    ]);
    nss_step(&what, db, &cmd, opts, platform, report);
}

fn nss_step(
    what: &str,
    db: &Path,
    cmd: &[String],
    opts: &TrustOptions,
    platform: Platform,
    report: &mut TrustReport,
) {
    // Root writing into a user's database would leave root-owned files the
    // browser can no longer open.
    let foreign = fs::metadata(db).is_ok_and(|m| m.uid() != 0);
    if platform.root && foreign {
        report.skipped(
            what,
            "owned by your user; run without sudo",
            shell_line(cmd),
        );
        return;
    }
    if opts.run_commands && find_program("certutil").is_none() {
        report.skipped(
            what,
            "certutil not found (Debian/Ubuntu: libnss3-tools, Fedora: nss-tools, Arch: nss, macOS: brew install nss)",
            shell_line(cmd),
        );
        return;
    }
    run_step(what, cmd, opts, report);
}

fn nss_has(ca: &CaFile, db: &Path) -> bool {
    run(&[
        "certutil",
        "-L",
        "-d",
        &nss_db_arg(db),
        "-n",
        &ca.nickname(),
    ])
    .is_ok()
}

/// NSS can only be inspected with certutil; without it, don't let NSS veto.
pub(super) fn nss_all_have(ca: &CaFile, opts: &TrustOptions) -> bool {
    if !opts.run_commands || find_program("certutil").is_none() {
        return true;
    }
    nss_databases(&opts.home).iter().all(|db| nss_has(ca, db))
}
