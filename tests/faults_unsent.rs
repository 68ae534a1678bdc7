//! The pool's own resend of a request hyper hands back unsent, made deterministic
//! with in-memory connections through `PoolLayer`.
//!
//! Each connection is a `lab::DuplexIo` wrapped in [`Doomable`]: the test can mark
//! it dead, after which reads see EOF and writes fail, *without waking* hyper's
//! connection task. That is the keep-alive race as the client sees it: the kernel
//! already holds the server's FIN, but the connection task has not been told. The
//! next request handed to such a connection finds EOF before writing a byte, and
//! hyper hands it back unsent. No socket means no pre-reuse check, so every idle
//! connection marked dead looks alive to the pool until a request is sent on it.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::DuplexStream;
use tower::Layer;

use closefirst::connect::{Connection, SocketHandle};
use closefirst::lab::DuplexIo;
use closefirst::{Client, ConnectionInfo};

const PATIENCE: Duration = Duration::from_secs(5);

/// An in-memory connection the test can kill silently.
struct Doomable {
    io: DuplexIo,
    dead: Arc<AtomicBool>,
}

impl hyper::rt::Read for Doomable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.dead.load(Ordering::SeqCst) {
            // EOF: nothing filled.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Doomable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.dead.load(Ordering::SeqCst) {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Connection for Doomable {
    fn socket(&self) -> Option<SocketHandle> {
        None
    }
}

/// An in-process hyper server for the connections, counting handler calls.
#[derive(Clone, Default)]
struct Origin {
    handler_calls: Arc<AtomicUsize>,
    /// The kill switch of every connection opened, in order.
    switches: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
}

impl Origin {
    fn serve(&self, io: DuplexStream) {
        let calls = Arc::clone(&self.handler_calls);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let calls = Arc::clone(&calls);
                async move {
                    // A handler call needs the whole request.
                    if req.into_body().collect().await.is_ok() {
                        calls.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(io), service)
                .await;
        });
    }

    fn client(&self) -> Client<Full<Bytes>> {
        let origin = self.clone();
        let connector = tower::service_fn(move |_: Uri| {
            let (io, server_end) = DuplexIo::pair(64 * 1024);
            origin.serve(server_end);
            let dead = Arc::new(AtomicBool::new(false));
            origin
                .switches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Arc::clone(&dead));
            async move { Ok::<_, Infallible>(Doomable { io, dead }) }
        });
        Client::builder()
            .layer()
            .expect("default settings are valid")
            .layer(connector)
    }

    fn connects(&self) -> usize {
        self.switches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Marks every connection opened so far dead, waking nobody.
    fn kill_all_silently(&self) {
        for dead in self
            .switches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            dead.store(true, Ordering::SeqCst);
        }
    }
}

async fn post(client: &Client<Full<Bytes>>, id: &str) -> Result<ConnectionInfo, closefirst::Error> {
    let req = Request::post("http://origin.test/")
        .header("x-request-id", id)
        .body(Full::new(Bytes::from_static(b"payload")))
        .expect("valid request");
    let resp = tokio::time::timeout(PATIENCE, client.request(req))
        .await
        .expect("bounded")?;
    assert_eq!(resp.status(), StatusCode::OK);
    let info = resp
        .extensions()
        .get::<ConnectionInfo>()
        .cloned()
        .expect("every response carries ConnectionInfo");
    resp.into_body().collect().await.expect("body");
    Ok(info)
}

#[tokio::test(flavor = "current_thread")]
async fn a_request_handed_back_unsent_is_resent_on_a_fresh_connection() {
    let origin = Origin::default();
    let client = origin.client();

    // Two idle connections: two requests at once need one each.
    let (a, b) = tokio::join!(post(&client, "warm-a"), post(&client, "warm-b"));
    a.expect("warm-up a");
    b.expect("warm-up b");
    let deadline = Instant::now() + PATIENCE;
    while client.stats().idle != 2 {
        assert!(Instant::now() < deadline, "{:?}", client.stats());
        tokio::task::yield_now().await;
    }
    assert_eq!(origin.connects(), 2);

    origin.kill_all_silently();

    // Any method may be resent when nothing was written: a POST.
    let info = post(&client, "unsent")
        .await
        .expect("the request is resent by the pool");
    assert_eq!(info.attempts, 2);
    assert!(
        !info.reused,
        "the resend went on a fresh connection, not the other dead idle one"
    );
    assert_eq!(origin.connects(), 3);
    // The two warm-ups and the resend; a dead connection never carried it.
    assert_eq!(origin.handler_calls.load(Ordering::SeqCst), 3);
    let stats = client.stats();
    assert_eq!(stats.resends.not_written, 1, "{stats:?}");
    assert_eq!(stats.resends.written_no_response, 0, "{stats:?}");
}
