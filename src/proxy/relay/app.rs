//! The relay's connections on the app side: to an instance's HTTP/2 port, or in-process to
//! portok's own HTTP/2 stacks (for the streams the relay does not carry itself).

use super::super::app_conn::connect_loopback;
use super::super::ctx::{ConnInfo, Ctx};
use super::{wire, Codec, CONN_WINDOW, STREAM_WINDOW};
use crate::routes::{Backend, RouteTable};
use bytes::BytesMut;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Who is on the other side.
#[derive(Clone)]
pub(super) enum Peer {
    App(Arc<Backend>),
    Stacks,
}

pub(super) enum Io {
    Tcp(TcpStream),
    Stacks(DuplexStream),
}

pub(super) enum State {
    Connecting(Pin<Box<dyn Future<Output = io::Result<Io>> + Send>>),
    Open(Box<Codec<Io>>),
    /// Gone (closed, failed, or told to go away and finished); kept so indices stay put.
    Closed,
}

/// One connection on the app side, with its half of the flow-control bookkeeping.
pub(super) struct AppConn {
    pub(super) peer: Peer,
    pub(super) state: State,
    /// Frames waiting to be written (the preface first).
    pub(super) out: BytesMut,
    /// What the app lets portok send on the connection, and on each new stream.
    pub(super) window: i64,
    pub(super) stream_window: i64,
    pub(super) max_streams: usize,
    /// Streams placed here that have not ended, and those of them sent (with an id).
    pub(super) assigned: usize,
    pub(super) open: usize,
    pub(super) next_id: u32,
    /// What portok still lets the app send on the connection.
    pub(super) from_app: i64,
    /// Received and passed on, not yet given back to the app (connection level).
    pub(super) credit: u32,
    /// The largest frame the app takes.
    pub(super) max_frame: usize,
    /// The app said GOAWAY: streams above this id were never seen by it.
    pub(super) going_away: Option<u32>,
    /// The app's SETTINGS have come: streams are sent only then, within its limit.
    pub(super) settled: bool,
    /// The route table last looked through (its address), and whether this connection's
    /// instance was in it ([`AppConn::in_table`]).
    table_seen: usize,
    listed: bool,
}

impl AppConn {
    /// A connection being opened to `peer`; the frames that open it are queued.
    pub(super) fn open(
        peer: Peer,
        ctx: &Arc<Ctx>,
        info: ConnInfo,
        stacks: super::Stacks,
    ) -> AppConn {
        let connecting: Pin<Box<dyn Future<Output = io::Result<Io>> + Send>> = match &peer {
            Peer::App(b) => {
                let (port, timeout) = (b.port, ctx.limits.connect);
                Box::pin(async move {
                    let s = connect_loopback(port, timeout).await?;
                    let _ = s.set_nodelay(true);
                    Ok(Io::Tcp(s))
                })
            }
            Peer::Stacks => {
                let (ours, theirs) = tokio::io::duplex(64 << 10);
                tokio::spawn(stacks(theirs, info, ctx.clone()));
                Box::pin(std::future::ready(Ok(Io::Stacks(ours))))
            }
        };
        let mut out = BytesMut::with_capacity(4096);
        out.extend_from_slice(PREFACE);
        wire::settings(
            &mut out,
            &[
                (wire::ENABLE_PUSH, 0),
                (wire::INITIAL_WINDOW_SIZE, STREAM_WINDOW),
            ],
        );
        wire::window_update(&mut out, 0, CONN_WINDOW - 65_535);
        AppConn {
            peer,
            state: State::Connecting(connecting),
            out,
            window: 65_535,
            stream_window: 65_535,
            // h2's assumption until the app's SETTINGS say.
            max_streams: 100,
            assigned: 0,
            open: 0,
            next_id: 1,
            from_app: CONN_WINDOW.into(),
            credit: 0,
            max_frame: 16_384,
            going_away: None,
            settled: false,
            table_seen: 0,
            listed: true,
        }
    }

    /// Whether this connection's instance has left the route table (a redeploy). A table
    /// is looked through once: the answer holds until another is installed.
    pub(super) fn retired(&mut self, table: &Arc<RouteTable>) -> bool {
        let Peer::App(backend) = &self.peer else {
            return false;
        };
        let seen = Arc::as_ptr(table) as usize;
        if self.table_seen != seen {
            self.table_seen = seen;
            self.listed = table
                .sorted()
                .iter()
                .any(|l| l.backends.iter().any(|x| Arc::ptr_eq(x, backend)));
        }
        !self.listed
    }

    /// New streams may go here.
    pub(super) fn takes_streams(&self) -> bool {
        !matches!(self.state, State::Closed)
            && self.going_away.is_none()
            && self.next_id < (1 << 30)
    }

    /// Room for another stream, counting those waiting to be sent.
    pub(super) fn has_room(&self) -> bool {
        self.assigned < self.max_streams
    }

    /// A waiting stream may be sent now.
    pub(super) fn can_send(&self) -> bool {
        self.settled && matches!(self.state, State::Open(_)) && self.open < self.max_streams
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Io::Stacks(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, b),
            Io::Stacks(s) => Pin::new(s).poll_write(cx, b),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Stacks(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Tcp(s) => s.is_write_vectored(),
            Io::Stacks(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            Io::Stacks(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Io::Stacks(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
