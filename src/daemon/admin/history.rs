//! A route's past on the dashboard: `/api/routes/NAME/history`, the sparklines of the
//! table and the charts of the route's own page, drawn as SVG here (no script, no CDN),
//! with redeploys and switches marked on the same time axis.

use crate::metrics::timeline::Point;
use crate::metrics::RouteStats;
use crate::sync::LockExt;
use serde_json::{json, Value};

/// `15m`, `1h`, `24h`... as seconds: at most a day.
pub fn window(text: Option<&str>) -> Result<u64, String> {
    let secs = match text {
        None | Some("") => 900,
        Some(t) => crate::ui::parse_duration(t)?.as_secs(),
    };
    if secs == 0 || secs > 86_400 {
        return Err(format!("window {secs}s is not kept; ask for 1s to 24h"));
    }
    Ok(secs)
}

/// Unix seconds of the route's redeploys and switches, with a word for each.
fn events(stats: &RouteStats) -> Vec<Value> {
    let h = stats.history.locked();
    let mut v: Vec<Value> = h
        .redeploys
        .iter()
        .map(|r| {
            json!({"t": r.at, "kind": "redeploy", "outcome": r.outcome.as_str(),
                   "generation": r.generation, "reason": r.reason, "millis": r.millis,
                   "detail": r.detail})
        })
        .chain(h.switches.iter().map(|s| {
            json!({"t": s.at, "kind": "switch", "outcome": s.outcome.as_str(),
                   "from": s.from_port, "to": s.to_port})
        }))
        .collect();
    v.sort_by_key(|e| e["t"].as_u64());
    v
}

pub fn history_json(stats: &RouteStats, host: &str, secs: u64) -> Value {
    let (resolution, points) = stats.timeline.locked().window(secs);
    let from = crate::routes::unix_now().saturating_sub(secs);
    let events: Vec<Value> = events(stats)
        .into_iter()
        .filter(|e| e["t"].as_u64().is_some_and(|t| t >= from))
        .collect();
    json!({
        "hostname": host,
        "window_secs": secs,
        "resolution_secs": resolution,
        "points": points,
        "events": events,
    })
}

/// Requests per second of a point of `resolution` seconds.
pub fn rate(p: &Point, resolution: u64) -> f64 {
    p.requests() as f64 / resolution.max(1) as f64
}

/// A line chart of `values` (oldest first) over `[from, to]` unix seconds, `w` x `h`
/// pixels, with a mark at each event time. Its title says the latest value.
pub fn chart(
    values: &[(u64, f64)],
    marks: &[u64],
    (from, to): (u64, u64),
    (w, h): (u32, u32),
    label: &str,
) -> String {
    use std::fmt::Write;
    let span = (to.saturating_sub(from)).max(1) as f64;
    let max = values.iter().map(|v| v.1).fold(0.0f64, f64::max).max(1e-9);
    let x = |t: u64| (t.saturating_sub(from) as f64 / span * w as f64).min(w as f64);
    let y = |v: f64| h as f64 - 1.0 - v / max * (h as f64 - 2.0);
    let mut path = String::new();
    for (i, (t, v)) in values.iter().enumerate() {
        let _ = write!(
            path,
            "{}{:.1},{:.1}",
            if i == 0 { "M" } else { " L" },
            x(*t),
            y(*v)
        );
    }
    let last = values.last().map_or(0.0, |v| v.1);
    let mut svg = format!(
        "<svg class=\"chart\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{label}\"><title>{label}: {last:.2} now, {max:.2} at most</title>"
    );
    for m in marks.iter().filter(|m| **m >= from && **m <= to) {
        let _ = write!(
            svg,
            "<line class=\"mark\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"0\" y2=\"{h}\"/>",
            x(*m)
        );
    }
    if !path.is_empty() {
        let _ = write!(svg, "<path d=\"{path}\"/>");
    }
    svg.push_str("</svg>");
    svg
}

/// The two sparklines of a route's row: requests/s and p99 over the last 15 minutes.
pub fn sparklines(stats: &RouteStats) -> String {
    let (res, points) = stats.timeline.locked().window(900);
    let now = crate::routes::unix_now();
    let span = (now.saturating_sub(900), now);
    let marks: Vec<u64> = events(stats)
        .iter()
        .filter_map(|e| e["t"].as_u64())
        .collect();
    let rps: Vec<(u64, f64)> = points.iter().map(|p| (p.t, rate(p, res))).collect();
    let p99: Vec<(u64, f64)> = points
        .iter()
        .filter_map(|p| p.p99_ms.map(|v| (p.t, v as f64)))
        .collect();
    format!(
        "<div class=\"spark\">{}{}</div>",
        chart(&rps, &marks, span, (120, 24), "req/s"),
        chart(&p99, &marks, span, (120, 24), "p99 ms")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_chart_draws_values_and_marks_inside_its_box() {
        let values = [(100, 0.0), (150, 5.0), (200, 10.0)];
        let svg = super::chart(&values, &[150, 999], (100, 200), (100, 20), "req/s");
        assert!(
            svg.contains("<path d=\"M0.0,19.0 L50.0,10.0 L100.0,1.0\"/>"),
            "{svg}"
        );
        assert_eq!(svg.matches("class=\"mark\"").count(), 1, "{svg}");
        assert!(svg.contains("<title>req/s: 10.00 now"), "{svg}");
        assert!(super::window(Some("25h")).is_err());
        assert_eq!(super::window(Some("1h")), Ok(3600));
    }
}
