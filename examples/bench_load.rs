//! The harness's built-in load generator (bench/run.sh and bench/guard.sh use it when wrk or
//! h2load is missing): N keep-alive connections for a fixed time, each sending the next GET
//! as soon as the previous answer is read (like wrk), then one JSON line on stdout with
//! requests/s and latency percentiles.
//!
//! ```sh
//! bench_load http://127.0.0.1:18084/ -c 50 -d 10s -H 'Host: myapp.localhost'
//! bench_load https://myapp.localhost:18084/ -c 50 -d 10s            # HTTP/1.1 over TLS, SNI myapp.localhost
//! bench_load https://myapp.localhost:18084/ --h2 -c 1 -m 50 -d 10s  # HTTP/2, 50 streams on 1 connection
//! ```
//!
//! Only loopback: the URL's host must be 127.0.0.1, ::1, localhost or NAME.localhost (which
//! connect to 127.0.0.1 and are sent as SNI and Host). Certificates are not verified.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

#[derive(Clone)]
struct Opts {
    addr: SocketAddr,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    h2: bool,
    conns: usize,
    streams: usize,
    duration: Duration,
    timeout: Duration,
    /// h1: the request target (path); h2: the absolute URI (its authority is :authority).
    uri: Uri,
    host: HeaderValue,
    headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Default)]
struct Stats {
    lat_ns: Vec<u64>,
    ok: u64,
    non2xx: u64,
    errors: u64,
    bytes: u64,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.lat_ns.extend(o.lat_ns);
        self.ok += o.ok;
        self.non2xx += o.non2xx;
        self.errors += o.errors;
        self.bytes += o.bytes;
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: bench_load URL [-c CONNS=50] [-d DURATION=10s] [-H 'Name: value']... [--h2] [-m STREAMS=1]\n\
         \x20                [--threads N=1] [--timeout 5s]\n\
         URL: http:// or https:// to 127.0.0.1, [::1], localhost or NAME.localhost"
    );
    std::process::exit(2)
}

fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, mult) = if let Some(v) = s.strip_suffix("ms") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('m') {
        (v, 60.0)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>()
        .ok()
        .filter(|v| *v >= 0.0)
        .map(|v| Duration::from_secs_f64(v * mult))
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector(h2: bool) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

fn parse_args() -> (Opts, usize) {
    let mut url: Option<String> = None;
    let (mut conns, mut streams, mut threads) = (50usize, 1usize, 1usize);
    let mut duration = Duration::from_secs(10);
    let mut timeout = Duration::from_secs(5);
    let mut h2 = false;
    let mut raw_headers: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "-c" => conns = val().parse().unwrap_or_else(|_| usage()),
            "-m" => streams = val().parse().unwrap_or_else(|_| usage()),
            "-t" | "--threads" => threads = val().parse().unwrap_or_else(|_| usage()),
            "-d" => duration = parse_duration(&val()).unwrap_or_else(|| usage()),
            "--timeout" => timeout = parse_duration(&val()).unwrap_or_else(|| usage()),
            "-H" => raw_headers.push(val()),
            "--h2" => h2 = true,
            "-h" | "--help" => usage(),
            s if s.starts_with("http://") || s.starts_with("https://") => url = Some(s.into()),
            _ => usage(),
        }
    }
    let url: Uri = url
        .unwrap_or_else(|| usage())
        .parse()
        .unwrap_or_else(|_| usage());
    let https = url.scheme_str() == Some("https");
    let host = url.host().unwrap_or_else(|| usage()).to_string();
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = match bare {
        "localhost" => Ipv4Addr::LOCALHOST.into(),
        h if h.ends_with(".localhost") => Ipv4Addr::LOCALHOST.into(),
        h => match h.parse::<IpAddr>() {
            Ok(ip) if ip == IpAddr::from(Ipv4Addr::LOCALHOST) => ip,
            Ok(ip) if ip == IpAddr::from(Ipv6Addr::LOCALHOST) => ip,
            _ => {
                eprintln!("bench_load: only loopback targets are allowed (got {host})");
                std::process::exit(2)
            }
        },
    };
    let mut host_hdr = url
        .authority()
        .map(|a| a.to_string())
        .unwrap_or(host.clone());
    let mut headers = Vec::new();
    for h in raw_headers {
        let Some((n, v)) = h.split_once(':') else {
            usage()
        };
        let (n, v) = (n.trim(), v.trim());
        if n.eq_ignore_ascii_case("host") {
            host_hdr = v.to_string();
            continue;
        }
        headers.push((
            HeaderName::from_bytes(n.as_bytes()).unwrap_or_else(|_| usage()),
            HeaderValue::from_str(v).unwrap_or_else(|_| usage()),
        ));
    }
    let pq = url.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let uri: Uri = if h2 {
        format!("{}://{host_hdr}{pq}", if https { "https" } else { "http" })
            .parse()
            .unwrap_or_else(|_| usage())
    } else {
        pq.parse().unwrap_or_else(|_| usage())
    };
    let tls = https.then(|| {
        let sni = match bare.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(bare.to_string()).unwrap_or_else(|_| usage()),
        };
        (tls_connector(h2), sni)
    });
    let o = Opts {
        addr: SocketAddr::new(ip, port),
        tls,
        h2,
        conns: conns.max(1),
        streams: streams.max(1),
        duration,
        timeout,
        uri,
        host: HeaderValue::from_str(&host_hdr).unwrap_or_else(|_| usage()),
        headers,
    };
    (o, threads.max(1))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn connect(o: &Opts) -> Result<Box<dyn Io>, Box<dyn std::error::Error + Send + Sync>> {
    let tcp = tokio::time::timeout(o.timeout, TcpStream::connect(o.addr)).await??;
    tcp.set_nodelay(true)?;
    match &o.tls {
        None => Ok(Box::new(tcp)),
        Some((c, sni)) => {
            let s = tokio::time::timeout(o.timeout, c.connect(sni.clone(), tcp)).await??;
            Ok(Box::new(s))
        }
    }
}

