//! Pages the proxy answers itself: HTML for browsers, one short line of text otherwise.
//! Every name that comes from a request is escaped.

use super::body::ProxyBody;
use super::ctx::Ctx;
use super::error::ProxyError;
use http::header::{self, HeaderMap, HeaderValue};
use http::Response;
use std::fmt::Write;

pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn error_page(err: &ProxyError, ctx: &Ctx, html: bool) -> Response<ProxyBody> {
    let (title, text, detail) = describe(err, ctx);
    // A starting app's page reloads itself until the app answers.
    let refresh = matches!(err, ProxyError::Starting { .. });
    let body = if html {
        render_html(&title, &detail, refresh)
    } else {
        format!("{text}\n")
    };
    let ctype = if html {
        "text/html; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = err.status();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let retry = match err {
        ProxyError::Starting { .. } => Some("1"),
        ProxyError::HoldTimeout { .. } => Some("5"),
        _ => None,
    };
    if let Some(r) = retry {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(r));
    }
    resp
}

/// (title, plain text, HTML detail) for an error.
fn describe(err: &ProxyError, ctx: &Ctx) -> (String, String, String) {
    match err {
        ProxyError::MissingHost => (
            "400 Bad Request".into(),
            "portok: the request has no Host header, so there is no app to route it to".into(),
            "<p>The request has no <code>Host</code> header, so portok cannot tell which app it is for.</p>".into(),
        ),
        ProxyError::BadRequest(why) => (
            "400 Bad Request".into(),
            format!("portok: bad request: {why}"),
            format!("<p>portok refused this request: {}.</p>", escape(why)),
        ),
        ProxyError::ClientBody(why) => (
            "400 Bad Request".into(),
            format!("portok: the request body is malformed or was cut off ({why}); nothing was sent to the app"),
            format!("<p>The request body is malformed or was cut off ({}); nothing was sent to the app.</p>", escape(why)),
        ),
        // Says nothing about what else runs here: the client is on another machine.
        ProxyError::NotShared { host } => (
            "404 Not Found".into(),
            format!("portok: {host} is not shared on this network"),
            format!(
                "<p><b>{}</b> is not shared on this network. Its owner can share it with <code>portok share NAME</code>.</p>",
                escape(host)
            ),
        ),
        ProxyError::NoRoute { host } => {
            let name = host.strip_suffix(".localhost").unwrap_or(host);
            let mut detail = format!(
                "<p>No app is registered for <b>{}</b>.</p><p>Start one with <code>portok {} your-dev-command</code>, or point the name at a running server with <code>portok alias {} PORT</code>.</p>",
                escape(host), escape(name), escape(name)
            );
            let table = ctx.routes.load();
            if table.is_empty() {
                detail.push_str("<p>No apps are registered yet.</p>");
            } else {
                detail.push_str("<h2>Live apps</h2><ul>");
                let base = ctx.pages.get().map(|p| p.url_base());
                let base = base.unwrap_or(crate::names::UrlBase {
                    port: ctx.port,
                    clean: false,
                });
                for live in table.sorted() {
                    let h = escape(&live.route.hostname);
                    let _ = write!(
                        detail,
                        "<li><a href=\"//{}/\">{h}</a> &rarr; port {}</li>",
                        base.authority(&h),
                        live.route.port,
                    );
                }
                detail.push_str("</ul>");
            }
            (
                "404 Not Found".into(),
                format!("portok: no app registered for {host} (add one: portok alias {name} PORT)"),
                detail,
            )
        }
        ProxyError::Loop { host, hops } => (
            "508 Loop Detected".into(),
            format!("portok: request for {host} passed through portok {hops} times; a loop"),
            format!(
                "<p>The request for <b>{}</b> has passed through portok {hops} times, so it is going round in a loop.</p><p>This usually means a dev server proxies back to portok without rewriting the <code>Host</code> header (for Vite's <code>server.proxy</code>, set <code>changeOrigin: true</code>).</p>",
                escape(host)
            ),
        ),
        ProxyError::Starting { host } => (
            format!("{} is starting", short(host)),
            format!("portok: {host} is starting; try again in a moment"),
            format!(
                "<p><b>{}</b> is starting. This page reloads by itself as soon as it answers.</p>",
                escape(host)
            ),
        ),
        ProxyError::HoldTimeout { host, waited_secs } => (
            "503 Service Unavailable".into(),
            format!("portok: {host} is still starting after {waited_secs}s; retry later"),
            format!(
                "<p><b>{}</b> did not become ready within {waited_secs}s.</p>",
                escape(host)
            ),
        ),
        ProxyError::Crashed { host, info } => {
            let mut detail = format!(
                "<p><b>{}</b> crashed: {}.</p><p>portok starts it again on the next change to its files (or <code>portok restart {}</code>).</p>",
                escape(host),
                escape(&info.message),
                escape(short(host))
            );
            if !info.tail.is_empty() {
                detail.push_str("<h2>Last output</h2><pre style=\"background:#111;color:#eee;padding:1em;overflow:auto\">");
                for line in &info.tail {
                    detail.push_str(&escape(line));
                    detail.push('\n');
                }
                detail.push_str("</pre>");
            }
            let mut text = format!("portok: {host} crashed: {}", info.message);
            for line in &info.tail {
                text.push('\n');
                text.push_str(line);
            }
            ("502 App crashed".into(), text, detail)
        }
        ProxyError::Upstream { host, port, source } => (
            "502 Bad Gateway".into(),
            format!("portok: {host} -> 127.0.0.1:{port} did not answer: {source}"),
            format!(
                "<p>The app for <b>{}</b> on port {port} did not answer.</p><p><code>{}</code></p><p>Is it running and listening on that port?</p>",
                escape(host),
                escape(&source.to_string())
            ),
        ),
    }
}

fn short(host: &str) -> &str {
    host.strip_suffix(".localhost").unwrap_or(host)
}

fn render_html(title: &str, detail: &str, refresh: bool) -> String {
    let refresh = if refresh {
        "<meta http-equiv=\"refresh\" content=\"1\">"
    } else {
        ""
    };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">{refresh}<meta name=\"viewport\" content=\"width=device-width\"><title>{t}</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em;color:#222}}code{{background:#f3f3f3;padding:.1em .3em;border-radius:3px}}h1{{font-size:1.4em}}</style></head><body><h1>{t}</h1>{detail}<hr><small>portok {v}</small></body></html>",
        t = escape(title),
        v = super::response_head::VERSION
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::escape("<a href='x'>&"),
            "&lt;a href=&#39;x&#39;&gt;&amp;"
        );
    }
}
