//! hyper's front-end: one request, acted on as [`super::decide`] says (forward it, hold it
//! for a starting app, serve the admin host or live reload, redirect), or answered with a
//! page for its [`ProxyError`]. Upgrades, the HTTP/2 WebSocket bridge and bodies of any
//! size are sent from here, their heads written by [`super::request_head`].

use super::body::ProxyBody;
use super::ctx::{ConnInfo, Ctx};
use super::decide::{decide, Ask, Decision, Resend, Target};
use super::error::ProxyError;
use super::request_head::{self, BodyFraming, Hop};
use super::upgrade;
use super::upstream::ForwardError;
use super::{capture, pages, reload, response_head, upstream};
use crate::names::normalize_host;
use crate::routes::Backend;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::sync::Arc;
use tracing::debug;

pub async fn handle(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
    conn: ConnInfo,
) -> Result<Response<ProxyBody>, Infallible> {
    let wants_html = pages::wants_html(req.headers());
    let mut meter = None;
    let mut rec = None;
    let mut upstream = false;
    let mut web = None;
    let mut resp = match route(&ctx, req, conn, wants_html, &mut meter, &mut rec, &mut web).await {
        Ok(resp) => resp,
        Err(err) => {
            debug!(peer = %conn.peer, error = %err, "answered with an error page");
            upstream = matches!(err, ProxyError::Upstream { .. });
            pages::error_page(&err, &ctx, wants_html)
        }
    };
    response_head::tag(resp.headers_mut());
    if let Some(m) = meter {
        let status = resp.status().as_u16();
        let took = m.elapsed();
        if let Some(rec) = rec {
            inspect(rec, &m, &mut resp, took);
        }
        m.finish_after(status, upstream, took);
    }
    if let Some(answer) = web {
        super::grpc_web::encode(&mut resp, answer);
    }
    Ok(resp)
}

/// The inspector's record of a request through hyper: into the ring now, or when its body
/// has gone through when bodies are kept.
fn inspect(
    mut rec: Box<crate::inspect::Record>,
    meter: &crate::metrics::RequestMeter,
    resp: &mut Response<ProxyBody>,
    took: std::time::Duration,
) {
    let status = resp.status().as_u16();
    let bytes_out = capture::response_parts(&mut rec, resp);
    if capture::tee_wanted(&rec, meter, resp) {
        let head = (rec.heads.len() - rec.split) as u64;
        let body = std::mem::replace(resp.body_mut(), ProxyBody::empty());
        let tee = capture::Tee::new(body, rec, meter, status, head, took);
        *resp.body_mut() = ProxyBody::Tee(Box::new(tee));
    } else {
        capture::push_boxed(rec, meter, status, bytes_out, took);
    }
}

