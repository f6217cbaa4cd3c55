//! The HTTP/1.1 fast path. Nearly every request a browser or a test runner sends a dev
//! server is plain: a live app, no body or a small one, no upgrade. Those are relayed here,
//! on the client connection's own task, over an upstream keep-alive connection that stays
//! with the client connection: the head is parsed in place (httparse) and rewritten into
//! the upstream request in one buffer, the response head is rewritten the same way, and
//! the body is copied as it arrives. No request object, header map, pool checkout or
//! second task: through hyper a proxied request cost about three times the user-space CPU
//! of nginx's, and this is where a dev proxy spends its time.
//!
//! Anything else (an error page, a starting or crashed app, an upgrade, a streamed or
//! chunked upload, the admin API, live-reload navigations, HTTP/1.0) and anything odd in a
//! head hands the connection, with the bytes read so far, to hyper and the general handler
//! ([`super::handler`]) for the rest of its life, so there is one place that decides what
//! a strange request means. `PORTOK_NO_FAST_PATH=1` in the daemon's environment turns
//! this path off (to compare the two).

mod body;
mod request;

use super::app_conn::{still_open, Framing, ResponseHead, Upstream};
use super::conn::{ClientIo, ConnWatch, Exchange, RawTcp};
use super::ctx::{ConnError, ConnInfo, Ctx};
use super::decide::{self, decide, Ask, Decision, Resend};
use super::error::ProxyError;
use super::request_head::{self, BodyFraming, Hop, Outbound};
use super::upstream::{read_response_head, resend_fresh, ForwardError, HeadError, SpareBuf};
use super::{pages, response_head};
use crate::metrics::RequestMeter;
use crate::names::normalize_host;
use crate::routes::{Backend, InflightGuard};
use body::{client_gone, first_bytes, read_some, relay_body, send_body, write_client};
use bytes::{Buf, Bytes, BytesMut};
use request::{head_end, plain_uri_byte, RequestFacts};
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// What became of the connection.
pub enum Outcome {
    /// It is over.
    Closed,
    /// hyper takes it over and reads these bytes first.
    Handoff(Bytes),
}

/// A request body up to this size is read whole before the request is sent, so the request
/// can be sent again or handed to hyper; a longer one streams to the app as it arrives.
const MAX_BODY: usize = 16 * 1024;
/// Header lines in a request head; more goes to hyper.
const MAX_HEADERS: usize = 64;

/// Serve requests on an HTTP/1 connection until it ends or needs hyper.
pub async fn serve<I>(
    io: &mut ClientIo<I>,
    info: ConnInfo,
    ctx: &Arc<Ctx>,
    watch: &Arc<ConnWatch>,
) -> Result<Outcome, ConnError>
where
    I: AsyncRead + AsyncWrite + RawTcp + Unpin,
{
    let mut conn = Conn {
        buf: BytesMut::new(),
        out: Vec::new(),
        host: String::new(),
        peer_ip: info.peer.ip(),
        up: None,
        half_closed: false,
        rec: crate::inspect::Record::default(),
    };
    let outcome = conn.serve(io, info, ctx, watch).await;
    if let Some(up) = conn.up.take() {
        up.release();
    }
    outcome
}

struct Conn {
    /// Bytes from the client not yet relayed: the current request head and body, and any
    /// pipelined requests after it.
    buf: BytesMut,
    /// The upstream request, then the client's response head (reused, so no allocation).
    out: Vec<u8>,
    /// The current request's route name, for an error page.
    host: String,
    peer_ip: std::net::IpAddr,
    /// The upstream connection of the last request, kept for the next.
    up: Option<Upstream>,
    /// The client ended its side after pipelining requests: answer them, then close.
    half_closed: bool,
    /// The inspector's record of the current request; its buffers go round the route's
    /// ring and come back (see `inspect::Ring::push`).
    rec: crate::inspect::Record,
}

