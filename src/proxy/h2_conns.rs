//! The proxy's HTTP/2 connections to an app's instance (see [`super::h2_upstream`], which
//! sends calls on them): one carries many streams, and a call goes on another when the app's
//! concurrent-stream limit is reached there, or when the connection's window is spoken for:
//!
//! - a stream waiting for the app's window ([`Taken::held`], the request direction): the
//!   app's connection window is shared by its streams, and tonic's is no larger than one
//!   stream's;
//! - answers whose clients read nothing ([`Answers`], the response direction): what the app
//!   sent them waits in h2's buffer, on portok's connection window, until they read.

use super::app_conn::connect_loopback;
use super::upstream::ForwardError;
use crate::routes::Backend;
use crate::sync::LockExt as _;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Connections per instance at most; past that, a request queues on the least busy one
/// (h2 opens its stream when the app's limit allows).
const MAX_CONNS: usize = 8;
/// Flow-control windows offered to the app. A stream's, as hyper's client offers it: a
/// 5 MiB message arrives without a round trip per 64 KiB. The connection's is shared by
/// its streams, and an answer whose client reads nothing holds up to a stream's window
/// of it (hyper's 5 MiB let four stop the connection; see [`UNREAD_LIMIT`]).
const STREAM_WINDOW: u32 = 2 << 20;
const CONN_WINDOW: u32 = 8 * STREAM_WINDOW;
/// A connection whose answers hold this much unread is spoken for: new calls go on
/// another, so answers whose clients read nothing never stop every call (eight of them
/// would fill [`CONN_WINDOW`]).
const UNREAD_LIMIT: usize = CONN_WINDOW as usize / 2;

/// The proxy's HTTP/2 connections to one instance. Kept in its [`Backend`], so they close
/// (GOAWAY) once it has left the route table and its last stream has ended.
#[derive(Default)]
pub(super) struct Conns {
    list: Mutex<Vec<Conn>>,
    /// One connect at a time: a burst of calls to a fresh instance shares the first
    /// connection rather than opening one each.
    connecting: tokio::sync::Mutex<()>,
}

impl Conns {
    /// A connection with a free stream, none held back and its window not spoken for by
    /// unread answers, else None to open another; once there are [`MAX_CONNS`], one with a
    /// free stream, else the least busy.
    fn pick(&self) -> Option<Taken> {
        let mut list = self.list.locked();
        list.retain(|c| !c.closed.load(Ordering::Relaxed));
        // The app's limit, from the connections whose SETTINGS have come: a new one knows
        // only h2's default until then.
        let limit = list.iter().map(|c| c.send.current_max_send_streams()).min();
        let limit = limit.unwrap_or(usize::MAX);
        let free = |c: &&Conn| c.open.load(Ordering::Relaxed) < limit;
        // A stream waiting for the app's window may be waiting for the connection's: the
        // app's connection window is shared, and tonic's is no larger than one stream's.
        // The other way, answers left unread fill portok's.
        let unheld = |c: &&Conn| {
            c.held.load(Ordering::Relaxed) == 0 && !c.answers.unread_at_least(UNREAD_LIMIT)
        };
        if let Some(conn) = list.iter().filter(free).find(unheld) {
            return Some(conn.take());
        }
        if list.len() < MAX_CONNS {
            return None;
        }
        let least = || list.iter().min_by_key(|c| c.open.load(Ordering::Relaxed));
        list.iter().find(free).or_else(least).map(Conn::take)
    }
}

/// One HTTP/2 connection to an instance, with the streams portok has open on it.
#[derive(Clone)]
struct Conn {
    send: h2::client::SendRequest<Bytes>,
    open: Arc<AtomicUsize>,
    /// Streams on it waiting for the app's window (h2_upstream's `send_paced`).
    held: Arc<AtomicUsize>,
    answers: Arc<Answers>,
    closed: Arc<AtomicBool>,
}

/// A stream counted on its connection until it drops: open (until the response ends), or
/// held back (while it waits for the app's window).
pub(super) struct Slot(Arc<AtomicUsize>);

