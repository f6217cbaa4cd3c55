//! The daemon's own host, `portok.localhost`: the dashboard page, the JSON API under
//! `/api/`, server-sent events, and Prometheus `/metrics`. Loopback clients only; the
//! mutating endpoints also need the `x-portok-token` header equal to `admin.token`.
//! No other host name reaches any of this (the handler dispatches on the exact host).

use super::state::{AppEvent, DaemonState};
use crate::control::DaemonStatus;
use crate::daemon::status::{BackendStatus, Responses, RouteStatus, Status, TcpStatus, Totals};
use crate::metrics::RouteStats;
use crate::names::short_name;
use crate::proxy::body::ProxyBody;
use crate::proxy::ConnInfo;
use crate::routes::{unix_now, LiveRoute, RouteState};
use crate::sync::LockExt;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod app;
mod history;
mod pages;
pub(crate) mod requests;

pub const HOST: &str = crate::names::ADMIN_HOST;

/// The daemon's pages, as the proxy reaches them ([`crate::proxy::DaemonPages`]).
pub struct Pages(pub Arc<DaemonState>);

impl crate::proxy::DaemonPages for Pages {
    fn admin(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<ProxyBody>> + Send + '_>> {
        Box::pin(handle(&self.0, req, conn))
    }

    fn app_events(&self, host: &str) -> Response<ProxyBody> {
        app_events(&self.0, host)
    }

    fn url_base(&self) -> crate::names::UrlBase {
        self.0.url_base()
    }

    fn wake(&self, host: &str) {
        super::lazy::wake(&self.0, host)
    }
}

