//! The bytes after the heads: a request body streamed from the client to the app, the
//! app's response body relayed to the client (its first bytes came with the head), and the
//! client's side watched while the app answers.

use super::super::app_conn::Framing;
use super::super::chunked::push_chunk;
use super::super::conn::{ClientIo, RawTcp};
use super::super::ctx::ConnError;
use bytes::BytesMut;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bodies longer than this move with splice(2) when the client connection is plain TCP.
pub(super) const SPLICE_MIN: u64 = 256 * 1024;
/// The copy buffer for a long body that cannot be spliced.
const BULK: usize = 64 * 1024;

/// Resolves when the client closes its side (or its connection fails) with nothing more
/// to answer; meanwhile whatever it sends (a pipelined request) is kept in `buf`, up to
/// `cap` bytes. The first `mine` bytes of `buf` are the request being answered: a client
/// that pipelined more requests and then half-closed still gets its answers, as hyper does.
pub(super) async fn client_gone<I: AsyncRead + RawTcp + Unpin>(
    io: &mut ClientIo<I>,
    buf: &mut BytesMut,
    cap: usize,
    mine: usize,
    half_closed: &mut bool,
) {
    loop {
        if buf.len() >= cap || *half_closed {
            return std::future::pending().await;
        }
        match read_some(io, buf).await {
            // It sent its last request and said so: every one it sent gets its answer.
            Ok(0) if buf.len() > mine => *half_closed = true,
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Resolves when the client's socket reports its side closed, without reading from it
/// (for a splice, which writes to the same socket meanwhile).
pub(super) async fn client_closed(client: &TcpStream) {
    if let Ok(r) = client.ready(tokio::io::Interest::READABLE).await {
        if !r.is_read_closed() {
            // More bytes (a pipelined request) are not an end: wait for the splice.
            std::future::pending::<()>().await;
        }
    }
}

/// The rest of a long request body, from the client straight to the app.
pub(super) async fn send_body<I: AsyncRead + RawTcp + Unpin>(
    io: &mut ClientIo<I>,
    up: &mut TcpStream,
    mut left: u64,
) -> io::Result<()> {
    let cut_off = || {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the client's body ended early",
        )
    };
    if left >= SPLICE_MIN && crate::sys::splice::enabled() {
        if let (Some(client), Ok(mut pipe)) = (io.raw_tcp(), crate::sys::splice::Pipe::new()) {
            let moved = crate::sys::splice::pump(client, up, &mut pipe, left, None).await?;
            return if moved == left {
                Ok(())
            } else {
                Err(cut_off())
            };
        }
    }
    let mut buf = vec![0u8; BULK.min(left as usize)];
    while left > 0 {
        let want = (left as usize).min(buf.len());
        let n = io.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(cut_off());
        }
        up.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    Ok(())
}

/// A read from the client into `buf`, growing it when full.
pub(super) async fn read_some<I: AsyncRead + RawTcp + Unpin>(
    io: &mut ClientIo<I>,
    buf: &mut BytesMut,
) -> Result<usize, ConnError> {
    if buf.capacity() - buf.len() < 1024 {
        // A plain connection gets its buffer once there is something to read.
        if let Some(tcp) = io.raw_tcp() {
            tcp.readable().await.map_err(|source| ConnError::Io {
                phase: "reading from the client",
                source,
            })?;
        }
        buf.reserve(4096);
    }
    io.read_buf(buf).await.map_err(|source| ConnError::Io {
        phase: "reading from the client",
        source,
    })
}

pub(super) async fn write_client<I: AsyncWrite + Unpin>(
    io: &mut ClientIo<I>,
    bytes: &[u8],
) -> io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

/// Copy the rest of the body from the app to the client. Ok(true): it ended as framed;
/// Ok(false): it ended, but the connection cannot be reused.
/// `client`: where the client's next bytes go meanwhile, and how many to keep; if the
/// client closes while the app is quiet (an event stream nobody reads any more), the
/// relay stops.
pub(super) async fn relay_body<I: AsyncRead + AsyncWrite + RawTcp + Unpin>(
    io: &mut ClientIo<I>,
    up: &mut TcpStream,
    buf: &mut Vec<u8>,
    framing: &mut Framing,
    out: &mut Vec<u8>,
    client: (&mut BytesMut, usize, &mut bool),
    bytes_out: &mut u64,
) -> io::Result<bool> {
    let (client_buf, cap, half_closed) = client;
    if let Framing::Length(left) = framing {
        if *left >= SPLICE_MIN && crate::sys::splice::enabled() {
            if let (Some(client), Ok(mut pipe)) = (io.raw_tcp(), crate::sys::splice::Pipe::new()) {
                let moved = tokio::select! {
                    biased;
                    r = crate::sys::splice::pump(up, client, &mut pipe, *left, None) => r?,
                    _ = client_closed(client), if client_buf.is_empty() && !*half_closed => {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "the client left",
                        ));
                    }
                };
                *left -= moved;
                *bytes_out += moved;
                if *left > 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the app closed the connection mid-body",
                    ));
                }
                return Ok(true);
            }
        }
        if *left > buf.len() as u64 {
            buf.resize(BULK, 0);
        }
    }
    loop {
        let want = match framing {
            Framing::Length(0) | Framing::None => return Ok(true),
            Framing::Length(n) => (*n).min(buf.len() as u64) as usize,
            _ => buf.len(),
        };
        let n = tokio::select! {
            biased;
            r = up.read(&mut buf[..want]) => r?,
            _ = client_gone(io, client_buf, cap, 0, half_closed) => {
                return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the client left"));
            }
        };
        let got = &buf[..n];
        *bytes_out += n as u64;
        match framing {
            Framing::None => return Ok(true),
            Framing::Length(left) => {
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the app closed the connection mid-body",
                    ));
                }
                write_client(io, got).await?;
                *left -= n as u64;
            }
            Framing::Chunked(dec) => {
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the app closed the connection mid-body",
                    ));
                }
                match dec.feed(got) {
                    Ok(Some(end)) => {
                        write_client(io, &got[..end]).await?;
                        return Ok(end == n);
                    }
                    Ok(None) => write_client(io, got).await?,
                    Err(()) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "the app's chunked body is malformed",
                        ))
                    }
                }
            }
            Framing::UntilClose => {
                out.clear();
                if n == 0 {
                    write_client(io, b"0\r\n\r\n").await?;
                    return Ok(false);
                }
                push_chunk(out, got);
                write_client(io, out).await?;
            }
        }
    }
}
/// The body's first bytes, read with the app's response head, put after the client's head
/// in `out` as `framing` delimits them. Returns whether the body ends there, and whether
/// nothing followed it (so the app connection can be kept); Err for a malformed chunk
/// (`out` then holds them as they came).
pub(super) fn first_bytes(
    out: &mut Vec<u8>,
    framing: &mut Framing,
    first: &[u8],
) -> Result<(bool, bool), ()> {
    Ok(match framing {
        Framing::None => (true, first.is_empty()),
        Framing::Length(left) => {
            let take = (*left).min(first.len() as u64) as usize;
            out.extend_from_slice(&first[..take]);
            *left -= take as u64;
            (*left == 0, first.len() == take)
        }
        Framing::Chunked(dec) => match dec.feed(first) {
            Ok(Some(n)) => {
                out.extend_from_slice(&first[..n]);
                (true, n == first.len())
            }
            Ok(None) => {
                out.extend_from_slice(first);
                (false, true)
            }
            Err(()) => {
                out.extend_from_slice(first);
                return Err(());
            }
        },
        Framing::UntilClose => {
            if !first.is_empty() {
                push_chunk(out, first);
            }
            (false, true)
        }
    })
}
