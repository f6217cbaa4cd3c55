//! The requests of one HTTP/2 connection, run inside the connection's own task.
//!
//! hyper's h2 server hands every stream (request) to an executor. With tokio's, that is a
//! task per stream: an allocation, a trip through the scheduler, and a wake-up of the
//! connection's task each time a stream moves. On one connection with 50 streams in flight
//! and the daemon on one core, a prototype served 31k req/s with a task per stream and 42k
//! with the streams polled in the connection's task (h2load -c1 -m50; HTTP/1.1 over TLS did
//! 39k in the same run). So [`LocalStreams`] is the executor: it only queues the stream,
//! and [`WithStreams`] polls the queued streams right after the connection, in one task.
//!
//! Nothing in a stream blocks the thread (they are the same futures a spawned task would
//! run), so one connection's streams only ever wait on each other's polls. A tunnel (h2
//! extended CONNECT) copies in a task of its own (`upgrade::send_upgrade`); hyper's half that
//! feeds the client's h2 stream is queued here like a stream.

use crate::sync::LockExt as _;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Turns of the connection per poll, and streams finished between two turns.
/// Streams finished between two turns of the connection, and turns per poll at most.
///
/// Every turn writes the answers finished so far. A client keeps its streams busy by sending
/// a request for each answer it reads, so answers written a batch at a time reach it while
/// the rest are still being answered, and both sides work at once; written all together
/// (50 in one write), the two took turns and the daemon's core idled. The bound on turns
/// keeps a busy connection from holding the thread.
const BATCH: usize = 16;
const TURNS: usize = 8;

/// The executor given to one connection's hyper h2 server: streams wait here until the
/// connection's [`WithStreams`] adopts them.
#[derive(Clone, Default)]
pub struct LocalStreams {
    queue: Arc<Mutex<Queue>>,
}

#[derive(Default)]
struct Queue {
    new: Vec<Stream>,
    /// The connection's task. hyper starts streams while it is being polled by that task, so
    /// this is only a safety net: a stream queued from anywhere else still gets polled.
    waker: Option<Waker>,
}

impl LocalStreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.locked()
    }
}

impl<F> hyper::rt::Executor<F> for LocalStreams
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        let mut q = self.lock();
        q.new.push(Box::pin(stream));
        if let Some(w) = q.waker.take() {
            w.wake();
        }
    }
}

/// A connection future together with the streams it started. It ends when the connection
/// does; streams still running then are dropped (their requests to apps are cancelled), as
/// they could not send anything more.
pub struct WithStreams<C> {
    conn: Pin<Box<C>>,
    /// The waker the connection is polled with: it notes that the connection asked to be
    /// polled (its socket is ready, or a stream gave it something to write).
    conn_waker: Waker,
    conn_wake: Arc<ConnWake>,
    streams: FuturesUnordered<Stream>,
    queue: LocalStreams,
}