async fn route(
    ctx: &Arc<Ctx>,
    mut req: Request<Incoming>,
    conn: ConnInfo,
    wants_html: bool,
    meter: &mut Option<crate::metrics::RequestMeter>,
    rec: &mut Option<Box<crate::inspect::Record>>,
    web: &mut Option<super::grpc_web::Answer>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let host_value = super::decide::routed_host(&req)?;
    let raw_host = host_value.to_str().map_err(|_| ProxyError::MissingHost)?;
    let host = normalize_host(raw_host);
    let hops = super::decide::hops(req.headers());
    let ask = super::decide::ask_of(&req, &host, hops, wants_html, conn);
    let target = match decide(ctx, &ask, meter)? {
        Decision::Forward(target) => target,
        Decision::Hold(secs) => hold(ctx, &ask, secs, meter).await?,
        // Boxed, as the other rare paths below: the handler's future is allocated for every
        // request, and these made it 4.5 KiB instead of 3.1.
        Decision::Admin => {
            return match ctx.pages.get() {
                Some(pages) => Ok(pages.admin(req, conn).await),
                None => Err(ProxyError::NoRoute {
                    host: host.into_owned(),
                }),
            }
        }
        Decision::LiveReload => {
            return Ok(match (req.uri().path(), ctx.pages.get()) {
                ("/__portok/reload.js", _) => reload::script(),
                ("/__portok/events", Some(pages)) => pages.app_events(&host),
                _ => reload::not_found(),
            })
        }
        Decision::RedirectHttps => return Ok(redirect_to_https(&host, &req)),
        Decision::CaFile => return Ok(super::lan::ca_file(ctx)),
    };
    let Target {
        backend,
        navigation,
        again,
        h2,
    } = target;
    let bodies = match meter {
        Some(m) if ctx.inspect_capacity > 0 => {
            let mut r = capture::take();
            let v = capture::version(req.version());
            capture::begin(&mut r, m, ctx.inspect_capacity, &conn, v);
            *rec = Some(r);
            capture::bodies_wanted(m)
        }
        _ => false,
    };
    if navigation {
        reload::prepare_navigation(req.headers_mut());
    }
    let hop = Hop {
        ip: conn.peer.ip(),
        tls: conn.tls,
        port: ctx.port,
        hops,
    };
    let upstream_err = |backend: &Backend, source| ProxyError::Upstream {
        host: host.to_string(),
        port: backend.port,
        source,
    };
    if h2 {
        if let Some(answer) = super::grpc_web::preflight(&req, &ctx.tlds) {
            if let Some(r) = rec {
                let fields = super::h2_upstream::headers_for(&req, &host_value, hop);
                let head = h2_head(&req, &host_value, &fields);
                capture::answered_here(r, &head, head.len() as u64);
            }
            return Ok(answer);
        }
        let sent = match super::grpc_web::call_of(&req, &ctx.tlds) {
            None => send_h2(ctx, req, &host_value, hop, &backend, rec).await,
            Some(call) => {
                let (req, answer) = call.into_grpc(req);
                let sent = send_h2(ctx, req, &host_value, hop, &backend, rec).await;
                // The app's stream was reset because the body did not decode: say so.
                let sent =
                    sent.map_err(|e| answer.body_error().map_or(e, ForwardError::ClientBody));
                // Encoded by `handle`, once the inspector has seen the answer as gRPC.
                *web = Some(answer);
                sent
            }
        };
        if let Err(ForwardError::ClientBody(e)) = &sent {
            return Err(ProxyError::ClientBody(e.to_string()));
        }
        return sent.map_err(|e| upstream_err(&backend, e));
    }
    if let Some(head) = upgrade_head(&req, host_value.as_bytes(), hop)? {
        if let Some(r) = rec {
            capture::request(r, &head, head.len() as u64, &backend);
        }
        return upgrade(ctx, req, head, &backend)
            .await
            .map_err(|e| upstream_err(&backend, e));
    }
    let sending = Sending {
        host: &host,
        host_value: &host_value,
        hop,
        again,
        bodies,
    };
    let (sent, backend) = exchange(ctx, req, sending, backend, rec).await;
    if let Err(ForwardError::ClientBody(e)) = &sent {
        return Err(ProxyError::ClientBody(e.to_string()));
    }
    let mut resp = sent.map_err(|e| upstream_err(&backend, e))?;
    if navigation && reload::should_inject(&resp) {
        reload::inject(&mut resp);
    }
    Ok(resp)
}

/// To an app that speaks only HTTP/2: the request as it came, its body and trailers
/// streamed both ways ([`super::h2_upstream`]).
async fn send_h2<B>(
    ctx: &Ctx,
    req: Request<B>,
    host_value: &HeaderValue,
    hop: Hop,
    backend: &Arc<Backend>,
    rec: &mut Option<Box<crate::inspect::Record>>,
) -> Result<Response<ProxyBody>, ForwardError>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<super::body::BodyError>,
{
    let fields = super::h2_upstream::headers_for(&req, host_value, hop);
    let connect = ctx.limits.connect;
    let Some(r) = rec else {
        return super::h2_upstream::send(req, fields, host_value, hop, backend, connect).await;
    };
    let head = h2_head(&req, host_value, &fields);
    capture::request(r, &head, head.len() as u64, backend);
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| crate::grpc::is_call(v.as_bytes()));
    if !grpc {
        return super::h2_upstream::send(req, fields, host_value, hop, backend, connect).await;
    }
    let count = capture::grpc_call(r);
    let req = req.map(|b| capture::CountedBody::new(b, count));
    super::h2_upstream::send(req, fields, host_value, hop, backend, connect).await
}

