//! A tiny app for trying portok: an HTTP server on $PORT (default 3000) with `/`, `/health`
//! and `/slow?ms=N`. Edit GREETING and save to watch `portok hello ...` redeploy it.
//!
//! ```sh
//! portok hello cargo run --example hello
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const GREETING: &str = "Hello from portok's example app";

fn main() {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let listener = TcpListener::bind((host.as_str(), port)).unwrap_or_else(|e| {
        eprintln!("hello: cannot listen on {host}:{port}: {e}");
        std::process::exit(1);
    });
    let started = Instant::now();
    let version = std::env::var("HELLO_VERSION").unwrap_or_else(|_| "1".into());
    eprintln!(
        "hello: listening on http://{host}:{port} (pid {})",
        std::process::id()
    );
    for stream in listener.incoming().flatten() {
        let version = version.clone();
        std::thread::spawn(move || {
            let _ = serve(stream, &version, started);
        });
    }
}

/// HTTP/1.1 with keep-alive, enough for a demo and for portok's tests.
fn serve(stream: TcpStream, version: &str, started: Instant) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        std::io::Read::read_exact(&mut reader, &mut body)?;
        let (status, ctype, text) = if path == "/health" {
            ("200 OK", "text/plain", "ok\n".to_string())
        } else if let Some(ms) = path.strip_prefix("/slow?ms=") {
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(100)));
            (
                "200 OK",
                "text/plain",
                format!("slow done (version {version})\n"),
            )
        } else {
            (
                "200 OK",
                "text/html; charset=utf-8",
                format!(
                    "<!doctype html><title>hello</title><h1>{GREETING}</h1><p>version {version}, pid {}, up {}s</p>\n",
                    std::process::id(),
                    started.elapsed().as_secs()
                ),
            )
        };
        write!(
            out,
            "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nx-hello-pid: {}\r\n\r\n{text}",
            text.len(),
            std::process::id()
        )?;
    }
}
