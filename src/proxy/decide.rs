//! The routing decision, made in one place for both front-ends: from what a request asks
//! (its routed host, method, path, Accept, hop count) and its connection, what portok does
//! with it. The fast path relays only a [`Decision::Forward`] it can carry and hands
//! anything else to hyper, whose handler acts on the same decision; so a request means the
//! same thing whichever front-end read it. [`Resend`] is the one policy for sending a
//! request again to another instance of a pool.

use super::ctx::{CrashInfo, Ctx};
use super::error::ProxyError;
use super::header::MAX_HOPS;
use super::reload;
use super::upstream::Failed;
use crate::metrics::RequestMeter;
use crate::routes::Backend;
use crate::sync::LockExt as _;
use std::sync::Arc;

/// What the decision reads from a request.
pub struct Ask<'a> {
    /// The host routed on (normalized: lower case, no port).
    pub host: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// Accept names text/html: a browser's page load.
    pub html: bool,
    /// The request asks to switch protocols, so it is no page load.
    pub upgrade: bool,
    /// The value of portok's hop counter.
    pub hops: u32,
    pub tls: bool,
    /// The client is not on this machine (it came in over a `--lan` listener): it may reach
    /// shared routes only.
    pub lan: bool,
}

/// The value of portok's hop counter on a request (0 when it has none).
pub(super) fn hops(headers: &http::HeaderMap) -> u32 {
    headers
        .get(&super::header::HOPS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0)
}

/// What the routing decision reads from a request ([`decide`]), for both callers.
pub(super) fn ask_of<'a, B>(
    req: &'a http::Request<B>,
    host: &'a str,
    hops: u32,
    html: bool,
    conn: super::ctx::ConnInfo,
) -> Ask<'a> {
    Ask {
        host,
        method: req.method().as_str(),
        path: req.uri().path(),
        html,
        upgrade: req.headers().contains_key(http::header::UPGRADE)
            || req.method() == http::Method::CONNECT,
        hops,
        tls: conn.tls,
        lan: !super::lan::is_local(conn.peer.ip()),
    }
}

/// The host a request is routed on: an absolute-form target's or HTTP/2's `:authority`
/// (RFC 9112 3.2.2: a Host beside an absolute-form target is ignored), else the one Host
/// header. Two Host headers, or an HTTP/2 Host that names another host than
/// `:authority`, make the request malformed (RFC 9112 3.2, RFC 9113 8.3.1).
pub(super) fn routed_host<B>(req: &http::Request<B>) -> Result<http::HeaderValue, ProxyError> {
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return Err(ProxyError::BadRequest("the request has two Host headers"));
    }
    let Some(authority) = req.uri().authority() else {
        return first.cloned().ok_or(ProxyError::MissingHost);
    };
    if req.version() == http::Version::HTTP_2
        && first.is_some_and(|h| {
            !h.as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes())
        })
    {
        return Err(ProxyError::BadRequest(
            "the Host header names another host than :authority",
        ));
    }
    http::HeaderValue::from_str(authority.as_str()).map_err(|_| ProxyError::MissingHost)
}

/// What to do with a request (an error page is the `Err` of [`decide`]).
pub enum Decision {
    /// Send it to this instance.
    Forward(Target),
    /// The dashboard and admin API on `portok.localhost`.
    Admin,
    /// `/__portok/ca.pem` for a LAN client while a route is shared: the CA to trust.
    CaFile,
    /// `/__portok/*` on an app with live reload: portok's script and event stream.
    LiveReload,
    /// `--redirect-https`: a browser's plain-HTTP page load goes to https.
    RedirectHttps,
    /// The app is starting: hold the request up to this many seconds, then decide again.
    Hold(u64),
}

pub struct Target {
    pub backend: Arc<Backend>,
    /// A page load of an app with live reload: its HTML gets the reload script.
    pub navigation: bool,
    /// What a failed instance leaves the request to try.
    pub again: Again,
    /// The app speaks only HTTP/2 ([`super::h2_upstream`]).
    pub h2: bool,
}

/// What a request can try when its instance fails (see [`Resend`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Again {
    /// One instance: its failure is the answer.
    Nothing,
    /// Another instance of the pool.
    Pool,
    /// A container: the same route once the engine has restarted it, waiting up to this
    /// many seconds (the route's hold). The engine stops a container before it says so, so
    /// a request can meet a closed port while the route still reads live.
    AfterRestart(u64),
}

