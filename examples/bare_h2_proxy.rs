//! The least an HTTP/2 proxy with two stacks does, for portok's gRPC measurements
//! (bench/run.sh's gRPC scenario, bench/grpc_instructions.sh): hyper's h2 server in front,
//! one h2 client connection to the app behind, each request's headers passed as they came
//! (plus one `x-forwarded-for`), bodies and trailers frame by frame. No routing, no
//! forwarding rules, no inspector, no redeploys, no limits: it is a yardstick, not a proxy
//! to use.
//!
//! portok has the same two stacks (hyper's h2 server and the h2 crate's client), so what it
//! costs beyond this is its own per-call work.
//!
//! ```sh
//! cargo run --release --example bare_h2_proxy -- LISTEN_PORT APP_PORT
//! ```

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::net::{TcpListener, TcpStream};

/// The app's answer as hyper's server sends it on, its window given back as it is read.
struct Answer {
    body: h2::RecvStream,
    data_done: bool,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let me = &mut *self;
        if !me.data_done {
            match ready!(me.body.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = me.body.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => me.data_done = true,
            }
        }
        Poll::Ready(
            ready!(me.body.poll_trailers(cx))
                .transpose()
                .map(|t| t.map(Frame::trailers)),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
}

async fn forward(
    app: h2::client::SendRequest<Bytes>,
    req: http::Request<Incoming>,
) -> Result<http::Response<Answer>, h2::Error> {
    let mut app = app.ready().await?;
    let (parts, mut body) = req.into_parts();
    let mut head = http::Request::from_parts(parts, ());
    head.headers_mut().insert(
        "x-forwarded-for",
        http::HeaderValue::from_static("127.0.0.1"),
    );
    let end = body.is_end_stream();
    let (answer, mut to_app) = app.send_request(head, end)?;
    if !end {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                to_app.send_reset(h2::Reason::CANCEL);
                break;
            };
            match frame.into_data() {
                Ok(data) => {
                    let last = body.is_end_stream();
                    to_app.send_data(data, last)?;
                    if last {
                        break;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        to_app.send_trailers(trailers)?;
                    }
                    break;
                }
            }
        }
    }
    let (parts, body) = answer.await?.into_parts();
    Ok(http::Response::from_parts(
        parts,
        Answer {
            body,
            data_done: false,
        },
    ))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<u16> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .expect("usage: bare_h2_proxy LISTEN_PORT APP_PORT")
        })
        .collect();
    let [listen, app_port] = args[..] else {
        panic!("usage: bare_h2_proxy LISTEN_PORT APP_PORT");
    };
    let listener = TcpListener::bind(("127.0.0.1", listen)).await.unwrap();
    loop {
        let (client, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let Ok(app) = TcpStream::connect(("127.0.0.1", app_port)).await else {
                return;
            };
            let _ = app.set_nodelay(true);
            let Ok((app, conn)) = h2::client::handshake(app).await else {
                return;
            };
            tokio::spawn(conn);
            let svc = hyper::service::service_fn(move |req| forward(app.clone(), req));
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(client), svc)
                .await;
        });
    }
}
