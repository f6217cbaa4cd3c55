//! splice(2) between two TCP sockets through a pipe (Linux): the bytes move between kernel
//! buffers and never enter user space. Used by TCP routes and by the HTTP/1.1 fast path for
//! large bodies; each caller falls back to a copy where this is refused.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// A new pipe holds 64 KiB (Linux's default).
const FIRST_CHUNK: usize = 64 * 1024;
/// A stream that fills the pipe gets one this big: 16 times fewer system calls and
/// wake-ups per byte. Only bulk streams grow, so many small connections do not eat into
/// the per-user pipe allowance (fs.pipe-user-pages-soft).
const BULK_CHUNK: usize = 1024 * 1024;

/// `PORTOK_NO_SPLICE=1` in the daemon's environment: always copy (to compare the two).
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("PORTOK_NO_SPLICE").is_none())
}

pub struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    size: usize,
    grown: bool,
}

impl Pipe {
    pub fn new() -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fds on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the fds are fresh and ours.
        Ok(unsafe {
            Pipe {
                r: OwnedFd::from_raw_fd(fds[0]),
                w: OwnedFd::from_raw_fd(fds[1]),
                size: FIRST_CHUNK,
                grown: false,
            }
        })
    }

    /// Grow to [`BULK_CHUNK`] (or as much as the system allows); call when empty.
    fn grow(&mut self) {
        self.grown = true;
        // SAFETY: fcntl on our own pipe fd.
        let got = unsafe { libc::fcntl(self.w.as_raw_fd(), libc::F_SETPIPE_SZ, BULK_CHUNK as i32) };
        // Refused (a lower pipe-max-size, or the user's allowance used up): keep 64 KiB.
        self.size = if got > 0 { got as usize } else { FIRST_CHUNK };
    }
}

fn splice_raw(from: i32, to: i32, len: usize) -> io::Result<usize> {
    // SAFETY: plain syscall on fds we hold open for the duration.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Move up to `limit` bytes socket -> pipe -> socket (fewer if `from` ends first), with
/// readiness from tokio so nothing blocks a thread; the bytes moved. Never reads past
/// `limit`, so what follows on `from` (the next message) stays there. The pipe is empty
/// again when this returns Ok.
pub async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &mut Pipe,
    limit: u64,
    counter: Option<&AtomicU64>,
) -> io::Result<u64> {
    let mut moved = 0u64;
    while moved < limit {
        let want = (limit - moved).min(pipe.size as u64) as usize;
        let n = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || {
                splice_raw(from.as_raw_fd(), pipe.w.as_raw_fd(), want)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            break;
        }
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice_raw(pipe.r.as_raw_fd(), to.as_raw_fd(), left)
            }) {
                Ok(w) => left -= w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        moved += n as u64;
        if let Some(c) = counter {
            c.fetch_add(n as u64, Relaxed);
        }
        // The pipe is empty now; a full read means a bulk stream.
        if n == pipe.size && !pipe.grown {
            pipe.grow();
        }
    }
    Ok(moved)
}
