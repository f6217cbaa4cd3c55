//! Live reload for server-rendered apps (`portok run --reload`): the proxy appends one
//! script tag to HTML page loads as they stream, and answers `/__portok/reload.js` and
//! `/__portok/events` on the app's own host. The script reloads the page after a
//! successful redeploy and shows failed builds in an overlay.

use super::body::ProxyBody;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

/// The only prefix the proxy takes from an app with live reload on.
pub const PREFIX: &str = "/__portok/";

/// Appended to the end of the page. `defer` so it never blocks rendering; an end-of-body
/// tag after `</html>` is parsed into the body by every browser.
pub const TAG: &[u8] = b"<script src=\"/__portok/reload.js\" defer></script>";

const SCRIPT: &str = include_str!("reload.js");

/// Keep pages uncompressed so the tag can be appended as the body streams.
pub fn prepare_navigation(headers: &mut HeaderMap) {
    headers.remove(header::ACCEPT_ENCODING);
}

/// Inject into this response? 200, text/html, no content encoding.
pub fn should_inject(resp: &Response<ProxyBody>) -> bool {
    resp.status() == StatusCode::OK
        && resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/html"))
        && resp
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"))
}

/// Append the tag to the streamed body and fix Content-Length when there is one.
pub fn inject(resp: &mut Response<ProxyBody>) {
    match resp.body_mut() {
        ProxyBody::App(body) => body.append = Some(Bytes::from_static(TAG)),
        ProxyBody::Full(data) => {
            let mut page = data.take().map(Vec::from).unwrap_or_default();
            page.extend_from_slice(TAG);
            *data = Some(page.into());
        }
        // Tee wraps a body only after this ran (see handler::handle).
        ProxyBody::Channel(_) | ProxyBody::Tee(_) | ProxyBody::Stream(_) => return,
    }
    let headers = resp.headers_mut();
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        headers.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(len + TAG.len() as u64),
        );
    }
    // A validator for the app's bytes no longer matches ours.
    headers.remove(header::ETAG);
}

pub fn script() -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(SCRIPT));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

pub fn not_found() -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full("portok: nothing here\n"));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}
