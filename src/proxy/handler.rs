//! One request: find the route by host, check the hop counter, forward, or answer with a
//! page. Every error becomes a status code in exactly one place: [`ProxyError::status`].

use super::forward::{self, ForwardError, Origin, ProxyBody, UpstreamBody, HOPS_HEADER, MAX_HOPS};
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
    // An absolute-form target (or h2 :authority) names the host; else the Host header.
    let host_value = match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).map_err(|_| ProxyError::MissingHost)?,
        None => req
            .headers()
            .get(header::HOST)
            .cloned()
            .ok_or(ProxyError::MissingHost)?,
    };
    // Request smuggling: a body framed two ways is refused, never forwarded (RFC 9112 6.1).
    if req.headers().contains_key(header::TRANSFER_ENCODING)
        && req.headers().contains_key(header::CONTENT_LENGTH)
    {
        return Err(ProxyError::BadRequest(
            "both Content-Length and Transfer-Encoding are set",
        ));
    }
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
    let origin = Origin {
        peer: conn.peer,
        tls: conn.tls,
        host: &host_value,
        proxy_port: ctx.port,
        hops,
    };
    if req.method() == http::Method::CONNECT
        && req.extensions().get::<hyper::ext::Protocol>().is_some()
    {
        forward::prepare_request(&mut req, &backend, &origin);
        return ctx
            .in_turn(
                &backend,
                Box::pin(forward::send_h2_websocket(
                    req,
                    &backend,
                    ctx.limits.connect,
                )),
            )
            .await
            .map_err(upstream_err);
    }
    if ctx.redirect_https && !conn.tls && wants_html && req.method() == http::Method::GET {
        return Ok(redirect_to_https(&host, ctx.port, &req));
    }
    let upgrade = wants_upgrade(&req);
    if let Some(proto) = upgrade {
        forward::prepare_request(&mut req, &backend, &origin);
        return ctx
            .in_turn(
                &backend,
                Box::pin(forward::send_upgrade(
                    req,
                    proto,
                    &backend,
                    ctx.limits.connect,
                )),
            )
            .await
            .map_err(upstream_err);
    }
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
    let raw = bodiless && !navigation && !wants_trailers && req.method() != http::Method::CONNECT;
    // What to send (again): the raw head names no instance, so it goes as it is to another;
    // for hyper's client a pool keeps the parts of a bodiless request.
    enum Outgoing {
        Raw(Vec<u8>, http::Method),
        Hyper(Option<Replay>),
    }
    let outgoing = if raw {
        Outgoing::Raw(upstream::request_head(&req, &origin), req.method().clone())
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

/// The Upgrade header of an HTTP/1.1 request that asks to switch protocols.
fn wants_upgrade(req: &Request<Incoming>) -> Option<HeaderValue> {
    let upgrade = req.headers().get(header::UPGRADE)?;
    let conn = req.headers().get(header::CONNECTION)?.to_str().ok()?;
    conn.split(',')
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        .then(|| upgrade.clone())
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
