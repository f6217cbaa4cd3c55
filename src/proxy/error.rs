//! What can go wrong with a request, and the one mapping from each failure to the status
//! code the client gets ([`ProxyError::status`]); [`super::pages`] renders it.

use super::upstream::ForwardError;
use http::StatusCode;

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
    /// A client on the LAN asked for a name that is not shared (or for portok's own).
    #[error("{host} is not shared on this network")]
    NotShared { host: String },
    #[error("{host} looped through portok {hops} times")]
    Loop { host: String, hops: u32 },
    #[error("{host} is starting")]
    Starting { host: String },
    #[error("{host} did not become ready within {waited_secs}s")]
    HoldTimeout { host: String, waited_secs: u64 },
    #[error("{host} crashed: {}", .info.message)]
    Crashed {
        host: String,
        info: super::ctx::CrashInfo,
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
            ProxyError::NoRoute { .. } | ProxyError::NotShared { .. } => StatusCode::NOT_FOUND,
            ProxyError::Loop { .. } => StatusCode::LOOP_DETECTED,
            ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Starting { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::HoldTimeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Crashed { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::upstream::ForwardError;

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
                    info: crate::proxy::ctx::CrashInfo {
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
