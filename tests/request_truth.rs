//! The request path tells the truth and never sends a damaged request: a failing
//! request body is never resent, errors report the furthest any attempt got and name
//! the request, hyper's unsent hand-back goes on a fresh connection, and dropped
//! requests are counted. (`CONNECT`, upgrades and the rest of the fault table are in
//! `tests/faults.rs`.)

mod support;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tower::Layer;

use closefirst::lab::DuplexIo;
use closefirst::retry::Policy;
use closefirst::{Client, ConnectionInfo, Progress};
use support::{ServerConfig, TestServer};

/// A request body that yields its chunks, then an I/O error, then (if polled again)
/// ends: what `tokio_util::io::ReaderStream` does when a file read fails, and what a
/// proxy sees when its own client aborts an upload.
struct FailingBody {
    chunks: VecDeque<Bytes>,
    failed: bool,
}

impl FailingBody {
    fn after(chunks: &[&'static str]) -> Self {
        FailingBody {
            chunks: chunks
                .iter()
                .map(|c| Bytes::from_static(c.as_bytes()))
                .collect(),
            failed: false,
        }
    }
}

impl http_body::Body for FailingBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if !self.failed {
            self.failed = true;
            return Poll::Ready(Some(Err(io::Error::other("upload aborted"))));
        }
        Poll::Ready(None)
    }
}

