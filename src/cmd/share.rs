//! `portok share NAME` / `portok unshare NAME`: whether other machines reach a route when
//! the proxy listens on the LAN (`proxy start --lan`).

use super::*;
use crate::ui::UsageError;

pub(super) fn share(name: &str, on: bool) -> anyhow::Result<i32> {
    let state = StateDir::from_env()?;
    let wanted = names::hostname_for(name)?;
    let host = store::update::<_, anyhow::Error>(&state, |routes| {
        // The name as given, or the route whose short name it is (a custom TLD's).
        let route = routes
            .iter_mut()
            .find(|r| r.hostname == wanted || names::short_name(&r.hostname) == name)
            .ok_or_else(|| {
                UsageError(format!(
                    "there is no route named {name} to {}; `portok list` shows the routes",
                    if on { "share" } else { "unshare" }
                ))
            })?;
        route.share = on;
        Ok(route.hostname.clone())
    })?
    .0;
    daemon::reload_if_running(&state)?;
    let short = names::short_name(&host);
    if !on {
        eprintln!("portok: {short} is no longer shared; other machines get 404 for it");
        return Ok(0);
    }
    let lan = control::status(&state)
        .map(|s| super::proxy::lan_addresses(&s.listening))
        .unwrap_or_default();
    if lan.is_empty() {
        eprintln!("portok: {short} is shared, but the proxy does not listen on the LAN: `portok proxy stop && portok proxy start --lan`");
        return Ok(0);
    }
    // Its name on the network, once the daemon has announced it.
    let mut named = None;
    for _ in 0..30 {
        named = lan_url(&state, &host);
        if named.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let by_address = lan
        .iter()
        .map(|a| format!("http://{a}"))
        .collect::<Vec<_>>()
        .join(", ");
    match &named {
        Some(url) => eprintln!(
            "portok: {short} is shared on the LAN at {url} (announced over mDNS), and at {by_address} while it is the only shared app"
        ),
        None => eprintln!(
            "portok: {short} is shared on the LAN at {by_address} while it is the only shared app (its .local name is not announced: see `portok proxy status` and proxy.log)"
        ),
    }
    // How a phone trusts the CA (for https), and the code to open the app.
    let first = &lan[0];
    if let Ok(ca) = crate::ca::Ca::load_or_create(state.root(), &[]) {
        eprintln!(
            "portok: for https on a phone, install the CA from http://{first}{} (SHA-256 fingerprint {}) and trust it",
            crate::proxy::lan::CA_PATH,
            ca.fingerprint()
        );
    }
    let open = named.unwrap_or_else(|| format!("http://{first}/"));
    if let Some(code) = crate::qr::text(&open) {
        eprintln!("portok: scan to open {open}:");
        eprintln!("{code}");
    }
    Ok(0)
}

/// The route's URL on the LAN, as the daemon announced it.
fn lan_url(state: &StateDir, host: &str) -> Option<String> {
    let reply = control::call(
        state,
        &control::Request::Detail,
        std::time::Duration::from_secs(2),
    )
    .ok()?;
    let status: Status = serde_json::from_value(reply.data?).ok()?;
    status
        .routes
        .into_iter()
        .find(|r| r.hostname == host)
        .and_then(|r| r.lan_url)
}
