//! The gRPC relay: HTTP/2 calls to HTTP/2 apps, frame by frame, on the client connection's
//! own task. Through portok's two general HTTP/2 stacks (hyper's server, h2's client) a
//! unary call cost about twice the user CPU of nginx's `grpc_pass`, most of it in the
//! stacks' per-stream tasks and state; here each frame is decoded once (h2's codec:
//! frames and HPACK), the call's head goes through the same decision and the same
//! forwarding fields as every request ([`call`]), and the rest is relayed: DATA and
//! trailers as they come, under flow control kept on each side (a side's window is given
//! back once what it sent has gone on to the other), so a slow reader slows its writer
//! and memory stays bounded.
//!
//! It serves an HTTP/2 connection that is likely to carry calls: plaintext h2c, or TLS
//! whose server name is an HTTP/2 app's. When the client's first request came with its
//! preface and is not a call for an HTTP/2 app, the connection goes to hyper with the
//! bytes read ([`Outcome::Handoff`]), as the HTTP/1.1 fast path does. A client that waits
//! for portok's SETTINGS first (grpcio, grpc-go) gets them, and its connection stays
//! here: requests that are not relayed calls (gRPC-Web, a starting app, an error, the
//! admin host) go to portok's stacks over an in-process h2c connection ([`app`]), so one
//! handler still decides what every request means.
//!
//! Each client connection has its own app connections: new calls go to the generation the
//! route serves now, and a call in flight finishes on its own. `PORTOK_NO_FAST_PATH=1`
//! turns this off with the HTTP/1.1 fast path.

mod app;
mod call;
mod client;
mod wire;

use super::conn::{ClientIo, ConnWatch, RawTcp};
use super::ctx::{ConnError, ConnInfo, Ctx};
use bytes::{Bytes, BytesMut};
use client::Relay;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

/// Frames are read with h2's codec (frames and HPACK); the relay writes its own.
type Codec<T> = h2::Codec<T, Bytes>;

/// The windows portok grants each side: per stream, as h2_conns grants apps, and per
/// connection, shared by its streams.
const STREAM_WINDOW: u32 = 2 << 20;
const CONN_WINDOW: u32 = 8 * STREAM_WINDOW;
/// Window given back once this much of it has been passed on.
const STREAM_CREDIT: u32 = STREAM_WINDOW / 4;
const CONN_CREDIT: u32 = CONN_WINDOW / 8;
/// Streams a client may have open at once (hyper's server allows 200).
const MAX_STREAMS: u32 = 200;
/// App connections a client connection opens to one instance at most.
const MAX_APP_CONNS: usize = 8;
/// Bytes waiting to go out to one side before portok stops reading from the other (a
/// client that floods PINGs and reads nothing). Bodies in them are bounded by the windows.
const OUT_LIMIT: usize = 1 << 20;
/// The bytes read before the first request, at most.
const PEEK_LIMIT: usize = 64 << 10;

/// What became of the connection.
pub enum Outcome {
    Closed,
    /// hyper takes it over and reads these bytes first (the preface included).
    Handoff(Bytes),
}

/// Whether an h2 connection with this TLS server name (None: h2c) is one to relay: it is
/// plaintext, or it names a route to an HTTP/2 app.
pub fn wanted(ctx: &Ctx, server_name: Option<&str>) -> bool {
    let Some(name) = server_name else {
        return true;
    };
    let table = ctx.routes.load();
    let host = crate::names::normalize_host(name);
    table
        .lookup(&host)
        .is_some_and(|l| l.route.upstream == crate::routes::Upstream::H2)
}