/// Decide what to do with a request. `meter` is started once the route is known (an error
/// page for a known route counts too) and kept across decisions on a held request.
pub fn decide(
    ctx: &Ctx,
    ask: &Ask<'_>,
    meter: &mut Option<RequestMeter>,
) -> Result<Decision, ProxyError> {
    let host = ask.host;
    if host.is_empty() {
        return Err(ProxyError::MissingHost);
    }
    if ask.hops >= MAX_HOPS {
        return Err(ProxyError::Loop {
            host: host.into(),
            hops: ask.hops,
        });
    }
    let table = ctx.routes.load();
    if ask.lan && ask.path == super::lan::CA_PATH && table.sorted().iter().any(|l| l.route.share) {
        return Ok(Decision::CaFile);
    }
    let live = if ask.lan {
        super::lan::shared_route(&table, host, &ctx.tlds)
            .ok_or_else(|| ProxyError::NotShared { host: host.into() })?
    } else {
        if host == crate::names::ADMIN_HOST {
            return Ok(Decision::Admin);
        }
        table
            .lookup(host)
            .ok_or_else(|| ProxyError::NoRoute { host: host.into() })?
    };
    if ctx.metrics_enabled && meter.is_none() {
        *meter = Some(live.stats.start());
    }
    let route = &live.route;
    if route.is_crashed() {
        let crashes = ctx.crashes.locked();
        let info = crashes.get(&route.hostname).cloned().unwrap_or(CrashInfo {
            message: "the app exited".into(),
            tail: Vec::new(),
        });
        return Err(ProxyError::Crashed {
            host: host.into(),
            info,
        });
    }
    if route.is_starting() {
        if route.is_idle() {
            ctx.wake(&route.hostname);
        }
        // A browser gets a page that refreshes itself; other clients wait for the app.
        if ask.html {
            return Err(ProxyError::Starting { host: host.into() });
        }
        return Ok(Decision::Hold(route.hold.unwrap_or(30)));
    }
    if route.reload && ask.path.starts_with(reload::PREFIX) {
        return Ok(Decision::LiveReload);
    }
    let get = ask.method == "GET";
    if ctx.redirect_https && !ask.tls && ask.html && get {
        return Ok(Decision::RedirectHttps);
    }
    Ok(Decision::Forward(Target {
        backend: live.pick().clone(),
        navigation: route.reload && ask.html && !ask.upgrade && (get || ask.method == "HEAD"),
        again: match (live.backends.len() > 1, &route.container) {
            (true, _) => Again::Pool,
            (false, Some(_)) => Again::AfterRestart(route.hold.unwrap_or(30)),
            (false, None) => Again::Nothing,
        },
        h2: route.upstream == crate::routes::Upstream::H2,
    }))
}

/// nginx's `proxy_next_upstream error` for a pool: an instance that refuses the connection
/// is marked down and the request goes to another (any method: nothing was sent); one that
/// drops a request before answering gets it sent elsewhere once, and only an idempotent
/// one, so a request that kills instances cannot take down the whole pool.
pub struct Resend {
    again: Again,
    idempotent: bool,
    resent_dropped: bool,
    /// A container's restart is waited out once per request: one that keeps failing
    /// (a flapping container) gets its 502.
    waited: bool,
}

/// How long a container route's instance may read live after it refused: the engine's
/// word that it went down comes within this.
const GAP: std::time::Duration = std::time::Duration::from_secs(2);

impl Resend {
    /// `idempotent`: the method is, and the whole request is still at hand to send again.
    pub fn new(again: Again, idempotent: bool) -> Self {
        Resend {
            again,
            idempotent,
            resent_dropped: false,
            waited: false,
        }
    }

    /// The instance to try after `failed` one, or None: the failure is the answer.
    pub async fn next(
        &mut self,
        ctx: &Ctx,
        host: &str,
        failed: &Arc<Backend>,
        how: Failed,
    ) -> Option<Arc<Backend>> {
        if self.again == Again::Nothing {
            return None;
        }
        match how {
            Failed::Refused if self.again == Again::Pool => failed.mark_down(),
            Failed::Refused => {}
            Failed::Dropped if self.idempotent && !self.resent_dropped => {
                self.resent_dropped = true
            }
            Failed::Dropped => return None,
        }
        if let Again::AfterRestart(hold) = self.again {
            if std::mem::replace(&mut self.waited, true) {
                return None;
            }
            // Boxed: a rare path, kept out of every request's future.
            return Box::pin(after_restart(ctx, host, hold)).await;
        }
        let table = ctx.routes.load();
        let next = table.lookup(host)?.pick_other(failed)?.clone();
        tracing::debug!(host, port = next.port, "instance failed; trying another");
        Some(next)
    }
}

/// A container's port failed: if the engine says within [`GAP`] that the container is down
/// (its route leaves live), wait up to `hold` seconds for it to be live again.
async fn after_restart(ctx: &Ctx, host: &str, hold: u64) -> Option<Arc<Backend>> {
    let start = tokio::time::Instant::now();
    let mut went_down = false;
    loop {
        let notified = ctx.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let table = ctx.routes.load();
            let live = table.lookup(host)?;
            match (live.route.is_starting(), went_down) {
                _ if live.route.is_crashed() => return None,
                (true, _) => went_down = true,
                (false, true) => return Some(live.pick().clone()),
                (false, false) => {}
            }
        }
        let limit = if went_down {
            std::time::Duration::from_secs(hold)
        } else {
            GAP
        };
        if tokio::time::timeout_at(start + limit, notified)
            .await
            .is_err()
        {
            return None;
        }
    }
}

/// Idempotent methods (RFC 9110 9.2.2): safe to send twice.
pub fn idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
    )
}
