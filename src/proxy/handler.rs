//! One request: find the route by host, check the hop counter, forward, or answer with a
//! page. Every error becomes a status code in exactly one place: [`ProxyError::status`].

use super::forward::{self, ForwardError, ProxyBody, HOPS_HEADER, MAX_HOPS};
use super::request_head::{self, BodyFraming, Hop};
use super::{pages, reload, upstream, ConnInfo, Ctx};
use crate::names::normalize_host;
use crate::routes::Backend;
use bytes::Bytes;
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
    #[error("the request body is malformed or was cut off: {0}")]
    ClientBody(String),
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
            ProxyError::BadRequest(_) | ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
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
    let wants_trailers = req
        .headers()
        .get_all(header::TE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
    let method = req.method().clone();
    let (parts, body) = req.into_parts();
    let req = Request::from_parts(parts, ());
    // A body is read ahead up to READ_AHEAD bytes: one that is malformed or cut off there is
    // a 400 and the app never sees the request; one that fits goes with its head in one
    // write (and can be resent to another instance of a pool).
    let body = if http_body::Body::is_end_stream(&body) {
        ReadAhead::Whole(Bytes::new())
    } else {
        read_ahead(body)
            .await
            .map_err(|e| ProxyError::ClientBody(e.to_string()))?
    };
    // Looked up only for a body too long to hold (rare).
    let content_length = || {
        req.headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let head_for = |framing| {
        request_head::of_request(
            &req,
            method.as_str().as_bytes(),
            host_value.as_bytes(),
            framing,
            None,
            &[],
            hop,
        )
    };
    let sent = match body {
        ReadAhead::Partial(first, rest) => {
            let framing = match content_length() {
                Some(n) => BodyFraming::Length(n),
                None => BodyFraming::Chunked,
            };
            let mut head = head_for(framing);
            if framing == BodyFraming::Chunked {
                upstream::push_chunk(&mut head, &first);
            } else {
                head.extend_from_slice(&first);
            }
            let asked = upstream::Asked {
                head_method: false,
                trailers: wants_trailers,
            };
            let exchange = upstream::send_streaming(
                head,
                rest,
                framing == BodyFraming::Chunked,
                asked,
                &backend,
                ctx.limits.connect,
            );
            ctx.in_turn(&backend, exchange).await
        }
        ReadAhead::Whole(data) => {
            let framing = match data.len() {
                0 => BodyFraming::None,
                n => BodyFraming::Length(n as u64),
            };
            let mut head = head_for(framing);
            head.extend_from_slice(&data);
            let with_body = !data.is_empty();
            let (head, method) = (&head, &method);
            let send = |backend: Arc<Backend>| async move {
                send_raw(ctx, head, method, wants_trailers, with_body, &backend).await
            };
            let mut sent = send(backend.clone()).await;
            // A pool resends as nginx's `proxy_next_upstream error` does: an instance that
            // died refuses the connection before a byte was sent (any method is safe to
            // resend then), or drops it before answering (resent once, and only for
            // idempotent methods, so a request that kills the app cannot take down the
            // whole pool).
            let mut resent_after_exchange = false;
            if pool {
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
                    let Some(next) = table.lookup(&host).and_then(|l| l.pick_other(&backend))
                    else {
                        break;
                    };
                    backend = next.clone();
                    drop(table);
                    debug!(host = %host, port = backend.port, "instance failed; trying another");
                    sent = send(backend.clone()).await;
                }
            }
            sent
        }
    };
    if let Err(ForwardError::ClientBody(e)) = &sent {
        return Err(ProxyError::ClientBody(e.to_string()));
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

/// Send a request held whole (its head, and its body if it has one) over a kept app
/// connection, else in its turn over a new one: the turns bound how many app connections a
/// burst opens (one h2 connection alone can start 250 requests at once), and a kept
/// connection needs none. A request with a body always waits for its turn.
async fn send_raw(
    ctx: &Ctx,
    head: &[u8],
    method: &http::Method,
    trailers: bool,
    with_body: bool,
    backend: &Arc<Backend>,
) -> Result<Response<ProxyBody>, ForwardError> {
    let timeout = ctx.limits.connect;
    match upstream::Upstream::idle(backend).filter(|_| !with_body) {
        Some(kept) => upstream::send(head, method, trailers, backend, Some(kept), timeout).await,
        None => {
            let exchange = upstream::send(head, method, trailers, backend, None, timeout);
            ctx.in_turn(backend, exchange).await
        }
    }
}

/// How much of a request body is read before the request goes to the app.
const READ_AHEAD: usize = 64 * 1024;

/// A request body as read ahead: whole, or its first bytes and the rest to stream.
enum ReadAhead {
    Whole(Bytes),
    Partial(Bytes, Incoming),
}

async fn read_ahead(mut body: Incoming) -> Result<ReadAhead, hyper::Error> {
    use http_body_util::BodyExt as _;
    let mut got = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        // Trailers of a request body are not passed on.
        if let Ok(data) = frame?.into_data() {
            got.extend_from_slice(&data);
        }
        if got.len() > READ_AHEAD && !http_body::Body::is_end_stream(&body) {
            return Ok(ReadAhead::Partial(got.freeze(), body));
        }
    }
    Ok(ReadAhead::Whole(got.freeze()))
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
            (ProxyError::ClientBody("x".into()), 400),
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
