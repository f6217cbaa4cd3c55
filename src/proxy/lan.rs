//! Clients on other machines (`proxy start --lan`): they reach the routes shared with
//! `portok share NAME` (or `--share`), under `NAME.local`, their own name, or the
//! machine's address when exactly one route is shared; nothing else, not portok's own
//! pages. Every other rule (limits, deadlines, the pipeline) is the same for them.

use crate::routes::{LiveRoute, RouteTable};

/// Where a phone gets the CA (`portok share` prints it), while some route is shared.
pub const CA_PATH: &str = "/__portok/ca.pem";

/// The CA certificate, as a download.
pub fn ca_file(ctx: &super::ctx::Ctx) -> http::Response<super::body::ProxyBody> {
    let pem = std::fs::read(crate::ca::ca_pem_path(ctx.state.root())).unwrap_or_default();
    let mut r = http::Response::new(super::body::ProxyBody::full(pem));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-x509-ca-cert"),
    );
    r
}
use std::net::IpAddr;

/// Loopback, IPv4 or IPv6 (an IPv4-mapped one too): this machine.
pub fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        ip => ip.is_loopback(),
    }
}

/// The shared route a LAN client's Host names, if any.
pub fn shared_route<'t>(
    table: &'t RouteTable,
    host: &str,
    tlds: &[String],
) -> Option<&'t LiveRoute> {
    let shared = |l: &&LiveRoute| l.route.share;
    if host.parse::<IpAddr>().is_ok() || host.starts_with('[') {
        // By address: only when that cannot mean two apps.
        let mut all = table.sorted().into_iter().filter(|l| l.route.share);
        let one = all.next()?;
        return all.next().is_none().then_some(one);
    }
    let own = table.lookup(host).filter(shared);
    if own.is_some() {
        return own;
    }
    // `api.local` is the LAN name of the route whose name, without its suffix, is `api`.
    let name = host.strip_suffix(".local")?;
    table
        .sorted()
        .into_iter()
        .find(|l| l.route.share && crate::names::lan_label(&l.route.hostname, tlds) == name)
}
