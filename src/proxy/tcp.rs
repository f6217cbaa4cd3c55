//! TCP routes (dokku-ports, Portunus): the daemon listens on 127.0.0.1:LISTEN (and ::1) for
//! each route that has `tcp`, and relays every accepted connection byte for byte to the
//! route's live port. On Linux the relay uses splice(2) through a pipe (the bytes never
//! enter user space), falling back to a copy where splice is refused. Listeners follow the
//! route table: a new route binds, a removed one stops accepting while its open connections
//! finish. Counters per route: open connections, bytes in and out.

use super::ctx::Ctx;
use crate::sync::LockExt as _;
use crate::sys::splice;
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    #[error(
        "TCP port {port} is already in use{holder}; stop that program or pick another --tcp port"
    )]
    InUse { port: u16, holder: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// Per-route TCP counters (shared across table swaps, like the HTTP ones).
#[derive(Debug, Default)]
pub struct TcpStats {
    pub open: AtomicI64,
    pub total: AtomicU64,
    /// Client -> app.
    pub bytes_in: AtomicU64,
    /// App -> client.
    pub bytes_out: AtomicU64,
    /// Connections relayed with splice(2) / with the userspace copy.
    pub spliced: AtomicU64,
    pub copied: AtomicU64,
}

struct Listener {
    host: String,
    stop: CancellationToken,
    /// The accept loops; each drops its socket when it ends.
    loops: Vec<tokio::task::JoinHandle<()>>,
}

/// The daemon's TCP listeners, keyed by listen port.
#[derive(Default)]
pub struct TcpRoutes {
    listeners: Mutex<HashMap<u16, Listener>>,
    stats: Mutex<HashMap<String, Arc<TcpStats>>>,
}

impl TcpRoutes {
    pub fn stats(&self, host: &str) -> Arc<TcpStats> {
        let mut s = self.stats.locked();
        s.entry(host.to_string()).or_default().clone()
    }

    pub fn existing_stats(&self, host: &str) -> Option<Arc<TcpStats>> {
        self.stats.locked().get(host).cloned()
    }

    /// Make the listeners match the table: bind new TCP routes, stop removed ones. Returns
    /// the bind errors (the routes stay, unbound, and the error is reported to the writer).
    /// Returns once the listeners of removed routes are closed, so whoever asked for the
    /// change finds the port refusing connections.
    pub async fn reconcile(ctx: &Arc<Ctx>) -> Vec<TcpError> {
        let (errors, closing) = Self::rebind(ctx);
        for l in closing {
            let _ = l.await;
        }
        errors
    }

    /// Bind the TCP routes' ports that are new; stop the removed ones' accept loops and
    /// return them.
    fn rebind(ctx: &Arc<Ctx>) -> (Vec<TcpError>, Vec<tokio::task::JoinHandle<()>>) {
        let wanted: HashMap<u16, String> = ctx
            .routes
            .load()
            .sorted()
            .iter()
            .filter_map(|l| l.route.tcp.map(|p| (p, l.route.hostname.clone())))
            .collect();
        let mut errors = Vec::new();
        let mut closing = Vec::new();
        let mut listeners = ctx.tcp.listeners.locked();
        listeners.retain(|port, l| {
            let keep = wanted.get(port) == Some(&l.host);
            if !keep {
                info!(
                    port,
                    host = l.host,
                    "TCP route removed; no longer accepting"
                );
                l.stop.cancel();
                closing.append(&mut l.loops);
            }
            keep
        });
        for (port, host) in wanted {
            if listeners.contains_key(&port) {
                continue;
            }
            match bind(port) {
                Ok(socks) => {
                    let stop = CancellationToken::new();
                    let loops = socks
                        .into_iter()
                        .map(|sock| {
                            tokio::spawn(accept_loop(sock, ctx.clone(), host.clone(), stop.clone()))
                        })
                        .collect();
                    info!(port, host, "TCP route listening");
                    listeners.insert(port, Listener { host, stop, loops });
                }
                Err(e) => {
                    warn!(port, host, error = %e, "TCP route not bound");
                    errors.push(e);
                }
            }
        }
        (errors, closing)
    }

    pub fn stop_all(&self) {
        for l in self.listeners.locked().values() {
            l.stop.cancel();
        }
    }
}

/// 127.0.0.1:port, and [::1]:port where the machine has IPv6; SO_REUSEADDR so a restarted
/// daemon rebinds at once.
pub fn bind(port: u16) -> Result<Vec<TcpListener>, TcpError> {
    let mut out = Vec::new();
    for addr in [
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
    ] {
        let sock = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        };
        let result = sock.and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(addr)?;
            s.listen(1024)
        });
        match result {
            Ok(l) => out.push(l),
            Err(e) if addr.is_ipv6() && crate::sys::no_ipv6(&e) => {}
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                return Err(TcpError::InUse {
                    port,
                    holder: crate::sys::port_holder(port)
                        .map(|h| format!(" by {h}"))
                        .unwrap_or_default(),
                })
            }
            Err(source) => return Err(TcpError::Bind { addr, source }),
        }
    }
    Ok(out)
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>, host: String, stop: CancellationToken) {
    let mut backoff = std::time::Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((client, peer)) => {
                backoff = std::time::Duration::from_millis(5);
                let ctx = ctx.clone();
                let host = host.clone();
                tokio::spawn(async move {
                    if let Err(e) = relay(client, peer, &ctx, &host).await {
                        debug!(%peer, host, error = %e, "TCP relay ended with an error");
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "TCP accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
            }
        }
    }
}

/// Counts an open connection until dropped.
struct OpenGuard(Arc<TcpStats>);
impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

/// A connection that arrives while the app is starting waits, up to the route's hold (30 s
/// by default), until the app is live, as an HTTP request is held; it is not reset. None
/// when the route is gone or crashed, or the hold ran out.
async fn backend_when_ready(ctx: &Ctx, host: &str) -> Option<(Arc<crate::routes::Backend>, bool)> {
    // Only a held connection registers for wake-ups (Notify takes a lock).
    if let Some(found) = ctx.pick_tcp_backend(host, None) {
        return Some(found);
    }
    let mut until = None;
    loop {
        let notified = ctx.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(found) = ctx.pick_tcp_backend(host, None) {
            return Some(found);
        }
        let hold = {
            let table = ctx.routes.load();
            let live = table.lookup(host).filter(|l| l.route.hostname == host)?;
            if !live.route.is_starting() {
                return None;
            }
            if live.route.is_idle() {
                ctx.wake(host);
            }
            live.route.hold.unwrap_or(30)
        };
        let until = *until.get_or_insert_with(|| {
            tokio::time::Instant::now() + std::time::Duration::from_secs(hold)
        });
        tokio::time::timeout_at(until, notified).await.ok()?;
    }
}

async fn relay(client: TcpStream, peer: SocketAddr, ctx: &Ctx, host: &str) -> io::Result<()> {
    let Some((mut backend, proxy_protocol)) = backend_when_ready(ctx, host).await else {
        return Ok(()); // route gone, app crashed, or still not ready after the hold: close
    };
    let stats = ctx.tcp.stats(host);
    stats.open.fetch_add(1, Relaxed);
    stats.total.fetch_add(1, Relaxed);
    let _open = OpenGuard(stats.clone());
    // In a pool, an instance that died refuses the connection before anything was sent:
    // the client's connection goes to another instance instead.
    let mut upstream = loop {
        match super::app_conn::connect_loopback(backend.port, ctx.limits.connect).await {
            Ok(s) => break s,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                backend.mark_down();
                match ctx.pick_tcp_backend(host, Some(&backend)) {
                    Some((next, _)) => backend = next,
                    None => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    };
    let _inflight = backend.enter();
    let _ = client.set_nodelay(true);
    if proxy_protocol {
        let local = client.local_addr()?;
        upstream
            .write_all(proxy_v1_header(peer, local).as_bytes())
            .await?;
    }
    relay_streams(client, upstream, &stats).await
}

fn proxy_v1_header(peer: SocketAddr, local: SocketAddr) -> String {
    let fam = if peer.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {fam} {} {} {} {}\r\n",
        peer.ip().to_canonical(),
        local.ip().to_canonical(),
        peer.port(),
        local.port()
    )
}

/// Relay both directions until both are done; splice where the kernel allows it.
pub async fn relay_streams(a: TcpStream, b: TcpStream, stats: &Arc<TcpStats>) -> io::Result<()> {
    let a = Arc::new(a);
    let b = Arc::new(b);
    if splice::enabled() {
        match splice::Pipe::new() {
            Ok(p1) => {
                if let Ok(p2) = splice::Pipe::new() {
                    stats.spliced.fetch_add(1, Relaxed);
                    let up = splice_one_way(a.clone(), b.clone(), p1, &stats.bytes_in);
                    let down = splice_one_way(b.clone(), a.clone(), p2, &stats.bytes_out);
                    let (r1, r2) = tokio::join!(up, down);
                    return r1.and(r2);
                }
            }
            Err(e) => debug!(error = %e, "no pipe for splice; copying instead"),
        }
    }
    stats.copied.fetch_add(1, Relaxed);
    let up = copy_one_way(a.clone(), b.clone(), &stats.bytes_in);
    let down = copy_one_way(b, a, &stats.bytes_out);
    let (r1, r2) = tokio::join!(up, down);
    r1.and(r2)
}

/// socket -> pipe -> socket until the end of the stream, then half-close.
async fn splice_one_way(
    from: Arc<TcpStream>,
    to: Arc<TcpStream>,
    mut pipe: splice::Pipe,
    counter: &AtomicU64,
) -> io::Result<()> {
    splice::pump(&from, &to, &mut pipe, u64::MAX, Some(counter)).await?;
    shutdown_write(&to);
    Ok(())
}

/// The portable fallback: read into a buffer, write it out, count as we go.
async fn copy_one_way(
    from: Arc<TcpStream>,
    to: Arc<TcpStream>,
    counter: &AtomicU64,
) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        from.readable().await?;
        let n = match from.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let mut off = 0;
        while off < n {
            to.writable().await?;
            match to.try_write(&buf[off..n]) {
                Ok(w) => off += w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        counter.fetch_add(n as u64, Relaxed);
    }
    shutdown_write(&to);
    Ok(())
}

/// Half-close, so the peer sees EOF and may still answer.
fn shutdown_write(s: &TcpStream) {
    crate::sys::shutdown_write(s);
}

/// A TCP listen port must be free (unless this route already has it) and must not be the
/// proxy's own port or the target itself.
pub fn check_listen_port(
    state: &crate::state::StateDir,
    host: &str,
    listen: u16,
    proxy_port: u16,
    target: u16,
) -> anyhow::Result<()> {
    if listen == 0 || listen == proxy_port || listen == target {
        anyhow::bail!(crate::ui::UsageError(format!(
            "--tcp {listen}: pick a free port other than 0, the proxy's port ({proxy_port}) and the target ({target})"
        )));
    }
    let ours = crate::routes::store::load(state)
        .unwrap_or_default()
        .iter()
        .any(|r| r.hostname == host && r.tcp == Some(listen));
    let taken_by_route = crate::routes::store::load(state)
        .unwrap_or_default()
        .into_iter()
        .find(|r| r.hostname != host && r.tcp == Some(listen));
    if let Some(r) = taken_by_route {
        anyhow::bail!("TCP port {listen} is already the listen port of {}; remove that route or pick another port", r.hostname);
    }
    if !ours {
        // Bind (and release) once, so a taken port is reported before anything is written.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async { bind(listen).map(drop) })?;
    }
    Ok(())
}
