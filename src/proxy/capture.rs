//! What each front-end tells the inspector about a request (see [`crate::inspect`]): the
//! head the app received, the head the app answered with (or portok's own, when portok
//! answered), sizes, timing and who served it.
//! Both front-ends fill a [`Record`] with these few calls, so a request looks the same in
//! the inspector whichever path it took. Only copies of heads already written are made.

use super::conn_info::ConnInfo;
use crate::inspect::{Record, Version};
use crate::metrics::RequestMeter;
use crate::routes::Backend;
use std::time::Duration;

/// A request is being captured; its route's ring exists from here on.
pub fn begin(
    rec: &mut Record,
    meter: &RequestMeter,
    capacity: usize,
    info: &ConnInfo,
    version: Version,
) {
    meter.stats().inspect.get_or_init(capacity);
    rec.arrived = Some(meter.started());
    rec.client = Some(info.peer.ip());
    rec.tls = info.tls;
    rec.version = version;
    rec.heads.clear();
    rec.split = 0;
    rec.request_body = None;
    rec.response_body = None;
    rec.grpc = None;
}

/// The request is a gRPC call: its record shows the call. The counter is the request
/// body's, to count the messages it carries to the app ([`CountedBody`]).
pub fn grpc_call(rec: &mut Record) -> std::sync::Arc<std::sync::atomic::AtomicU32> {
    let call = rec.grpc.insert(crate::inspect::Grpc::default());
    call.messages_in.clone()
}

