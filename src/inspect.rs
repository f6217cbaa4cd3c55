//! The request inspector's memory: the last N requests of each route, in a ring of slots
//! whose buffers are reused, so that once the ring has gone round, capturing a request
//! allocates nothing. The proxy writes a slot when a request's response head goes out;
//! viewers (the dashboard, `portok inspect`) copy slots out and do all the parsing.
//!
//! What is kept of a request is the app's side of it: the request head portok wrote for
//! the app (with its forwarding headers) and the response head the app wrote (portok's own
//! when portok answered), as HTTP/1 text, and with body capture on, the first [`BODY_CAP`]
//! bytes of each body.

use crate::sync::LockExt;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

/// How much of each body is kept when body capture is on.
pub const BODY_CAP: usize = 64 * 1024;
/// Requests kept per route unless the daemon is told otherwise (`--inspect-capacity`).
pub const DEFAULT_CAPACITY: usize = 200;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum Version {
    #[serde(rename = "HTTP/1.0")]
    Http10,
    #[default]
    #[serde(rename = "HTTP/1.1")]
    Http11,
    #[serde(rename = "HTTP/2")]
    H2,
}

/// A body as kept: its first bytes, and how long it was in all (None: not known, e.g. the
/// response was still streaming when it was recorded).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub total: Option<u64>,
}

/// What a gRPC call adds to its record: the call's status (from its trailers, or its
/// headers for a trailers-only answer) and the messages each way.
#[derive(Debug, Clone, Default)]
pub struct Grpc {
    pub status: Option<u16>,
    pub message: String,
    /// Counted by the request body on its way to the app, which may end after the record
    /// is taken over by the response.
    pub messages_in: Arc<AtomicU32>,
    pub messages_out: u32,
}

/// One request. `id` 0 is a slot never written.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub id: u64,
    /// When the request arrived (made a wall-clock time only when viewed: [`Record::time_ms`]).
    pub arrived: Option<std::time::Instant>,
    /// Until the response head went out.
    pub duration_us: u64,
    pub status: u16,
    pub bytes_in: u64,
    /// The response head and the body's length when known (0 when not).
    pub bytes_out: u64,
    pub client: Option<std::net::IpAddr>,
    pub version: Version,
    pub tls: bool,
    pub generation: u64,
    pub port: u16,
    /// The request head the app received, then the response head the app wrote.
    pub heads: Vec<u8>,
    /// Where the response head starts in `heads`.
    pub split: usize,
    pub request_body: Option<Body>,
    pub response_body: Option<Body>,
    /// A gRPC call's view; then `duration_us` runs until the call's end, not its head.
    pub grpc: Option<Grpc>,
}

impl Record {
    /// Unix time in milliseconds, when the request arrived (0 for a slot never written).
    pub fn time_ms(&self) -> u64 {
        self.arrived.map_or(0, unix_ms)
    }

    pub fn request_head(&self) -> &[u8] {
        &self.heads[..self.split.min(self.heads.len())]
    }
    pub fn response_head(&self) -> &[u8] {
        &self.heads[self.split.min(self.heads.len())..]
    }
}

/// Unix milliseconds of `at`, from one reading of the wall clock for the process.
fn unix_ms(at: std::time::Instant) -> u64 {
    static BASE: OnceLock<(std::time::Instant, u64)> = OnceLock::new();
    let (base, base_ms) = *BASE.get_or_init(|| {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        (std::time::Instant::now(), ms)
    });
    match at.checked_duration_since(base) {
        Some(d) => base_ms + d.as_millis() as u64,
        None => base_ms.saturating_sub(base.duration_since(at).as_millis() as u64),
    }
}

/// One route's requests.
pub struct Ring {
    slots: Box<[Mutex<Record>]>,
    next: AtomicU64,
    /// Viewers following live: only then does a push wake anyone.
    pub viewers: AtomicUsize,
    pub pushed: tokio::sync::Notify,
    /// Body capture, on by `portok run --inspect-bodies` or the dashboard's toggle.
    pub bodies: AtomicBool,
}

