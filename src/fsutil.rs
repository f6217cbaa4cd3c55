//! Files written whole. Every file portok writes that something else may read at the same
//! time (routes.json, the CA and leaf certificates, the trust store's copy, the hosts file,
//! stats.json) is written to a temp file beside it, synced, and then moved into place, so a
//! reader sees the old file or the new one and never half of one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What a user can do about `e`, an I/O error on `path`: said after the error in its
/// message ("" when nothing general helps).
pub fn what_to_do(e: &io::Error, path: &Path) -> String {
    let dir = path.parent().unwrap_or(path).display();
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            format!("; free some space on the disk that holds {dir}, then try again")
        }
        io::ErrorKind::PermissionDenied => format!(
            "; make {dir} writable for you (`ls -ld {dir}` shows who may write), or point PORTOK_STATE_DIR at a folder of your own"
        ),
        io::ErrorKind::ReadOnlyFilesystem => format!(
            "; {dir} is on a read-only file system: point PORTOK_STATE_DIR at a writable folder"
        ),
        _ => String::new(),
    }
}

/// Replace `path` with `data`, mode `mode` exactly (whatever the umask).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_atomic_owned(path, data, mode, None)
}

/// [`write_atomic`], the new file owned by `owner` (uid, gid) when it is given: only root
/// can give a file away, so it is asked only when it differs from ours.
pub fn write_atomic_owned(
    path: &Path,
    data: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let tmp = temp_beside(path);
    let result = write_temp(&tmp, data, mode, owner).and_then(|()| {
        fs::rename(&tmp, path)?;
        sync_dir(path);
        Ok(())
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Create `path` with `data`, failing with `AlreadyExists` rather than replacing a file
/// that is there (two processes creating the CA at once: one wins, whole).
pub fn write_new(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temp_beside(path);
    let result = write_temp(&tmp, data, mode, None).and_then(|()| fs::hard_link(&tmp, path));
    // The temp name is ours alone; failing to remove it is harmless.
    let _ = fs::remove_file(&tmp);
    if result.is_ok() {
        sync_dir(path);
    }
    result
}

/// A name in `path`'s folder no other writer uses.
fn temp_beside(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(
        ".{}.{:x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    path.with_file_name(name)
}

fn write_temp(tmp: &Path, data: &[u8], mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)?;
    // The umask may have cleared bits of `mode`.
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    if let Some((uid, gid)) = owner {
        if (uid, gid) != crate::sys::effective_ids() {
            let _ = std::os::unix::fs::fchown(&f, Some(uid), Some(gid));
        }
    }
    f.write_all(data)?;
    f.sync_all()
}

/// The rename itself is durable once the folder is synced; failing that costs nothing
/// but durability across a power cut.
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_with_its_mode_and_no_temp_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.json");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn write_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        write_new(&path, b"first", 0o600).unwrap();
        let err = write_new(&path, b"second", 0o600).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"old", 0o600).unwrap();
        // A folder where the file should go: the rename fails.
        let blocked = dir.path().join("sub");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), b"").unwrap();
        assert!(write_atomic(&blocked, b"new", 0o600).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
