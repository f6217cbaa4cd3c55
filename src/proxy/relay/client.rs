//! One client connection's relay: its streams, its app connections, and the frames
//! between them. Frames are read with h2's codec and written with [`wire`].

use super::app::{AppConn, Peer, State};
use super::call::{self, Call, Plan};
use super::{
    wire, Codec, Done, CONN_CREDIT, CONN_WINDOW, MAX_APP_CONNS, MAX_STREAMS, OUT_LIMIT,
    STREAM_CREDIT, STREAM_WINDOW,
};
use crate::proxy::conn::{ClientIo, ConnWatch, Exchange, RawTcp};
use crate::proxy::ctx::{ConnError, ConnInfo, Ctx};
use bytes::{Buf as _, Bytes, BytesMut};
use futures_util::Stream as _;
use h2::frame::{self, Data, Frame, Headers, Reason};
use http::{HeaderMap, StatusCode};
use std::collections::VecDeque;
use std::future::{poll_fn, Future as _};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};

/// One stream of the client's.
struct Stream {
    id: u32,
    /// Its app connection (an index into `apps`; None once the app's whole answer is
    /// here and its connection has gone), and its id there (0: not sent yet).
    app: Option<usize>,
    app_id: u32,
    /// The head for the app, written and waiting to go.
    head: Option<Vec<u8>>,
    /// The client's body on its way to the app, and the app's to the client.
    up: Half,
    down: Half,
    answered: bool,
    call: Option<Box<Call>>,
    exchange: Option<Exchange>,
}

/// One direction of a stream: the sender's body waiting for the receiver's window, and
/// its end, with the windows on both sides.
struct Half {
    queue: VecDeque<Bytes>,
    /// The sender ended the stream (after `queue`, and `trailers` if it sent them).
    end: bool,
    trailers: Option<HeaderMap>,
    /// The end went out.
    done: bool,
    /// What the receiver lets portok send on this stream.
    window: i64,
    /// What portok still lets the sender send on it, and what it passed on and has not
    /// yet given back.
    allowed: i64,
    credit: u32,
}

impl Half {
    fn new() -> Self {
        Half {
            queue: VecDeque::new(),
            end: false,
            trailers: None,
            done: false,
            window: 0,
            allowed: STREAM_WINDOW.into(),
            credit: 0,
        }
    }

    /// Move what the stream's window and `conn_window` allow into `out`, as frames on
    /// stream `id` (the end too, once all went); the bytes moved.
    fn pump(
        &mut self,
        id: u32,
        out: &mut BytesMut,
        conn_window: &mut i64,
        max_frame: usize,
        block: &mut Vec<u8>,
    ) -> u32 {
        let mut moved = 0;
        while !self.done {
            let only = self.queue.len() == 1;
            let Some(front) = self.queue.front_mut() else {
                if self.end {
                    match self.trailers.take() {
                        Some(t) => {
                            wire::Block::new(block).map(&t);
                            wire::headers(out, id, block, true, max_frame);
                        }
                        None => wire::data(out, id, &[], true),
                    }
                    self.done = true;
                }
                break;
            };
            let room = self.window.min(*conn_window).min(max_frame as i64).max(0) as usize;
            if room == 0 && !front.is_empty() {
                break;
            }
            let n = front.len().min(room);
            let last = n == front.len() && only && self.end && self.trailers.is_none();
            wire::data(out, id, &front[..n], last);
            front.advance(n);
            if front.is_empty() {
                self.queue.pop_front();
            }
            self.window -= n as i64;
            *conn_window -= n as i64;
            moved += n as u32;
            self.done = last;
        }
        moved
    }

    /// The window to give the sender back, once enough has gone on (none after its end).
    fn credit_due(&mut self) -> Option<u32> {
        if self.end || self.credit < STREAM_CREDIT {
            return None;
        }
        let c = std::mem::take(&mut self.credit);
        self.allowed += i64::from(c);
        Some(c)
    }
}

/// Where reading the client's side stopped.
enum Read {
    /// Its codec waits for more, with the task's waker.
    Waiting,
    /// What waits to go out is too much for now.
    Held,
    Done(Done),
}