/// Failed token attempts allowed per client per minute before 429.
const MAX_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Everything under `portok.localhost`, for loopback clients: the pages and `/metrics`
/// ([`page`]), the JSON API ([`api_get`]), and the token-checked actions ([`post`]).
pub async fn handle(
    d: &Arc<DaemonState>,
    req: Request<Incoming>,
    conn: ConnInfo,
) -> Response<ProxyBody> {
    if !crate::proxy::lan::is_local(conn.peer.ip()) {
        return json_response(
            StatusCode::FORBIDDEN,
            json!({"error": "the dashboard answers loopback clients only"}),
        );
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let query = req.uri().query().unwrap_or("").to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let answer = match (&method, segments.as_slice()) {
        (&Method::GET, ["api", rest @ ..]) => api_get(d, rest, &query),
        (&Method::GET, segments) => page(d, segments).await,
        (&Method::POST, ["api", "routes", name, rest @ ..]) => {
            post(d, &req, conn, name, rest, &query).await
        }
        _ => None,
    };
    answer.unwrap_or_else(|| {
        json_response(
            StatusCode::NOT_FOUND,
            json!({"error": format!("nothing at {method} {path}")}),
        )
    })
}

/// The 404 for a route name that names no route.
fn no_route(name: &str) -> Response<ProxyBody> {
    json_response(
        StatusCode::NOT_FOUND,
        json!({"error": format!("no route named {name}")}),
    )
}

/// The 404 for a path segment that is not a request id.
fn not_a_request_id(id: &str) -> Response<ProxyBody> {
    json_response(
        StatusCode::NOT_FOUND,
        json!({"error": format!("{id:?} is not a request id")}),
    )
}

/// A `GET` of a page (rendered on the server), the stylesheet or `/metrics`; None: no
/// such page.
async fn page(d: &Arc<DaemonState>, segments: &[&str]) -> Option<Response<ProxyBody>> {
    Some(match segments {
        [""] => html_response(pages::dashboard(d)),
        ["rows"] => html_response(pages::rows(d, &status(d))),
        ["style.css"] => text_response(pages::STYLE, "text/css"),
        ["routes", name] => match route_status_by_name(d, name) {
            Some(r) => {
                let log = app::tail(d, &r.hostname, 100).await;
                html_response(pages::route_page(d, &r, &log))
            }
            None => no_route(name),
        },
        ["routes", name, "charts"] => match hostname_of(d, name) {
            Some(host) => html_response(pages::charts(d, &host)),
            None => no_route(name),
        },
        ["inspect", name] => inspect_page(d, name),
        ["metrics"] => text_response(metrics_text(d), "text/plain; version=0.0.4; charset=utf-8"),
        _ => return None,
    })
}

/// The inspector's page of route `name`.
fn inspect_page(d: &DaemonState, name: &str) -> Response<ProxyBody> {
    match requests::list(d, name, 0, false) {
        Ok(list) => {
            let bodies = requests::ring(d, name)
                .ok()
                .and_then(|(_, s)| s)
                .and_then(|s| s.inspect.get().map(|r| r.bodies.load(Relaxed)))
                .unwrap_or(false);
            html_response(pages::inspect_page(d, name, &list, bodies))
        }
        Err(e) => requests::error_response(&e),
    }
}

/// `/metrics`: the routes' counters, then TCP routes' and pool instances'.
fn metrics_text(d: &DaemonState) -> String {
    let hosts = d.ctx.routes.load().hostnames();
    let mut text = d.ctx.metrics.prometheus(&hosts);
    text.push_str(&tcp_metrics(d));
    text.push_str(&instance_metrics(d));
    text
}

/// A `GET` under `/api/` (`rest` is the path after it); None: nothing there.
fn api_get(d: &Arc<DaemonState>, rest: &[&str], query: &str) -> Option<Response<ProxyBody>> {
    let secrets = param(query, "secrets").is_some_and(|v| v == "1" || v == "true");
    Some(match rest {
        ["status"] => json_response(StatusCode::OK, json!(status(d))),
        ["events"] => events(d, None),
        ["routes", name] => match route_status_by_name(d, name) {
            Some(r) => json_response(StatusCode::OK, json!(r)),
            None => no_route(name),
        },
        ["routes", name, "history"] => route_history(d, name, query),
        ["routes", name, "logs"] => match hostname_of(d, name) {
            Some(host) => app::follow(d, host),
            None => no_route(name),
        },
        ["routes", name, "requests"] => {
            let after = param(query, "after")
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
            match requests::list(d, name, after, secrets) {
                Ok(list) => json_response(StatusCode::OK, Value::Array(list)),
                Err(e) => requests::error_response(&e),
            }
        }
        ["routes", name, "requests", "stream"] => {
            requests::stream(d, name, secrets).unwrap_or_else(|e| requests::error_response(&e))
        }
        ["routes", name, "requests", id] => match id.parse::<u64>() {
            Ok(n) => match requests::one(d, name, n, secrets) {
                Ok(v) => json_response(StatusCode::OK, v),
                Err(e) => requests::error_response(&e),
            },
            Err(_) => not_a_request_id(id),
        },
        _ => return None,
    })
}

/// `GET /api/routes/NAME/history?window=...`.
fn route_history(d: &DaemonState, name: &str, query: &str) -> Response<ProxyBody> {
    let Some(host) = hostname_of(d, name) else {
        return no_route(name);
    };
    match history::window(param(query, "window").as_deref()) {
        Ok(secs) => {
            let stats = d.ctx.metrics.route(&host);
            json_response(StatusCode::OK, history::history_json(&stats, &host, secs))
        }
        Err(e) => json_response(StatusCode::BAD_REQUEST, json!({"error": e})),
    }
}

/// A `POST /api/routes/NAME/...` (`rest` is the path after NAME), once the token is
/// checked: replay a request, or an action on the route. None: nothing there.
async fn post(
    d: &Arc<DaemonState>,
    req: &Request<Incoming>,
    conn: ConnInfo,
    name: &str,
    rest: &[&str],
    query: &str,
) -> Option<Response<ProxyBody>> {
    if !matches!(rest, [_] | ["requests", _, "replay"]) {
        return None;
    }
    if let Err(resp) = authorize(d, req, conn) {
        return Some(*resp);
    }
    Some(match rest {
        ["requests", id, "replay"] => match id.parse::<u64>() {
            Ok(n) => match requests::replay(d, name, n).await {
                Ok(v) => json_response(StatusCode::OK, v),
                Err(e) => requests::error_response(&e),
            },
            Err(_) => not_a_request_id(id),
        },
        [action] => match hostname_of(d, name) {
            Some(host) => route_action(d, host, name, action, query).await,
            None => no_route(name),
        },
        _ => return None,
    })
}

/// `POST /api/routes/NAME/ACTION`: restart, rollback, stop, switch, share, unshare and
/// inspect-bodies.
async fn route_action(
    d: &Arc<DaemonState>,
    host: String,
    name: &str,
    action: &str,
    query: &str,
) -> Response<ProxyBody> {
    use crate::control::AppRequest;
    let container = d
        .ctx
        .routes
        .load()
        .lookup(&host)
        .and_then(|l| l.route.container.as_ref().map(|c| c.id.clone()));
    if let (Some(id), "restart" | "stop") = (&container, action) {
        return match super::containers::act(d, id, action == "restart").await {
            Ok(()) => json_response(StatusCode::OK, json!({"ok": true})),
            Err(e) => json_response(StatusCode::CONFLICT, json!({"ok": false, "error": e})),
        };
    }
    match action {
        "restart" => app::action(d, host, AppRequest::Restart).await,
        "rollback" => app::action(d, host, AppRequest::Rollback).await,
        "stop" => app::action(d, host, AppRequest::Stop).await,
        "switch" => switch(d, name, query).await,
        "share" | "unshare" => {
            let on = action == "share";
            d.change_routes(move |routes| {
                routes
                    .iter_mut()
                    .find(|r| r.hostname == host && r.share != on)
                    .map(|r| r.share = on)
                    .is_some()
            })
            .await;
            json_response(StatusCode::OK, json!({"ok": true, "shared": on}))
        }
        "inspect-bodies" => {
            let on = param(query, "on").is_some_and(|v| v == "1" || v == "true");
            d.ctx
                .metrics
                .route(&host)
                .inspect
                .get_or_init(d.ctx.inspect_capacity.max(1))
                .bodies
                .store(on, Relaxed);
            json_response(StatusCode::OK, json!({"ok": true, "bodies": on}))
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            json!({"error": format!("unknown action {action}")}),
        ),
    }
}

/// A query parameter's value (percent-decoding is not needed for the values used here).
fn param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
}

