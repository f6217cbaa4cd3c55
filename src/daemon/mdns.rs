//! LAN names (`proxy start --lan`): each shared route is announced over mDNS as
//! `NAME.local` (`api.shop.local` for a dotted name), in-process, on the addresses the
//! daemon listens on there, and withdrawn (a goodbye packet) when it is unshared or goes
//! away. A name another host already holds gets the standard probing and a suffix
//! (`web-2.local`); the name that won is what `portok status` shows.

use super::state::DaemonState;
use crate::sync::LockExt;
use mdns_sd::{DaemonEvent, IfKind, ServiceDaemon, ServiceInfo};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

const SERVICE: &str = "_http._tcp.local.";

/// The `.local` host name a route is announced under (before any conflict suffix).
pub fn local_name(hostname: &str, tlds: &[String]) -> String {
    format!("{}.local.", crate::names::lan_label(hostname, tlds))
}

/// Follow the route table: announce what is shared, withdraw what is not any more.
pub async fn announce_loop(
    d: Arc<DaemonState>,
    addrs: Vec<IpAddr>,
    port: u16,
    stop: CancellationToken,
) {
    if addrs.is_empty() {
        return;
    }
    let mdns = match ServiceDaemon::new() {
        Ok(m) => m,
        Err(e) => {
            warn!(error = %e, "mDNS: cannot start; shared routes are reachable by address only");
            return;
        }
    };
    // Only where the daemon listens on the LAN.
    let _ = mdns.disable_interface(IfKind::All);
    for ip in &addrs {
        let _ = mdns.enable_interface(IfKind::Addr(*ip));
    }
    if let Ok(events) = mdns.monitor() {
        let names = d.lan_names.clone();
        std::thread::spawn(move || {
            while let Ok(ev) = events.recv() {
                if let DaemonEvent::NameChange(change) = ev {
                    info!(
                        from = change.original,
                        to = change.new_name,
                        "mDNS: the name was taken on the network; using another"
                    );
                    let mut n = names.locked();
                    for v in n.values_mut().filter(|v| **v == change.original) {
                        *v = change.new_name.clone();
                    }
                }
            }
        });
    }
    // host -> the service's full name, for its goodbye.
    let mut announced: HashMap<String, String> = HashMap::new();
    loop {
        let wanted: Vec<String> = d
            .ctx
            .routes
            .load()
            .sorted()
            .iter()
            .filter(|l| l.route.share && l.route.tcp.is_none())
            .map(|l| l.route.hostname.clone())
            .collect();
        for host in announced
            .keys()
            .filter(|h| !wanted.contains(h))
            .cloned()
            .collect::<Vec<_>>()
        {
            if let Some(full) = announced.remove(&host) {
                let _ = mdns.unregister(&full);
                d.lan_names.locked().remove(&host);
                info!(host, "mDNS: withdrawn");
            }
        }
        let new: Vec<&String> = wanted
            .iter()
            .filter(|h| !announced.contains_key(*h))
            .collect();
        for host in new {
            let name = local_name(host, &d.tlds);
            let instance = name.trim_end_matches(".local.").to_string();
            let info = ServiceInfo::new(
                SERVICE,
                &instance,
                &name,
                &addrs[..],
                port,
                &[("path", "/")][..],
            );
            match info.and_then(|i| {
                let full = i.get_fullname().to_string();
                mdns.register(i).map(|_| full)
            }) {
                Ok(full) => {
                    info!(host, name, "mDNS: announced");
                    d.lan_names.locked().insert(host.clone(), name.clone());
                    announced.insert(host.clone(), full);
                }
                Err(e) => warn!(host, error = %e, "mDNS: cannot announce"),
            }
        }
        let changed = d.ctx.changed.notified();
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = changed => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
    // Goodbyes for everything, then the responder's own shutdown.
    for full in announced.values() {
        if let Ok(rx) = mdns.unregister(full) {
            let _ = rx.recv_timeout(Duration::from_secs(1));
        }
    }
    let _ = mdns.shutdown();
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_names() {
        let tlds = ["test".to_string(), "dev.example.com".to_string()];
        assert_eq!(super::local_name("web.localhost", &tlds), "web.local.");
        assert_eq!(
            super::local_name("api.shop.localhost", &tlds),
            "api.shop.local."
        );
        assert_eq!(super::local_name("api.test", &tlds), "api.local.");
        assert_eq!(
            super::local_name("api.dev.example.com", &tlds),
            "api.local."
        );
    }
}