/// Facts about a request that the relay needs once its upstream head is written.
struct Plan {
    backend: Arc<Backend>,
    meter: Option<RequestMeter>,
    head_len: usize,
    body_len: u64,
    /// The client said `Connection: close`.
    close: bool,
    /// HEAD: the response has no body whatever its headers say.
    head_method: bool,
    /// Safe to send again on a fresh connection if a reused one was found closed.
    idempotent: bool,
    /// What a failed instance leaves the request to try.
    again: decide::Again,
    /// For an error page: the client accepts HTML.
    html: bool,
    /// The inspector keeps this request (`rec` holds its request head).
    capture: bool,
}

enum Step {
    Next,
    Close,
    Handoff,
}

impl Conn {
    async fn serve<I>(
        &mut self,
        io: &mut ClientIo<I>,
        info: ConnInfo,
        ctx: &Arc<Ctx>,
        watch: &Arc<ConnWatch>,
    ) -> Result<Outcome, ConnError>
    where
        I: AsyncRead + AsyncWrite + RawTcp + Unpin,
    {
        loop {
            let Some(head_len) = self.read_head(io, ctx.limits.max_header_bytes).await? else {
                return Ok(if self.buf.is_empty() {
                    Outcome::Closed
                } else {
                    Outcome::Handoff(self.buf.split().freeze())
                });
            };
            let Some(plan) = self.plan(head_len, info, ctx) else {
                return Ok(Outcome::Handoff(self.buf.split().freeze()));
            };
            // The request is in progress from its head on: its body has no header deadline.
            let exchange = Exchange::begin(watch.clone());
            // A short body is read whole first; a long one streams once the app is found.
            let short = plan.body_len <= MAX_BODY as u64;
            let whole = plan.head_len + if short { plan.body_len as usize } else { 0 };
            while short && self.buf.len() < whole {
                self.buf.reserve(whole - self.buf.len());
                if read_some(io, &mut self.buf).await? == 0 {
                    return Ok(Outcome::Closed);
                }
            }
            match self.relay(io, plan, exchange, ctx).await? {
                // An idle keep-alive connection holds no buffer (see `read_some`).
                Step::Next if self.buf.is_empty() => self.buf = BytesMut::new(),
                // Bytes of the next head came while this request was answered: its header
                // deadline runs from now.
                Step::Next => watch.on_read(),
                Step::Close => {
                    let _ = io.shutdown().await;
                    return Ok(Outcome::Closed);
                }
                Step::Handoff => return Ok(Outcome::Handoff(self.buf.split().freeze())),
            }
        }
    }

