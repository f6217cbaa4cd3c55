//! The body of every response the proxy sends, and the error that ends one early. It and
//! [`super::capture`] import each other: a `Tee` (the inspector's copy of a body's first
//! bytes) is one kind of `ProxyBody` and wraps another.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The body of every response the proxy sends: the app's streamed body (holding the
/// backend's in-flight guard until it ends) or a small page of our own.
pub enum ProxyBody {
    Full(Option<Bytes>),
    /// A stream the daemon writes itself (server-sent events).
    Channel(tokio::sync::mpsc::Receiver<Bytes>),
    /// Read straight off the app's connection ([`super::upstream::send`]).
    App(super::app_body::AppBody),
    /// Any of these, with its first bytes kept for the inspector.
    Tee(Box<super::capture::Tee>),
    /// A body streamed frame by frame, trailers included (an HTTP/2 app's).
    Stream(http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>),
}

impl ProxyBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(b.into()))
    }
    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }
}

/// Whatever ended a response body early: hyper's error, or an I/O error on the app's
/// connection ([`ProxyBody::App`]).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ProxyBody::App(body) => body
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(BodyError::from))),
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Channel(rx) => rx.poll_recv(cx).map(|d| d.map(|d| Ok(Frame::data(d)))),
            ProxyBody::Tee(tee) => Pin::new(&mut **tee).poll_frame(cx),
            ProxyBody::Stream(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(d) => d.is_none(),
            ProxyBody::Channel(_) => false,
            ProxyBody::App(body) => body.is_end_stream(),
            ProxyBody::Tee(tee) => tee.is_end_stream(),
            ProxyBody::Stream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Channel(_) | ProxyBody::App(_) => SizeHint::default(),
            ProxyBody::Tee(tee) => tee.size_hint(),
            ProxyBody::Stream(body) => body.size_hint(),
        }
    }
}