pub(super) struct Relay<'a, I> {
    ctx: &'a Arc<Ctx>,
    stacks: super::Stacks,
    info: ConnInfo,
    watch: &'a Arc<ConnWatch>,
    client: Codec<&'a mut ClientIo<I>>,
    out: BytesMut,
    apps: Vec<AppConn>,
    streams: Vec<Stream>,
    /// What the client lets portok send on the connection, on each new stream, and in
    /// one frame.
    window: i64,
    stream_window: i64,
    max_frame: usize,
    /// What portok still lets the client send on the connection.
    from_client: i64,
    /// Received from the client and passed on, not yet given back (connection level).
    credit: u32,
    last_id: u32,
    /// portok's SETTINGS went out: the connection can no longer go to hyper.
    owned: bool,
    /// GOAWAY went out (the daemon stops, or the connection idled): no new streams.
    closing: bool,
    /// Nothing more is read from the client: its side ended, or it broke the protocol.
    client_gone: bool,
    /// The client said GOAWAY: its streams go on, and the connection ends with them.
    client_done: bool,
    /// This pass made work that nothing will wake the task for (see [`Relay::poll`]).
    again: bool,
    /// A header block being written, and blocks that went out, to write the next into.
    block: Vec<u8>,
    spare: Vec<Vec<u8>>,
}

