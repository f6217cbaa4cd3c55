//! One client connection once TLS (if any) is done: HTTP/1 told from h2 by the preface, and
//! the connection's deadlines.
//!
//! hyper's own HTTP/1 `header_read_timeout` starts as soon as hyper waits for the next
//! request, so it would also close idle keep-alive connections at the header deadline.
//! Here the two are kept apart ([`ConnWatch`]): a request head must be complete within
//! `header_read` of its first byte, and a connection with no request in progress is closed
//! after `idle`. A request in progress (a slow upload, a streaming response, an h2 tunnel)
//! has no deadline at all.

use super::body::ProxyBody;
use super::ctx::{ConnError, Limits};
use crate::sync::LockExt as _;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;
use tracing::warn;

use std::future::Future;

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long an idle connection being closed gracefully (h2 GOAWAY) may take before it is
/// dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// A connection finishing its requests while the daemon stops is not cut here: the
/// daemon's own stop deadline ends the process first.
const STOP_GRACE_MAX: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
}

/// The client's byte stream as hyper sees it: the bytes read to tell HTTP/1 from h2 come
/// first, and for HTTP/1 every read tells [`ConnWatch`] that a request head may have begun.
pub struct ClientIo<I> {
    io: I,
    /// Bytes already read that the next reads return first.
    prefix: Bytes,
    watch: Option<Arc<ConnWatch>>,
}

impl<I> ClientIo<I> {
    /// A stream with nothing read from it yet.
    pub fn plain(io: I) -> Self {
        ClientIo {
            io,
            prefix: Bytes::new(),
            watch: None,
        }
    }

    pub fn watch(&mut self, watch: Arc<ConnWatch>) {
        self.watch = Some(watch);
    }

    /// Replace the bytes that the next reads return first (the gRPC relay gives back what
    /// it read before handing the connection to hyper).
    pub fn reset_prefix(&mut self, bytes: Bytes) {
        self.prefix = bytes;
    }

    /// Give bytes read through this stream back, to be read again first (the HTTP/1 fast
    /// path hands a connection to hyper with the request it could not take).
    pub fn rewind(&mut self, bytes: Bytes) {
        debug_assert!(self.prefix.is_empty(), "rewound before the prefix was read");
        self.prefix = bytes;
    }
}

/// The TCP socket under a client stream: for splice(2), where a TLS stream has none to
/// offer (`raw_tcp`), and for socket options (`tcp`).
pub trait RawTcp {
    fn raw_tcp(&self) -> Option<&tokio::net::TcpStream> {
        None
    }
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        self.raw_tcp()
    }
}

impl RawTcp for tokio::net::TcpStream {
    fn raw_tcp(&self) -> Option<&tokio::net::TcpStream> {
        Some(self)
    }
}

/// The gRPC relay's in-process connection to portok's stacks.
impl RawTcp for tokio::io::DuplexStream {}

impl RawTcp for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        Some(self.get_ref().0)
    }
}

/// Have the kernel drop an h2 client that is gone: an idle one when 2 keep-alive probes
/// 10 s apart go unanswered after 30 s of silence, and (Linux) one that leaves what portok
/// sent it unacknowledged for 50 s, as a stream to a phone that left the LAN does (TCP
/// sends no probes then). A slow reader that is there acknowledges its zero window, so it
/// is not cut. hyper's h2 pings did this at a cost on every frame (a clock read and a lock)
/// and on every turn of the connection (its timer): 2.6% of an HTTP/2 call's instructions
/// in portok. The kernel's timers cost nothing while data flows.
pub fn drop_when_gone(tcp: &tokio::net::TcpStream) {
    let sock = socket2::SockRef::from(tcp);
    let probes = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10))
        .with_retries(2);
    if let Err(e) = sock.set_tcp_keepalive(&probes) {
        tracing::debug!(error = %e, "TCP keep-alive could not be set");
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = sock.set_tcp_user_timeout(Some(Duration::from_secs(50))) {
        tracing::debug!(error = %e, "TCP_USER_TIMEOUT could not be set");
    }
}