impl Ring {
    pub fn new(capacity: usize) -> Self {
        Ring {
            slots: (0..capacity.max(1))
                .map(|_| Mutex::new(Record::default()))
                .collect(),
            next: AtomicU64::new(0),
            viewers: AtomicUsize::new(0),
            pushed: tokio::sync::Notify::new(),
            bodies: AtomicBool::new(false),
        }
    }

    /// Record a request: `record` is moved into the next slot and gets that slot's old
    /// record back (cleared), so its buffers can be used for the next request.
    pub fn push(&self, record: &mut Record) {
        let id = self.next.fetch_add(1, Relaxed) + 1;
        record.id = id;
        {
            let slot = &self.slots[((id - 1) % self.slots.len() as u64) as usize];
            let mut slot = slot.locked();
            std::mem::swap(&mut *slot, record);
        }
        record.heads.clear();
        record.request_body = None;
        record.response_body = None;
        record.grpc = None;
        if self.viewers.load(Relaxed) > 0 {
            self.pushed.notify_waiters();
        }
    }

    /// The requests with an id above `after`, oldest first (copies).
    pub fn since(&self, after: u64) -> Vec<Record> {
        let mut v: Vec<Record> = self
            .slots
            .iter()
            .filter_map(|s| {
                let r = s.locked();
                (r.id > after).then(|| r.clone())
            })
            .collect();
        v.sort_by_key(|r| r.id);
        v
    }

    pub fn get(&self, id: u64) -> Option<Record> {
        if id == 0 {
            return None;
        }
        let slot = &self.slots[((id - 1) % self.slots.len() as u64) as usize];
        let r = slot.locked();
        (r.id == id).then(|| r.clone())
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// How many requests it holds, and the bytes their buffers take.
    pub fn usage(&self) -> (usize, usize) {
        let mut n = 0;
        let mut bytes = self.slots.len() * std::mem::size_of::<Mutex<Record>>();
        for s in self.slots.iter() {
            let r = s.locked();
            n += (r.id != 0) as usize;
            bytes += r.heads.capacity()
                + r.request_body.as_ref().map_or(0, |b| b.bytes.capacity())
                + r.response_body.as_ref().map_or(0, |b| b.bytes.capacity());
        }
        (n, bytes)
    }
}

/// A route's ring, made on its first request with the daemon's capacity.
#[derive(Default)]
pub struct Slot(OnceLock<Ring>);

impl Slot {
    pub fn get_or_init(&self, capacity: usize) -> &Ring {
        self.0.get_or_init(|| Ring::new(capacity))
    }
    pub fn get(&self) -> Option<&Ring> {
        self.0.get()
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("inspect::Slot")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_n_and_hands_buffers_back() {
        let ring = Ring::new(3);
        let mut r = Record::default();
        for i in 1..=5u16 {
            r.status = 200 + i;
            r.heads
                .extend_from_slice(b"GET / HTTP/1.1\r\n\r\nHTTP/1.1 200 OK\r\n\r\n");
            r.split = 18;
            ring.push(&mut r);
            assert!(r.heads.is_empty());
        }
        let kept: Vec<u16> = ring.since(0).iter().map(|r| r.status).collect();
        assert_eq!(kept, [203, 204, 205]);
        assert_eq!(ring.since(4).len(), 1);
        assert_eq!(
            ring.get(5).unwrap().request_head(),
            b"GET / HTTP/1.1\r\n\r\n"
        );
        assert!(ring.get(1).is_none(), "overwritten");
        assert!(ring.get(9).is_none());
        // The buffer handed back is a used one: no allocation for the next request.
        assert!(r.heads.capacity() > 0);
        assert_eq!(ring.usage().0, 3);
    }
}