impl Slot {
    pub(super) fn on(count: &Arc<AtomicUsize>) -> Slot {
        count.fetch_add(1, Ordering::Relaxed);
        Slot(count.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Conn {
    fn take(&self) -> Taken {
        Taken {
            send: self.send.clone(),
            slot: Slot::on(&self.open),
            held: self.held.clone(),
            answers: self.answers.clone(),
            closed: self.closed.clone(),
        }
    }
}

/// A stream's place on a connection, for one request.
pub(super) struct Taken {
    pub(super) send: h2::client::SendRequest<Bytes>,
    pub(super) slot: Slot,
    /// Its connection's streams waiting for the app's window.
    pub(super) held: Arc<AtomicUsize>,
    /// Its connection's answers, for one that comes to wait on its client.
    pub(super) answers: Arc<Answers>,
    /// Set to take the connection out of the pool (it refused a stream: a GOAWAY).
    pub(super) closed: Arc<AtomicBool>,
}

/// The answers on a connection that may wait on their clients, for how much of the
/// connection's window they hold unread. An answer is listed once it has more to give than
/// its first read took ([`Answers::watch`]): a unary call's, read whole at once, never is.
#[derive(Default)]
pub(super) struct Answers(Mutex<Vec<Option<h2::FlowControl>>>);

impl Answers {
    /// List an answer's stream until the [`Watched`] drops.
    pub(super) fn watch(self: &Arc<Self>, flow: h2::FlowControl) -> Watched {
        let mut list = self.0.locked();
        let at = match list.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                list.push(None);
                list.len() - 1
            }
        };
        list[at] = Some(flow);
        Watched {
            answers: self.clone(),
            at,
        }
    }

    /// Whether the listed answers hold at least `limit` bytes their clients have not read.
    fn unread_at_least(&self, limit: usize) -> bool {
        let mut unread = 0;
        let list = self.0.locked();
        list.iter().flatten().any(|flow| {
            unread += flow.used_capacity();
            unread >= limit
        })
    }
}

/// An answer's place in its connection's [`Answers`], given up when it drops.
pub(super) struct Watched {
    answers: Arc<Answers>,
    at: usize,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.answers.0.locked()[self.at] = None;
    }
}

/// The app did not take the stream: it was never seen, so it may go again.
pub(super) fn refused(e: &h2::Error) -> bool {
    e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote())
}

pub(super) fn exchange(e: h2::Error) -> ForwardError {
    ForwardError::Exchange(Box::new(e))
}

/// A connection with a free stream (by the app's SETTINGS), else a new one (up to
/// [`MAX_CONNS`]), else the least busy.
pub(super) async fn sender(
    backend: &Arc<Backend>,
    connect_timeout: Duration,
) -> Result<Taken, ForwardError> {
    let conns = backend
        .h2_conns
        .get_or_init(|| Box::new(Conns::default()))
        .downcast_ref::<Conns>()
        .expect("only this module keeps h2 connections");
    if let Some(taken) = conns.pick() {
        return Ok(taken);
    }
    let _one = conns.connecting.lock().await;
    if let Some(taken) = conns.pick() {
        return Ok(taken);
    }
    let (send, closed) = Box::pin(connect(backend.port, connect_timeout)).await?;
    let conn = Conn {
        send,
        open: Arc::default(),
        held: Arc::default(),
        answers: Arc::default(),
        closed,
    };
    let taken = conn.take();
    conns.list.locked().push(conn);
    Ok(taken)
}

/// A new HTTP/2 connection to the app, its task spawned; the flag is set when it ends.
async fn connect(
    port: u16,
    connect_timeout: Duration,
) -> Result<(h2::client::SendRequest<Bytes>, Arc<AtomicBool>), ForwardError> {
    let stream = connect_loopback(port, connect_timeout)
        .await
        .map_err(ForwardError::Connect)?;
    let (send, conn) = h2::client::Builder::new()
        .enable_push(false)
        // Until the app's SETTINGS say otherwise (hyper's default too).
        .initial_max_send_streams(100)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .handshake(stream)
        .await
        .map_err(exchange)?;
    let closed = Arc::new(AtomicBool::new(false));
    tokio::spawn({
        let closed = closed.clone();
        async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP/2 connection to an app ended");
            }
            closed.store(true, Ordering::Relaxed);
        }
    });
    Ok((send, closed))
}