fn failing(
    server: &TestServer,
    method: Method,
    id: &str,
    chunks: &[&'static str],
) -> Request<FailingBody> {
    Request::builder()
        .method(method)
        .uri(server.url("/"))
        .header("x-request-id", id)
        .body(FailingBody::after(chunks))
        .unwrap()
}

async fn warm<B>(client: &Client<B>, server: &TestServer, body: impl FnOnce() -> B)
where
    B: closefirst::Body,
{
    let req = Request::builder()
        .uri(server.url("/"))
        .header("x-request-id", "warm-up")
        .body(body())
        .unwrap();
    let resp = client.request(req).await.expect("warm-up succeeds");
    resp.into_body().collect().await.expect("warm-up body");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while client.stats().idle != 1 {
        assert!(std::time::Instant::now() < deadline, "never went idle");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The first repro: a PUT on a reused connection whose body yields `ab` and
/// then fails. Before the fix the retry layer took the failure for a stale connection,
/// replayed `ab` as a complete body, and the caller saw `200 OK`.
#[tokio::test]
async fn a_put_whose_body_fails_midway_is_not_resent_and_reports_a_body_error() {
    let server = TestServer::start(ServerConfig::default());
    let client: Client<FailingOrFull> = Client::builder().build().unwrap();
    warm(&client, &server, || {
        FailingOrFull::Full(Full::new(Bytes::from_static(b"hi")))
    })
    .await;
    let req = failing(&server, Method::PUT, "put", &["ab"]).map(FailingOrFull::Failing);
    let err = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("bounded")
        .expect_err("a request whose body failed cannot succeed");
    assert!(err.is_body(), "{err:?}");
    assert!(
        !err.is_stale_connection(),
        "the connection was fine: {err:?}"
    );
    assert_eq!(err.attempts(), 1, "{err:?}");
    // The chain leads to the body's own error (through hyper's, which names it).
    let mut cause = std::error::Error::source(&err);
    let mut found = false;
    while let Some(c) = cause {
        found |= c.to_string() == "upload aborted";
        cause = c.source();
    }
    assert!(found, "the body's error is in the source chain: {err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("PUT http://{}: ", server.addr())),
        "{text}"
    );
    assert!(text.contains("request body failed"), "{text}");
    // Give the server time to see the truncated request; it must never run it.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(server.calls_for("put"), 0, "a damaged body was executed");
    let stats = client.stats();
    assert_eq!(
        stats.resends.written_no_response + stats.resends.not_written,
        0
    );
    assert_eq!(stats.refusals.body_failed, 1);
    assert!(
        stats.learned_idle_timeouts.is_empty(),
        "a body failure taught the pool an idle timeout: {:?}",
        stats.learned_idle_timeouts
    );
}

/// The second repro: a POST whose body fails on its first poll was taken for
/// "never written", resent, and run by the server with an empty body.
#[tokio::test]
async fn a_post_whose_body_fails_at_once_is_not_resent() {
    let server = TestServer::start(ServerConfig::default());
    let client: Client<FailingBody> = Client::builder()
        .retry(Policy::all_methods())
        .build()
        .unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(failing(&server, Method::POST, "post", &[])),
    )
    .await
    .expect("bounded")
    .expect_err("a request whose body failed cannot succeed");
    assert!(err.is_body(), "{err:?}");
    assert_eq!(err.attempts(), 1);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(server.calls_for("post"), 0, "run with an empty body");
    assert_eq!(server.handler_calls(), 0);
    assert_eq!(client.stats().refusals.body_failed, 1);
}

/// Either a body that fails or a whole one, so one client can warm a connection with a
/// good request and then send a failing one on it.
enum FailingOrFull {
    Failing(FailingBody),
    Full(Full<Bytes>),
}

impl http_body::Body for FailingOrFull {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            FailingOrFull::Failing(body) => Pin::new(body).poll_frame(cx),
            FailingOrFull::Full(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            FailingOrFull::Failing(_) => false,
            FailingOrFull::Full(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            FailingOrFull::Failing(_) => http_body::SizeHint::default(),
            FailingOrFull::Full(body) => body.size_hint(),
        }
    }
}

/// A GET is written and run by the server, the connection dies, and the resend cannot
/// connect. Before the fix the caller got `NotWritten` ("safe to send again, whatever
/// the method") for a request the server had run.
#[tokio::test]
async fn an_error_after_a_resend_reports_the_furthest_attempt() {
    let server = TestServer::start(ServerConfig {
        rst_without_answer: vec!["get".into()],
        ..ServerConfig::default()
    });
    let connects = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connects);
    let connector = tower::service_fn(move |uri: Uri| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                use tower::ServiceExt;
                closefirst::connect::TcpConnector::new()
                    .oneshot(uri)
                    .await
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            } else {
                Err(io::Error::from(io::ErrorKind::ConnectionRefused).into())
            }
        }
    });
    let client: Client<Empty<Bytes>> = Client::builder().layer().unwrap().layer(connector);
    let get = |id: &str| {
        Request::get(server.url("/"))
            .header("x-request-id", id)
            .body(Empty::new())
            .unwrap()
    };
    let resp = client.request(get("warm-up")).await.unwrap();
    resp.into_body().collect().await.unwrap();
    while client.stats().idle != 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let err = client.request(get("get")).await.unwrap_err();
    assert_eq!(server.calls_for("get"), 1, "the server ran it once");
    assert!(
        err.is_connect(),
        "the last attempt failed to connect: {err:?}"
    );
    assert_eq!(
        err.request_progress(),
        Progress::WrittenNoResponse,
        "the first attempt was written: {err:?}"
    );
    assert_eq!(err.attempts(), 2);
    assert!(!err.is_stale_connection());
    let text = err.to_string();
    assert_eq!(
        text,
        format!(
            "GET http://{}: failed to connect; an earlier attempt failed after it was \
             written, with no response (2 attempts)",
            server.addr()
        )
    );
    assert_eq!(connects.load(Ordering::SeqCst), 2);
}

/// Serves one request on an in-memory connection by hand, keeping the stream.
async fn answer(stream: &mut DuplexStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("request bytes");
        assert_eq!(n, 1, "the client closed before its request ended");
        head.push(byte[0]);
    }
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        .await
        .expect("response written");
}

/// An in-memory connection that can be made to read EOF without waking its task: the
/// state of a socket whose FIN has arrived while hyper's connection task has not run.
struct GatedIo {
    inner: DuplexIo,
    dead: Arc<AtomicBool>,
}

impl hyper::rt::Read for GatedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        if self.dead.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(())); // EOF: nothing read
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for GatedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl closefirst::connect::Connection for GatedIo {
    fn socket(&self) -> Option<closefirst::connect::SocketHandle> {
        None
    }
}

