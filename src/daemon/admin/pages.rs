//! The dashboard's HTML pages, rendered on the server so each reads without JavaScript:
//! the routes table (with sparklines), a route's own page (charts, redeploys, instances,
//! its log and its buttons) and the request inspector. Their scripts only refresh what
//! the server renders, and call the token-checked API.

use super::history::{chart, rate, sparklines};
use super::{status, DaemonState};
use crate::daemon::status::{RouteStatus, Status};
use crate::proxy::pages::escape;
use crate::sync::LockExt;
use serde_json::Value;

const DASHBOARD: &str = include_str!("dashboard.html");
const ROUTE: &str = include_str!("route.html");
const INSPECT: &str = include_str!("inspect.html");
pub const STYLE: &str = include_str!("style.css");

/// "4001" or, for a pool, "4001, 4002, 4003 (3 of 3 instances)".
fn ports_text(r: &RouteStatus) -> String {
    let ports: Vec<String> = r.ports.iter().map(|p| p.to_string()).collect();
    match r.instances {
        Some(n) => format!("{} ({} of {n} instances)", ports.join(", "), ports.len()),
        None => r.port.to_string(),
    }
}

pub fn dashboard(d: &DaemonState) -> String {
    let status = status(d);
    let rows = rows(d, &status);
    let data = serde_json::to_string(&status)
        .unwrap_or_default()
        .replace("</", "<\\/");
    DASHBOARD
        .replace("{{TOKEN}}", &d.admin_token)
        .replace("{{ROWS}}", &rows)
        .replace("{{VERSION}}", env!("CARGO_PKG_VERSION"))
        .replace("{{PORT}}", &d.ctx.port.to_string())
        .replace("{{DATA}}", &data)
}

/// The routes table's rows, on the server: in the page, and for its script (`/rows`).
pub fn rows(d: &DaemonState, status: &Status) -> String {
    if status.routes.is_empty() {
        return "<tr><td colspan=\"9\" class=\"empty\">No apps yet. Start one with <code>portok myapp cargo run</code> or <code>portok alias api 8080</code>.</td></tr>".into();
    }
    let dash = || "-".to_string();
    let mut out = String::new();
    for r in &status.routes {
        let last = match &r.last_redeploy {
            Some(d) => format!(
                "{} ({}, {} ms)",
                d.outcome.as_str(),
                escape(&d.reason),
                d.millis
            ),
            None => dash(),
        };
        let f = |v: Option<f64>| v.map(|v| format!("{v}")).unwrap_or_else(dash);
        out.push_str(&format!(
            "<tr class=\"st-{st}\"><td><a href=\"{url}\">{name}</a><div class=\"sub\">{kind} · port {port} · pid {pid} · gen {gen}</div><div class=\"links\"><a href=\"/routes/{short}\">details</a><a href=\"/inspect/{short}\">inspect</a></div>{lan}</td><td><span class=\"badge {st}\">{st}</span></td><td>{req}<div class=\"sub\">2xx {c2} · 4xx {c4} · 5xx {c5}</div></td><td>{inflight}</td><td>{rps}</td><td>{p50} / {p99}</td><td>{up}</td><td>{spark}</td><td>{last}</td></tr>",
            short = escape(&r.name),
            lan = shared(r),
            spark = d
                .ctx
                .metrics
                .existing(&r.hostname)
                .map(|s| sparklines(&s))
                .unwrap_or_default(),
            st = r.state.as_str(),
            url = escape(&r.url),
            name = escape(&r.hostname),
            kind = match (&r.container, r.idle_stop) {
                (Some(c), _) => format!(
                    "container {} · {}{}",
                    escape(c.short_id()),
                    escape(&c.image),
                    c.project
                        .as_deref()
                        .map(|p| format!(" · compose {}", escape(p)))
                        .unwrap_or_default()
                ),
                (None, Some(_)) => format!("lazy {}", escape(&r.kind)),
                (None, None) => escape(&r.kind),
            },
            port = ports_text(r),
            pid = r.pid,
            gen = r.generation.map(|g| g.to_string()).unwrap_or_else(dash),
            req = r.requests,
            c2 = r.responses.success,
            c4 = r.responses.client_error,
            c5 = r.responses.server_error,
            inflight = r.inflight,
            rps = f(Some(r.rps)),
            p50 = f(r.p50_ms),
            p99 = f(r.p99_ms),
            up = r.uptime_secs.map(crate::ui::duration).unwrap_or_else(dash),
        ));
        if let Some(crash) = &r.crash {
            let tail: Vec<String> = crash.tail.iter().map(|l| escape(l)).collect();
            out.push_str(&format!(
                "<tr class=\"crash\"><td colspan=\"9\"><b>{}</b><pre>{}</pre></td></tr>",
                escape(&crash.message),
                tail.join("\n")
            ));
        }
    }
    out
}

/// A shared route's line: its LAN URL, a QR code of it, and the unshare button.
fn shared(r: &RouteStatus) -> String {
    if !r.shared {
        return String::new();
    }
    let url = r.lan_url.clone().unwrap_or_default();
    let qr = crate::qr::svg(&url, 96)
        .filter(|_| !url.is_empty())
        .unwrap_or_default();
    format!(
        "<div class=\"sub shared\">shared on the LAN{} <button data-unshare=\"{}\">unshare</button></div>{qr}",
        if url.is_empty() { String::new() } else { format!(": <a href=\"{0}\">{0}</a>", escape(&url)) },
        escape(&r.name)
    )
}

