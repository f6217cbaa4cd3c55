//! A response body read straight off the app's connection, for hyper's front-end: its
//! framing followed to the end, the connection then handed back to the instance's idle list.

use super::app_conn::{Framing, Upstream, CHUNK};
use crate::routes::InflightGuard;
use bytes::{Buf, Bytes, BytesMut};
use std::io;
use std::task::{Context, Poll};

/// A response body read straight off the app's connection ([`super::upstream::send`]), which goes back to
/// the instance's idle list when the body ends as framed.
pub struct AppBody {
    up: Option<Upstream>,
    /// Bytes read and not yet handed on.
    buf: BytesMut,
    framing: Framing,
    keep_alive: bool,
    /// The request counts as in flight to the instance until its body ends (drain).
    guard: Option<InflightGuard>,
    /// Bytes to send after the app's body (the live-reload script tag).
    pub(super) append: Option<Bytes>,
    /// The trailer fields, between the body's end and the end of the stream.
    trailers: Option<Box<http::HeaderMap>>,
}

impl AppBody {
    pub(super) fn new(
        up: Upstream,
        buf: BytesMut,
        framing: Framing,
        keep_alive: bool,
        guard: InflightGuard,
    ) -> Self {
        AppBody {
            up: Some(up),
            buf,
            framing,
            keep_alive,
            guard: Some(guard),
            append: None,
            trailers: None,
        }
    }

    /// The next frame: the app's data, then the appended bytes, then its trailers.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<http_body::Frame<Bytes>>>> {
        if self.up.is_some() || !self.buf.is_empty() || !self.done() {
            match std::task::ready!(self.poll_data(cx)) {
                Some(data) => return Poll::Ready(Some(data.map(http_body::Frame::data))),
                None => {
                    if let Framing::Chunked(dec) = &mut self.framing {
                        self.trailers = dec.take_trailers().map(Box::new);
                    }
                }
            }
        }
        if let Some(tag) = self.append.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(tag))));
        }
        Poll::Ready(
            self.trailers
                .take()
                .map(|t| Ok(http_body::Frame::trailers(*t))),
        )
    }

    /// The next data from what is buffered, or None when more must be read.
    fn take(&mut self) -> io::Result<Option<Bytes>> {
        match &mut self.framing {
            Framing::Length(left) => {
                let n = (*left).min(self.buf.len() as u64) as usize;
                *left -= n as u64;
                Ok((n > 0).then(|| self.buf.split_to(n).freeze()))
            }
            Framing::Chunked(dec) => {
                let (skip, data) = dec.decode(&self.buf).map_err(|()| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the app's chunked body is malformed",
                    )
                })?;
                self.buf.advance(skip);
                Ok((data > 0).then(|| self.buf.split_to(data).freeze()))
            }
            Framing::UntilClose => Ok((!self.buf.is_empty()).then(|| self.buf.split().freeze())),
            Framing::None => Ok(None),
        }
    }

    fn done(&self) -> bool {
        match &self.framing {
            Framing::Length(left) => *left == 0,
            Framing::Chunked(dec) => dec.is_done(),
            Framing::None => true,
            Framing::UntilClose => false,
        }
    }

    /// The body ended as framed: keep the connection if nothing follows it.
    fn finish(&mut self) {
        self.guard = None;
        if let Some(up) = self.up.take() {
            if self.keep_alive
                && self.buf.is_empty()
                && !matches!(self.framing, Framing::UntilClose)
            {
                up.release();
            }
        }
    }

    /// The body cannot go on: the connection is closed, not kept.
    fn fail(&mut self, e: io::Error) -> Poll<Option<io::Result<Bytes>>> {
        self.guard = None;
        self.up = None;
        Poll::Ready(Some(Err(e)))
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            match self.take() {
                Ok(Some(data)) => {
                    // hyper stops polling once `is_end_stream` says so, so the body's last
                    // bytes are where the connection goes back to the instance.
                    if self.done() && self.buf.is_empty() {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Ok(None) => {}
                Err(e) => return self.fail(e),
            }
            if self.done() {
                self.finish();
                return Poll::Ready(None);
            }
            let Some(up) = &mut self.up else {
                return Poll::Ready(None);
            };
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(CHUNK);
            }
            let n = match tokio_util::io::poll_read_buf(
                std::pin::Pin::new(&mut up.stream),
                cx,
                &mut self.buf,
            ) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return self.fail(e),
                Poll::Ready(Ok(n)) => n,
            };
            if n == 0 {
                if matches!(self.framing, Framing::UntilClose) {
                    self.up = None;
                    self.finish();
                    return Poll::Ready(None);
                }
                return self.fail(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the app closed the connection mid-body",
                ));
            }
        }
    }

    pub fn is_end_stream(&self) -> bool {
        self.buf.is_empty()
            && self.done()
            && self.append.is_none()
            && self.trailers.is_none()
            && !matches!(&self.framing, Framing::Chunked(d) if d.holds_trailers())
    }
}