/// The head of a request to an HTTP/2 app as the inspector records it: the `fields` the
/// app gets ([`super::h2_upstream::headers_for`]), as lines.
fn h2_head<B>(req: &Request<B>, host_value: &HeaderValue, fields: &HeaderMap) -> Vec<u8> {
    let method = req.method().as_str().as_bytes();
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    request_head::record(method, target.as_bytes(), host_value.as_bytes(), fields)
}

/// The head of an upgrade for the app, when the request is one: an HTTP/1.1 Upgrade as the
/// client sent it, or an HTTP/2 WebSocket (RFC 8441 extended CONNECT) as an HTTP/1.1
/// Upgrade, so the app need not know h2. Any other CONNECT is refused.
fn upgrade_head(
    req: &Request<Incoming>,
    host: &[u8],
    hop: Hop,
) -> Result<Option<Vec<u8>>, ProxyError> {
    let key;
    let mut extra: Vec<(HeaderName, &[u8])> = Vec::new();
    let (method, protocol): (&[u8], HeaderValue) = if req.method() == http::Method::CONNECT {
        let Some(protocol) = req.extensions().get::<hyper::ext::Protocol>() else {
            // portok routes by name to apps; it is no forward proxy.
            return Err(ProxyError::BadRequest(
                "CONNECT is not served: portok is no forward proxy",
            ));
        };
        key = crate::proxy::header::websocket_key();
        extra.push((header::SEC_WEBSOCKET_KEY, key.as_bytes()));
        if !req.headers().contains_key(header::SEC_WEBSOCKET_VERSION) {
            extra.push((header::SEC_WEBSOCKET_VERSION, b"13"));
        }
        let protocol = HeaderValue::from_str(protocol.as_str())
            .map_err(|_| ProxyError::BadRequest("the :protocol is not a valid token"))?;
        (b"GET", protocol)
    } else {
        match wants_upgrade(req) {
            Some(proto) => (req.method().as_str().as_bytes(), proto),
            None => return Ok(None),
        }
    };
    Ok(Some(request_head::of_request(
        req,
        method,
        host,
        BodyFraming::None,
        Some(protocol.as_bytes()),
        &extra,
        hop,
    )))
}

/// What sending a request to the app needs besides the request and the instance.
struct Sending<'a> {
    /// The routed host, normalized (for picking another instance of a pool).
    host: &'a str,
    /// The Host the client sent, written to the app as it is.
    host_value: &'a HeaderValue,
    hop: Hop,
    again: super::decide::Again,
    /// The inspector keeps bodies.
    bodies: bool,
}