impl<I: RawTcp> ClientIo<I> {
    /// The client's socket, for its options.
    pub fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        self.io.tcp()
    }

    /// The client's socket, once no rewound bytes wait to be read first.
    pub fn raw_tcp(&self) -> Option<&tokio::net::TcpStream> {
        if self.prefix.is_empty() {
            self.io.raw_tcp()
        } else {
            None
        }
    }
}

/// Read until the bytes differ from the h2 preface (HTTP/1) or the whole preface is there
/// (h2); an early end of stream is HTTP/1, which hyper then closes. The caller bounds it.
///
/// A client that must speak h2 (`h2_only`: it chose h2 by ALPN) or that began the preface
/// (`PRI * HTTP/2.0`, a line no HTTP/1 client sends) and then broke it gets
/// GOAWAY(PROTOCOL_ERROR) after an empty SETTINGS frame, as RFC 9113 3.4 asks, and an error.
pub async fn read_version<I: AsyncRead + AsyncWrite + Unpin>(
    mut io: I,
    h2_only: bool,
) -> io::Result<(Proto, ClientIo<I>)> {
    let mut prefix = [0u8; 24];
    let mut len = 0;
    let proto = loop {
        let n = io.read(&mut prefix[len..]).await?;
        if n == 0 || prefix[len..len + n] != H2_PREFACE[len..len + n] {
            let matched = prefix[len..len + n]
                .iter()
                .zip(&H2_PREFACE[len..])
                .take_while(|(a, b)| a == b)
                .count();
            let began = len + matched >= H2_REQUEST_LINE;
            len += n;
            if (h2_only && len > 0) || began {
                return Err(refuse_preface(&mut io).await);
            }
            break Proto::H1;
        }
        len += n;
        if len == H2_PREFACE.len() {
            break Proto::H2;
        }
    };
    let io = ClientIo {
        io,
        prefix: Bytes::copy_from_slice(&prefix[..len]),
        watch: None,
    };
    Ok((proto, io))
}

/// The preface's first line, `PRI * HTTP/2.0\r\n`.
const H2_REQUEST_LINE: usize = 16;

/// Answer a broken h2 preface: our SETTINGS, then GOAWAY(last stream 0, PROTOCOL_ERROR).
async fn refuse_preface<I: AsyncWrite + Unpin>(io: &mut I) -> io::Error {
    const FRAMES: [u8; 26] = [
        0, 0, 0, 0x4, 0, 0, 0, 0, 0, // SETTINGS, empty
        0, 0, 8, 0x7, 0, 0, 0, 0, 0, // GOAWAY, 8 bytes, stream 0
        0, 0, 0, 0, // last stream id 0
        0, 0, 0, 1, // PROTOCOL_ERROR
    ];
    let _ = io.write_all(&FRAMES).await;
    let _ = io.shutdown().await;
    io::Error::new(
        io::ErrorKind::InvalidData,
        "invalid HTTP/2 connection preface (answered GOAWAY PROTOCOL_ERROR)",
    )
}