/// A gRPC status in `headers` (the trailers, or the headers of a trailers-only answer).
pub fn grpc_status(rec: &mut Record, headers: &http::HeaderMap) {
    let Some(call) = rec.grpc.as_mut() else {
        return;
    };
    const STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
    const MESSAGE: http::HeaderName = http::HeaderName::from_static("grpc-message");
    if let Some(code) = headers
        .get(STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    {
        call.status = Some(code);
        call.message.clear();
        if let Some(m) = headers.get(MESSAGE) {
            crate::grpc::decode_message(m.as_bytes(), &mut call.message);
        }
    }
}

/// A request body on its way to the app, its gRPC messages counted as they pass.
pub struct CountedBody<B> {
    inner: B,
    counter: crate::grpc::MessageCounter,
    count: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl<B> CountedBody<B> {
    pub fn new(inner: B, count: std::sync::Arc<std::sync::atomic::AtomicU32>) -> Self {
        CountedBody {
            inner,
            counter: Default::default(),
            count,
        }
    }
}

impl<B: http_body::Body<Data = bytes::Bytes> + Unpin> http_body::Body for CountedBody<B> {
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let started = self.counter.feed(data);
                if started > 0 {
                    self.count
                        .fetch_add(started, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The request head as written for the app (`head` holds nothing else), the request's
/// size on the client's side, and the instance it went to.
pub fn request(rec: &mut Record, head: &[u8], bytes_in: u64, backend: &Backend) {
    answered_here(rec, head, bytes_in);
    rec.generation = backend.generation;
    rec.port = backend.port;
}

/// A request for an app that portok answered itself (a gRPC-Web preflight): no instance.
pub fn answered_here(rec: &mut Record, head: &[u8], bytes_in: u64) {
    rec.heads.extend_from_slice(head);
    rec.split = rec.heads.len();
    rec.bytes_in = bytes_in;
}

/// The response head: the app's as it wrote it, or the one portok wrote when it answered
/// itself. The app's is kept rather than the client's, so a request shows the same
/// whichever front-end it came through and costs one copy on each.
pub fn response(rec: &mut Record, head: &[u8]) {
    rec.heads.truncate(rec.split);
    rec.heads.extend_from_slice(head);
}

/// The head of a response written whole (head and body) into `out`.
pub fn head_of(out: &[u8]) -> &[u8] {
    let end = out.windows(4).position(|w| w == b"\r\n\r\n");
    &out[..end.map_or(out.len(), |i| i + 4)]
}

/// The request is over (its response went out): its meter is finished and, when `rec` is
/// being captured, the record goes into the route's ring (and comes back cleared, with
/// buffers to reuse); one reading of the clock serves both.
pub fn done(
    rec: Option<&mut Record>,
    meter: RequestMeter,
    status: u16,
    bytes_out: u64,
    upstream_error: bool,
) {
    let took = meter.elapsed();
    if let Some(rec) = rec {
        push(rec, &meter, status, bytes_out, took);
    }
    meter.finish_after(status, upstream_error, took);
}

/// Into the route's ring; `rec` comes back cleared, with buffers to reuse.
fn push(rec: &mut Record, meter: &RequestMeter, status: u16, bytes_out: u64, took: Duration) {
    let Some(ring) = meter.stats().inspect.get() else {
        return;
    };
    rec.status = status;
    rec.duration_us = took.as_micros() as u64;
    rec.bytes_out = bytes_out;
    ring.push(rec);
}

thread_local! {
    /// Records (and their buffers) handed back by the rings, for hyper's requests to reuse.
    /// Boxed: the box itself is reused too, as hyper's requests hold their record boxed.
    #[allow(clippy::vec_box)]
    static SPARE: std::cell::RefCell<Vec<Box<Record>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Spares kept per thread: as many as HTTP/2 clients commonly have in flight on one
/// connection (h2load -m50, browsers 100), so a busy connection allocates none.
const SPARES: usize = 64;

/// Room for a typical request head and response head together, so a new record's buffer
/// does not grow step by step.
const HEADS_ROOM: usize = 512;

/// A record for a request through hyper (from this thread's spares when it has one).
pub fn take() -> Box<Record> {
    SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_else(|| {
        let mut rec = Box::<Record>::default();
        rec.heads.reserve(HEADS_ROOM);
        rec
    })
}

pub fn give(rec: Box<Record>) {
    SPARE.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SPARES {
            s.push(rec);
        }
    });
}

/// A request through hyper is over: into the ring, and the record's buffers back to the
/// spares.
pub fn push_boxed(
    mut rec: Box<Record>,
    meter: &RequestMeter,
    status: u16,
    bytes_out: u64,
    took: Duration,
) {
    push(&mut rec, meter, status, bytes_out, took);
    give(rec);
}

/// The version as the inspector shows it.
pub fn version(v: http::Version) -> Version {
    match v {
        http::Version::HTTP_2 => Version::H2,
        http::Version::HTTP_10 | http::Version::HTTP_09 => Version::Http10,
        _ => Version::Http11,
    }
}

/// The size of a response of hyper's path on the wire, as far as its head tells; the head
/// itself goes into `rec` here, as HTTP/1 text (that is how every head is kept), unless
/// the app's was kept on the way ([`response`]).
pub fn response_parts(rec: &mut Record, resp: &http::Response<super::body::ProxyBody>) -> u64 {
    let length = http_body::Body::size_hint(resp.body()).exact().or_else(|| {
        resp.headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
    });
    if rec.heads.len() == rec.split {
        write_head(rec, resp.version(), resp.status(), resp.headers());
    }
    grpc_status(rec, resp.headers());
    (rec.heads.len() - rec.split) as u64 + length.unwrap_or(0)
}

/// An HTTP/2 app's response head as the relay passed it on ([`super::relay`]): kept as
/// HTTP/1 text, as every head is, with its gRPC status when it is trailers-only.
pub fn h2_response(rec: &mut Record, status: http::StatusCode, headers: &http::HeaderMap) {
    rec.heads.truncate(rec.split);
    write_head(rec, http::Version::HTTP_2, status, headers);
    grpc_status(rec, headers);
}

/// A response portok made itself (a page, an upgrade's answer), as HTTP/1 text.
fn write_head(
    rec: &mut Record,
    version: http::Version,
    status: http::StatusCode,
    headers: &http::HeaderMap,
) {
    let version: &[u8] = match version {
        http::Version::HTTP_2 => b"HTTP/2 ",
        http::Version::HTTP_10 => b"HTTP/1.0 ",
        _ => b"HTTP/1.1 ",
    };
    rec.heads.extend_from_slice(version);
    rec.heads.extend_from_slice(status.as_str().as_bytes());
    rec.heads.push(b' ');
    rec.heads
        .extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    rec.heads.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        rec.heads.extend_from_slice(name.as_str().as_bytes());
        rec.heads.extend_from_slice(b": ");
        rec.heads.extend_from_slice(value.as_bytes());
        rec.heads.extend_from_slice(b"\r\n");
    }
    rec.heads.extend_from_slice(b"\r\n");
}

/// The first [`crate::inspect::BODY_CAP`] bytes of `data`, of a body `total` bytes long.
pub fn body(data: &[u8], total: Option<u64>) -> crate::inspect::Body {
    crate::inspect::Body {
        bytes: data[..data.len().min(crate::inspect::BODY_CAP)].to_vec(),
        total,
    }
}

/// Whether the route wants bodies kept (its ring exists and body capture is on).
pub fn bodies_wanted(meter: &RequestMeter) -> bool {
    meter
        .stats()
        .inspect
        .get()
        .is_some_and(|r| r.bodies.load(std::sync::atomic::Ordering::Relaxed))
}

/// A response body passed through while its first bytes are kept (body capture on) or a
/// gRPC call's messages are counted and its status read from the trailers; the record goes
/// into the ring when the body ends (or the client stops reading).
pub struct Tee {
    inner: super::body::ProxyBody,
    rec: Option<Box<Record>>,
    stats: std::sync::Arc<crate::metrics::RouteStats>,
    seen: u64,
    head_bytes: u64,
    messages: crate::grpc::MessageCounter,
}

/// Whether a response must go through a [`Tee`] for its record: its body is wanted, or it
/// answers a gRPC call (whose record is complete only at the end).
pub fn tee_wanted(
    rec: &Record,
    meter: &RequestMeter,
    resp: &http::Response<super::body::ProxyBody>,
) -> bool {
    !http_body::Body::is_end_stream(resp.body()) && (rec.grpc.is_some() || bodies_wanted(meter))
}

impl Tee {
    pub fn new(
        inner: super::body::ProxyBody,
        mut rec: Box<Record>,
        meter: &RequestMeter,
        status: u16,
        head_bytes: u64,
        took: Duration,
    ) -> Self {
        rec.status = status;
        rec.duration_us = took.as_micros() as u64;
        if bodies_wanted(meter) {
            rec.response_body = Some(crate::inspect::Body::default());
        }
        Tee {
            inner,
            rec: Some(rec),
            stats: meter.stats().clone(),
            seen: 0,
            head_bytes,
            messages: Default::default(),
        }
    }
}

impl http_body::Body for Tee {
    type Data = bytes::Bytes;
    type Error = super::body::BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            let this = &mut *self;
            if let Some(data) = frame.data_ref() {
                let len = data.len();
                if let Some(rec) = this.rec.as_mut() {
                    if let Some(b) = rec.response_body.as_mut() {
                        let room = crate::inspect::BODY_CAP.saturating_sub(b.bytes.len());
                        b.bytes.extend_from_slice(&data[..len.min(room)]);
                    }
                    if let Some(call) = rec.grpc.as_mut() {
                        call.messages_out += this.messages.feed(data);
                    }
                }
                this.seen += len as u64;
            } else if let (Some(trailers), Some(rec)) = (frame.trailers_ref(), this.rec.as_mut()) {
                grpc_status(rec, trailers);
            }
        }
        if let std::task::Poll::Ready(None) = &polled {
            let seen = self.seen;
            if let Some(b) = self.rec.as_mut().and_then(|r| r.response_body.as_mut()) {
                b.total = Some(seen);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        if let (Some(mut rec), Some(ring)) = (self.rec.take(), self.stats.inspect.get()) {
            rec.bytes_out = self.head_bytes + self.seen;
            if let (Some(_), Some(arrived)) = (&rec.grpc, rec.arrived) {
                rec.duration_us = arrived.elapsed().as_micros() as u64;
            }
            ring.push(&mut rec);
            give(rec);
        }
    }
}