/// How the relay reaches portok's stacks: serve one in-process h2c connection as the
/// client's (given by `accept`, which this module does not import).
pub type Stacks =
    fn(tokio::io::DuplexStream, ConnInfo, Arc<Ctx>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Serve an h2 connection (its preface read, waiting in `io`) until it ends, or hand it
/// to hyper.
pub async fn serve<I>(
    io: &mut ClientIo<I>,
    info: ConnInfo,
    ctx: &Arc<Ctx>,
    watch: &Arc<ConnWatch>,
    stacks: Stacks,
) -> Result<Outcome, ConnError>
where
    I: AsyncRead + AsyncWrite + RawTcp + Unpin,
{
    let mut preface = [0u8; 24];
    io.read_exact(&mut preface)
        .await
        .map_err(|source| ConnError::Io {
            phase: "reading the h2 preface",
            source,
        })?;
    let peeked = peek(io).await.map_err(|source| ConnError::Io {
        phase: "reading the first h2 frames",
        source,
    })?;
    let mut all = BytesMut::with_capacity(24 + peeked.bytes.len());
    all.extend_from_slice(&preface);
    all.extend_from_slice(&peeked.bytes);
    let all = all.freeze();
    if peeked.first == First::Odd {
        return Ok(Outcome::Handoff(all));
    }
    io.reset_prefix(all.slice(24..));
    let mut codec = Codec::new(&mut *io);
    // As hyper's server is told (`--max-header-bytes`): a larger head is refused.
    codec.set_max_recv_header_list_size(ctx.limits.max_header_bytes);
    let mut relay = Relay::new(codec, info, ctx, watch, stacks);
    if peeked.first == First::Waits {
        relay.own();
    }
    let done = relay.run().await;
    match done {
        Ok(Done::Closed) => Ok(Outcome::Closed),
        Ok(Done::Handoff) => {
            drop(relay);
            io.reset_prefix(Bytes::new());
            Ok(Outcome::Handoff(all))
        }
        Err(e) => Err(e),
    }
}

struct Peeked {
    bytes: BytesMut,
    first: First,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum First {
    /// A whole HEADERS block is among the bytes.
    Request,
    /// Nothing more came: the client waits for portok's SETTINGS.
    Waits,
    /// A frame no client sends before its first request, or too much: hyper answers.
    Odd,
}

/// Read what the client sent with its preface, without waiting for more: up to its first
/// whole request head, if that came too.
async fn peek<I: AsyncRead + Unpin>(io: &mut I) -> std::io::Result<Peeked> {
    let mut bytes = BytesMut::with_capacity(1024);
    loop {
        let first = match first_headers(&bytes) {
            Some(true) => Some(First::Request),
            Some(false) => Some(First::Odd),
            None if bytes.len() >= PEEK_LIMIT => Some(First::Odd),
            None => None,
        };
        if let Some(first) = first {
            return Ok(Peeked { bytes, first });
        }
        let read = poll_fn(|cx| {
            let mut buf = tokio::io::ReadBuf::uninit(bytes.spare_capacity_mut());
            match Pin::new(&mut *io).poll_read(cx, &mut buf) {
                Poll::Pending => Poll::Ready(None),
                Poll::Ready(r) => Poll::Ready(Some(r.map(|()| buf.filled().len()))),
            }
        })
        .await;
        match read {
            None => {
                return Ok(Peeked {
                    bytes,
                    first: First::Waits,
                })
            }
            Some(Ok(0)) => {
                return Ok(Peeked {
                    bytes,
                    first: First::Odd,
                })
            }
            Some(Ok(n)) => {
                // SAFETY: poll_read initialized the first `n` spare bytes.
                unsafe { bytes.set_len(bytes.len() + n) };
                if bytes.capacity() == bytes.len() {
                    bytes.reserve(4096);
                }
            }
            Some(Err(e)) => return Err(e),
        }
    }
}

/// Some(true) when `bytes` (the frames after the preface) hold a whole HEADERS block,
/// Some(false) when they hold a frame that rules the question out (anything but SETTINGS,
/// WINDOW_UPDATE and PRIORITY before it), None when more must be read to know.
fn first_headers(bytes: &[u8]) -> Option<bool> {
    let mut at = 0;
    let mut in_block = false;
    while bytes.len() >= at + 9 {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        let (kind, flags) = (bytes[at + 3], bytes[at + 4]);
        if bytes.len() < at + 9 + len {
            return None;
        }
        at += 9 + len;
        match kind {
            // HEADERS, CONTINUATION: END_HEADERS ends the block.
            0x1 | 0x9 if kind == 0x1 || in_block => {
                if flags & 0x4 != 0 {
                    return Some(true);
                }
                in_block = true;
            }
            0x4 | 0x8 | 0x2 if !in_block => {}
            _ => return Some(false),
        }
    }
    None
}

/// How a relay ended.
enum Done {
    Closed,
    Handoff,
}
