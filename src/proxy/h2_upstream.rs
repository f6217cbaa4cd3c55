//! HTTP/2 to the app, for apps that speak nothing else (every gRPC server: tonic, grpcio,
//! grpc-go; hyper's http2-only servers). Prior-knowledge h2c on loopback: one connection per
//! instance carries many streams, and another is opened once portok's streams on it reach
//! the app's concurrent-stream limit (its SETTINGS). Bodies and trailers stream both ways
//! frame by frame, within the windows each side grants, so flow control holds end to end;
//! a client that goes away resets its stream at the app too.
//!
//! Built on the h2 crate rather than hyper's client: a request's headers and the body that
//! came with them go out in one write, from the request's own task. hyper's client hands
//! each request to its connection task and the body to a task of its own, and wrote the
//! two apart: a unary call took about 15% longer (docs/grpc.md has the figures).
//!
//! The request's header fields come from the one writer of request heads
//! ([`super::request_head::write`], into a [`request_head::Map`]), so every rule about
//! request headers is still kept in one place.

use super::app_conn::connect_loopback;
use super::body::{BodyError, ProxyBody};
use super::h2_conns::{exchange, refused, sender, Answers, Slot, Watched};
use super::request_head::{self, BodyFraming, Hop};
use super::upstream::ForwardError;
use crate::routes::{Backend, InflightGuard};
use bytes::{Buf as _, Bytes};
use http::{HeaderMap, HeaderValue, Request, Response, Uri, Version};
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::client::conn::http2::Builder;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// What the probe sends its request with.
pub type ReqBody = http_body_util::combinators::BoxBody<Bytes, BodyError>;

/// A first body chunk up to this size is queued with the request's headers, before h2 has
/// granted the stream its window: a unary call goes out in one write. (h2 holds it until
/// the window allows, should the app grant less.) Larger chunks wait for their window.
const SEND_AHEAD: usize = 16 << 10;

/// An app's response body, holding the instance's in-flight count and the stream's slot
/// until it ends. Each chunk read gives its window back to the app.
pub struct AppStream {
    body: h2::RecvStream,
    data_done: bool,
    /// The connection's answers, until this one is listed there ([`Watch`]).
    watch: Watch,
    _slot: Slot,
    _guard: InflightGuard,
    end: AnswerEnd,
}

/// The answer's end, held by whoever takes the app's answer (the request's future, then
/// its body), for the [`pump`] of a streamed request body. An answer that ended says so:
/// the client's body then goes on to its end. One dropped unfinished means the client went
/// away: the pump resets the app's stream rather than wait on for window or for the body.
struct AnswerEnd(Option<tokio::sync::oneshot::Sender<()>>);

impl AnswerEnd {
    fn ended(&mut self) {
        if let Some(end) = self.0.take() {
            let _ = end.send(());
        }
    }
}

