//! LAN sharing (issue: share with your phone and your team): a daemon started with
//! `--lan` in one network namespace, a client in another, joined by a veth pair with
//! addresses this test assigns (10.211.0.0/24). No other address is used, and both
//! namespaces are removed at the end, even when the test fails.

use crate::support::*;
use std::process::Command;

/// Removes the test's namespaces (and with them the veth pair) on drop.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn can_make_namespaces() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    root && Command::new("ip").arg("-V").output().is_ok()
        && Command::new("curl").arg("-V").output().is_ok()
}

#[test]
fn a_shared_route_answers_lan_clients_and_nothing_else_does() {
    if !can_make_namespaces() {
        return missing(
            "root, ip and curl (network namespaces)",
            "apt-get install iproute2 curl; run as root",
        );
    }
    let Some(python) = zeroconf_python() else {
        return missing("python3 with the zeroconf package", "apt-get install python3 python3-venv (the test makes a venv and installs zeroconf from PyPI)");
    };
    let p = Portok::new();
    let tag = std::process::id() % 100_000;
    let (a, b) = (format!("pk{tag}a"), format!("pk{tag}b"));
    let _cleanup = Namespaces(vec![a.clone(), b.clone()]);
    let port = p.port;
    let app_port = free_port();
    let script = format!(
        r#"
set -u
ip netns add {a} && ip netns add {b} || exit 20
ip link add v{tag}a netns {a} type veth peer name v{tag}b netns {b} || exit 21
ip -n {a} addr add 10.211.0.1/24 dev v{tag}a && ip -n {a} link set v{tag}a up && ip -n {a} link set lo up || exit 22
ip -n {b} addr add 10.211.0.2/24 dev v{tag}b && ip -n {b} link set v{tag}b up && ip -n {b} link set lo up || exit 23
in_a() {{ ip netns exec {a} env PORTOK_STATE_DIR={state} HOME={home} PORTOK_PORT={port} NO_COLOR=1 "$@"; }}
in_b() {{ ip netns exec {b} "$@"; }}
# `exec`: the background job is the app itself (`ip netns exec` execs it), so the trap
# reaches it; a job that ran `in_a` would leave it running.
(PORT={app_port} exec ip netns exec {a} {hello}) >/dev/null 2>&1 &
APP=$!; trap 'kill $APP 2>/dev/null' EXIT
echo "== start"; in_a {portok} proxy start --lan 2>&1
in_a {portok} alias web {app_port} --share >/dev/null 2>&1 || exit 24
in_a {portok} alias secret {app_port} >/dev/null 2>&1 || exit 25
code() {{ in_b curl -s -o /dev/null --max-time 5 -w '%{{http_code}}' "$@"; echo; }}
echo "== web.local"; code -H 'Host: web.local' http://10.211.0.1:{port}/
echo "== own name"; code -H 'Host: web.localhost' http://10.211.0.1:{port}/
echo "== by address"; code http://10.211.0.1:{port}/
echo "== https"; code --cacert {state}/ca.pem --resolve web.local:{port}:10.211.0.1 https://web.local:{port}/
echo "== https by address"; code --cacert {state}/ca.pem https://10.211.0.1:{port}/
echo "== https secret"; code --cacert {state}/ca.pem --resolve secret.local:{port}:10.211.0.1 https://secret.local:{port}/
echo "== secret.local"; code -H 'Host: secret.local' http://10.211.0.1:{port}/
echo "== secret.localhost"; code -H 'Host: secret.localhost' http://10.211.0.1:{port}/
echo "== dashboard"; code -H 'Host: portok.localhost' http://10.211.0.1:{port}/
echo "== api"; code -H 'Host: portok.localhost' http://10.211.0.1:{port}/api/status
echo "== page"; in_b curl -s --max-time 5 -H 'Host: secret.local' http://10.211.0.1:{port}/
echo
echo "== garbage"; in_b bash -c 'exec 3<>/dev/tcp/10.211.0.1/{port}; printf "NOT HTTP AT ALL\r\n\r\n" >&3; head -c 12 <&3'; echo
resolve() {{ in_b {python} -c '
from zeroconf import Zeroconf
zc = Zeroconf(interfaces=["10.211.0.2"])
info = zc.get_service_info("_http._tcp.local.", "web._http._tcp.local.", timeout=4000)
print("found", info.server, info.parsed_addresses(), info.port) if info else print("none")
zc.close()'; }}
echo "== mdns"; resolve
echo "== status"; in_a {portok} status --json | grep lan_url
echo "== ca"; in_b curl -s --max-time 5 http://10.211.0.1:{port}/__portok/ca.pem | cmp - {state}/ca.pem && echo same
echo "== rows"; in_a curl -s --max-time 5 -H 'Host: portok.localhost' http://127.0.0.1:{port}/rows | grep -o 'shared on the LAN: <a href="http://web.local:{port}">\|data-unshare="web"\|<svg' | sort -u
echo "== loopback"; in_a curl -s -o /dev/null --max-time 5 -w '%{{http_code}}' -H 'Host: secret.localhost' http://127.0.0.1:{port}/; echo
echo "== list"; in_a {portok} list
echo "== doctor"; in_a {portok} doctor | grep -A1 ' lan '
echo "== unshare"; in_a {portok} unshare web 2>&1
echo "== after"; code -H 'Host: web.local' http://10.211.0.1:{port}/
echo "== mdns after"; resolve
echo "== share nope"; in_a {portok} share nope 2>&1; echo "rc=$?"
echo "== share again"; in_a {portok} share web 2>&1
echo "== no ca"; in_a {portok} unshare web >/dev/null 2>&1; code http://10.211.0.1:{port}/__portok/ca.pem
echo "== api share"; in_a curl -s -XPOST --max-time 5 -H 'Host: portok.localhost' -H "x-portok-token: $(cat {state}/admin.token)" http://127.0.0.1:{port}/api/routes/web/share; echo
echo "== after api share"; code -H 'Host: web.local' http://10.211.0.1:{port}/
in_a {portok} proxy stop >/dev/null 2>&1
exit 0
"#,
        state = p.state().display(),
        home = p.home().display(),
        portok = BIN,
        hello = hello_bin().display(),
        python = python.display(),
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let part = |name: &str| -> String {
        let start = text
            .find(&format!("== {name}\n"))
            .unwrap_or_else(|| panic!("no {name}: {text}"));
        let rest = &text[start + name.len() + 4..];
        rest[..rest.find("\n== ").unwrap_or(rest.len())]
            .trim()
            .to_string()
    };
    assert!(
        part("start").contains(&format!("also on the LAN at http://10.211.0.1:{port}")),
        "{text}"
    );
    for (name, want) in [
        ("web.local", "200"),
        ("own name", "200"),
        ("by address", "200"),
        ("https", "200"),
        ("https by address", "200"),
        ("https secret", "404"),
        ("secret.local", "404"),
        ("secret.localhost", "404"),
        ("dashboard", "404"),
        ("api", "404"),
        ("loopback", "200"),
        ("after", "404"),
    ] {
        assert_eq!(part(name), want, "{name}: {text}");
    }
    let page = part("page");
    assert!(
        page.contains("is not shared on this network") && !page.contains("web"),
        "the page names no other app: {text}"
    );
    assert!(part("garbage").starts_with("HTTP/1.1 400"), "{text}");
    // Announced over mDNS and resolved by a resolver portok does not write.
    assert_eq!(
        part("mdns"),
        format!("found web.local. ['10.211.0.1'] {port}"),
        "{text}"
    );
    assert!(
        part("status").contains(&format!("\"lan_url\": \"http://web.local:{port}\"")),
        "{text}"
    );
    assert_eq!(
        part("mdns after"),
        "none",
        "unsharing withdraws the name: {text}"
    );
    assert!(
        part("list")
            .lines()
            .any(|l| l.contains("web.localhost") && l.contains("shared on the LAN")),
        "{text}"
    );
    assert!(
        part("unshare").contains("web is no longer shared"),
        "{text}"
    );
    assert!(
        part("doctor").contains("sharing web on 10.211.0.1:"),
        "{text}"
    );
    assert_eq!(
        part("ca"),
        "same",
        "the CA file, while a route is shared: {text}"
    );
    let rows = part("rows");
    for want in [
        "shared on the LAN: <a href=\"http://web.local",
        "data-unshare=\"web\"",
        "<svg",
    ] {
        assert!(rows.contains(want), "dashboard row lacks {want}: {text}");
    }
    let again = part("share again");
    assert!(
        again.contains(&format!("is shared on the LAN at http://web.local:{port}")),
        "{text}"
    );
    assert!(
        again.contains("SHA-256 fingerprint")
            && again.contains(&format!("http://10.211.0.1:{port}/__portok/ca.pem")),
        "{text}"
    );
    assert!(
        again.contains("scan to open") && again.contains('█'),
        "a QR code: {text}"
    );
    assert_eq!(
        part("no ca"),
        "404",
        "no CA file while nothing is shared: {text}"
    );
    assert!(part("api share").contains("\"shared\": true"), "{text}");
    assert_eq!(part("after api share"), "200", "{text}");
    let nope = part("share nope");
    assert!(
        nope.contains("there is no route named nope") && nope.contains("rc=2"),
        "{text}"
    );
}

#[test]
fn lan_mode_without_a_network_says_so_and_serves_loopback() {
    if !can_make_namespaces() {
        return missing(
            "root, ip and curl (network namespaces)",
            "apt-get install iproute2 curl; run as root",
        );
    }
    let p = Portok::new();
    let app_port = free_port();
    // A namespace of its own with only loopback in it.
    let script = format!(
        r#"
ip link set lo up
export PORTOK_STATE_DIR={state} HOME={home} PORTOK_PORT={port} NO_COLOR=1
PORT={app_port} {hello} >/dev/null 2>&1 &
APP=$!; trap 'kill $APP 2>/dev/null' EXIT
echo "== start"; {portok} proxy start --lan 2>&1
{portok} alias web {app_port} --share >/dev/null 2>&1
echo "== loopback"; curl -s -o /dev/null --max-time 5 -w '%{{http_code}}' -H 'Host: web.localhost' http://127.0.0.1:{port}/; echo
echo "== share"; {portok} share web 2>&1
{portok} proxy stop >/dev/null 2>&1
exit 0
"#,
        state = p.state().display(),
        home = p.home().display(),
        port = p.port,
        portok = BIN,
        hello = hello_bin().display(),
    );
    let out = Command::new("unshare")
        .args(["--net", "bash", "-c", &script])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("--lan: this machine has no network address besides loopback"),
        "{text}"
    );
    assert!(text.contains("== loopback\n200"), "{text}");
    assert!(
        text.contains("the proxy does not listen on the LAN"),
        "{text}"
    );
}