    /// Read until `buf` holds a whole request head; its length, or None at the end of the
    /// stream or when the head is too long (hyper then answers 431).
    async fn read_head<I: AsyncRead + RawTcp + Unpin>(
        &mut self,
        io: &mut ClientIo<I>,
        max: usize,
    ) -> Result<Option<usize>, ConnError> {
        let mut searched = 0;
        loop {
            if let Some(end) = head_end(&self.buf, searched) {
                // Longer than allowed (one read can bring more than the limit): hyper's 431.
                return Ok((end <= max).then_some(end));
            }
            if self.buf.len() >= max {
                return Ok(None);
            }
            searched = self.buf.len();
            if read_some(io, &mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Parse the head, decide whether this path takes it, pick the backend and write the
    /// upstream request head into `out`. None: hyper takes the request.
    fn plan(&mut self, head_len: usize, info: ConnInfo, ctx: &Ctx) -> Option<Plan> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&self.buf[..head_len]) {
            Ok(httparse::Status::Complete(n)) if n == head_len => {}
            _ => return None,
        }
        let (method, path) = (req.method?, req.path?);
        if req.version != Some(1)
            || method == "CONNECT"
            || !path.starts_with('/')
            || !path.bytes().all(plain_uri_byte)
        {
            return None;
        }
        let facts = RequestFacts::of(req.headers)?;
        let host_raw = facts.host?;
        let host = normalize_host(std::str::from_utf8(host_raw).ok()?);
        let ask = Ask {
            host: &host,
            method,
            path,
            html: facts.html,
            upgrade: false,
            hops: facts.hops,
            tls: info.tls,
            lan: !super::lan::is_local(info.peer.ip()),
        };
        // Anything but a plain forward (a page, a held request, a live-reload page load)
        // is hyper's, which decides again the same way.
        let mut meter = None;
        let Ok(Decision::Forward(target)) = decide(ctx, &ask, &mut meter) else {
            return None;
        };
        // Bodies are kept only through hyper's path (the body is teed there), and an app
        // that speaks only HTTP/2 is reached through it too.
        if target.navigation
            || target.h2
            || meter.as_ref().is_some_and(super::capture::bodies_wanted)
        {
            return None;
        }
        self.host.clear();
        self.host.push_str(&host);
        let out = &mut self.out;
        out.clear();
        out.reserve(head_len + 256);
        let outbound = Outbound {
            method: method.as_bytes(),
            target: path.as_bytes(),
            host: host_raw,
            framing: match facts.length {
                Some(n) => BodyFraming::Length(n),
                None => BodyFraming::None,
            },
            upgrade: None,
            extra: &[],
            // `RequestFacts::of` left a Connection that names headers to hyper.
            connection: false,
            hop: Hop {
                ip: info.peer.ip(),
                tls: info.tls,
                port: ctx.port,
                hops: facts.hops,
            },
        };
        request_head::write(out, &outbound, request_head::parsed_lines(req.headers));
        let capture = match &meter {
            Some(m) if ctx.inspect_capacity > 0 => {
                let v = crate::inspect::Version::Http11;
                super::capture::begin(&mut self.rec, m, ctx.inspect_capacity, &info, v);
                true
            }
            _ => false,
        };
        if capture {
            let body_len = facts.length.unwrap_or(0);
            super::capture::request(
                &mut self.rec,
                out,
                head_len as u64 + body_len,
                &target.backend,
            );
        }
        Some(Plan {
            backend: target.backend,
            meter,
            head_len,
            body_len: facts.length.unwrap_or(0),
            // The daemon is stopping: this is the connection's last request.
            close: facts.close || ctx.stopping.is_cancelled(),
            head_method: method == "HEAD",
            idempotent: decide::idempotent(method),
            html: facts.html,
            again: target.again,
            capture,
        })
    }

    /// Send the planned request and relay its response.
    async fn relay<I>(
        &mut self,
        io: &mut ClientIo<I>,
        plan: Plan,
        exchange: Exchange,
        ctx: &Arc<Ctx>,
    ) -> Result<Step, ConnError>
    where
        I: AsyncRead + AsyncWrite + RawTcp + Unpin,
    {
        let buffered = ((self.buf.len() - plan.head_len) as u64).min(plan.body_len) as usize;
        let end = plan.head_len + buffered;
        let streamed = plan.body_len - buffered as u64;
        self.out.extend_from_slice(&self.buf[plan.head_len..end]);
        let mut rbuf = SpareBuf::new();
        let body = Unsent { end, streamed };
        let (mut up, mut head, guard, plan, exchange) =
            match self.send(io, plan, body, exchange, ctx, &mut rbuf).await {
                Sent::Answered {
                    up,
                    head,
                    guard,
                    plan,
                    exchange,
                } => (up, head, guard, plan, exchange),
                Sent::Over(step) => return step,
            };
        if streamed == 0 {
            // The request is the app's now; the client's next bytes are its next request.
            self.buf.advance(end);
        }
        let status = head.status;
        let mut framing = if plan.head_method || head.no_body() {
            Framing::None
        } else {
            std::mem::replace(&mut head.framing, Framing::None)
        };
        // The client's response head, and as much of the body as came with it.
        self.out.clear();
        response_head::write_app_head(&mut self.out, &head, &rbuf.0, &framing, plan.close);
        if plan.capture {
            super::capture::response(&mut self.rec, &rbuf.0[..head.len]);
        }
        let mut bytes_out = self.out.len() as u64;
        let first = &rbuf.0[head.len..head.filled];
        let Ok((body_end, reusable)) = first_bytes(&mut self.out, &mut framing, first) else {
            // A malformed chunk: relayed as it came, and the client connection ends with it.
            let _ = write_client(io, &self.out).await;
            if let Some(m) = plan.meter {
                let rec = plan.capture.then_some(&mut self.rec);
                super::capture::done(rec, m, status, self.out.len() as u64, true);
            }
            exchange.complete();
            return Ok(Step::Close);
        };
        let reusable = reusable && head.keep_alive;
        let relayed = match write_client(io, &self.out).await {
            Ok(()) if body_end => Ok(true),
            Ok(()) => {
                let watch = (
                    &mut self.buf,
                    ctx.limits.max_header_bytes,
                    &mut self.half_closed,
                );
                relay_body(
                    io,
                    &mut up.stream,
                    &mut rbuf.0,
                    &mut framing,
                    &mut self.out,
                    watch,
                    &mut bytes_out,
                )
                .await
            }
            Err(e) => Err(e),
        };
        drop(guard);
        if let Some(m) = plan.meter {
            let rec = plan.capture.then_some(&mut self.rec);
            super::capture::done(rec, m, status, bytes_out, false);
        }
        exchange.complete();
        match relayed {
            Ok(clean) => {
                if reusable && clean && !matches!(framing, Framing::UntilClose) {
                    self.up = Some(up);
                }
                Ok(if plan.close { Step::Close } else { Step::Next })
            }
            // The client left, or the app broke off its body: the client connection ends
            // (HTTP/1 has no other way to say a body is incomplete).
            Err(_) => Ok(Step::Close),
        }
    }

    /// Send the request (head and the body read with it in `out`, then what is `streamed`
    /// of its body) and read the app's response head into `rbuf`: again on a fresh
    /// connection when a kept one had closed, or to another instance of a pool that failed
    /// it. Until the head is in, a request read whole stays in `buf`, so the handler can
    /// take it over (and retry or explain) when the app cannot be reached at all.
    async fn send<I>(
        &mut self,
        io: &mut ClientIo<I>,
        plan: Plan,
        body: Unsent,
        exchange: Exchange,
        ctx: &Arc<Ctx>,
        rbuf: &mut SpareBuf,
    ) -> Sent
    where
        I: AsyncRead + AsyncWrite + RawTcp + Unpin,
    {
        let Unsent { end, streamed } = body;
        let mut backend = plan.backend.clone();
        let mut guard = None;
        let mut fresh_only = false;
        // The body is at hand to send again only if it was read whole.
        let mut resend = Resend::new(plan.again, plan.idempotent && streamed == 0);
        loop {
            let Ok(mut up) = self.upstream(&backend, fresh_only, ctx).await else {
                exchange.complete();
                return Sent::Over(Ok(Step::Handoff));
            };
            if up.stream.write_all(&self.out).await.is_err() {
                if up.reused {
                    fresh_only = true;
                    continue;
                }
                // The app closed a fresh connection at once: the handler deals with it.
                exchange.complete();
                return Sent::Over(Ok(Step::Handoff));
            }
            // In flight from now: drain waits for it, and a pool sends others elsewhere.
            if guard.is_none() {
                guard = Some(backend.enter());
            }
            if streamed > 0 {
                self.buf.advance(end);
                if send_body(io, &mut up.stream, streamed).await.is_err() {
                    // Either side may have gone; an upload cut off ends the client connection.
                    if let Some(m) = plan.meter {
                        m.finish(502, true);
                    }
                    exchange.complete();
                    return Sent::Over(Ok(Step::Close));
                }
            }
            let response = {
                let (client, buf, half) = (&mut *io, &mut self.buf, &mut self.half_closed);
                // `buf` still holds this request unless its body was streamed.
                let mine = if streamed == 0 { end } else { 0 };
                tokio::select! {
                    biased;
                    r = read_response_head(&mut up.stream, rbuf) => r,
                    _ = client_gone(client, buf, ctx.limits.max_header_bytes, mine, half) => {
                        // Nobody is waiting for the answer: stop, as hyper does.
                        drop(exchange);
                        return Sent::Over(Ok(Step::Close));
                    }
                }
            };
            let err = match response {
                Ok(head) => {
                    return Sent::Answered {
                        up,
                        head,
                        guard,
                        plan,
                        exchange,
                    }
                }
                Err(e) => e,
            };
            if resend_fresh(&up, plan.idempotent && streamed == 0, &err) {
                fresh_only = true;
                continue;
            }
            let next = match err.failed() {
                Some(how) => resend.next(ctx, &self.host, &backend, how).await,
                None => None,
            };
            let Some(next) = next else {
                if streamed == 0 {
                    self.buf.advance(end);
                }
                let step = self.bad_gateway(io, plan, &backend, err, ctx, exchange);
                return Sent::Over(step.await);
            };
            backend = next;
            guard = Some(backend.enter());
            fresh_only = false;
        }
    }

    /// The connection to use: the last request's if it goes to the same instance and is
    /// still open, else an idle one of the instance's, else a new one.
    async fn upstream(
        &mut self,
        backend: &Arc<Backend>,
        fresh_only: bool,
        ctx: &Ctx,
    ) -> io::Result<Upstream> {
        if let Some(up) = self.up.take() {
            if !Arc::ptr_eq(&up.backend, backend) {
                up.release();
            } else if !fresh_only && still_open(&up.stream) {
                return Ok(Upstream { reused: true, ..up });
            }
        }
        Upstream::get(backend, fresh_only, ctx.limits.connect).await
    }

    /// The app's response never came whole: a 502 page, as the handler would show.
    #[allow(clippy::too_many_arguments)]
    async fn bad_gateway<I>(
        &mut self,
        io: &mut ClientIo<I>,
        plan: Plan,
        backend: &Backend,
        e: HeadError,
        ctx: &Ctx,
        exchange: Exchange,
    ) -> Result<Step, ConnError>
    where
        I: AsyncRead + AsyncWrite + RawTcp + Unpin,
    {
        let err = ProxyError::Upstream {
            host: self.host.clone(),
            port: backend.port,
            source: ForwardError::Exchange(Box::new(e)),
        };
        tracing::debug!(peer = %self.peer_ip, error = %err, "answered with an error page");
        let page = pages::error_page(&err, ctx, plan.html);
        let status = page.status().as_u16();
        self.out.clear();
        response_head::write_page(&mut self.out, page, plan.close, plan.head_method);
        if let Some(m) = plan.meter {
            if plan.capture {
                super::capture::response(&mut self.rec, super::capture::head_of(&self.out));
            }
            let rec = plan.capture.then_some(&mut self.rec);
            super::capture::done(rec, m, status, self.out.len() as u64, true);
        }
        let step = match write_client(io, &self.out).await {
            Ok(()) if !plan.close => Step::Next,
            _ => Step::Close,
        };
        exchange.complete();
        Ok(step)
    }
}

/// The part of a request's body not yet with its head: `end` is where the request read so
/// far ends in the client buffer, `streamed` what is still to come from the client.
struct Unsent {
    end: usize,
    streamed: u64,
}

/// How sending a request ended: the app's response head, or the connection's next step.
enum Sent {
    Answered {
        up: Upstream,
        head: ResponseHead,
        guard: Option<InflightGuard>,
        plan: Plan,
        exchange: Exchange,
    },
    Over(Result<Step, ConnError>),
}