/// A string as a JavaScript literal inside a page.
fn js_string(s: &str) -> String {
    serde_json::to_string(s)
        .unwrap_or_default()
        .replace("</", "<\\/")
}

/// The charts of a route's page: the last 15 minutes by the second, and the day by the
/// minute, with redeploys and switches marked.
pub fn charts(d: &DaemonState, host: &str) -> String {
    let Some(stats) = d.ctx.metrics.existing(host) else {
        return "<p class=\"sub\">no requests yet</p>".into();
    };
    let now = crate::routes::unix_now();
    let history = super::history::history_json(&stats, host, 86_400);
    let marks: Vec<u64> = history["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["t"].as_u64())
        .collect();
    let timeline = stats.timeline.locked();
    let (res, recent) = timeline.window(900);
    let (day_res, day) = timeline.window(86_400);
    drop(timeline);
    let rps: Vec<(u64, f64)> = recent.iter().map(|p| (p.t, rate(p, res))).collect();
    let p99: Vec<(u64, f64)> = recent
        .iter()
        .filter_map(|p| p.p99_ms.map(|v| (p.t, v as f64)))
        .collect();
    let day_rps: Vec<(u64, f64)> = day.iter().map(|p| (p.t, rate(p, day_res))).collect();
    let last = |v: &[(u64, f64)]| v.last().map_or(0.0, |x| x.1);
    format!(
        "<h3>Requests/s, last 15 minutes (now {:.1})</h3>{}<h3>p99 ms, last 15 minutes (now {:.1})</h3>{}<h3>Requests/s, last 24 hours, per minute</h3>{}",
        last(&rps),
        chart(&rps, &marks, (now.saturating_sub(900), now), (720, 120), "req/s"),
        last(&p99),
        chart(&p99, &marks, (now.saturating_sub(900), now), (720, 120), "p99 ms"),
        chart(&day_rps, &marks, (now.saturating_sub(86_400), now), (720, 80), "req/s per minute"),
    )
}

/// `/routes/NAME`: the route's own page. `log`: its app's last lines.
pub fn route_page(d: &DaemonState, r: &RouteStatus, log: &[String]) -> String {
    let instances: String = r
        .backends
        .iter()
        .map(|b| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                b.port, b.inflight, b.requests
            )
        })
        .collect();
    let redeploys: String = r
        .redeploys
        .iter()
        .rev()
        .map(|rd| {
            format!(
                "<tr><td>{}</td><td>{}</td><td><span class=\"badge {o}\">{o}</span></td><td>{}</td><td>{} ms</td><td>{}</td></tr>",
                super::requests::time_text(rd.at * 1000),
                rd.generation,
                escape(&rd.reason),
                rd.millis,
                escape(rd.detail.as_deref().unwrap_or("")),
                o = rd.outcome.as_str(),
            )
        })
        .collect();
    let redeploys = if redeploys.is_empty() {
        "<tr><td colspan=\"6\" class=\"empty\">none yet</td></tr>".into()
    } else {
        redeploys
    };
    let log: Vec<String> = log.iter().map(|l| escape(l)).collect();
    ROUTE
        .replace("{{TOKEN}}", &d.admin_token)
        .replace("{{NAME_JSON}}", &js_string(&r.name))
        .replace("{{NAME}}", &escape(&r.name))
        .replace("{{STATE}}", r.state.as_str())
        .replace("{{URL}}", &escape(&r.url))
        .replace("{{CHARTS}}", &charts(d, &r.hostname))
        .replace("{{INSTANCES}}", &instances)
        .replace("{{REDEPLOYS}}", &redeploys)
        .replace("{{LOG}}", &log.join("\n"))
}

/// `/inspect/NAME`: the requests, newest first.
pub fn inspect_page(d: &DaemonState, name: &str, requests: &[Value], bodies: bool) -> String {
    let rows: String = requests
        .iter()
        .rev()
        .map(|r| {
            let status = r["status"].as_u64().unwrap_or(0);
            let time = r["time"].as_str().unwrap_or("");
            format!(
                "<tr class=\"req\" data-id=\"{id}\" data-status=\"{status}\" data-method=\"{m}\" data-path=\"{p}\"><td>{id}</td><td>{t}</td><td>{m}</td><td>{p}</td><td class=\"s{c}\">{status}</td><td>{ms:.1}</td><td>{bi} / {bo}</td><td>{g} · {port}</td></tr>",
                id = r["id"],
                t = escape(time.get(11..23).unwrap_or(time)),
                m = escape(r["method"].as_str().unwrap_or("")),
                p = escape(r["path"].as_str().unwrap_or("")),
                c = status / 100,
                ms = r["duration_ms"].as_f64().unwrap_or(0.0),
                bi = r["bytes_in"],
                bo = r["bytes_out"],
                g = r["generation"],
                port = r["port"],
            )
        })
        .collect();
    let rows = if rows.is_empty() {
        "<tr><td colspan=\"8\" class=\"empty\">No requests yet: they show here as they come.</td></tr>".into()
    } else {
        rows
    };
    INSPECT
        .replace("{{TOKEN}}", &d.admin_token)
        .replace("{{NAME_JSON}}", &js_string(name))
        .replace("{{NAME}}", &escape(name))
        .replace("{{CAPACITY}}", &d.ctx.inspect_capacity.to_string())
        .replace("{{BODIES}}", if bodies { "checked" } else { "" })
        .replace("{{ROWS}}", &rows)
}