/// The host name of the route `name` names: a host name as given, the name under
/// .localhost, or a route whose short name it is (a custom TLD's).
fn hostname_of(d: &DaemonState, name: &str) -> Option<String> {
    let table = d.ctx.routes.load();
    let routes = table.sorted();
    let by = |host: &str| {
        routes
            .iter()
            .find(|l| l.route.hostname == host)
            .map(|l| l.route.hostname.clone())
    };
    by(name)
        .or_else(|| crate::names::hostname_for(name).ok().and_then(|h| by(&h)))
        .or_else(|| {
            routes
                .iter()
                .find(|l| short_name(&l.route.hostname) == name)
                .map(|l| l.route.hostname.clone())
        })
}

/// A server-sent events response fed by `rx`.
fn sse_response(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::Channel(rx));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    no_store(r)
}

/// Prometheus lines for each instance of a pool (`portok run --instances N`).
fn instance_metrics(d: &DaemonState) -> String {
    use std::fmt::Write;
    let table = d.ctx.routes.load();
    let pools: Vec<_> = table
        .sorted()
        .into_iter()
        .filter(|l| l.route.instances.is_some())
        .collect();
    type Value = fn(&crate::routes::Backend) -> u64;
    let series: [(&str, &str, &str, Value); 2] = [
        (
            "portok_instance_requests_total",
            "Requests (and TCP connections) sent to each instance of a pool.",
            "counter",
            |b| b.requests.load(Relaxed),
        ),
        (
            "portok_instance_inflight",
            "Requests and tunnels in flight to each instance of a pool.",
            "gauge",
            |b| b.inflight.load(Relaxed) as u64,
        ),
    ];
    let mut out = String::new();
    for (name, help, kind, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for l in &pools {
            for b in &l.backends {
                let _ = writeln!(
                    out,
                    "{name}{{route=\"{}\",port=\"{}\"}} {}",
                    short_name(&l.route.hostname),
                    b.port,
                    value(b)
                );
            }
        }
    }
    out
}

