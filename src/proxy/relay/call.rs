//! One relayed call's portok side: the routing decision (hyper's handler's, through the
//! same functions), the head the app gets, the route's meter and the inspector's record.

use super::super::capture;
use super::super::ctx::{ConnInfo, Ctx};
use super::super::decide::{self, decide, Decision};
use super::super::request_head::{self, BodyFraming, Hop, Sink as _};
use super::wire;
use crate::grpc::MessageCounter;
use crate::inspect::Record;
use crate::metrics::RequestMeter;
use crate::names::normalize_host;
use crate::routes::{Backend, InflightGuard};
use h2::frame::Pseudo;
use http::{HeaderMap, Request, StatusCode, Uri};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Where a client's request goes; its head for the other side is written into the
/// block given to [`plan`].
pub(super) enum Plan {
    /// To an instance of an HTTP/2 app, relayed frame by frame.
    Relay(Box<Call>),
    /// Through portok's own HTTP/2 stacks (and so the handler), as the client sent it:
    /// anything that is not a gRPC call to a live HTTP/2 app.
    Stacks,
}

/// A relayed call, from its head to its end.
pub(super) struct Call {
    pub(super) backend: Arc<Backend>,
    _guard: InflightGuard,
    meter: Option<RequestMeter>,
    rec: Option<Box<Record>>,
    status: u16,
    bytes_out: u64,
    counted_in: MessageCounter,
    counted_out: MessageCounter,
    messages_out: u32,
    /// The app's answer was cut off (its connection failed or it reset the stream).
    failed: bool,
}

/// Plan a request from its decoded head, and write the head the other side gets into
/// `block`.
pub(super) fn plan(
    ctx: &Ctx,
    info: ConnInfo,
    pseudo: Pseudo,
    fields: HeaderMap,
    block: &mut Vec<u8>,
) -> Plan {
    let grpc = fields
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| crate::grpc::is_call(v.as_bytes()));
    if !grpc || pseudo.protocol.is_some() {
        return as_sent(&pseudo, &fields, block);
    }
    let req = match request_of(&pseudo, fields) {
        Ok(req) => req,
        Err(fields) => return as_sent(&pseudo, &fields, block),
    };
    match relay(ctx, info, &req, block) {
        Some(call) => Plan::Relay(call),
        None => as_sent(&pseudo, req.headers(), block),
    }
}

/// The client's head as it came, for portok's stacks.
fn as_sent(pseudo: &Pseudo, fields: &HeaderMap, block: &mut Vec<u8>) -> Plan {
    let mut b = wire::Block::new(block);
    let method = pseudo.method.clone().unwrap_or_default();
    fn text(s: &Option<h2::frame::BytesStr>) -> &[u8] {
        s.as_ref().map_or(&b""[..], |s| s.as_bytes())
    }
    b.request(
        &method,
        text(&pseudo.scheme),
        text(&pseudo.authority),
        text(&pseudo.path),
    );
    if let Some(p) = &pseudo.protocol {
        b.line(
            &http::HeaderName::from_static(":protocol"),
            p.as_str().as_bytes(),
        );
    }
    b.map(fields);
    Plan::Stacks
}

fn request_of(pseudo: &Pseudo, fields: HeaderMap) -> Result<Request<()>, HeaderMap> {
    let mut uri = Uri::builder();
    if let Some(s) = &pseudo.scheme {
        uri = uri.scheme(&**s);
    }
    if let Some(a) = &pseudo.authority {
        uri = uri.authority(&**a);
    }
    if let Some(p) = &pseudo.path {
        uri = uri.path_and_query(&**p);
    }
    let (Some(method), Ok(uri)) = (pseudo.method.clone(), uri.build()) else {
        return Err(fields);
    };
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_2;
    *req.headers_mut() = fields;
    Ok(req)
}