impl Body for AppStream {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let me = &mut *self;
        if !me.data_done {
            match std::task::ready!(me.body.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = me.body.flow_control().release_capacity(data.len());
                    me.watch.read(&mut me.body);
                    // hyper polls no further once the body says it is over.
                    if me.end.0.is_some() && me.body.is_end_stream() {
                        me.end.ended();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => me.data_done = true,
            }
        }
        match std::task::ready!(me.body.poll_trailers(cx)) {
            Ok(Some(trailers)) => {
                me.end.ended();
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Ok(None) => {
                me.end.ended();
                Poll::Ready(None)
            }
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
}

/// Where an answer stands towards its connection's [`Answers`]: listed once it has more to
/// give than its first read took (more waiting after it, or a second read).
enum Watch {
    NotRead(Arc<Answers>),
    ReadOnce(Arc<Answers>),
    Listed(#[allow(dead_code)] Watched),
}

impl Watch {
    fn read(&mut self, body: &mut h2::RecvStream) {
        let next = match self {
            Watch::NotRead(answers) if body.flow_control().used_capacity() == 0 => {
                Watch::ReadOnce(answers.clone())
            }
            Watch::NotRead(answers) | Watch::ReadOnce(answers) => {
                Watch::Listed(answers.watch(body.flow_control().clone()))
            }
            Watch::Listed(_) => return,
        };
        *self = next;
    }
}

/// Send `req` (from any client: HTTP/1.1, h2 or h2c) to the instance over HTTP/2, its body
/// streamed, and answer with the app's response, trailers and all.
pub(super) async fn send<B>(
    req: Request<B>,
    fields: HeaderMap,
    host: &HeaderValue,
    hop: Hop,
    backend: &Arc<Backend>,
    connect_timeout: Duration,
) -> Result<Response<ProxyBody>, ForwardError>
where
    B: Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BodyError>,
{
    let (parts, body) = req.into_parts();
    // The client's head, to write the app's from (again, should the app refuse the stream).
    let client = Request::from_parts(parts, ());
    let app_uri = || app_uri(client.uri(), host).map_err(|e| ForwardError::ClientBody(e.into()));
    let mut uri = Some(app_uri()?);
    let guard = backend.enter();
    let mut end = AnswerEnd(None);
    let mut rest = first_of(body)?;
    // A stream the app refuses (its GOAWAY came first, or REFUSED_STREAM) was never seen by
    // it: the call goes again on another connection, once, when its body is still at hand.
    let mut again = true;
    let mut fields = Some(fields);
    let (response, slot, answers) = loop {
        let taken = sender(backend, connect_timeout).await?;
        let mut send = match taken.send.ready().await {
            Ok(send) => send,
            Err(e) if again => {
                tracing::debug!(error = %e, "an HTTP/2 connection to an app refused a stream");
                taken.closed.store(true, Ordering::Relaxed);
                again = false;
                continue;
            }
            Err(e) => return Err(exchange(e)),
        };
        let mut out = Request::new(());
        *out.method_mut() = client.method().clone();
        *out.uri_mut() = match uri.take() {
            Some(uri) => uri,
            None => app_uri()?,
        };
        *out.version_mut() = Version::HTTP_2;
        // Written again for a second attempt, from the client's head kept for it.
        *out.headers_mut() = fields
            .take()
            .unwrap_or_else(|| headers_for(&client, host, hop));
        let eos = matches!(rest, Rest::Nothing) || matches!(&rest, Rest::Kept(f) if f.is_empty());
        let (response, mut tx) = match send.send_request(out, eos) {
            Ok(sent) => sent,
            Err(e) if again && refused(&e) => {
                taken.closed.store(true, Ordering::Relaxed);
                again = false;
                continue;
            }
            Err(e) => return Err(exchange(e)),
        };
        rest = match rest {
            Rest::Whole(data) => {
                // Queued with the headers: one write for both.
                let _ = tx.send_data(data.clone(), true);
                Rest::Whole(data)
            }
            Rest::Stream(body, read) => {
                let (kept, keeping) = tokio::sync::oneshot::channel();
                let (ended, answer) = tokio::sync::oneshot::channel();
                end = AnswerEnd(Some(ended));
                let to = To {
                    tx,
                    held: taken.held.clone(),
                    answer: Some(answer),
                };
                let mut pump = Box::pin(pump(body, read, to, kept));
                if futures_util::poll!(pump.as_mut()).is_pending() {
                    tokio::spawn(pump);
                }
                Rest::Pumped(keeping)
            }
            Rest::Kept(frames) => {
                send_kept(&mut tx, &frames);
                Rest::Kept(frames)
            }
            other => other,
        };
        let e = match response.await {
            Ok(response) => break (response, taken.slot, taken.answers),
            Err(e) => e,
        };
        if !(again && refused(&e)) {
            return Err(exchange(e));
        }
        tracing::debug!(error = %e, "an app refused a stream; sending it again");
        taken.closed.store(true, Ordering::Relaxed);
        again = false;
        if let Rest::Pumped(keeping) = rest {
            // The client's body is read to its end (it is small, or it is not kept).
            // Boxed, as the connect in `sender`: the future of every request stays small.
            match Box::pin(tokio::time::timeout(Duration::from_secs(5), keeping)).await {
                Ok(Ok(Some(frames))) => rest = Rest::Kept(frames),
                _ => return Err(exchange(e)),
            }
        }
    };
    let (parts, body) = response.into_parts();
    if body.is_end_stream() {
        // hyper will not poll a body that is over.
        end.ended();
    }
    let body = AppStream {
        body,
        data_done: false,
        watch: Watch::NotRead(answers),
        _slot: slot,
        _guard: guard,
        end,
    };
    Ok(Response::from_parts(
        parts,
        ProxyBody::Stream(http_body_util::BodyExt::boxed_unsync(body)),
    ))
}

/// The URI of a request to the app: `host` as its authority, the client's path. An h2
/// client's own authority and path are taken when they are `host` (shared, neither parsed
/// nor copied again).
fn app_uri(client: &Uri, host: &HeaderValue) -> Result<Uri, http::Error> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(match client.authority() {
        Some(a) if a.as_str().as_bytes() == host.as_bytes() => a.clone(),
        _ => http::uri::Authority::try_from(host.as_bytes())?,
    });
    parts.path_and_query = Some(match client.path_and_query() {
        Some(p) => p.clone(),
        None => http::uri::PathAndQuery::from_static("/"),
    });
    Ok(Uri::from_parts(parts)?)
}

/// What of a request's body has come with its headers.
enum Rest<B> {
    /// No body.
    Nothing,
    /// All of it (a unary call's, as a rule): sent with the headers, kept to send again.
    Whole(Bytes),
    /// A body still streaming, with the frames already read, in order.
    Stream(B, [Option<Frame<Bytes>>; 2]),
    /// Being streamed to the app; the body, if it is kept ([`pump`]).
    Pumped(tokio::sync::oneshot::Receiver<Option<Vec<Kept>>>),
    /// A streamed body, kept whole: sent again as it came.
    Kept(Vec<Kept>),
}

/// The body as far as it has come, without waiting for more.
fn first_of<B>(mut body: B) -> Result<Rest<B>, ForwardError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BodyError>,
{
    use futures_util::FutureExt as _;
    if body.is_end_stream() {
        return Ok(Rest::Nothing);
    }
    // Polled with no waker to call: the pump polls again, with its own, when it is not here.
    Ok(match body.frame().now_or_never() {
        None => Rest::Stream(body, [None, None]),
        Some(None) => Rest::Nothing,
        Some(Some(Err(e))) => return Err(ForwardError::ClientBody(e.into())),
        Some(Some(Ok(frame))) => match frame.into_data() {
            Ok(data) if data.len() <= SEND_AHEAD => match then(&mut body)? {
                Then::Ended => Rest::Whole(data),
                Then::Next(next) => Rest::Stream(body, [Some(Frame::data(data)), next]),
            },
            Ok(data) => Rest::Stream(body, [Some(Frame::data(data)), None]),
            Err(frame) => Rest::Stream(body, [Some(frame), None]),
        },
    })
}

/// What follows a body's first frame, by what has come: an HTTP/2 client may end its
/// body with an empty DATA frame of its own after the message (hyper's client, and so
/// tonic's, does), and such a body is still sent whole, with its headers.
enum Then {
    Ended,
    /// The body goes on: the frame after the first, if it has come.
    Next(Option<Frame<Bytes>>),
}

fn then<B>(body: &mut B) -> Result<Then, ForwardError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BodyError>,
{
    use futures_util::FutureExt as _;
    if body.is_end_stream() {
        return Ok(Then::Ended);
    }
    Ok(match body.frame().now_or_never() {
        None => Then::Next(None),
        Some(None) => Then::Ended,
        Some(Some(Err(e))) => return Err(ForwardError::ClientBody(e.into())),
        Some(Some(Ok(frame))) => {
            if frame.data_ref().is_some_and(Bytes::is_empty) && body.is_end_stream() {
                Then::Ended
            } else {
                Then::Next(Some(frame))
            }
        }
    })
}

/// A streamed body is kept while it is this small and the app has not answered, to send
/// again should the app refuse the stream.
const KEEP_LIMIT: usize = 64 << 10;

/// A piece of a body kept to send again.
enum Kept {
    Data(Bytes),
    Trailers(HeaderMap),
}

/// The client's body to the app, frame by frame, each chunk within the window the app
/// grants (so a slow app slows the client), trailers included. A client that fails or
/// goes away resets the app's stream, even while the pump waits for window (its answer is
/// dropped unfinished). Until the app answers (`kept` is dropped then), a small body is
/// also kept: when the app refuses the stream, the rest of the body is read and the whole
/// goes to `kept`, to be sent again.
async fn pump<B>(
    mut body: B,
    mut read: [Option<Frame<Bytes>>; 2],
    mut to: To,
    kept: tokio::sync::oneshot::Sender<Option<Vec<Kept>>>,
) where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BodyError>,
{
    let mut keeping = Some((Vec::new(), 0usize));
    let mut live = true;
    let mut first = true;
    loop {
        if kept.is_closed() {
            keeping = None;
        }
        if !live && keeping.is_none() {
            return;
        }
        let frame = match read.iter_mut().find_map(Option::take) {
            Some(frame) => Some(Some(Ok(frame))),
            None => {
                poll_fn(|cx| {
                    // The app may end the stream while the client has more to say.
                    if live && to.tx.poll_reset(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                    if live && to.poll_abandoned(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                    // The error's cause is the client's; only that it failed matters here.
                    let frame = std::task::ready!(Pin::new(&mut body).poll_frame(cx));
                    Poll::Ready(Some(frame.map(|f| f.map_err(drop))))
                })
                .await
            }
        };
        let frame = match frame {
            None => {
                live = false;
                continue;
            }
            Some(None) => {
                if live {
                    let _ = to.tx.send_data(Bytes::new(), true);
                }
                let _ = kept.send(keeping.map(|(frames, _)| frames));
                return;
            }
            Some(Some(Err(_))) => {
                if live {
                    to.tx.send_reset(h2::Reason::CANCEL);
                }
                return;
            }
            Some(Some(Ok(frame))) => frame,
        };
        // A frame read ahead is still to go: the body's end is only after it.
        let eos = read.iter().all(Option::is_none) && body.is_end_stream();
        match frame.into_data() {
            Ok(data) => {
                if let Some((frames, size)) = &mut keeping {
                    *size += data.len();
                    frames.push(Kept::Data(data.clone()));
                    if *size > KEEP_LIMIT {
                        keeping = None;
                    }
                }
                if live {
                    live = if data.is_empty() || (first && data.len() <= SEND_AHEAD) {
                        to.tx.send_data(data, eos).is_ok()
                    } else {
                        send_paced(&mut to, data, eos).await
                    };
                }
                first = false;
            }
            Err(frame) => {
                let Ok(trailers) = frame.into_trailers() else {
                    continue;
                };
                if let Some((frames, _)) = &mut keeping {
                    frames.push(Kept::Trailers(trailers.clone()));
                }
                if live {
                    let _ = to.tx.send_trailers(trailers);
                }
                let _ = kept.send(keeping.map(|(frames, _)| frames));
                return;
            }
        }
        if eos {
            let _ = kept.send(keeping.map(|(frames, _)| frames));
            return;
        }
    }
}

/// A kept body, again: it was small, so it goes without pacing (h2 holds what the window
/// does not yet allow).
fn send_kept(tx: &mut h2::SendStream<Bytes>, frames: &[Kept]) {
    for (i, frame) in frames.iter().enumerate() {
        let last = i + 1 == frames.len();
        let _ = match frame {
            Kept::Data(data) => tx.send_data(data.clone(), last),
            Kept::Trailers(trailers) => tx.send_trailers(trailers.clone()),
        };
    }
}

/// Where the [`pump`] sends: the app's stream, the count of its connection's streams held
/// back, and word of the answer's end ([`AnswerEnd`]) until it comes.
struct To {
    tx: h2::SendStream<Bytes>,
    held: Arc<AtomicUsize>,
    answer: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl To {
    /// Ready once the answer was dropped unfinished (the client went away): the app's
    /// stream is reset. An answer that ended is forgotten.
    fn poll_abandoned(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(answer) = &mut self.answer else {
            return Poll::Pending;
        };
        let ended = std::task::ready!(std::future::Future::poll(Pin::new(answer), cx));
        self.answer = None;
        if ended.is_ok() {
            return Poll::Pending;
        }
        self.tx.send_reset(h2::Reason::CANCEL);
        Poll::Ready(())
    }
}

/// `data` in pieces as the app's window allows; false once the stream is gone, or reset
/// because the client went away ([`To::poll_abandoned`]).
async fn send_paced(to: &mut To, mut data: Bytes, eos: bool) -> bool {
    while data.has_remaining() {
        to.tx.reserve_capacity(data.len());
        if to.tx.capacity() == 0 {
            let _held = Slot::on(&to.held);
            while to.tx.capacity() == 0 {
                let got = poll_fn(|cx| {
                    if to.poll_abandoned(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                    to.tx.poll_capacity(cx)
                })
                .await;
                if !matches!(got, Some(Ok(_))) {
                    return false;
                }
            }
        }
        let piece = data.split_to(to.tx.capacity().min(data.len()));
        if to.tx.send_data(piece, eos && data.is_empty()).is_err() {
            return false;
        }
    }
    true
}

/// The request's header fields as the app receives them, by the one writer's rules.
/// `te: trailers` is sent whatever the client said: portok takes the app's trailers and
/// passes them on (gRPC servers refuse a call without it). The Host becomes `:authority`.
pub(super) fn headers_for<B>(req: &Request<B>, host: &HeaderValue, hop: Hop) -> HeaderMap {
    let method = req.method().as_str().as_bytes();
    let outbound = request_head::outbound(
        req,
        method,
        host.as_bytes(),
        BodyFraming::None,
        None,
        &[],
        hop,
    );
    // The client's fields, and the writer's own: forwarding, hops; then te, which the
    // writer drops as hop-by-hop and gRPC servers require.
    let mut map = request_head::Map::with_capacity(req.headers().len() + 8);
    request_head::write(&mut map, &outbound, request_head::map_lines(req.headers()));
    request_head::Sink::fixed(&mut map, &http::header::TE, "trailers");
    map.into_map()
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    type Frames = futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BodyError>>>;

    fn body(chunks: &[&'static [u8]]) -> StreamBody<Frames> {
        let frames: Vec<Result<Frame<Bytes>, BodyError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    /// A message whose body's end came after it (hyper's client, so tonic's, ends a body
    /// so) goes whole, with the headers; a body that goes on keeps every frame read, in order.
    #[test]
    fn a_message_and_its_end_go_whole_and_more_frames_stay_in_order() {
        match first_of(body(&[b"call"])).unwrap() {
            Rest::Whole(data) => assert_eq!(&data[..], b"call"),
            _ => panic!("a message followed by its body's end was not sent whole"),
        }
        match first_of(body(&[b"one", b"two"])).unwrap() {
            Rest::Stream(_, [Some(a), Some(b)]) => {
                assert_eq!(a.into_data().unwrap(), "one");
                assert_eq!(b.into_data().unwrap(), "two");
            }
            _ => panic!("a body that goes on lost or reordered a frame"),
        }
    }
}