/// The connection's own wake-ups, kept apart from its streams': the task is polled for
/// either, and the connection only when it asked (about 1,000 instructions of an h2
/// connection's poll saved on each wake-up that was for a stream alone).
#[derive(Default)]
struct ConnWake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for ConnWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<C> WithStreams<C> {
    pub fn new(conn: C, queue: LocalStreams) -> Self {
        let conn_wake = Arc::new(ConnWake {
            // Polled first without being asked: a future's first poll starts it.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        WithStreams {
            conn: Box::pin(conn),
            conn_waker: Waker::from(conn_wake.clone()),
            conn_wake,
            streams: FuturesUnordered::new(),
            queue,
        }
    }

    /// The connection itself (for its graceful shutdown), polled again on the next poll.
    pub fn conn(self: Pin<&mut Self>) -> Pin<&mut C> {
        let this = self.get_mut();
        this.conn_wake.woken.store(true, Ordering::Release);
        this.conn.as_mut()
    }
}

impl<C> Drop for WithStreams<C> {
    /// Streams queued but not adopted hold the executor (hyper keeps a clone in each), which
    /// holds them: without this a connection that ended in the same poll that queued one (a
    /// request then a connection error or EOF in one read) would never be freed.
    fn drop(&mut self) {
        let (new, waker) = {
            let mut q = self.queue.lock();
            (std::mem::take(&mut q.new), q.waker.take())
        };
        drop(new);
        drop(waker);
    }
}

impl<C: Future> Future for WithStreams<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = self.get_mut();
        // Streams queued while the connection is polled are adopted right after it, so
        // the waker is out of the queue meanwhile: queuing them must not wake this task.
        let waker = this.queue.lock().waker.take();
        this.conn_wake.task.register(cx.waker());
        // The streams go first: a wake-up by a stream (the app's answer came) needs no read
        // of the connection before it, only a write after. Then the connection, when it
        // asked to be polled, and again while that started streams or the streams finished
        // any: a stream that sent part of its response wakes the connection (to write it),
        // so another turn of the connection after the streams moved saves a trip through
        // the scheduler.
        let mut more = false;
        for turn in 0..TURNS {
            let new = std::mem::take(&mut this.queue.lock().new);
            let mut moved = !new.is_empty();
            this.streams.extend(new);
            let mut done = 0;
            more = false;
            while let Poll::Ready(Some(())) = this.streams.poll_next_unpin(cx) {
                moved = true;
                done += 1;
                if done == BATCH {
                    more = true;
                    break;
                }
            }
            if turn > 0 && !moved {
                break;
            }
            if !this.conn_wake.woken.swap(false, Ordering::AcqRel) {
                break;
            }
            let mut conn_cx = Context::from_waker(&this.conn_waker);
            if let Poll::Ready(out) = this.conn.as_mut().poll(&mut conn_cx) {
                return Poll::Ready(out);
            }
        }
        // Finished streams left for the next poll: it must come.
        if more {
            cx.waker().wake_by_ref();
        }
        let mut q = this.queue.lock();
        q.waker = match waker {
            Some(w) if w.will_wake(cx.waker()) => Some(w),
            _ => Some(cx.waker().clone()),
        };
        // Queued by a stream just polled (an upgrade's half): adopted on the next poll.
        if !q.new.is_empty() {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;

    /// Streams queued while the connection is polled run in the same poll; the whole ends
    /// with the connection, and a stream queued from outside wakes it.
    #[tokio::test]
    async fn streams_run_in_the_connections_task() {
        let exec = LocalStreams::default();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let inner = exec.clone();
        let conn = async move {
            for i in 0..3 {
                let tx = tx.clone();
                inner.execute(async move {
                    tokio::task::yield_now().await;
                    tx.send(i).unwrap();
                });
            }
            done_rx.await.unwrap();
            7u8
        };
        let outside = exec.clone();
        let task = tokio::spawn(WithStreams::new(conn, exec));
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(rx.recv().await.unwrap());
        }
        got.sort();
        assert_eq!(got, [0, 1, 2]);
        let (late_tx, late_rx) = tokio::sync::oneshot::channel();
        outside.execute(async move {
            late_tx.send(()).unwrap();
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), late_rx)
            .await
            .expect("a stream queued from outside was never polled")
            .unwrap();
        done_tx.send(()).unwrap();
        assert_eq!(task.await.unwrap(), 7);
    }

    /// More streams finishing at once than one poll takes (TURNS x BATCH) all finish: the
    /// connection's task is woken again for the rest.
    #[tokio::test]
    async fn streams_beyond_one_polls_share_all_finish() {
        let exec = LocalStreams::default();
        let count = 3 * TURNS * BATCH;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let inner = exec.clone();
        let conn = async move {
            for i in 0..count {
                let tx = tx.clone();
                inner.execute(async move {
                    tx.send(i).unwrap();
                });
            }
            done_rx.await.unwrap();
        };
        let task = tokio::spawn(WithStreams::new(conn, exec));
        for _ in 0..count {
            tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
                .await
                .expect("a finished stream was left unpolled")
                .unwrap();
        }
        done_tx.send(()).unwrap();
        task.await.unwrap();
    }

    /// A stream queued in the poll where the connection ends is never run, and it is freed
    /// with the connection even though it holds the executor (as hyper's streams do).
    #[tokio::test]
    async fn a_stream_queued_as_the_connection_ends_is_freed() {
        let exec = LocalStreams::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let inner = exec.clone();
        let conn = async move {
            let held = inner.clone();
            inner.execute(async move {
                let _held = held;
                let _ = tx.send(());
            });
        };
        WithStreams::new(conn, exec).await;
        // The sender was dropped unsent: the stream was freed, not run and not leaked.
        let freed = tokio::time::timeout(std::time::Duration::from_secs(5), rx)
            .await
            .expect("the queued stream was leaked");
        assert!(freed.is_err(), "the queued stream ran");
    }
}
