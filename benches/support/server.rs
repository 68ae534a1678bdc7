//! The in-process server every throughput bench measures against: hyper's HTTP/1.1
//! server on 127.0.0.1, keep-alive on, a fixed 13-byte body, counting the connections
//! it accepts so that connection churn is visible next to the request rates.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The body of every response from the in-process server.
pub(crate) const BODY: &[u8] = b"hello, world\n";

/// Connections the server has accepted so far (`alternate.rs`'s TLS server counts into
/// it too).
#[derive(Clone, Default)]
pub(crate) struct Accepted(pub(crate) Arc<AtomicUsize>);

impl Accepted {
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Starts the server on the current runtime; it runs until the runtime is dropped.
pub(crate) async fn start(accepted: Accepted) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("the loopback interface accepts a listener on port 0");
    let addr = listener
        .local_addr()
        .expect("a bound listener has a local address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accepted.0.fetch_add(1, Ordering::Relaxed);
            // closefirst sets TCP_NODELAY by default, hyper-util's HttpConnector does
            // not; the server sets it on its side so Nagle's delay never decides a
            // comparison.
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(BODY))))
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}