/// Prometheus lines for TCP routes.
fn tcp_metrics(d: &DaemonState) -> String {
    use std::fmt::Write;
    let table = d.ctx.routes.load();
    let mut out = String::new();
    let tcp: Vec<_> = table
        .sorted()
        .into_iter()
        .filter(|l| l.route.tcp.is_some())
        .collect();
    out.push_str("# HELP portok_tcp_bytes_total Bytes relayed per TCP route and direction.\n# TYPE portok_tcp_bytes_total counter\n");
    for l in &tcp {
        let t = d.ctx.tcp.stats(&l.route.hostname);
        let name = short_name(&l.route.hostname);
        let _ = writeln!(
            out,
            "portok_tcp_bytes_total{{route=\"{name}\",direction=\"in\"}} {}",
            t.bytes_in.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "portok_tcp_bytes_total{{route=\"{name}\",direction=\"out\"}} {}",
            t.bytes_out.load(Relaxed)
        );
    }
    out.push_str("# HELP portok_tcp_connections_open Open relayed connections per TCP route.\n# TYPE portok_tcp_connections_open gauge\n");
    for l in &tcp {
        let t = d.ctx.tcp.stats(&l.route.hostname);
        let _ = writeln!(
            out,
            "portok_tcp_connections_open{{route=\"{}\"}} {}",
            short_name(&l.route.hostname),
            t.open.load(Relaxed).max(0)
        );
    }
    out
}

/// Token check in constant time, with a per-client limit on failures.
fn authorize(
    d: &DaemonState,
    req: &Request<Incoming>,
    conn: ConnInfo,
) -> Result<(), Box<Response<ProxyBody>>> {
    // A page of another origin can make a browser send a request here, though not read
    // the answer; it is refused whatever token it guesses. (The token itself is only in
    // pages served to loopback clients on this exact host, which other origins cannot read.)
    if let Some(why) = cross_origin(req.headers()) {
        return Err(Box::new(json_response(
            StatusCode::FORBIDDEN,
            json!({"error": why}),
        )));
    }
    let ip = conn.peer.ip();
    let mut failures = d.admin_failures.locked();
    let now = Instant::now();
    failures.retain(|_, (_, since)| now.duration_since(*since) < FAILURE_WINDOW);
    if failures.get(&ip).is_some_and(|(n, _)| *n >= MAX_FAILURES) {
        let mut r = json_response(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": "too many failed attempts; wait a minute"}),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return Err(Box::new(r));
    }
    let given = req.headers().get("x-portok-token").map(|v| v.as_bytes());
    let outcome = match given {
        None => Some((
            StatusCode::UNAUTHORIZED,
            "send the token from admin.token in the state dir as header x-portok-token",
        )),
        Some(t) if !constant_time_eq(t, d.admin_token.as_bytes()) => {
            Some((StatusCode::FORBIDDEN, "wrong x-portok-token"))
        }
        Some(_) => None,
    };
    match outcome {
        None => Ok(()),
        Some((status, msg)) => {
            let entry = failures.entry(ip).or_insert((0, now));
            entry.0 += 1;
            Err(Box::new(json_response(status, json!({"error": msg}))))
        }
    }
}

/// Why a request comes from another site's page: its Origin is not the dashboard's, or
/// the browser says it is cross-site. None for the dashboard's own pages and for clients
/// that are not browsers (curl sends neither header).
fn cross_origin(headers: &http::HeaderMap) -> Option<&'static str> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = origin.to_str().ok().and_then(crate::names::origin_host);
        if host != Some(HOST) {
            return Some("requests from other sites' pages cannot use the admin API");
        }
    }
    match headers.get("sec-fetch-site").map(|v| v.as_bytes()) {
        Some(b"cross-site") | Some(b"same-site") => {
            Some("requests from other sites' pages cannot use the admin API")
        }
        _ => None,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn switch(d: &Arc<DaemonState>, name: &str, query: &str) -> Response<ProxyBody> {
    let Ok(host) = crate::names::hostname_for(name) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": format!("{name:?} is not a valid name")}),
        );
    };
    let mut req = crate::daemon::switch::SwitchRequest {
        port: 0,
        health: None,
        drain_secs: 10.0,
        rollback_secs: 30.0,
        fail_threshold: 3,
        reason: "dashboard API".into(),
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || {
            json_response(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("bad value for {k}: {v:?}")}),
            )
        };
        match k {
            "port" => match v.parse() {
                Ok(p) => req.port = p,
                Err(_) => return bad(),
            },
            "health" => req.health = Some(v.to_string()),
            "drain" => match v.parse() {
                Ok(s) => req.drain_secs = s,
                Err(_) => return bad(),
            },
            "rollback_window" => match v.parse() {
                Ok(s) => req.rollback_secs = s,
                Err(_) => return bad(),
            },
            "fail_threshold" => match v.parse() {
                Ok(n) => req.fail_threshold = n,
                Err(_) => return bad(),
            },
            _ => {}
        }
    }
    if req.port == 0 {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "give the new port as ?port=P"}),
        );
    }
    match crate::daemon::switch::switch(d, &host, req).await {
        Ok(msg) => json_response(StatusCode::OK, json!({"ok": true, "message": msg})),
        Err(e) => json_response(
            StatusCode::CONFLICT,
            json!({"ok": false, "error": e.to_string()}),
        ),
    }
}