impl<'a, I> Relay<'a, I>
where
    I: AsyncRead + AsyncWrite + RawTcp + Unpin,
{
    pub(super) fn new(
        client: Codec<&'a mut ClientIo<I>>,
        info: ConnInfo,
        ctx: &'a Arc<Ctx>,
        watch: &'a Arc<ConnWatch>,
        stacks: super::Stacks,
    ) -> Self {
        Relay {
            stacks,
            ctx,
            info,
            watch,
            client,
            out: BytesMut::with_capacity(4096),
            apps: Vec::new(),
            streams: Vec::new(),
            window: 65_535,
            stream_window: 65_535,
            max_frame: frame::DEFAULT_MAX_FRAME_SIZE as usize,
            from_client: CONN_WINDOW.into(),
            credit: 0,
            last_id: 0,
            owned: false,
            closing: false,
            client_gone: false,
            client_done: false,
            again: false,
            block: Vec::with_capacity(512),
            spare: Vec::new(),
        }
    }

    /// Send portok's SETTINGS: from here on the relay serves the connection.
    pub(super) fn own(&mut self) {
        if self.owned {
            return;
        }
        self.owned = true;
        let mut first = BytesMut::with_capacity(64 + self.out.len());
        // SETTINGS first: it is the server's preface.
        wire::settings(
            &mut first,
            &[
                (wire::MAX_CONCURRENT_STREAMS, MAX_STREAMS),
                (wire::INITIAL_WINDOW_SIZE, STREAM_WINDOW),
            ],
        );
        wire::window_update(&mut first, 0, CONN_WINDOW - 65_535);
        first.extend_from_slice(&self.out);
        self.out = first;
    }

    /// Relay until the connection is over, under the connection's idle deadline, the
    /// daemon's stop (GOAWAY, then the streams finish) and the rapid-reset cut-off, as
    /// [`crate::proxy::conn::drive`] keeps them for hyper.
    pub(super) async fn run(&mut self) -> Result<Done, ConnError> {
        let ctx = self.ctx;
        let watch = self.watch;
        let stopping = ctx.stopping.cancelled();
        tokio::pin!(stopping);
        let sleep = tokio::time::sleep_until(watch.next_look(&ctx.limits));
        tokio::pin!(sleep);
        let mut first = true;
        poll_fn(|cx| {
            // Polled once, the stop's future wakes this task when it fires; after that a
            // look at the token is enough (every wake-up of a call looked at both).
            if std::mem::take(&mut first) {
                let _ = stopping.as_mut().poll(cx);
            }
            if !self.closing && ctx.stopping.is_cancelled() {
                self.graceful();
            }
            if watch.resets.flooded() {
                tracing::warn!(peer = %self.info.peer, "client cancels requests in a flood (HTTP/2 rapid reset?); closing its connection");
                return Poll::Ready(Err(ConnError::ResetFlood));
            }
            while sleep.as_mut().poll(cx).is_ready() {
                match watch.idle(&ctx.limits) {
                    Some(next) => sleep.as_mut().reset(next),
                    None if self.owned => {
                        self.graceful();
                        sleep
                            .as_mut()
                            .reset(tokio::time::Instant::now() + ctx.limits.idle);
                    }
                    None => return Poll::Ready(Ok(Done::Closed)),
                }
            }
            self.poll(cx)
        })
        .await
    }

    /// One pass reads what came from each side, moves what the windows allow, and writes
    /// it out. Every source left waits with this task's waker; another pass is made only
    /// when a pass made work that nothing will wake the task for: a new app connection to
    /// start, a failed one whose streams were answered or moved, or reading held back for
    /// room that the writes then made.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Done, ConnError>> {
        loop {
            self.again = false;
            self.poll_connects(cx);
            let mut held = match self.read_client(cx) {
                Ok(Read::Done(done)) => return Poll::Ready(Ok(done)),
                Ok(Read::Held) => true,
                Ok(Read::Waiting) => false,
                Err(e) => return Poll::Ready(Err(e)),
            };
            held |= self.read_apps(cx);
            self.schedule();
            let flushed = match self.write_client(cx) {
                Ok(flushed) => flushed,
                Err(e) => return Poll::Ready(Err(e)),
            };
            self.write_apps(cx);
            let ending = self.client_gone || self.client_done || self.closing;
            if flushed && ending && self.streams.is_empty() {
                return Poll::Ready(Ok(Done::Closed));
            }
            let room =
                self.out.len() < OUT_LIMIT && self.apps.iter().all(|a| a.out.len() < OUT_LIMIT);
            if !(self.again || (held && room)) {
                return Poll::Pending;
            }
        }
    }

    fn poll_connects(&mut self, cx: &mut Context<'_>) {
        for i in 0..self.apps.len() {
            let State::Connecting(fut) = &mut self.apps[i].state else {
                continue;
            };
            match fut.as_mut().poll(cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(io)) => {
                    self.apps[i].state = State::Open(Box::new(Codec::new(io)));
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "the relay could not reach an app");
                    self.app_failed(i);
                }
            }
        }
    }

    /// Read the client's frames, while what waits to go out to either side is not much.
    fn read_client(&mut self, cx: &mut Context<'_>) -> Result<Read, ConnError> {
        while !self.client_gone {
            if self.out.len() >= OUT_LIMIT || self.apps.iter().any(|a| a.out.len() >= OUT_LIMIT) {
                return Ok(Read::Held);
            }
            match Pin::new(&mut self.client).poll_next(cx) {
                Poll::Pending => break,
                Poll::Ready(None) => {
                    self.client_gone = true;
                    self.cancel_all();
                    return Ok(Read::Done(Done::Closed));
                }
                Poll::Ready(Some(Ok(f))) => {
                    if let Some(done) = self.on_client(f) {
                        return Ok(Read::Done(done));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    if let Some(done) = self.client_error(e)? {
                        return Ok(Read::Done(done));
                    }
                }
            }
        }
        Ok(Read::Waiting)
    }

    /// A protocol error from the client's codec: a stream's is answered with RST_STREAM,
    /// a connection's with GOAWAY and the end.
    fn client_error(&mut self, e: h2::proto::Error) -> Result<Option<Done>, ConnError> {
        match e {
            h2::proto::Error::Reset(..) | h2::proto::Error::GoAway(..) if !self.owned => {
                Ok(Some(Done::Handoff))
            }
            h2::proto::Error::Reset(id, reason, _) => {
                wire::rst(&mut self.out, id.into(), reason.into());
                self.remove_stream(id.into(), Some(Reason::CANCEL), false);
                Ok(None)
            }
            h2::proto::Error::GoAway(_, reason, _) => {
                self.go_away(reason);
                Ok(None)
            }
            h2::proto::Error::Io(kind, msg) => {
                self.cancel_all();
                Err(ConnError::Io {
                    phase: "relaying HTTP/2",
                    source: std::io::Error::new(kind, msg.unwrap_or_default()),
                })
            }
        }
    }

    /// The client broke the protocol: GOAWAY, and its streams are reset at their apps.
    fn go_away(&mut self, reason: Reason) {
        wire::goaway(&mut self.out, self.last_id, reason.into());
        self.client_gone = true;
        self.cancel_all();
    }

    fn on_client(&mut self, f: Frame) -> Option<Done> {
        match f {
            Frame::Settings(s) if s.is_ack() => {}
            Frame::Settings(s) => {
                if let Some(w) = s.initial_window_size() {
                    let delta = i64::from(w) - self.stream_window;
                    self.stream_window = i64::from(w);
                    for st in &mut self.streams {
                        st.down.window += delta;
                    }
                }
                if let Some(m) = s.max_frame_size() {
                    self.max_frame = m as usize;
                }
                wire::settings_ack(&mut self.out);
            }
            Frame::Ping(p) if p.is_ack() => {}
            Frame::Ping(p) => wire::ping_ack(&mut self.out, p.payload()),
            Frame::WindowUpdate(w) => {
                let inc = i64::from(w.size_increment());
                match u32::from(w.stream_id()) {
                    0 => self.window += inc,
                    id => {
                        if let Some(st) = self.streams.iter_mut().find(|s| s.id == id) {
                            st.down.window += inc;
                        }
                    }
                }
            }
            Frame::Headers(h) => return self.client_headers(h),
            Frame::Data(d) => self.client_data(d),
            Frame::Reset(r) if u32::from(r.stream_id()) > self.last_id => {
                // A stream reset before its HEADERS went out (h2's client does so when a
                // request is cancelled at once): its id is used up, and it counts as a
                // cancelled request, so a flood of them is cut off as any rapid reset.
                self.last_id = r.stream_id().into();
                drop(Exchange::begin(self.watch.clone()));
            }
            Frame::Reset(r) => self.remove_stream(r.stream_id().into(), Some(r.reason()), true),
            Frame::GoAway(_) => self.client_done = true,
            Frame::Priority(_) | Frame::PushPromise(_) => {}
        }
        None
    }

    fn client_headers(&mut self, h: Headers) -> Option<Done> {
        let id = u32::from(h.stream_id());
        let eos = h.is_end_stream();
        if let Some(st) = self.streams.iter_mut().find(|s| s.id == id) {
            // Trailers.
            st.up.trailers = Some(h.into_fields());
            st.up.end = true;
            return None;
        }
        if id <= self.last_id || id % 2 == 0 {
            // A stream that ended (or a server's id): RFC 9113 5.1, STREAM_CLOSED.
            wire::rst(&mut self.out, id, Reason::STREAM_CLOSED.into());
            return None;
        }
        self.last_id = id;
        if h.is_over_size() {
            // Over `--max-header-bytes`: 431, and none of its body is wanted (as h2 does).
            wire::Block::new(&mut self.block).status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            wire::headers(&mut self.out, id, &self.block, true, self.max_frame);
            wire::rst(&mut self.out, id, Reason::REFUSED_STREAM.into());
            return None;
        }
        if self.closing || self.streams.len() >= MAX_STREAMS as usize {
            wire::rst(&mut self.out, id, Reason::REFUSED_STREAM.into());
            return None;
        }
        let (pseudo, fields) = h.into_parts();
        let mut head = self.spare.pop().unwrap_or_default();
        let (peer, call) = match call::plan(self.ctx, self.info, pseudo, fields, &mut head) {
            Plan::Relay(call) => (Peer::App(call.backend.clone()), Some(call)),
            Plan::Stacks if !self.owned => return Some(Done::Handoff),
            Plan::Stacks => (Peer::Stacks, None),
        };
        self.own();
        let app = self.app_for(peer);
        self.streams.push(Stream {
            id,
            app: Some(app),
            app_id: 0,
            head: Some(head),
            up: Half {
                end: eos,
                window: 0,
                ..Half::new()
            },
            down: Half {
                window: self.stream_window,
                ..Half::new()
            },
            answered: false,
            call,
            exchange: Some(Exchange::begin(self.watch.clone())),
        });
        None
    }

    /// The app connection for a new stream to `peer`: one with room, else a new one, else
    /// (at [`MAX_APP_CONNS`]) the least busy.
    fn app_for(&mut self, peer: Peer) -> usize {
        let same = |a: &AppConn| match (&peer, &a.peer) {
            (Peer::App(x), Peer::App(y)) => Arc::ptr_eq(x, y),
            (Peer::Stacks, Peer::Stacks) => true,
            _ => false,
        };
        let mut count = 0;
        let mut least: Option<usize> = None;
        for (i, a) in self.apps.iter().enumerate() {
            if !same(a) || !a.takes_streams() {
                continue;
            }
            if a.has_room() && a.window > 0 {
                least = Some(i);
                count = 0;
                break;
            }
            count += 1;
            if least.is_none_or(|l| self.apps[l].assigned > a.assigned) {
                least = Some(i);
            }
        }
        let i = match least {
            Some(l) if count == 0 || count >= MAX_APP_CONNS => l,
            _ => {
                let mut conn = AppConn::open(peer, self.ctx, self.info, self.stacks);
                self.again = true;
                // The app's limit as its other connections learned it.
                if let Some(l) = least {
                    conn.max_streams = self.apps[l].max_streams;
                }
                // A closed connection's place is taken, so the list stays short; not one
                // a stream still names (one being failed, or whose answer is all here).
                let streams = &self.streams;
                let free = |(i, a): &(usize, &AppConn)| {
                    matches!(a.state, State::Closed) && !streams.iter().any(|s| s.app == Some(*i))
                };
                match self.apps.iter().enumerate().find(free).map(|(i, _)| i) {
                    Some(i) => {
                        self.apps[i] = conn;
                        i
                    }
                    None => {
                        self.apps.push(conn);
                        self.apps.len() - 1
                    }
                }
            }
        };
        self.apps[i].assigned += 1;
        i
    }

    /// Streams waiting on app connection `i` past the app's limit (its SETTINGS said
    /// less than h2's assumed 100) go on another.
    fn rebalance(&mut self, i: usize) {
        for k in 0..self.streams.len() {
            if self.apps[i].assigned <= self.apps[i].max_streams {
                return;
            }
            if self.streams[k].app == Some(i) && self.streams[k].app_id == 0 {
                self.apps[i].assigned -= 1;
                let peer = self.apps[i].peer.clone();
                self.streams[k].app = Some(self.app_for(peer));
            }
        }
    }

    /// Streams not yet sent on app connection `i` (it is going away, or it broke) go on
    /// another to the same peer.
    fn move_waiting(&mut self, i: usize) {
        for k in 0..self.streams.len() {
            if self.streams[k].app == Some(i) && self.streams[k].app_id == 0 {
                self.apps[i].assigned -= 1;
                let peer = self.apps[i].peer.clone();
                self.streams[k].app = Some(self.app_for(peer));
            }
        }
    }

    fn client_data(&mut self, d: Data) {
        let id = u32::from(d.stream_id());
        let eos = d.is_end_stream();
        // Padding is given back at once; past its length byte its size is not known
        // here, so a client that pads slowly narrows its own window.
        let pad = u32::from(d.is_padded());
        let data = d.into_payload();
        let len = data.len() as u32 + pad;
        self.from_client -= i64::from(len);
        if self.from_client < 0 {
            return self.go_away(Reason::FLOW_CONTROL_ERROR);
        }
        let Some(at) = self.streams.iter().position(|s| s.id == id) else {
            self.credit += len;
            return;
        };
        let st = &mut self.streams[at];
        st.up.allowed -= i64::from(len);
        if st.up.allowed < 0 {
            wire::rst(&mut self.out, id, Reason::FLOW_CONTROL_ERROR.into());
            self.credit += len;
            return self.remove_stream(id, Some(Reason::CANCEL), false);
        }
        self.credit += pad;
        if let Some(call) = st.call.as_mut() {
            call.sent(&data);
        }
        st.up.queue.push_back(data);
        st.up.end |= eos;
    }

    /// Read each app's frames, while what waits for the client is not much; whether that
    /// held reading back.
    fn read_apps(&mut self, cx: &mut Context<'_>) -> bool {
        for i in 0..self.apps.len() {
            while let State::Open(codec) = &mut self.apps[i].state {
                if self.out.len() >= OUT_LIMIT {
                    return true;
                }
                match Pin::new(&mut **codec).poll_next(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Some(Ok(f))) => self.on_app(i, f),
                    Poll::Ready(Some(Err(h2::proto::Error::Reset(id, reason, _)))) => {
                        wire::rst(&mut self.apps[i].out, id.into(), reason.into());
                        self.app_reset(i, id.into(), Reason::INTERNAL_ERROR);
                    }
                    Poll::Ready(Some(Err(e))) => {
                        tracing::debug!(error = ?e, "an app's HTTP/2 connection failed");
                        self.app_failed(i);
                    }
                    Poll::Ready(None) => self.app_failed(i),
                }
            }
        }
        false
    }

    fn on_app(&mut self, i: usize, f: Frame) {
        let app = &mut self.apps[i];
        match f {
            Frame::Settings(s) if s.is_ack() => {}
            Frame::Settings(s) => {
                if let Some(w) = s.initial_window_size() {
                    let delta = i64::from(w) - app.stream_window;
                    app.stream_window = i64::from(w);
                    for st in self.streams.iter_mut().filter(|s| s.app == Some(i)) {
                        st.up.window += delta;
                    }
                }
                if let Some(m) = s.max_concurrent_streams() {
                    app.max_streams = m as usize;
                }
                if let Some(m) = s.max_frame_size() {
                    app.max_frame = m as usize;
                }
                app.settled = true;
                wire::settings_ack(&mut app.out);
                self.rebalance(i);
            }
            Frame::Ping(p) if p.is_ack() => {}
            Frame::Ping(p) => wire::ping_ack(&mut app.out, p.payload()),
            Frame::WindowUpdate(w) => {
                let inc = i64::from(w.size_increment());
                match u32::from(w.stream_id()) {
                    0 => app.window += inc,
                    id => {
                        if let Some(st) = self.stream_of(i, id) {
                            st.up.window += inc;
                        }
                    }
                }
            }
            Frame::Headers(h) => self.app_headers(i, h),
            Frame::Data(d) => self.app_data(i, d),
            Frame::Reset(r) => self.app_reset(i, r.stream_id().into(), r.reason()),
            Frame::GoAway(g) => {
                let last = u32::from(g.last_stream_id());
                app.going_away = Some(last);
                let refused: Vec<u32> = self
                    .streams
                    .iter()
                    .filter(|s| s.app == Some(i) && s.app_id > last)
                    .map(|s| s.app_id)
                    .collect();
                for id in refused {
                    self.app_reset(i, id, Reason::REFUSED_STREAM);
                }
                self.move_waiting(i);
                self.close_if_idle(i);
            }
            Frame::Priority(_) => {}
            // Push was turned off in portok's SETTINGS.
            Frame::PushPromise(p) => wire::rst(
                &mut app.out,
                p.promised_id().into(),
                Reason::REFUSED_STREAM.into(),
            ),
        }
    }

    fn stream_of(&mut self, app: usize, app_id: u32) -> Option<&mut Stream> {
        self.streams
            .iter_mut()
            .find(|s| s.app == Some(app) && s.app_id == app_id)
    }

    fn app_data(&mut self, i: usize, d: Data) {
        let id = u32::from(d.stream_id());
        let eos = d.is_end_stream();
        let pad = u32::from(d.is_padded());
        let data = d.into_payload();
        let len = data.len() as u32 + pad;
        let app = &mut self.apps[i];
        app.from_app -= i64::from(len);
        if app.from_app < 0 {
            tracing::debug!("an app sent past its connection window");
            return self.app_failed(i);
        }
        let Some(st) = self
            .streams
            .iter_mut()
            .find(|s| s.app == Some(i) && s.app_id == id)
        else {
            app.credit += len;
            return;
        };
        st.down.allowed -= i64::from(len);
        if st.down.allowed < 0 {
            wire::rst(&mut app.out, id, Reason::FLOW_CONTROL_ERROR.into());
            app.credit += len;
            return self.app_reset(i, id, Reason::INTERNAL_ERROR);
        }
        app.credit += pad;
        if let Some(call) = st.call.as_mut() {
            call.received(&data);
        }
        st.down.queue.push_back(data);
        st.down.end |= eos;
    }

    fn app_headers(&mut self, i: usize, h: Headers) {
        let id = u32::from(h.stream_id());
        let eos = h.is_end_stream();
        let Some(at) = self
            .streams
            .iter()
            .position(|s| s.app == Some(i) && s.app_id == id)
        else {
            return;
        };
        let st = &mut self.streams[at];
        if st.answered {
            let fields = h.into_fields();
            if let Some(call) = st.call.as_mut() {
                call.trailers(&fields);
            }
            st.down.trailers = Some(fields);
            st.down.end = true;
            return;
        }
        let (pseudo, mut fields) = h.into_parts();
        let status = pseudo.status.unwrap_or(StatusCode::BAD_GATEWAY);
        if !status.is_informational() {
            st.answered = true;
            if let Some(call) = st.call.as_mut() {
                call.answered(status, &fields);
                if eos {
                    call.trailers(&fields);
                }
                crate::proxy::response_head::tag(&mut fields);
            }
        }
        let mut b = wire::Block::new(&mut self.block);
        b.status(status);
        b.map(&fields);
        wire::headers(&mut self.out, st.id, &self.block, eos, self.max_frame);
        if eos {
            st.down.end = true;
            st.down.done = true;
        }
    }

    /// The app reset one of its streams (or refused it): the client's stream ends too.
    fn app_reset(&mut self, i: usize, app_id: u32, reason: Reason) {
        let Some(at) = self
            .streams
            .iter()
            .position(|s| s.app == Some(i) && s.app_id == app_id)
        else {
            return;
        };
        let mut st = self.streams.swap_remove(at);
        if let Some(call) = st.call.as_mut() {
            call.failed();
        }
        wire::rst(&mut self.out, st.id, reason.into());
        self.end(st, false);
    }

    /// An app connection failed, or could not be made, or the app closed it. Streams not
    /// sent yet go on another (or get a 502 when it could not be made); those whose whole
    /// answer has come go on to their end; the others end: a 502 when no answer came,
    /// else a reset.
    fn app_failed(&mut self, i: usize) {
        self.again = true;
        let was_open = matches!(self.apps[i].state, State::Open(_));
        self.apps[i].state = State::Closed;
        self.apps[i].out.clear();
        if was_open {
            self.move_waiting(i);
        }
        let mut k = 0;
        while k < self.streams.len() {
            let st = &mut self.streams[k];
            if st.app != Some(i) {
                k += 1;
                continue;
            }
            if st.down.end && st.app_id != 0 {
                st.app = None;
                st.up.queue.clear();
                st.up.done = true;
                k += 1;
                continue;
            }
            let mut st = self.streams.swap_remove(k);
            if let Some(call) = st.call.as_mut() {
                call.failed();
            }
            if st.answered {
                wire::rst(&mut self.out, st.id, Reason::INTERNAL_ERROR.into());
            } else {
                let mut b = wire::Block::new(&mut self.block);
                b.status(StatusCode::BAD_GATEWAY);
                wire::headers(&mut self.out, st.id, &self.block, true, self.max_frame);
                if !st.up.end {
                    wire::rst(&mut self.out, st.id, Reason::NO_ERROR.into());
                }
            }
            st.app = None;
            self.end(st, false);
        }
        self.apps[i].open = 0;
        self.apps[i].assigned = 0;
    }

    /// The client reset a stream (or it is over here): reset it at the app too.
    fn remove_stream(&mut self, id: u32, reason: Option<Reason>, cancelled: bool) {
        let Some(at) = self.streams.iter().position(|s| s.id == id) else {
            return;
        };
        let st = self.streams.swap_remove(at);
        if let (Some(i), Some(reason)) = (st.app, reason) {
            if st.app_id != 0 && !st.down.done {
                wire::rst(&mut self.apps[i].out, st.app_id, reason.into());
            }
        }
        self.end(st, cancelled);
    }

    /// The client is gone: every stream is reset at its app.
    fn cancel_all(&mut self) {
        while let Some(st) = self.streams.last() {
            let id = st.id;
            self.remove_stream(id, Some(Reason::CANCEL), false);
        }
    }

    /// A stream is over; a call's record goes to the inspector. One the client reset
    /// counts as cancelled (for the rapid-reset cut-off).
    fn end(&mut self, mut st: Stream, cancelled: bool) {
        if let Some(i) = st.app {
            let app = &mut self.apps[i];
            app.assigned -= 1;
            if st.app_id != 0 {
                app.open -= 1;
            }
        }
        if let Some(call) = st.call.take() {
            call.finish();
        }
        if let Some(ex) = st.exchange.take() {
            if !cancelled {
                ex.complete();
            }
        }
        if let Some(head) = st.head.take() {
            self.spare.push(head);
        }
        if let Some(i) = st.app {
            self.close_if_idle(i);
        }
    }

    /// An app connection with no streams left closes when the app said GOAWAY, or when
    /// its instance has left the route (a redeploy): its calls went to the new one.
    fn close_if_idle(&mut self, i: usize) {
        let app = &mut self.apps[i];
        if app.assigned > 0 {
            return;
        }
        if app.going_away.is_some() || app.retired(&self.ctx.routes.load()) {
            app.state = State::Closed;
            app.out.clear();
        }
    }

    /// Move what the windows allow: heads to apps with room, bodies both ways, window
    /// given back; streams that are over leave.
    fn schedule(&mut self) {
        let mut k = 0;
        while k < self.streams.len() {
            self.move_stream(k);
            let st = &self.streams[k];
            if st.up.done && st.down.done {
                let st = self.streams.swap_remove(k);
                self.end(st, false);
            } else {
                k += 1;
            }
        }
        if self.credit >= CONN_CREDIT {
            let c = std::mem::take(&mut self.credit);
            self.from_client += i64::from(c);
            wire::window_update(&mut self.out, 0, c);
        }
        for app in &mut self.apps {
            if app.credit >= CONN_CREDIT && matches!(app.state, State::Open(_)) {
                let c = std::mem::take(&mut app.credit);
                app.from_app += i64::from(c);
                wire::window_update(&mut app.out, 0, c);
            }
        }
    }

    fn move_stream(&mut self, k: usize) {
        let st = &mut self.streams[k];
        let mut app = st.app.map(|i| &mut self.apps[i]);
        if let (Some(app), true) = (app.as_deref_mut(), st.head.is_some()) {
            if !app.can_send() {
                return;
            }
            let head = st.head.take().expect("checked");
            st.app_id = app.next_id;
            app.next_id += 2;
            app.open += 1;
            st.up.window = app.stream_window;
            let end = st.up.end && st.up.queue.is_empty() && st.up.trailers.is_none();
            wire::headers(&mut app.out, st.app_id, &head, end, app.max_frame);
            st.up.done = end;
            self.spare.push(head);
        }
        // The client's body to the app; its window goes back to the client as it goes.
        if let Some(app) = app.as_deref_mut() {
            let n = st.up.pump(
                st.app_id,
                &mut app.out,
                &mut app.window,
                app.max_frame,
                &mut self.block,
            );
            st.up.credit += n;
            self.credit += n;
        }
        if let Some(c) = st.up.credit_due() {
            wire::window_update(&mut self.out, st.id, c);
        }
        // The app's body to the client; its window goes back to the app as it goes.
        let n = st.down.pump(
            st.id,
            &mut self.out,
            &mut self.window,
            self.max_frame,
            &mut self.block,
        );
        if let Some(app) = app {
            st.down.credit += n;
            app.credit += n;
            if st.app_id != 0 {
                if let Some(c) = st.down.credit_due() {
                    wire::window_update(&mut app.out, st.app_id, c);
                }
            }
        }
    }

    /// Write what waits for the client; whether all of it went.
    fn write_client(&mut self, cx: &mut Context<'_>) -> Result<bool, ConnError> {
        let io_err = |source| ConnError::Io {
            phase: "relaying HTTP/2",
            source,
        };
        let io = &mut **self.client.get_mut();
        match write_out(io, &mut self.out, cx) {
            Poll::Ready(Ok(())) => Ok(true),
            Poll::Ready(Err(e)) => Err(io_err(e)),
            Poll::Pending => Ok(false),
        }
    }

    /// Write what waits for each app.
    fn write_apps(&mut self, cx: &mut Context<'_>) {
        for i in 0..self.apps.len() {
            let app = &mut self.apps[i];
            let State::Open(codec) = &mut app.state else {
                continue;
            };
            if app.out.is_empty() {
                continue;
            }
            if let Poll::Ready(Err(e)) = write_out(codec.get_mut(), &mut app.out, cx) {
                tracing::debug!(error = %e, "writing to an app failed");
                self.app_failed(i);
            }
        }
    }

    /// Stop taking streams (the daemon stops, or the connection idled): GOAWAY, and the
    /// streams open finish.
    fn graceful(&mut self) {
        if !self.closing {
            self.closing = true;
            self.own();
            wire::goaway(&mut self.out, self.last_id, Reason::NO_ERROR.into());
        }
    }
}

/// Write `out` to `io`, and flush it (a TLS stream holds records until then).
fn write_out<T: AsyncWrite + Unpin>(
    io: &mut T,
    out: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<()>> {
    while !out.is_empty() {
        match std::task::ready!(Pin::new(&mut *io).poll_write(cx, out)) {
            Ok(0) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => out.advance(n),
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
    Pin::new(io).poll_flush(cx)
}