fn request(o: &Opts) -> Request<Empty<Bytes>> {
    let mut req = Request::new(Empty::<Bytes>::new());
    *req.uri_mut() = o.uri.clone();
    let h = req.headers_mut();
    if !o.h2 {
        h.insert(HOST, o.host.clone());
    }
    for (n, v) in &o.headers {
        h.insert(n.clone(), v.clone());
    }
    req
}

/// Read one response; record it. Err only for transport failures.
async fn exchange<F>(
    o: &Opts,
    st: &mut Stats,
    send: F,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    F: std::future::Future<Output = hyper::Result<hyper::Response<hyper::body::Incoming>>>,
{
    let t0 = Instant::now();
    let resp = tokio::time::timeout(o.timeout, send).await??;
    let status = resp.status();
    let body = tokio::time::timeout(o.timeout, resp.into_body().collect()).await??;
    st.bytes += body.to_bytes().len() as u64;
    st.lat_ns.push(t0.elapsed().as_nanos() as u64);
    if status.is_success() {
        st.ok += 1;
    } else {
        st.non2xx += 1;
    }
    Ok(())
}

async fn h1_conn(o: Arc<Opts>, end: Instant) -> Stats {
    let mut st = Stats::default();
    while Instant::now() < end {
        let io = match connect(&o).await {
            Ok(io) => io,
            Err(_) => {
                st.errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await
        else {
            st.errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < end {
            if send.ready().await.is_err() {
                break; // closed by the server between requests: reconnect, not a failure
            }
            if exchange(&o, &mut st, send.send_request(request(&o)))
                .await
                .is_err()
            {
                st.errors += 1;
                break;
            }
        }
    }
    st
}

async fn h2_conn(o: Arc<Opts>, end: Instant) -> Stats {
    let mut st = Stats::default();
    while Instant::now() < end {
        let io = match connect(&o).await {
            Ok(io) => io,
            Err(_) => {
                st.errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok((send, conn)) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await
        else {
            st.errors += 1;
            continue;
        };
        tokio::spawn(conn);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..o.streams {
            let (o, mut send) = (o.clone(), send.clone());
            set.spawn(async move {
                let mut st = Stats::default();
                while Instant::now() < end {
                    if send.ready().await.is_err() {
                        st.errors += 1;
                        break;
                    }
                    if exchange(&o, &mut st, send.send_request(request(&o)))
                        .await
                        .is_err()
                    {
                        st.errors += 1;
                        break;
                    }
                }
                st
            });
        }
        while let Some(r) = set.join_next().await {
            if let Ok(s) = r {
                st.merge(s);
            }
        }
    }
    st
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1] as f64 / 1e6
}

fn main() {
    let (o, threads) = parse_args();
    let o = Arc::new(o);
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    let (st, elapsed) = rt.block_on(async {
        let start = Instant::now();
        let end = start + o.duration;
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..o.conns {
            let o = o.clone();
            if o.h2 {
                set.spawn(h2_conn(o, end));
            } else {
                set.spawn(h1_conn(o, end));
            }
        }
        let mut st = Stats::default();
        while let Some(r) = set.join_next().await {
            if let Ok(s) = r {
                st.merge(s);
            }
        }
        (st, start.elapsed())
    });
    let mut lat = st.lat_ns;
    lat.sort_unstable();
    let requests = st.ok + st.non2xx;
    let secs = elapsed.as_secs_f64();
    let out = serde_json::json!({
        "tool": "bench_load",
        "proto": if o.h2 { "h2" } else { "http/1.1" },
        "tls": o.tls.is_some(),
        "conns": o.conns,
        "streams": o.streams,
        "threads": threads,
        "duration_s": secs,
        "requests": requests,
        "non2xx": st.non2xx,
        "errors": st.errors,
        "bytes": st.bytes,
        "rps": if secs > 0.0 { requests as f64 / secs } else { 0.0 },
        "p50_ms": pct(&lat, 50.0),
        "p90_ms": pct(&lat, 90.0),
        "p99_ms": pct(&lat, 99.0),
        "max_ms": lat.last().map_or(0.0, |v| *v as f64 / 1e6),
    });
    println!("{out}");
}