/// The call, when the decision is to forward it to an HTTP/2 app and nothing about it
/// needs the handler (a gRPC-Web call, an inspector that keeps bodies); its head for the
/// app, by the one writer of request heads, in `block`.
fn relay(ctx: &Ctx, info: ConnInfo, req: &Request<()>, block: &mut Vec<u8>) -> Option<Box<Call>> {
    let host_value = decide::routed_host(req).ok()?;
    let host = normalize_host(host_value.to_str().ok()?);
    let hops = decide::hops(req.headers());
    let ask = decide::ask_of(req, &host, hops, false, info);
    let mut meter = None;
    let target = match decide(ctx, &ask, &mut meter) {
        Ok(Decision::Forward(target)) if target.h2 => target,
        // The handler decides again, and answers; this meter is not finished (not counted).
        _ => return None,
    };
    if meter.as_ref().is_some_and(capture::bodies_wanted) {
        return None;
    }
    let hop = Hop {
        ip: info.peer.ip(),
        tls: info.tls,
        port: ctx.port,
        hops,
    };
    // gRPC servers require `te: trailers`, which the writer drops as hop-by-hop.
    let te = [(http::header::TE, &b"trailers"[..])];
    let method = req.method().as_str().as_bytes();
    let outbound = request_head::outbound(
        req,
        method,
        host_value.as_bytes(),
        BodyFraming::None,
        None,
        &te,
        hop,
    );
    let lines = request_head::map_lines(req.headers());
    let mut app_head = wire::Block::new(block);
    let rec = match &meter {
        Some(m) if ctx.inspect_capacity > 0 => {
            let mut r = capture::take();
            capture::begin(
                &mut r,
                m,
                ctx.inspect_capacity,
                &info,
                crate::inspect::Version::H2,
            );
            let mut text = Vec::with_capacity(512);
            request_head::write(
                &mut wire::Both::new(&mut app_head, &mut text),
                &outbound,
                lines,
            );
            capture::request(&mut r, &text, text.len() as u64, &target.backend);
            capture::grpc_call(&mut r);
            Some(r)
        }
        _ => {
            request_head::write(&mut app_head, &outbound, lines);
            None
        }
    };
    Some(Box::new(Call {
        _guard: target.backend.enter(),
        backend: target.backend,
        meter,
        rec,
        status: 0,
        bytes_out: 0,
        counted_in: MessageCounter::default(),
        counted_out: MessageCounter::default(),
        messages_out: 0,
        failed: false,
    }))
}

impl Call {
    /// Request body bytes on their way to the app.
    pub(super) fn sent(&mut self, data: &[u8]) {
        if let Some(grpc) = self.rec.as_mut().and_then(|r| r.grpc.as_mut()) {
            grpc.messages_in
                .fetch_add(self.counted_in.feed(data), Relaxed);
        }
    }

    /// The app's response head (or its trailers-only answer).
    pub(super) fn answered(&mut self, status: StatusCode, fields: &HeaderMap) {
        self.status = status.as_u16();
        if let Some(r) = self.rec.as_mut() {
            capture::h2_response(r, status, fields);
            self.bytes_out = (r.heads.len() - r.split) as u64;
        }
    }

    /// Response body bytes on their way to the client.
    pub(super) fn received(&mut self, data: &[u8]) {
        self.bytes_out += data.len() as u64;
        if self.rec.is_some() {
            self.messages_out += self.counted_out.feed(data);
        }
    }

    /// The app's trailers.
    pub(super) fn trailers(&mut self, fields: &HeaderMap) {
        if let Some(r) = self.rec.as_mut() {
            capture::grpc_status(r, fields);
        }
    }

    pub(super) fn failed(&mut self) {
        self.failed = true;
    }

    /// The call is over: into the meter and the inspector.
    pub(super) fn finish(mut self) {
        let Some(meter) = self.meter.take() else {
            return;
        };
        let status = match self.status {
            0 if self.failed => 502,
            0 => 499,
            s => s,
        };
        if let Some(grpc) = self.rec.as_mut().and_then(|r| r.grpc.as_mut()) {
            grpc.messages_out = self.messages_out;
        }
        let rec = self.rec.as_deref_mut();
        capture::done(rec, meter, status, self.bytes_out, self.failed);
        if let Some(rec) = self.rec.take() {
            capture::give(rec);
        }
    }
}
