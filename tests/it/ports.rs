//! `portok ports`: loopback 443 and 80 sent to the daemon, tested as root inside a network
//! namespace the test makes (its own loopback and its own nftables ruleset), with the daemon
//! running as the unprivileged user `nobody`. Nothing outside the namespace is touched: the
//! rules and their boot unit are written under a temporary PORTOK_SYSTEM_ROOT.

use crate::support::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

const NOBODY: u32 = 65534;

#[test]
fn ports_enable_serves_https_without_a_port_to_a_daemon_running_as_nobody() {
    if unsafe { libc::geteuid() } != 0 {
        // It makes a network namespace and loads nftables rules there.
        return missing("root", "run the tests as root, as CI does");
    }
    for (tool, package) in [
        ("unshare", "util-linux"),
        ("setpriv", "util-linux"),
        ("nft", "nftables"),
        ("curl", "curl"),
        ("ip", "iproute2"),
        ("python3", "python3"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        if !found.status.success() {
            return missing(tool, &format!("apt-get install {package}"));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let user_dir = dir.path().join("nobody");
    std::fs::create_dir(&user_dir).unwrap();
    std::os::unix::fs::chown(&user_dir, Some(NOBODY), Some(NOBODY)).unwrap();
    let state = user_dir.join("state");
    let root = dir.path().join("root");
    // The binaries, where nobody can run them: a clone under a private folder (/root, or
    // mktemp -d) is out of nobody's reach, and the daemon runs its own binary again.
    let bins = dir.path().join("bin");
    std::fs::create_dir(&bins).unwrap();
    let portok = bins.join("portok");
    let hello = bins.join("hello");
    std::fs::copy(BIN, &portok).unwrap();
    std::fs::copy(hello_bin(), &hello).unwrap();
    let port = free_port();
    let backend = free_port();
    let script = format!(
        r#"
set -u
exec 2>&1
ip link set lo up
export PORTOK_SYSTEM_ROOT={root} PORTOK_SYSTEMCTL= PORTOK_STATE_DIR={state} HOME={home} PORTOK_PORT={port} NO_COLOR=1
as_user() {{ setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups "$@"; }}
echo "== status before"; {portok} ports status; echo "rc=$?"
echo "== enable as nobody"; as_user {portok} ports enable; echo "rc=$?"
echo "== taken"
python3 -m http.server 80 --bind 127.0.0.1 >/dev/null 2>&1 &
TAKEN=$!
for i in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:80/ && break; sleep 0.1; done
{portok} ports enable; echo "rc=$?"
kill $TAKEN; wait $TAKEN 2>/dev/null
as_user {portok} proxy start --redirect-https || exit 20
PORT={backend} HELLO_VERSION=ports {hello} >/dev/null 2>&1 &
APP=$!; trap 'kill $APP 2>/dev/null' EXIT
as_user {portok} alias myapp {backend} || exit 21
echo "== enable"; {portok} ports enable; echo "rc=$?"
for i in $(seq 100); do as_user {portok} list | grep -q 'https://myapp.localhost' && break; sleep 0.1; done
echo "== list"; as_user {portok} list
echo "== https"; curl -sS --max-time 5 --cacert {state}/ca.pem https://myapp.localhost/; echo
echo "== http"; curl -sS --max-time 5 http://myapp.localhost/; echo
echo "== redirect"; curl -sS --max-time 5 -o /dev/null -w '%{{http_code}} %{{redirect_url}}' -H 'Accept: text/html' 'http://myapp.localhost/a?b=1'; echo
echo "== ipv6"; curl -sS --max-time 5 --cacert {state}/ca.pem -g 'https://[::1]/' -H 'Host: myapp.localhost'; echo
echo "== status"; {portok} ports status; echo "rc=$?"
echo "== rules"; nft list ruleset | grep -c 'redirect to :{port}'
echo "== disable"; {portok} ports disable; echo "rc=$?"
echo "== after"; curl -sS --max-time 3 http://myapp.localhost/ >/dev/null 2>&1 && echo STILL || echo REFUSED
echo "files left: $(find {root} -type f | wc -l)"
as_user {portok} proxy stop >/dev/null 2>&1
exit 0
"#,
        root = root.display(),
        state = state.display(),
        home = user_dir.display(),
        portok = portok.display(),
        hello = hello.display(),
    );
    let out = Command::new("unshare")
        .args(["--net", "bash", "-c", &script])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let part = |name: &str| -> String {
        let start = text
            .find(&format!("== {name}\n"))
            .unwrap_or_else(|| panic!("no {name}: {text}"));
        let rest = &text[start + name.len() + 4..];
        rest[..rest.find("\n== ").unwrap_or(rest.len())].to_string()
    };
    assert!(
        part("status before").contains("off:") && part("status before").contains("rc=1"),
        "{text}"
    );
    let not_root = part("enable as nobody");
    assert!(
        not_root.contains("needs root: `sudo portok ports enable`") && not_root.contains("rc=1"),
        "{text}"
    );
    let taken = part("taken");
    assert!(
        taken.contains("port 80 on loopback is taken by python3")
            && taken.contains("(pid")
            && taken.contains("rc=1"),
        "{text}"
    );
    assert!(part("enable").contains("rc=0"), "{text}");
    assert!(part("list").contains("https://myapp.localhost "), "{text}");
    assert!(
        !part("list").contains(&format!("myapp.localhost:{port}")),
        "{text}"
    );
    for scheme in ["https", "http", "ipv6"] {
        assert!(part(scheme).contains("version ports"), "{scheme}: {text}");
    }
    assert!(
        part("redirect").contains("308 https://myapp.localhost/a?b=1"),
        "port 80 page loads go to https on 443: {text}"
    );
    assert!(
        part("status").contains("on:") && part("status").contains("rc=0"),
        "{text}"
    );
    assert!(part("rules").trim() == "2", "one rule per family: {text}");
    assert!(part("disable").contains("rc=0"), "{text}");
    let after = part("after");
    assert!(after.contains("REFUSED"), "{text}");
    assert!(
        after.contains("files left: 0"),
        "enable's files are gone: {text}"
    );
}
