//! Errors a user meets on a bad state directory: each says what failed, its cause once, and
//! what to do, and routes.json keeps what it had.

use crate::support::*;
use std::process::Command;

/// The error says `cause` exactly once.
fn assert_said_once(err: &str, cause: &str) {
    assert_eq!(err.matches(cause).count(), 1, "cause said once: {err}");
}

#[test]
fn an_invalid_routes_json_is_reported_with_its_cause_once() {
    let p = Portok::new();
    std::fs::create_dir_all(p.state()).unwrap();
    std::fs::write(p.routes_json(), "[{\"hostname\": 1}]").unwrap();
    let out = p.run(&["list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("is not valid routes JSON"), "{err}");
    assert_said_once(&err, "invalid type: integer `1`, expected a string");
    assert!(err.contains("fix or delete it"), "what to do: {err}");
}

/// The state dir on a full disk (a 128 KiB tmpfs, mounted in a mount namespace of its own so
/// nothing outlives the test): adding a route fails with the cause once and what to do, and
/// the route already there stays.
#[test]
fn a_full_disk_is_reported_once_and_routes_json_keeps_its_routes() {
    if unsafe { libc::geteuid() } != 0 {
        return missing(
            "root (to mount a small tmpfs)",
            "run the tests as root, as CI does",
        );
    }
    let p = Portok::new();
    std::fs::create_dir_all(p.state()).unwrap();
    let script = r#"
mount -t tmpfs -o size=128k portok-full "$PORTOK_STATE_DIR" || exit 99
"$BIN" alias keep 4001 >/dev/null 2>&1 || echo "first alias failed"
head -c 10000000 /dev/zero > "$PORTOK_STATE_DIR/filler" 2>/dev/null
"$BIN" alias more 4002 2>&1
echo "exit=$?"
echo "== routes"
cat "$PORTOK_STATE_DIR/routes.json"
echo "== end"
"$BIN" proxy stop >/dev/null 2>&1
"#;
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", script])
        .envs(p.command().get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env("BIN", p.command().get_program())
        .output()
        .expect("unshare (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_ne!(out.status.code(), Some(99), "mount: {text}");
    assert!(!text.contains("first alias failed"), "{text}");
    assert!(text.contains("exit=1"), "{text}");
    assert_said_once(&text, "No space left on device");
    assert!(
        text.contains("free some space on the disk that holds"),
        "what to do: {text}"
    );
    let routes = &text[text.find("== routes").unwrap()..text.find("== end").unwrap()];
    assert!(routes.contains("keep.localhost"), "{text}");
    assert!(!routes.contains("more.localhost"), "{text}");
}

/// A state dir of the user's own without write permission (mode 0500): the cause once and
/// what to do. As root, the test drops the capabilities that would let it write anyway.
#[test]
fn a_state_dir_without_write_permission_is_reported_once() {
    use std::os::unix::fs::PermissionsExt;
    let p = Portok::new();
    std::fs::create_dir_all(p.state()).unwrap();
    std::fs::write(p.routes_json(), "[]").unwrap();
    std::fs::set_permissions(p.state(), std::fs::Permissions::from_mode(0o500)).unwrap();
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("setpriv");
        c.args([
            "--bounding-set",
            "-dac_override,-dac_read_search,-fowner",
            "--",
        ]);
        c.arg(p.command().get_program());
        c.envs(p.command().get_envs().filter_map(|(k, v)| Some((k, v?))));
        c
    } else {
        p.command()
    };
    let out = cmd.args(["alias", "more", "4002"]).output().unwrap();
    std::fs::set_permissions(p.state(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_said_once(&err, "Permission denied");
    assert!(
        err.contains("make ") && err.contains("writable for you"),
        "what to do: {err}"
    );
    assert_eq!(std::fs::read_to_string(p.routes_json()).unwrap(), "[]");
}
