//! The top of the request path: accept loops on the daemon's listeners (back-off on
//! errors), one task per connection, TLS or plain decided by the first byte
//! ([`super::sniff`]), then HTTP/1.1 (the [`super::fast`] path, or hyper) or h2 with
//! [`super::handler`] as the service.

use super::ctx::{ConnError, ConnInfo, Ctx};
use super::{conn, fast, handler, relay, sniff, streams};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Accept on every listener until `shutdown` fires. Accept errors (EMFILE, aborted
/// handshakes) back off and continue: one bad moment never stops the listener.
pub async fn serve(listeners: Vec<TcpListener>, ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        tasks.spawn(accept_loop(listener, ctx.clone(), shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                // Over the cap: refuse this one cleanly (close it) instead of running out
                // of file descriptors for everyone.
                let Ok(permit) = ctx.conn_permits.clone().try_acquire_owned() else {
                    warn!(%peer, max = ctx.limits.max_connections, "connection limit reached; refusing");
                    drop(stream);
                    continue;
                };
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(e) = serve_conn(stream, peer, ctx).await {
                        log_conn_error(peer, &e);
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, ?backoff, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// A connection that ended with an error is routine (the client went away) and logged at
/// debug, except when the h2 layer cut a client off for abuse, which is worth a warning.
fn log_conn_error(peer: SocketAddr, e: &ConnError) {
    let mut chain = e.to_string();
    // ConnError::Http shows hyper's error but does not expose it as its source.
    let mut source = match e {
        ConnError::Http(inner) => inner.source(),
        other => std::error::Error::source(other),
    };
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    // h2 answers a flood of reset streams (and other abuse) with GOAWAY ENHANCE_YOUR_CALM.
    if chain.contains("ENHANCE_YOUR_CALM") || chain.contains("excessive load") {
        warn!(%peer, error = %chain, "client cancels requests in a flood (HTTP/2 rapid reset?); the h2 layer closed its connection");
    } else {
        debug!(%peer, error = %chain, "connection ended with an error");
    }
}

/// Counts a client connection as open until dropped.
struct ConnGauge(Arc<Ctx>);

impl Drop for ConnGauge {
    fn drop(&mut self) {
        self.0
            .metrics
            .connections_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn serve_conn(stream: TcpStream, peer: SocketAddr, ctx: Arc<Ctx>) -> Result<(), ConnError> {
    use std::sync::atomic::Ordering::Relaxed;
    ctx.metrics.connections_open.fetch_add(1, Relaxed);
    ctx.metrics.connections_total.fetch_add(1, Relaxed);
    let _gauge = ConnGauge(ctx.clone());
    let _ = stream.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + ctx.limits.handshake;
    let kind = tokio::time::timeout_at(deadline, sniff::sniff(&stream))
        .await
        .map_err(|_| ConnError::Timeout {
            phase: "waiting for the first byte",
        })?
        .map_err(|source| ConnError::Io {
            phase: "sniff",
            source,
        })?;
    match kind {
        sniff::Kind::Closed => Ok(()),
        sniff::Kind::Plain => {
            let info = ConnInfo { peer, tls: false };
            serve_http(stream, info, false, true, ctx).await
        }
        // Boxed: every connection's task is as large as its largest state, and a TLS
        // session's state is large.
        sniff::Kind::Tls => Box::pin(serve_tls(stream, peer, deadline, ctx)).await,
    }
}

async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
    ctx: Arc<Ctx>,
) -> Result<(), ConnError> {
    let acceptor = ctx.tls.clone().ok_or(ConnError::TlsDisabled)?;
    let tls = tokio::time::timeout_at(deadline, acceptor.accept(stream))
        .await
        .map_err(|_| ConnError::Timeout {
            phase: "TLS handshake",
        })?
        .map_err(|source| ConnError::Io {
            phase: "TLS handshake",
            source,
        })?;
    let info = ConnInfo { peer, tls: true };
    let h2_only = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let relay = h2_only && relay::wanted(&ctx, tls.get_ref().1.server_name());
    serve_http(tls, info, h2_only, relay, ctx).await
}

/// HTTP/1 or h2 (by the preface; a client that chose h2 by ALPN must send it) on a client
/// connection, under its header and idle deadlines (see [`conn`]). `relay`: an h2
/// connection may be one for the gRPC relay ([`relay::wanted`]).
async fn serve_http<I>(
    io: I,
    info: ConnInfo,
    h2_only: bool,
    relay: bool,
    ctx: Arc<Ctx>,
) -> Result<(), ConnError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + conn::RawTcp + Unpin + Send + 'static,
{
    let start = tokio::time::Instant::now();
    let (proto, mut io) =
        tokio::time::timeout(ctx.limits.header_read, conn::read_version(io, h2_only))
            .await
            .map_err(|_| ConnError::Timeout {
                phase: "reading the request head",
            })?
            .map_err(|source| ConnError::Io {
                phase: "reading the request head",
                source,
            })?;
    if proto == conn::Proto::H2 {
        if let Some(tcp) = io.tcp() {
            conn::drop_when_gone(tcp);
        }
    }
    let watch = Arc::new(conn::ConnWatch::new(start, proto));
    if proto == conn::Proto::H2 && relay && ctx.fast_path {
        match relay::serve(&mut io, info, &ctx, &watch, serve_stacks).await? {
            relay::Outcome::Closed => return Ok(()),
            relay::Outcome::Handoff(bytes) => io.reset_prefix(bytes),
        }
    }
    serve_hyper(io, proto, watch, info, ctx).await
}

/// The gRPC relay's way to portok's stacks, for the streams it does not relay itself: an
/// in-process h2c connection, served as the client's own (its address, TLS or not).
fn serve_stacks(
    io: tokio::io::DuplexStream,
    info: ConnInfo,
    ctx: Arc<Ctx>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async move {
        let watch = Arc::new(conn::ConnWatch::new(
            tokio::time::Instant::now(),
            conn::Proto::H2,
        ));
        let io = conn::ClientIo::plain(io);
        if let Err(e) = serve_hyper(io, conn::Proto::H2, watch, info, ctx).await {
            log_conn_error(info.peer, &e);
        }
    })
}

/// hyper serves the connection: h2, or HTTP/1 after the fast path hands it over.
async fn serve_hyper<I>(
    mut io: conn::ClientIo<I>,
    proto: conn::Proto,
    watch: Arc<conn::ConnWatch>,
    info: ConnInfo,
    ctx: Arc<Ctx>,
) -> Result<(), ConnError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + conn::RawTcp + Unpin + Send + 'static,
{
    if proto == conn::Proto::H1 {
        io.watch(watch.clone());
        if ctx.fast_path {
            let relayed = fast::serve(&mut io, info, &ctx, &watch);
            match conn::within_deadlines(relayed, &watch, &ctx.limits).await? {
                None | Some(fast::Outcome::Closed) => return Ok(()),
                Some(fast::Outcome::Handoff(rest)) => io.rewind(rest),
            }
        }
    }
    let svc_ctx = ctx.clone();
    let svc_watch = watch.clone();
    let svc = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        // An h2 extended CONNECT is a tunnel (WebSocket) that outlives its request.
        if proto == conn::Proto::H2 && req.method() == http::Method::CONNECT {
            svc_watch.hold_open();
        }
        if proto == conn::Proto::H1 {
            detach_head(&mut req);
        }
        let exchange = conn::Exchange::begin(svc_watch.clone());
        let ctx = svc_ctx.clone();
        async move {
            // Boxed: hyper keeps a connection's request future in one allocation for the
            // connection's whole life; the handler's is several KiB, and this way it is held
            // only while a request is being worked on.
            let resp = match Box::pin(handler::handle(ctx, req, info)).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            Ok::<_, std::convert::Infallible>(resp.map(|body| exchange.finish(body)))
        }
    });
    let io = TokioIo::new(io);
    match proto {
        conn::Proto::H1 => {
            let c = ctx.h1.serve_connection(io, svc).with_upgrades();
            conn::drive(c, |c| c.graceful_shutdown(), &watch, &ctx, info.peer).await
        }
        // `WithStreams` boxes the h2 connection: most connections are HTTP/1, and an h2
        // connection's state is large.
        conn::Proto::H2 => {
            let exec = streams::LocalStreams::default();
            let c = ctx.h2(exec.clone()).serve_connection(io, svc);
            let c = streams::WithStreams::new(c, exec);
            conn::drive(c, |c| c.conn().graceful_shutdown(), &watch, &ctx, info.peer).await
        }
    }
}

/// Copy an HTTP/1 request's head out of hyper's read buffer, so that buffer is free again at
/// once instead of hyper allocating another while the request is in flight.
fn detach_head<B>(req: &mut http::Request<B>) {
    let origin_form = req.uri().scheme().is_none() && req.uri().authority().is_none();
    let path_len = match req.uri().path_and_query() {
        Some(pq) if origin_form && pq.as_str().len() > 1 => pq.as_str().len(),
        _ => 0,
    };
    let total = path_len + req.headers().values().map(|v| v.len()).sum::<usize>();
    let mut buf = bytes::BytesMut::with_capacity(total);
    if path_len > 0 {
        buf.extend_from_slice(req.uri().path_and_query().unwrap().as_str().as_bytes());
    }
    for v in req.headers().values() {
        buf.extend_from_slice(v.as_bytes());
    }
    let all = buf.freeze();
    let mut at = 0;
    if path_len > 0 {
        if let Ok(uri) = http::Uri::from_maybe_shared(all.slice(..path_len)) {
            *req.uri_mut() = uri;
        }
        at = path_len;
    }
    for v in req.headers_mut().values_mut() {
        let n = v.len();
        if let Ok(mut nv) = http::HeaderValue::from_maybe_shared(all.slice(at..at + n)) {
            nv.set_sensitive(v.is_sensitive());
            *v = nv;
        }
        at += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detached_head_no_longer_points_into_the_read_buffer() {
        let wire = bytes::Bytes::from_static(b"/a/b?c=d\0web.localhost\0text/html");
        let mut req = http::Request::builder()
            .uri(http::Uri::from_maybe_shared(wire.slice(0..8)).unwrap())
            .body(())
            .unwrap();
        let h = req.headers_mut();
        h.insert(
            "host",
            http::HeaderValue::from_maybe_shared(wire.slice(9..22)).unwrap(),
        );
        let mut secret = http::HeaderValue::from_maybe_shared(wire.slice(23..)).unwrap();
        secret.set_sensitive(true);
        h.append("accept", secret);
        h.append("accept", http::HeaderValue::from_static("*/*"));
        let before = req.headers().clone();
        detach_head(&mut req);
        assert_eq!(req.uri(), "/a/b?c=d");
        assert_eq!(req.headers(), &before);
        assert!(req.headers()["accept"].is_sensitive());
        let range = wire.as_ptr_range();
        let inside = |p: *const u8| range.contains(&p);
        assert!(!inside(req.uri().path().as_ptr()));
        for v in req.headers().values() {
            assert!(!inside(v.as_bytes().as_ptr()));
        }
    }
}