/// Send a request that is no upgrade, its body read ahead first; returns the app's answer
/// and the instance that gave it (another of a pool when the first failed it).
async fn exchange(
    ctx: &Arc<Ctx>,
    req: Request<Incoming>,
    s: Sending<'_>,
    mut backend: Arc<Backend>,
    rec: &mut Option<Box<crate::inspect::Record>>,
) -> (Result<Response<ProxyBody>, ForwardError>, Arc<Backend>) {
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
        match read_ahead(body).await {
            Ok(b) => b,
            Err(e) => return (Err(ForwardError::ClientBody(Box::new(e))), backend),
        }
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
            s.host_value.as_bytes(),
            framing,
            None,
            &[],
            s.hop,
        )
    };
    let sent = match body {
        ReadAhead::Partial(first, rest) => {
            let framing = match content_length() {
                Some(n) => BodyFraming::Length(n),
                None => BodyFraming::Chunked,
            };
            let mut head = head_for(framing);
            if let Some(r) = rec {
                let total = content_length();
                let size = head.len() as u64 + total.unwrap_or(0);
                capture::request(r, &head, size, &backend);
                if s.bodies {
                    r.request_body = Some(capture::body(&first, total));
                }
            }
            if framing == BodyFraming::Chunked {
                super::chunked::push_chunk(&mut head, &first);
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
                rec.as_deref_mut(),
            );
            ctx.in_turn(&backend, exchange).await
        }
        ReadAhead::Whole(data) => {
            let framing = match data.len() {
                0 => BodyFraming::None,
                n => BodyFraming::Length(n as u64),
            };
            let mut head = head_for(framing);
            if let Some(r) = rec {
                let size = (head.len() + data.len()) as u64;
                capture::request(r, &head, size, &backend);
                if s.bodies && !data.is_empty() {
                    r.request_body = Some(capture::body(&data, Some(data.len() as u64)));
                }
            }
            head.extend_from_slice(&data);
            let with_body = !data.is_empty();
            let mut resend = Resend::new(s.again, method.is_idempotent());
            loop {
                let r = rec.as_deref_mut();
                let sent =
                    send_raw(ctx, &head, &method, wants_trailers, with_body, &backend, r).await;
                let failed = match &sent {
                    Err(e) => e.failed(),
                    Ok(_) => None,
                };
                let next = match failed {
                    Some(how) => resend.next(ctx, s.host, &backend, how).await,
                    None => None,
                };
                match next {
                    Some(next) => backend = next,
                    None => break sent,
                }
            }
        }
    };
    (sent, backend)
}

/// A starting app: a request waits (up to `secs`) until the route table says it is live,
/// so a cold start never looks like a connection error. Only a held request registers for
/// wake-ups (Notify takes a lock); it registers before deciding again, so a swap in
/// between is not missed.
async fn hold(
    ctx: &Ctx,
    ask: &Ask<'_>,
    secs: u64,
    meter: &mut Option<crate::metrics::RequestMeter>,
) -> Result<Target, ProxyError> {
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let notified = ctx.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Decision::Forward(target) = decide(ctx, ask, meter)? {
            return Ok(target);
        }
        if tokio::time::timeout_at(until, notified).await.is_err() {
            return Err(ProxyError::HoldTimeout {
                host: ask.host.into(),
                waited_secs: secs,
            });
        }
    }
}

/// An upgrade in its turn (each holds an app connection for as long as it lives).
async fn upgrade(
    ctx: &Ctx,
    req: Request<Incoming>,
    head: Vec<u8>,
    backend: &Arc<Backend>,
) -> Result<Response<ProxyBody>, ForwardError> {
    let exchange = Box::pin(upgrade::send_upgrade(
        req,
        head,
        backend,
        ctx.limits.connect,
    ));
    ctx.in_turn(backend, exchange).await
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
    rec: Option<&mut crate::inspect::Record>,
) -> Result<Response<ProxyBody>, ForwardError> {
    let timeout = ctx.limits.connect;
    let kept = super::app_conn::Upstream::idle(backend).filter(|_| !with_body);
    let reused = kept.is_some();
    let send = upstream::send(head, method, trailers, backend, kept, timeout, rec);
    if reused {
        send.await
    } else {
        ctx.in_turn(backend, send).await
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

/// `--redirect-https`: a browser's plain-HTTP navigation goes to the same URL over https:
/// `http://NAME:1355/x` to `https://NAME:1355/x` (TLS is sniffed on the same port), and
/// `http://NAME/x` (port 80, through `portok ports enable`) to `https://NAME/x`.
fn redirect_to_https(host: &str, req: &Request<Incoming>) -> Response<ProxyBody> {
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let given = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default();
    let port = given
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let location = format!("https://{host}{port}{pq}");
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