fn json_response(status: StatusCode, v: Value) -> Response<ProxyBody> {
    let mut body = serde_json::to_vec_pretty(&v).unwrap_or_default();
    body.push(b'\n');
    let mut r = no_store(text_response(body, "application/json"));
    *r.status_mut() = status;
    r
}

/// A body of type `content_type`, as is (the stylesheet, `/metrics`).
fn text_response(body: impl Into<Bytes>, content_type: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// `r`, marked `cache-control: no-store` (pages and JSON that change by the second).
fn no_store(mut r: Response<ProxyBody>) -> Response<ProxyBody> {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn html_response(body: String) -> Response<ProxyBody> {
    no_store(text_response(body, "text/html; charset=utf-8"))
}

/// Seconds as milliseconds with two decimals.
fn ms(v: Option<f64>) -> Option<f64> {
    v.map(|s| (s * 1e5).round() / 100.0)
}

/// One route as the API, `portok status` and the dashboard show it.
pub fn route_status(d: &DaemonState, live: &LiveRoute) -> RouteStatus {
    let r = &live.route;
    let s: &RouteStats = &live.stats;
    let hist = s.history.locked().clone();
    let crash = if r.is_crashed() {
        d.ctx.crashes.locked().get(&r.hostname).cloned()
    } else {
        None
    };
    let class = |i: usize| s.by_class[i].load(Relaxed);
    RouteStatus {
        name: short_name(&r.hostname).to_string(),
        hostname: r.hostname.clone(),
        url: d.url_base().url(&r.hostname),
        https_url: d.url_base().with_scheme("https", &r.hostname),
        kind: r.kind().to_string(),
        container: r.container.clone(),
        upstream: r.upstream.as_str().to_string(),
        state: r.state.unwrap_or(RouteState::Live),
        generation: r.generation,
        port: r.port,
        ports: live.backends.iter().map(|b| b.port).collect(),
        instances: r.instances,
        backends: live
            .backends
            .iter()
            .map(|b| BackendStatus {
                port: b.port,
                inflight: b.inflight.load(Relaxed),
                requests: b.requests.load(Relaxed),
            })
            .collect(),
        pid: r.pid,
        idle_stop: r.idle_stop,
        shared: r.share,
        lan_url: d
            .lan_names
            .locked()
            .get(&r.hostname)
            .map(|n| format!("http://{}:{}", n.trim_end_matches('.'), d.ctx.port)),
        inspector: s.inspect.get().map(|ring| {
            let (requests, bytes) = ring.usage();
            let timeline = s.timeline.locked().memory();
            crate::daemon::status::InspectorStatus {
                requests,
                capacity: ring.capacity(),
                memory_bytes: bytes + timeline,
                bodies: ring.bodies.load(Relaxed),
            }
        }),
        uptime_secs: r.since.map(|t| unix_now().saturating_sub(t)),
        requests: s.total(),
        inflight: s.inflight.load(Relaxed).max(0),
        responses: Responses {
            informational: class(0),
            success: class(1),
            redirect: class(2),
            client_error: class(3),
            server_error: class(4),
        },
        upstream_errors: s.upstream_errors.load(Relaxed),
        rps: (s.rps() * 10.0).round() / 10.0,
        p50_ms: ms(s.quantile(0.5)),
        p99_ms: ms(s.quantile(0.99)),
        last_redeploy: hist.redeploys.back().cloned(),
        redeploys: hist.redeploys,
        redeploy_counts: hist.redeploy_counts,
        switches: hist.switches,
        crash,
        tcp: r.tcp.map(|listen| {
            let t = d.ctx.tcp.stats(&r.hostname);
            TcpStatus {
                listen,
                target: r.port,
                proxy_protocol: r.proxy_protocol,
                connections_open: t.open.load(Relaxed).max(0),
                connections_total: t.total.load(Relaxed),
                bytes_in: t.bytes_in.load(Relaxed),
                bytes_out: t.bytes_out.load(Relaxed),
                spliced: t.spliced.load(Relaxed),
                copied: t.copied.load(Relaxed),
            }
        }),
    }
}

fn route_status_by_name(d: &DaemonState, name: &str) -> Option<RouteStatus> {
    let host = hostname_of(d, name)?;
    let table = d.ctx.routes.load();
    let live = table
        .sorted()
        .into_iter()
        .find(|l| l.route.hostname == host)?;
    Some(route_status(d, live))
}

/// The daemon and every route: `GET /api/status`, `portok status`, the control socket's
/// `detail` and `status`. The one builder of [`Status`].
pub fn status(d: &DaemonState) -> Status {
    let table = d.ctx.routes.load();
    let live = table.sorted();
    let routes: Vec<RouteStatus> = live.iter().map(|l| route_status(d, l)).collect();
    let total: u64 = live.iter().map(|l| l.stats.total()).sum();
    let inflight: i64 = live
        .iter()
        .map(|l| l.stats.inflight.load(Relaxed).max(0))
        .sum();
    Status {
        daemon: DaemonStatus {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            port: d.ctx.port,
            uptime_secs: d.started.elapsed().as_secs(),
            routes: None,
            tls: d.ctx.tls.is_some(),
            listening: d.listening.locked().clone(),
            tlds: d.tlds.clone(),
            clean_urls: d.url_base().clean,
        },
        dashboard: format!("{}/", d.url_base().url(HOST)),
        totals: Totals {
            requests: total,
            inflight,
            connections_open: d.ctx.metrics.connections_open.load(Relaxed).max(0),
            connections_total: d.ctx.metrics.connections_total.load(Relaxed),
            tls_handshakes: d.ctx.metrics.tls_handshakes.load(Relaxed),
        },
        routes,
    }
}

/// Server-sent events: a `status` snapshot now and every second, and each app event as it
/// happens. With `only`, just that host's app events (live reload uses this).
pub fn events(d: &Arc<DaemonState>, only: Option<String>) -> Response<ProxyBody> {
    events_with(d, only, None)
}

fn event_bytes(ev: &AppEvent) -> Bytes {
    let data = serde_json::to_string(ev).unwrap_or_default();
    Bytes::from(format!("event: {}\ndata: {data}\n\n", ev.kind.as_str()))
}

fn events_with(
    d: &Arc<DaemonState>,
    only: Option<String>,
    first: Option<AppEvent>,
) -> Response<ProxyBody> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let mut sub = d.events.subscribe();
    let d = d.clone();
    tokio::spawn(async move {
        let snapshots = only.is_none();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let _ = tx.send(Bytes::from_static(b"retry: 1000\n\n")).await;
        if let Some(ev) = first {
            let _ = tx.send(event_bytes(&ev)).await;
        }
        loop {
            let msg = tokio::select! {
                _ = tick.tick() => {
                    if !snapshots {
                        Bytes::from_static(b": keep-alive\n\n")
                    } else {
                        Bytes::from(format!("event: status\ndata: {}\n\n", json!(status(&d))))
                    }
                }
                ev = sub.recv() => match ev {
                    Ok(ev) => {
                        if only.as_ref().is_some_and(|h| *h != ev.hostname) {
                            continue;
                        }
                        event_bytes(&ev)
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                },
            };
            if tx.send(msg).await.is_err() {
                return; // the client went away
            }
        }
    });
    sse_response(rx)
}

/// `/__portok/events` on an app's host: that app's events only, starting with a failure
/// that still stands (so a page loaded during a broken build shows the overlay).
pub fn app_events(d: &Arc<DaemonState>, host: &str) -> Response<ProxyBody> {
    let standing = d.last_failure.locked().get(host).cloned();
    events_with(d, Some(host.to_string()), standing)
}
