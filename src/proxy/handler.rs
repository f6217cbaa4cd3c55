//! One request: find the route by host, check the hop counter, forward, or answer with a
//! page. Every error becomes a status code in exactly one place: [`ProxyError::status`].

use super::forward::{self, ForwardError, Origin, ProxyBody, UpstreamBody, HOPS_HEADER, MAX_HOPS};
use super::request_head::{self, BodyFraming, Hop};
use super::{pages, reload, upstream, ConnInfo, Ctx};
use crate::names::normalize_host;
use crate::routes::Backend;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::sync::Arc;
use tracing::debug;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const PORTOK_HEADER: header::HeaderName = header::HeaderName::from_static("x-portok");

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the request has no Host header")]
    MissingHost,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("no app registered for {host}")]
    NoRoute { host: String },
    #[error("{host} looped through portok {hops} times")]
    Loop { host: String, hops: u32 },
    #[error("{host} is starting")]
    Starting { host: String },
    #[error("{host} did not become ready within {waited_secs}s")]
    HoldTimeout { host: String, waited_secs: u64 },
    #[error("{host} crashed: {}", .info.message)]
    Crashed {
        host: String,
        info: crate::proxy::CrashInfo,
    },
    #[error("{host}: the app on port {port} did not answer: {source}")]
    Upstream {
        host: String,
        port: u16,
        source: ForwardError,
    },
}

