//! A connection to an app instance: dialed on loopback only ([`connect_loopback`], the one
//! place the proxy dials), kept idle per instance for the next request, and how the app's
//! answer on it is framed. A leaf: [`super::upstream`] (the exchange), [`super::app_body`]
//! (the response body read off it), [`super::tcp`] and the probe build on it.

use super::chunked::ChunkDecoder;
use crate::routes::Backend;
use crate::sync::LockExt as _;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Dials 127.0.0.1:PORT, then [::1]:PORT when refused (Vite binds ::1 only): portok never
/// connects off the machine.
pub async fn connect_loopback(port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    let attempt = |addr| async move {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect to {addr} timed out after {timeout:?}"),
            )),
        }
    };
    let stream = match attempt(v4).await {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => match attempt(v6).await {
            Ok(s) => s,
            Err(_) => return Err(e),
        },
        Err(e) => return Err(e),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Header lines in a response head and its largest size, as hyper's client allows.
pub(super) const MAX_RESPONSE_HEADERS: usize = 100;
/// Upstream reads: one buffer per request in progress, kept per thread between requests.
pub(super) const CHUNK: usize = 16 * 1024;
/// Idle upstream connections kept per app instance once their client connections end.
const IDLE_PER_BACKEND: usize = 256;
/// How long an idle upstream connection is kept.
const IDLE_FOR: Duration = Duration::from_secs(60);

/// A connection to an app instance.
pub(super) struct Upstream {
    pub(super) backend: Arc<Backend>,
    pub(super) stream: TcpStream,
    /// It carried an earlier request, so the app may have closed it since.
    pub(super) reused: bool,
}

impl Upstream {
    /// An idle connection to the instance that is still open, else a new one.
    pub(super) async fn get(
        backend: &Arc<Backend>,
        fresh_only: bool,
        connect_timeout: Duration,
    ) -> io::Result<Upstream> {
        if !fresh_only {
            if let Some(up) = Upstream::idle(backend) {
                return Ok(up);
            }
        }
        let stream = connect_loopback(backend.port, connect_timeout).await?;
        Ok(Upstream {
            backend: backend.clone(),
            stream,
            reused: false,
        })
    }

    /// An idle connection to the instance that is still open.
    pub(super) fn idle(backend: &Arc<Backend>) -> Option<Upstream> {
        loop {
            let idle = backend.idle.locked().pop_back();
            let (stream, since) = idle?;
            // Past the idle time (kept by a burst, unused since): closed, not reused.
            if since.elapsed() <= IDLE_FOR && still_open(&stream) {
                return Some(Upstream {
                    backend: backend.clone(),
                    stream,
                    reused: true,
                });
            }
        }
    }

    /// Keep the connection for the instance's next client connection.
    pub(super) fn release(self) {
        let now = Instant::now();
        let mut idle = self.backend.idle.locked();
        // The oldest first: closed after IDLE_FOR unused, as hyper's pool did.
        while idle
            .front()
            .is_some_and(|(_, since)| now.duration_since(*since) > IDLE_FOR)
        {
            idle.pop_front();
        }
        if idle.len() < IDLE_PER_BACKEND {
            idle.push_back((self.stream, now));
        }
    }
}

/// Whether an idle keep-alive connection is still open, without a system call in the
/// common case: only when the reactor has seen it readable (the app closed it, or sent
/// something unasked) is it read to find out.
pub(super) fn still_open(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut b = [0u8; 1];
            matches!(stream.try_read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

/// How the response body is delimited, as RFC 9112 6.3 reads the app's headers.
pub(super) enum Framing {
    None,
    Length(u64),
    /// Passed through as it is; the decoder only finds where it ends.
    Chunked(ChunkDecoder),
    /// Until the app closes; sent to the client chunked, so its connection stays open.
    UntilClose,
}

/// The parts of an app's response head the relay acts on (offsets into the read buffer).
pub(super) struct ResponseHead {
    pub(super) status: u16,
    /// Length of the head in the buffer; the body's first bytes follow it.
    pub(super) len: usize,
    /// Bytes in the buffer.
    pub(super) filled: usize,
    pub(super) framing: Framing,
    pub(super) keep_alive: bool,
}

impl ResponseHead {
    pub(super) fn no_body(&self) -> bool {
        self.status == 204 || self.status == 304
    }
}
