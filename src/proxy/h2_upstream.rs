//! HTTP/2 to the app, for apps that speak nothing else (every gRPC server: tonic, grpcio,
//! grpc-go; hyper's http2-only servers). Prior-knowledge h2c on loopback: one connection per
//! instance carries many streams, and another is opened while every one is busy (the app's
//! SETTINGS, such as its concurrent-stream limit, are hyper's to respect). Bodies and
//! trailers stream both ways frame by frame, so flow control holds end to end; a client
//! that goes away resets its stream at the app too.
//!
//! The request head is written by the one writer ([`super::request_head::write`]) and read
//! back into the header map an h2 request carries, so every rule about request headers is
//! still kept in one place.

use super::app_conn::connect_loopback;
use super::body::{BodyError, ProxyBody};
use super::request_head::{self, BodyFraming, Hop};
use super::upstream::ForwardError;
use crate::routes::{Backend, InflightGuard};
use crate::sync::LockExt as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a request to the app carries as its body: the client's, passed through.
pub type ReqBody = BoxBody<Bytes, BodyError>;
type Sender = SendRequest<ReqBody>;

/// Connections per instance at most; past that, a request waits for a stream.
const MAX_CONNS: usize = 8;

/// The proxy's HTTP/2 connections to one instance. Kept in its [`Backend`], so they close
/// (GOAWAY) once it has left the route table and its last stream has ended.
#[derive(Default)]
struct Conns(Mutex<Vec<Sender>>);

/// An app's response body, holding the instance's in-flight count until it ends.
pub struct AppStream {
    body: Incoming,
    _guard: InflightGuard,
}

impl http_body::Body for AppStream {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BodyError>>> {
        std::pin::Pin::new(&mut self.body)
            .poll_frame(cx)
            .map(|f| f.map(|f| f.map_err(BodyError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Send `req` (from any client: HTTP/1.1, h2 or h2c) to the instance over HTTP/2, its body
/// streamed, and answer with the app's response, trailers and all.
pub(super) async fn send<B>(
    req: Request<B>,
    host: &HeaderValue,
    hop: Hop,
    backend: &Arc<Backend>,
    connect_timeout: Duration,
) -> Result<Response<ProxyBody>, ForwardError>
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BodyError>,
{
    let headers = headers_for(&req, host, hop)?;
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = Uri::builder()
        .scheme("http")
        .authority(host.as_bytes())
        .path_and_query(path)
        .build()
        .map_err(|e| ForwardError::ClientBody(Box::new(e)))?;
    let mut out = Request::new(body.map_err(Into::into).boxed());
    *out.method_mut() = parts.method;
    *out.uri_mut() = uri;
    *out.version_mut() = Version::HTTP_2;
    *out.headers_mut() = headers;
    let guard = backend.enter();
    let mut sender = sender(backend, connect_timeout).await?;
    let resp = sender
        .send_request(out)
        .await
        .map_err(|e| ForwardError::Exchange(Box::new(e)))?;
    let (parts, body) = resp.into_parts();
    let body = AppStream {
        body,
        _guard: guard,
    };
    Ok(Response::from_parts(
        parts,
        ProxyBody::Stream(http_body_util::BodyExt::boxed_unsync(body)),
    ))
}

/// The request's headers as the app receives them: written by the one writer, read back.
/// `te: trailers` is sent whatever the client said: portok takes the app's trailers and
/// passes them on (gRPC servers refuse a call without it). The Host becomes `:authority`.
/// A head that does not read back is an error, never a request without headers.
fn headers_for<B>(
    req: &Request<B>,
    host: &HeaderValue,
    hop: Hop,
) -> Result<HeaderMap, ForwardError> {
    let extra: &[(&[u8], &[u8])] = &[(b"te", b"trailers")];
    let method = req.method().as_str().as_bytes();
    let head = request_head::of_request(
        req,
        method,
        host.as_bytes(),
        BodyFraming::None,
        None,
        extra,
        hop,
    );
    // The writer keeps at most what hyper accepted from the client, plus its own lines.
    let mut lines = [httparse::EMPTY_HEADER; 160];
    let mut parsed = httparse::Request::new(&mut lines);
    parsed
        .parse(&head)
        .map_err(|e| ForwardError::ClientBody(Box::new(e)))?;
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed
        .headers
        .iter()
        .filter(|h| !h.name.eq_ignore_ascii_case("host"))
    {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            map.append(name, value);
        }
    }
    Ok(map)
}

/// A connection with a free stream, else a new one (up to [`MAX_CONNS`]), else the first
/// to free a stream.
async fn sender(backend: &Arc<Backend>, connect_timeout: Duration) -> Result<Sender, ForwardError> {
    let conns = backend
        .h2_conns
        .get_or_init(|| Box::new(Conns::default()))
        .downcast_ref::<Conns>()
        .expect("only this module keeps h2 connections");
    let waiting = {
        let mut list = conns.0.locked();
        list.retain(|s| !s.is_closed());
        if let Some(ready) = list.iter().find(|s| s.is_ready()) {
            return Ok(ready.clone());
        }
        (list.len() >= MAX_CONNS).then(|| list[0].clone())
    };
    if let Some(mut busy) = waiting {
        busy.ready()
            .await
            .map_err(|e| ForwardError::Exchange(Box::new(e)))?;
        return Ok(busy);
    }
    let stream = connect_loopback(backend.port, connect_timeout)
        .await
        .map_err(ForwardError::Connect)?;
    let (sender, conn) = Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ForwardError::Exchange(Box::new(e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "HTTP/2 connection to an app ended");
        }
    });
    conns.0.locked().push(sender.clone());
    Ok(sender)
}

/// Whether the app on `port` speaks HTTP/2 with prior knowledge: its SETTINGS exchange
/// completes and it answers a request (any status; an unknown path is fine). `grpc`: a
/// gRPC call with an empty message, else a GET.
pub async fn answers(port: u16, host: &str, path: &str, grpc: bool) -> Option<Response<Incoming>> {
    let stream = connect_loopback(port, Duration::from_millis(500))
        .await
        .ok()?;
    let (mut sender, conn) = Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake::<_, ReqBody>(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let uri = format!("http://{host}{path}");
    let req = if grpc {
        Request::post(uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
    } else {
        Request::get(uri)
    };
    let message: &'static [u8] = if grpc { &[0, 0, 0, 0, 0] } else { &[] };
    let req = req
        .version(Version::HTTP_2)
        .header("user-agent", "portok-probe")
        .body(
            http_body_util::Full::new(Bytes::from_static(message))
                .map_err(|never| match never {})
                .boxed(),
        )
        .ok()?;
    sender.send_request(req).await.ok()
}