/// hyper hands a request back unsent when its connection closed before it started
/// writing. The pool's own resend must go on a fresh connection: before the fix it
/// took the next idle one, just as dead, and the request failed with its attempts used
/// up. Deterministic: both pooled connections are made to read EOF without their tasks
/// being woken, so checkout sees them as open and each hands a request back only once
/// it is queued on it.
#[tokio::test(flavor = "current_thread")]
async fn a_request_handed_back_unsent_goes_on_a_fresh_connection() {
    let server_ends: Arc<Mutex<Vec<DuplexStream>>> = Arc::default();
    let gates: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
    let (ends, all_gates) = (Arc::clone(&server_ends), Arc::clone(&gates));
    let connector = tower::service_fn(move |_: Uri| {
        let (client_end, server_end) = DuplexIo::pair(64 * 1024);
        ends.lock().unwrap().push(server_end);
        let dead = Arc::new(AtomicBool::new(false));
        all_gates.lock().unwrap().push(Arc::clone(&dead));
        std::future::ready(Ok::<_, Infallible>(GatedIo {
            inner: client_end,
            dead,
        }))
    });
    let client: Client<Full<Bytes>> = Client::builder().layer().unwrap().layer(connector);
    let post = || {
        Request::post("http://origin.test/")
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap()
    };

    // Two connections, both answered by hand and pooled.
    let first = tokio::spawn(client.request(post()));
    let second = tokio::spawn(client.request(post()));
    while server_ends.lock().unwrap().len() < 2 {
        tokio::task::yield_now().await;
    }
    let mut ends: Vec<DuplexStream> = std::mem::take(&mut *server_ends.lock().unwrap());
    for end in &mut ends {
        answer(end).await;
    }
    for response in [first, second] {
        let resp = response.await.unwrap().expect("warm-up succeeds");
        resp.into_body().collect().await.unwrap();
    }
    while client.stats().idle != 2 {
        tokio::task::yield_now().await;
    }
    // Let every task that can run, run, so both connection tasks wait on their reads.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }

    // Both pooled connections now read EOF, but nothing wakes their tasks.
    for gate in gates.lock().unwrap().iter() {
        gate.store(true, Ordering::SeqCst);
    }
    let request = tokio::spawn(client.request(post()));
    // Bounded: before the fix no third connection is ever opened.
    for _ in 0..10_000 {
        if !server_ends.lock().unwrap().is_empty() || request.is_finished() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let fresh = server_ends.lock().unwrap().pop();
    if let Some(mut fresh) = fresh {
        answer(&mut fresh).await;
    }
    let resp = request
        .await
        .unwrap()
        .expect("resent on a fresh connection, not on the other dead one");
    let info = resp.extensions().get::<ConnectionInfo>().cloned().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let stats = client.stats();
    assert!(!info.reused, "the resend went on a new connection");
    assert_eq!(info.attempts, 2, "{stats:?}");
    assert_eq!(stats.connections_opened, 3);
    assert_eq!(stats.resends.not_written, 1);
    assert_eq!(
        stats.evictions.closed_by_server, 1,
        "the dead connection is counted: {stats:?}"
    );
    drop(ends);
}

#[tokio::test]
async fn a_request_future_dropped_mid_flight_is_counted() {
    let server = TestServer::start(ServerConfig {
        response_delay: Some(Duration::from_secs(2)),
        ..ServerConfig::default()
    });
    let client: Client<Empty<Bytes>> = Client::builder().build().unwrap();
    let req = Request::get(server.url("/")).body(Empty::new()).unwrap();
    let outcome = tokio::time::timeout(Duration::from_millis(200), client.request(req)).await;
    assert!(outcome.is_err(), "the server answers only after 2 s");
    let stats = client.stats();
    assert_eq!(stats.evictions.cancelled, 1, "{stats:?}");
    assert_eq!(stats.active, 0);
    assert_eq!(stats.idle, 0);
}