impl<I: AsyncRead + Unpin> AsyncRead for ClientIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            // Whatever else has arrived comes in the same read: after a short first read
            // hyper would double its read buffer (8 -> 16 KiB) for the rest of the head.
            // An error here shows again on the next read (or as the end of the stream).
            if buf.remaining() > 0 {
                let _ = Pin::new(&mut this.io).poll_read(cx, buf);
            }
        } else {
            ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        }
        if buf.filled().len() > before {
            if let Some(w) = &this.watch {
                w.on_read();
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ClientIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// What one client connection is doing, for its deadlines and the rapid-reset meter.
/// Shared by the connection task, its requests and, for HTTP/1, its reads.
pub struct ConnWatch {
    start: Instant,
    /// Requests between their head being parsed and their response ending.
    active: AtomicUsize,
    /// Milliseconds after `start` when `active` last fell to 0.
    idle_since: AtomicU64,
    /// Milliseconds after `start`, plus 1, when the first byte of the next HTTP/1 request
    /// head arrived; 0 when none is being read.
    head_since: AtomicU64,
    /// The connection carries a tunnel (h2 extended CONNECT, e.g. a WebSocket) whose end
    /// the proxy does not see: it is never closed as idle.
    tunnel: AtomicBool,
    pub resets: ResetMeter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    Header,
    Idle,
}

impl ConnWatch {
    /// `start` is when the connection became ready for HTTP. An HTTP/1 connection is reading
    /// its first request head from then; an h2 connection is idle.
    pub fn new(start: Instant, proto: Proto) -> Self {
        ConnWatch {
            start,
            active: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(u64::from(proto == Proto::H1)),
            tunnel: AtomicBool::new(false),
            resets: ResetMeter::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.start)
            .as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    pub(super) fn on_read(&self) {
        if self.active.load(Relaxed) == 0 && self.head_since.load(Relaxed) == 0 {
            self.bytes_arrived(self.now_ms());
        }
    }

    /// HTTP/1 bytes arrived; with no request in progress they start the next head.
    fn bytes_arrived(&self, ms: u64) {
        if self.active.load(Relaxed) == 0 && self.head_since.load(Relaxed) == 0 {
            self.head_since.store(ms + 1, Relaxed);
        }
    }

    fn request_started(&self) {
        self.active.fetch_add(1, Relaxed);
        self.head_since.store(0, Relaxed);
    }

    fn request_ended(&self, ms: u64) {
        if self.active.fetch_sub(1, Relaxed) == 1 {
            self.idle_since.store(ms, Relaxed);
        }
    }

    /// When to look at the deadlines first.
    pub(super) fn next_look(&self, limits: &Limits) -> Instant {
        self.check(Instant::now(), limits)
            .unwrap_or_else(|_| Instant::now())
    }

    /// When to look again, or None: the connection has been idle too long. (For h2, whose
    /// requests have no head deadline here: each comes whole in one HEADERS block.)
    pub(super) fn idle(&self, limits: &Limits) -> Option<Instant> {
        self.check(Instant::now(), limits).ok()
    }

    pub fn hold_open(&self) {
        self.tunnel.store(true, Relaxed);
    }

    /// When to look again, or which deadline has passed. Between looks at most
    /// `min(header, idle)` passes, so a head that starts while the connection is idle is
    /// still cut off on time.
    fn check(&self, now: Instant, limits: &Limits) -> Result<Instant, Expired> {
        let next = now + limits.header_read.min(limits.idle);
        if self.tunnel.load(Relaxed) || self.active.load(Relaxed) > 0 {
            return Ok(next);
        }
        let (deadline, what) = match self.head_since.load(Relaxed) {
            0 => (
                self.at(self.idle_since.load(Relaxed)) + limits.idle,
                Expired::Idle,
            ),
            h => (self.at(h - 1) + limits.header_read, Expired::Header),
        };
        if now >= deadline {
            Err(what)
        } else {
            Ok(deadline.min(next))
        }
    }
}

/// One request from its parsed head to the end of its response. Dropped unfinished, it
/// counts as a cancelled request (see [`ResetMeter`]).
pub struct Exchange {
    watch: Arc<ConnWatch>,
    done: bool,
}

impl Exchange {
    pub fn begin(watch: Arc<ConnWatch>) -> Self {
        watch.request_started();
        Exchange { watch, done: false }
    }

    /// The response is ready: the exchange lasts until its body has been sent (or dropped).
    pub fn finish(mut self, body: ProxyBody) -> Tracked {
        self.done = true;
        Tracked {
            body,
            _exchange: self,
        }
    }
}

impl Exchange {
    /// The response has been sent in full (the fast path, which has no body to wrap).
    pub fn complete(mut self) {
        self.done = true;
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if !self.done {
            self.watch.resets.cancelled();
        }
        self.watch.request_ended(self.watch.now_ms());
    }
}

/// A response body that ends its [`Exchange`] when hyper is done with it.
pub struct Tracked {
    body: ProxyBody,
    _exchange: Exchange,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = super::body::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Run a hyper connection under the watch's deadlines and the rapid-reset cut-off.
pub async fn drive<C, G>(
    conn: C,
    graceful: G,
    watch: &ConnWatch,
    ctx: &super::ctx::Ctx,
    peer: SocketAddr,
) -> Result<(), ConnError>
where
    C: std::future::Future<Output = hyper::Result<()>>,
    G: Fn(Pin<&mut C>),
{
    let limits = &ctx.limits;
    let stopping = ctx.stopping.cancelled();
    tokio::pin!(stopping);
    tokio::pin!(conn);
    let flood = watch.resets.flood.notified();
    tokio::pin!(flood);
    let first = watch
        .check(Instant::now(), limits)
        .unwrap_or_else(|_| Instant::now());
    let sleep = tokio::time::sleep_until(first);
    tokio::pin!(sleep);
    let mut closing = false;
    loop {
        tokio::select! {
            r = &mut conn => return r.map_err(|e| ConnError::Http(Box::new(e))),
            // The daemon stops: HTTP/1 finishes the request in progress and closes, h2
            // sends GOAWAY and finishes its streams. The daemon waits for them.
            _ = &mut stopping, if !closing => {
                graceful(conn.as_mut());
                closing = true;
                sleep.as_mut().reset(Instant::now() + STOP_GRACE_MAX);
            }
            _ = &mut flood => {
                warn!(%peer, "client cancels requests in a flood (HTTP/2 rapid reset?); closing its connection");
                return Err(ConnError::ResetFlood);
            }
            _ = &mut sleep => {
                if closing {
                    return Ok(());
                }
                match watch.check(Instant::now(), limits) {
                    Ok(next) => sleep.as_mut().reset(next),
                    Err(Expired::Header) => {
                        return Err(ConnError::Timeout { phase: "reading the request head" })
                    }
                    Err(Expired::Idle) => {
                        // An idle HTTP/1 connection closes at once; h2 says GOAWAY first.
                        graceful(conn.as_mut());
                        closing = true;
                        sleep.as_mut().reset(Instant::now() + CLOSE_GRACE);
                    }
                }
            }
        }
    }
}

/// Run the HTTP/1 fast path under the watch's deadlines: `None` when the connection was
/// idle for too long (it is simply closed; HTTP/1 has no GOAWAY), an error when a request
/// head took too long.
pub async fn within_deadlines<F, T>(
    work: F,
    watch: &ConnWatch,
    limits: &Limits,
) -> Result<Option<T>, ConnError>
where
    F: Future<Output = Result<T, ConnError>>,
{
    tokio::pin!(work);
    let first = watch
        .check(Instant::now(), limits)
        .unwrap_or_else(|_| Instant::now());
    let sleep = tokio::time::sleep_until(first);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            biased;
            r = &mut work => return r.map(Some),
            _ = &mut sleep => match watch.check(Instant::now(), limits) {
                Ok(next) => sleep.as_mut().reset(next),
                Err(Expired::Header) => {
                    return Err(ConnError::Timeout { phase: "reading the request head" })
                }
                Err(Expired::Idle) => return Ok(None),
            },
        }
    }
}

/// Cancelled requests per connection. An HTTP/2 client that opens and resets streams in a
/// flood (CVE-2023-44487, "rapid reset") makes the proxy start upstream work it never
/// finishes; past [`RESET_FLOOD`] cancellations in a second the connection is cut off.
/// Other connections are unaffected.
#[derive(Default)]
pub struct ResetMeter {
    window: std::sync::Mutex<(Option<std::time::Instant>, u32)>,
    flood: tokio::sync::Notify,
    flooded: AtomicBool,
}

const RESET_FLOOD: u32 = 200;

impl ResetMeter {
    /// The client's cancellations have reached a flood (the gRPC relay, which cancels on
    /// its own task, looks rather than waits).
    pub(super) fn flooded(&self) -> bool {
        self.flooded.load(Relaxed)
    }

    fn cancelled(&self) {
        let mut w = self.window.locked();
        let now = std::time::Instant::now();
        match w.0 {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => w.1 += 1,
            _ => *w = (Some(now), 1),
        }
        if w.1 > RESET_FLOOD {
            self.flooded.store(true, Relaxed);
            self.flood.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn limits(header: u64, idle: u64) -> Limits {
        Limits {
            header_read: Duration::from_secs(header),
            idle: Duration::from_secs(idle),
            ..Limits::default()
        }
    }

    #[tokio::test]
    async fn http1_bytes_come_back_whole_in_one_read() {
        let (mut a, b) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"GET / HTTP/1.1\r\nHost: x.localhost\r\n\r\n")
            .await
            .unwrap();
        let (proto, mut io) = read_version(b, false).await.unwrap();
        assert_eq!(proto, Proto::H1);
        let mut buf = [0u8; 8192];
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\nHost: x.localhost\r\n\r\n");
    }

    #[tokio::test]
    async fn the_h2_preface_is_h2_even_in_pieces() {
        let (mut a, b) = tokio::io::duplex(1024);
        let task = tokio::spawn(async move {
            for chunk in H2_PREFACE.chunks(5) {
                tokio::io::AsyncWriteExt::write_all(&mut a, chunk)
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
            a
        });
        let (proto, mut io) = read_version(b, false).await.unwrap();
        assert_eq!(proto, Proto::H2);
        let _a = task.await.unwrap();
        let mut buf = [0u8; 24];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, H2_PREFACE);
    }

    #[tokio::test]
    async fn a_method_starting_with_p_is_http1() {
        let (mut a, b) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"POST / HTTP/1.1\r\n")
            .await
            .unwrap();
        let (proto, _) = read_version(b, false).await.unwrap();
        assert_eq!(proto, Proto::H1);
    }

    #[tokio::test]
    async fn a_broken_h2_preface_gets_goaway_protocol_error() {
        // Began as h2 and broke off; or not h2 at all on a connection that chose h2 by ALPN.
        for (sent, h2_only) in [
            (&b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"[..], false),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
        ] {
            let (mut a, b) = tokio::io::duplex(1024);
            a.write_all(sent).await.unwrap();
            let err = read_version(b, h2_only).await.err().expect("refused");
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            let mut got = Vec::new();
            a.read_to_end(&mut got).await.unwrap();
            // SETTINGS, then GOAWAY with last stream 0 and PROTOCOL_ERROR (1).
            assert_eq!(&got[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0]);
            assert_eq!(
                &got[9..],
                &[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
            );
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn header_and_idle_deadlines_are_apart() {
        let l = limits(1, 3);
        let t0 = Instant::now();
        let w = ConnWatch::new(t0, Proto::H1);
        // The first head is being read from the start.
        assert!(w.check(t0 + ms(900), &l).is_ok());
        assert_eq!(w.check(t0 + ms(1100), &l), Err(Expired::Header));
        // A request at 0.5 s has no deadline however long it takes.
        w.request_started();
        assert!(w.check(t0 + ms(60_000), &l).is_ok());
        // It ends at 10 s: idle until 13 s.
        w.request_ended(10_000);
        assert!(w.check(t0 + ms(12_900), &l).is_ok());
        assert_eq!(w.check(t0 + ms(13_100), &l), Err(Expired::Idle));
        // A byte of the next head at 12 s: the header deadline runs from it.
        w.bytes_arrived(12_000);
        assert!(w.check(t0 + ms(12_900), &l).is_ok());
        assert_eq!(w.check(t0 + ms(13_100), &l), Err(Expired::Header));
        // Bytes during a request (its body) start nothing.
        w.request_started();
        w.bytes_arrived(20_000);
        w.request_ended(21_000);
        assert!(w.check(t0 + ms(23_900), &l).is_ok());
        assert_eq!(w.check(t0 + ms(24_100), &l), Err(Expired::Idle));
    }

    #[test]
    fn looks_are_close_enough_and_tunnels_never_idle_out() {
        let l = limits(1, 3);
        let t0 = Instant::now();
        let w = ConnWatch::new(t0, Proto::H2);
        // Idle from the start; the next look is at most min(header, idle) away so that a
        // head starting meanwhile is seen in time.
        assert_eq!(w.check(t0, &l), Ok(t0 + ms(1000)));
        assert_eq!(w.check(t0 + ms(2500), &l), Ok(t0 + ms(3000)));
        assert_eq!(w.check(t0 + ms(3000), &l), Err(Expired::Idle));
        w.hold_open();
        assert!(w.check(t0 + ms(60_000), &l).is_ok());
    }
}