impl ProxyError {
    /// The one mapping from error to status code.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::MissingHost => StatusCode::BAD_REQUEST,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::Loop { .. } => StatusCode::LOOP_DETECTED,
            ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Starting { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::HoldTimeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Crashed { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

pub async fn handle(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
    conn: ConnInfo,
) -> Result<Response<ProxyBody>, Infallible> {
    let wants_html = pages::wants_html(req.headers());
    let mut meter = None;
    let mut resp = match route(&ctx, req, conn, wants_html, &mut meter).await {
        Ok(resp) => resp,
        Err(err) => {
            debug!(peer = %conn.peer, error = %err, "answered with an error page");
            let upstream = matches!(err, ProxyError::Upstream { .. });
            let page = pages::error_page(&err, &ctx, wants_html);
            if let Some(m) = meter.take() {
                m.finish(page.status().as_u16(), upstream);
            }
            page
        }
    };
    if let Some(m) = meter {
        m.finish(resp.status().as_u16(), false);
    }
    resp.headers_mut()
        .insert(PORTOK_HEADER, HeaderValue::from_static(VERSION));
    Ok(resp)
}

async fn route(
    ctx: &Arc<Ctx>,
    mut req: Request<Incoming>,
    conn: ConnInfo,
    wants_html: bool,
    meter: &mut Option<crate::metrics::RequestMeter>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let host_value = routed_host(&req)?;
    let raw_host = host_value.to_str().map_err(|_| ProxyError::MissingHost)?;
    let host = normalize_host(raw_host);
    if host.is_empty() {
        return Err(ProxyError::MissingHost);
    }
    let hops = req
        .headers()
        .get(&HOPS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    if hops >= MAX_HOPS {
        return Err(ProxyError::Loop {
            host: host.into_owned(),
            hops,
        });
    }
    if host == crate::admin::HOST {
        // Boxed, as the other rare paths below: the handler's future is allocated for every
        // request, and these made it 4.5 KiB instead of 3.1.
        return Ok(Box::pin(crate::admin::handle(ctx, req, conn)).await);
    }
    let Resolved {
        mut backend,
        reload,
        pool,
    } = resolve(ctx, &host, wants_html, meter).await?;
    if reload && req.uri().path().starts_with(reload::PREFIX) {
        return Ok(match req.uri().path() {
            "/__portok/reload.js" => reload::script(),
            "/__portok/events" => crate::admin::app_events(ctx, &host),
            _ => reload::not_found(),
        });
    }
    let navigation = reload && reload::is_navigation(&req);
    if navigation {
        reload::prepare_navigation(req.headers_mut());
    }
    let upstream_err = |source| ProxyError::Upstream {
        host: host.to_string(),
        port: backend.port,
        source,
    };
    let hop = Hop {
        ip: conn.peer.ip(),
        tls: conn.tls,
        port: ctx.port,
        hops,
    };
    if req.method() == http::Method::CONNECT {
        let Some(protocol) = req.extensions().get::<hyper::ext::Protocol>() else {
            // portok routes by name to apps; it is no forward proxy.
            return Err(ProxyError::BadRequest(
                "CONNECT is not served: portok is no forward proxy",
            ));
        };
        // An HTTP/2 WebSocket (RFC 8441): an HTTP/1.1 Upgrade to the app, which need not
        // know h2.
        let key = forward::websocket_key();
        let mut extra: Vec<(&[u8], &[u8])> = vec![(b"sec-websocket-key", key.as_bytes())];
        if !req.headers().contains_key(header::SEC_WEBSOCKET_VERSION) {
            extra.push((b"sec-websocket-version", b"13"));
        }
        let head = request_head::of_request(
            &req,
            b"GET",
            host_value.as_bytes(),
            BodyFraming::None,
            Some(protocol.as_str().as_bytes()),
            &extra,
            hop,
        );
        return upgrade(ctx, req, head, &backend)
            .await
            .map_err(upstream_err);
    }
    if ctx.redirect_https && !conn.tls && wants_html && req.method() == http::Method::GET {
        return Ok(redirect_to_https(&host, ctx.port, &req));
    }
    if let Some(proto) = wants_upgrade(&req) {
        let head = request_head::of_request(
            &req,
            req.method().as_str().as_bytes(),
            host_value.as_bytes(),
            BodyFraming::None,
            Some(proto.as_bytes()),
            &[],
            hop,
        );
        return upgrade(ctx, req, head, &backend)
            .await
            .map_err(upstream_err);
    }
    let origin = Origin {
        peer: conn.peer,
        tls: conn.tls,
        host: &host_value,
        proxy_port: ctx.port,
        hops,
    };
    let bodiless = http_body::Body::is_end_stream(req.body());
    let wants_trailers = req
        .headers()
        .get_all(header::TE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
    // A bodiless request goes over a kept raw connection (see `upstream::send`); a page
    // that gets the live-reload tag, a request with a body, a CONNECT (whose answer turns
    // the connection into a tunnel) and a client asking for trailers (`TE: trailers`, as
    // gRPC clients send; the raw path drops them) go through hyper's client.
    let raw = bodiless && !navigation && !wants_trailers;
    // What to send (again): the raw head names no instance, so it goes as it is to another;
    // for hyper's client a pool keeps the parts of a bodiless request.
    enum Outgoing {
        Raw(Vec<u8>, http::Method),
        Hyper(Option<Replay>),
    }
    let outgoing = if raw {
        let head = request_head::of_request(
            &req,
            req.method().as_str().as_bytes(),
            host_value.as_bytes(),
            BodyFraming::None,
            None,
            &[],
            hop,
        );
        Outgoing::Raw(head, req.method().clone())
    } else {
        Outgoing::Hyper((pool && bodiless).then(|| Replay::of(&req)))
    };
    let mut sent = match &outgoing {
        Outgoing::Raw(head, method) => send_raw(ctx, head, method, &backend).await,
        Outgoing::Hyper(_) => {
            forward::prepare_request(&mut req, &backend, &origin);
            let exchange = forward::send(&ctx.client, req.map(UpstreamBody::Client), &backend);
            ctx.in_turn(&backend, exchange).await
        }
    };
    // A pool resends as nginx's `proxy_next_upstream error` does: an instance that died
    // refuses the connection before a byte was sent (any method is safe to resend then),
    // or drops it before answering (resent once, and only for idempotent methods, so a
    // request that kills the app cannot take down the whole pool).
    let resendable = match &outgoing {
        Outgoing::Raw(_, method) => pool.then_some(method),
        Outgoing::Hyper(replay) => replay.as_ref().map(|r| &r.method),
    };
    if let Some(method) = resendable {
        let mut resent_after_exchange = false;
        loop {
            match &sent {
                Err(ForwardError::Connect(_)) => backend.mark_down(),
                Err(ForwardError::Exchange(_))
                    if method.is_idempotent() && !resent_after_exchange =>
                {
                    resent_after_exchange = true
                }
                _ => break,
            }
            let table = ctx.routes.load();
            let Some(next) = table.lookup(&host).and_then(|l| l.pick_other(&backend)) else {
                break;
            };
            backend = next.clone();
            drop(table);
            debug!(host = %host, port = backend.port, "instance failed; trying another");
            sent = match &outgoing {
                Outgoing::Raw(head, method) => send_raw(ctx, head, method, &backend).await,
                Outgoing::Hyper(replay) => {
                    let replay = replay.as_ref().expect("resent only with a replay");
                    let mut again = replay.request();
                    forward::prepare_request(&mut again, &backend, &origin);
                    let exchange = forward::send(&ctx.client, again, &backend);
                    ctx.in_turn(&backend, exchange).await
                }
            };
        }
    }
    let upstream_err = |source| ProxyError::Upstream {
        host: host.to_string(),
        port: backend.port,
        source,
    };
    let mut resp = sent.map_err(upstream_err)?;
    if navigation && reload::should_inject(&resp) {
        reload::inject(&mut resp);
    }
    Ok(resp)
}

/// An upgrade in its turn (each holds an app connection for as long as it lives).
async fn upgrade(
    ctx: &Ctx,
    req: Request<Incoming>,
    head: Vec<u8>,
    backend: &Arc<Backend>,
) -> Result<Response<ProxyBody>, ForwardError> {
    let exchange = Box::pin(forward::send_upgrade(
        req,
        head,
        backend,
        ctx.limits.connect,
    ));
    ctx.in_turn(backend, exchange).await
}

/// The host a request is routed on: an absolute-form target's or HTTP/2's `:authority`
/// (RFC 9112 3.2.2: a Host beside an absolute-form target is ignored), else the one Host
/// header. Two Host headers, or an HTTP/2 Host that names another host than
/// `:authority`, make the request malformed (RFC 9112 3.2, RFC 9113 8.3.1).
fn routed_host<B>(req: &Request<B>) -> Result<HeaderValue, ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
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
    HeaderValue::from_str(authority.as_str()).map_err(|_| ProxyError::MissingHost)
}

/// Send a bodiless request's head over a kept app connection, else in its turn over a new
/// one: the turns bound how many app connections a burst opens (one h2 connection alone
/// can start 250 requests at once), and a kept connection needs none.
async fn send_raw(
    ctx: &Ctx,
    head: &[u8],
    method: &http::Method,
    backend: &Arc<Backend>,
) -> Result<Response<ProxyBody>, ForwardError> {
    match upstream::Upstream::idle(backend) {
        Some(kept) => upstream::send(head, method, backend, Some(kept), ctx.limits.connect).await,
        None => {
            let exchange = upstream::send(head, method, backend, None, ctx.limits.connect);
            ctx.in_turn(backend, exchange).await
        }
    }
}

/// The parts of a bodiless request needed to send it again.
struct Replay {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
}

impl Replay {
    fn of<B>(req: &Request<B>) -> Self {
        Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        }
    }

    fn request(&self) -> Request<UpstreamBody> {
        let mut req = Request::new(UpstreamBody::Empty);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Where a request goes.
struct Resolved {
    backend: Arc<Backend>,
    /// The app wants the live-reload script in its pages.
    reload: bool,
    /// More than one instance, so a refused connection can go to another.
    pool: bool,
}

/// What the route table says about a host right now.
enum Lookup {
    Ready(Resolved),
    /// Starting: hold the request up to this many seconds.
    Hold(u64),
}

/// The backend for a host. A starting app shows browsers a self-refreshing page and holds
/// other clients until it is live (up to the route's hold time), so a cold start never
/// looks like a connection error.
async fn resolve(
    ctx: &Ctx,
    host: &str,
    html: bool,
    meter: &mut Option<crate::metrics::RequestMeter>,
) -> Result<Resolved, ProxyError> {
    let hold = match lookup(ctx, host, html, meter)? {
        Lookup::Ready(r) => return Ok(r),
        Lookup::Hold(secs) => secs,
    };
    // Only a request held for a starting app registers for wake-ups (Notify takes a lock);
    // it registers before looking again, so a swap in between is not missed.
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(hold);
    loop {
        let notified = ctx.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Lookup::Ready(r) = lookup(ctx, host, html, meter)? {
            return Ok(r);
        }
        if tokio::time::timeout_at(until, notified).await.is_err() {
            return Err(ProxyError::HoldTimeout {
                host: host.into(),
                waited_secs: hold,
            });
        }
    }
}

fn lookup(
    ctx: &Ctx,
    host: &str,
    html: bool,
    meter: &mut Option<crate::metrics::RequestMeter>,
) -> Result<Lookup, ProxyError> {
    let table = ctx.routes.load();
    let Some(live) = table.lookup(host) else {
        return Err(ProxyError::NoRoute { host: host.into() });
    };
    if ctx.metrics_enabled && meter.is_none() {
        *meter = Some(live.stats.start());
    }
    if live.route.is_crashed() {
        let crashes = ctx.crashes.lock().unwrap_or_else(|e| e.into_inner());
        let info = crashes
            .get(&live.route.hostname)
            .cloned()
            .unwrap_or(crate::proxy::CrashInfo {
                message: "the app exited".into(),
                tail: Vec::new(),
            });
        return Err(ProxyError::Crashed {
            host: host.into(),
            info,
        });
    }
    if !live.route.is_starting() {
        return Ok(Lookup::Ready(Resolved {
            backend: live.pick().clone(),
            reload: live.route.reload,
            pool: live.backends.len() > 1,
        }));
    }
    if html {
        return Err(ProxyError::Starting { host: host.into() });
    }
    Ok(Lookup::Hold(live.route.hold.unwrap_or(30)))
}

/// `--redirect-https`: a browser's plain-HTTP navigation goes to the same URL over https.
fn redirect_to_https(host: &str, port: u16, req: &Request<Incoming>) -> Response<ProxyBody> {
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let location = format!("https://{host}:{port}{pq}");
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// The Upgrade header of an HTTP/1.1 request that asks to switch protocols. `h2c` is not
/// one (RFC 9113 dropped it): such a request goes to the app as a plain request, its
/// Upgrade and HTTP2-Settings removed, so no client switches the app connection's
/// protocol through portok.
fn wants_upgrade(req: &Request<Incoming>) -> Option<HeaderValue> {
    let upgrade = req.headers().get(header::UPGRADE)?;
    let asked = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let h2c = upgrade
        .as_bytes()
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"h2c"));
    (asked && !h2c).then(|| upgrade.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_status() {
        let cases = [
            (ProxyError::MissingHost, 400),
            (ProxyError::BadRequest("x"), 400),
            (ProxyError::NoRoute { host: "a".into() }, 404),
            (
                ProxyError::Loop {
                    host: "a".into(),
                    hops: 5,
                },
                508,
            ),
            (
                ProxyError::Upstream {
                    host: "a".into(),
                    port: 1,
                    source: ForwardError::Connect(std::io::ErrorKind::ConnectionRefused.into()),
                },
                502,
            ),
            (ProxyError::Starting { host: "a".into() }, 503),
            (
                ProxyError::HoldTimeout {
                    host: "a".into(),
                    waited_secs: 30,
                },
                503,
            ),
            (
                ProxyError::Crashed {
                    host: "a".into(),
                    info: crate::proxy::CrashInfo {
                        message: "exit 1".into(),
                        tail: vec![],
                    },
                },
                502,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.status().as_u16(), code, "{err}");
        }
    }
}
