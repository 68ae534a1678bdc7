//! The scenarios of hyper-util's legacy-client tests that apply to an HTTP/1.1 pool,
//! written for this crate: a response body dropped unread, a request future dropped
//! mid-flight, the client dropped with a request in flight, keep-alive edge cases, an
//! upgrade, and how connect and mid-response failures surface.
//!
//! Every test uses real sockets on 127.0.0.1: the lab origin (`support::TestServer`)
//! where its knobs fit, otherwise a raw `tokio::net::TcpListener` whose handler the
//! test writes byte by byte and which counts, server-side, the connections it accepted,
//! the request heads it read and the closes it saw from the client. Every wait is
//! bounded: a call by [`LIMIT`], a background effect by polling until it holds (never
//! a sleep that hopes it has happened).

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, UPGRADE};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use closefirst::{Client, ConnectionInfo, PoolStats, Progress};
use support::{ServerConfig, TestServer};

/// Upper bound for one call or one background effect: generous, so only a hang fails.
const LIMIT: Duration = Duration::from_secs(10);

type TestClient = Client<Empty<Bytes>>;

fn client() -> TestClient {
    Client::builder()
        .build()
        .expect("the default settings are valid")
}

fn get(url: &str) -> Request<Empty<Bytes>> {
    Request::get(url)
        .body(Empty::new())
        .expect("a valid request")
}

/// Bounds `what` by [`LIMIT`], naming it if it hangs.
async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {LIMIT:?}"))
}

/// Polls the pool's stats until `done` holds, and returns them.
async fn settle(client: &TestClient, what: &str, done: impl Fn(&PoolStats) -> bool) -> PoolStats {
    let polled = async {
        loop {
            let stats = client.stats();
            if done(&stats) {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    match tokio::time::timeout(LIMIT, polled).await {
        Ok(stats) => stats,
        Err(_) => panic!("timed out waiting for {what}: {:?}", client.stats()),
    }
}

/// Polls a server-side count until it reaches `expected`.
async fn server_count(what: &str, count: &AtomicUsize, expected: usize) {
    bounded(what, async {
        while count.load(Ordering::SeqCst) != expected {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

/// Every connection opened is idle, in use, or was closed under some reason.
fn assert_accounted(stats: &PoolStats) {
    assert_eq!(
        stats.connections_opened,
        (stats.idle + stats.active) as u64 + stats.evictions.total(),
        "every connection is idle, active or counted as evicted: {stats:?}"
    );
}

/// What a raw server saw, and the signals its handlers and the test exchange.
#[derive(Default)]
struct Seen {
    accepted: AtomicUsize,
    /// Request heads read (the handler ran).
    requests: AtomicUsize,
    /// Connections on which the server read EOF or a reset from the client.
    client_closes: AtomicUsize,
    /// Bytes that arrived where the handler expected the client to close.
    unexpected_requests: AtomicUsize,
    /// Signalled by a handler once a request head has arrived.
    arrived: Notify,
    /// Signalled by the test to let a handler answer.
    release: Notify,
}

/// A server on `127.0.0.1:0` that runs `handler` for each accepted connection. Its
/// accept loop and every connection task end when it is dropped.
struct RawServer {
    addr: SocketAddr,
    seen: Arc<Seen>,
    accept: tokio::task::JoinHandle<()>,
}

impl RawServer {
    async fn start<F, Fut>(handler: F) -> RawServer
    where
        F: Fn(TcpStream, Arc<Seen>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let seen = Arc::new(Seen::default());
        let shared = Arc::clone(&seen);
        let accept = tokio::spawn(async move {
            // Owned here, so aborting the accept loop aborts every connection task.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_nodelay(true);
                connections.spawn(handler(stream, Arc::clone(&shared)));
            }
        });
        RawServer { addr, seen, accept }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Reads one request head (these tests send no request bodies); `None` at EOF or on a
/// reset. Counts the request.
async fn read_head(stream: &mut TcpStream, seen: &Seen) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    seen.requests.fetch_add(1, Ordering::SeqCst);
    seen.arrived.notify_one();
    Some(String::from_utf8_lossy(&head).to_ascii_lowercase())
}

/// Waits for the client to close the connection; bytes instead (another request on a
/// connection that must not carry one) are counted as unexpected.
async fn until_client_closes(stream: &mut TcpStream, seen: &Seen) {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => {
                seen.client_closes.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Ok(_) => {
                seen.unexpected_requests.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// Whether `error`'s source chain holds an incomplete-message hyper error or an I/O
/// error: what a server closing mid-response must surface as.
fn incomplete_or_io(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
            || e.is::<std::io::Error>()
        {
            return true;
        }
        cause = e.source();
    }
    false
}

// --- Bodies and futures dropped half-way ---

/// A body dropped before its end leaves the connection mid-response: it is closed (the
/// server sees the client's close), counted as `response_unfinished`, never reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_dropped_unread_closes_its_connection() {
    let server = RawServer::start(|mut stream, seen| async move {
        while let Some(head) = read_head(&mut stream, &seen).await {
            if head.starts_with("get /big ") {
                // Far more than the socket buffers hold: the body cannot have arrived
                // whole when the caller drops it.
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n")
                    .await;
                let _ = stream.write_all(&[b'x'; 16 * 1024]).await;
                until_client_closes(&mut stream, &seen).await;
                return;
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
        }
    })
    .await;
    let client = client();

    let resp = bounded("GET /big", client.request(get(&server.url("/big"))))
        .await
        .expect("the head of /big arrives");
    assert_eq!(resp.status(), StatusCode::OK);
    drop(resp);

    let stats = settle(&client, "the dropped body's connection to close", |s| {
        s.evictions.response_unfinished == 1 && s.active == 0
    })
    .await;
    assert_eq!((stats.idle, stats.connections_opened), (0, 1), "{stats:?}");
    assert_eq!(stats.evictions.total(), 1, "{stats:?}");
    assert_accounted(&stats);
    server_count("the server to see the close", &server.seen.client_closes, 1).await;

    // The next request gets a connection of its own.
    let resp = bounded("GET /small", client.request(get(&server.url("/small"))))
        .await
        .expect("GET /small succeeds");
    let info = resp.extensions().get::<ConnectionInfo>().cloned();
    let body = bounded("the /small body", resp.into_body().collect())
        .await
        .expect("the /small body is complete")
        .to_bytes();
    assert_eq!(body, "ok");
    assert!(!info.expect("ConnectionInfo on every response").reused);
    assert_eq!(server.seen.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(server.seen.requests.load(Ordering::SeqCst), 2);
    assert_eq!(server.seen.unexpected_requests.load(Ordering::SeqCst), 0);
    let stats = settle(&client, "GET /small's connection to go idle", |s| {
        s.idle == 1 && s.active == 0
    })
    .await;
    assert_accounted(&stats);
}

/// A request future dropped after its request reached the server (a caller's own
/// timeout, say): the connection is closed and counted as `cancelled`, the request is
/// not sent again, and nothing stays checked out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_future_dropped_mid_flight_is_counted_as_cancelled() {
    let server = RawServer::start(|mut stream, seen| async move {
        if read_head(&mut stream, &seen).await.is_some() {
            // Never answers: the caller gives up first.
            until_client_closes(&mut stream, &seen).await;
        }
    })
    .await;
    let client = client();

    bounded("the request to reach the server", async {
        tokio::select! {
            resp = client.request(get(&server.url("/hang"))) => {
                panic!("the server never answers, yet the request ended: {resp:?}")
            }
            () = server.seen.arrived.notified() => {}
        }
    })
    .await;
    // The select above dropped the request future.

    let stats = settle(&client, "the abandoned connection to close", |s| {
        s.evictions.cancelled == 1 && s.active == 0
    })
    .await;
    assert_eq!((stats.idle, stats.evictions.total()), (0, 1), "{stats:?}");
    assert_accounted(&stats);
    server_count("the server to see the close", &server.seen.client_closes, 1).await;
    assert_eq!(server.seen.requests.load(Ordering::SeqCst), 1, "not resent");
    assert_eq!(server.seen.accepted.load(Ordering::SeqCst), 1);
}

/// Dropping the last `Client` handle while a request is in flight does not abandon the
/// request: it completes, its body reads to the end, and then its connection closes
/// (the pool is gone, so nothing holds it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_completes_after_the_client_is_dropped() {
    let server = RawServer::start(|mut stream, seen| async move {
        if read_head(&mut stream, &seen).await.is_some() {
            seen.release.notified().await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
                .await;
            until_client_closes(&mut stream, &seen).await;
        }
    })
    .await;
    let client = client();
    let in_flight = tokio::spawn(client.request(get(&server.url("/"))));
    bounded(
        "the request to reach the server",
        server.seen.arrived.notified(),
    )
    .await;
    drop(client);
    server.seen.release.notify_one();

    let resp = bounded("the request after its client was dropped", in_flight)
        .await
        .expect("the request task does not panic")
        .expect("the request completes");
    let body = bounded("the body", resp.into_body().collect())
        .await
        .expect("the body is complete")
        .to_bytes();
    assert_eq!(body, "hello");
    server_count(
        "the connection to close once the pool is gone",
        &server.seen.client_closes,
        1,
    )
    .await;
    assert_eq!(server.seen.unexpected_requests.load(Ordering::SeqCst), 0);
}

/// The same, with a server that fails the request: the caller gets an error, promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_fails_cleanly_after_the_client_is_dropped() {
    let server = RawServer::start(|mut stream, seen| async move {
        if read_head(&mut stream, &seen).await.is_some() {
            seen.release.notified().await;
            // Closes without answering.
        }
    })
    .await;
    let client = client();
    let in_flight = tokio::spawn(client.request(get(&server.url("/"))));
    bounded(
        "the request to reach the server",
        server.seen.arrived.notified(),
    )
    .await;
    drop(client);
    server.seen.release.notify_one();

    let err = bounded("the request after its client was dropped", in_flight)
        .await
        .expect("the request task does not panic")
        .expect_err("the server closed without answering");
    assert_eq!(
        err.request_progress(),
        Progress::WrittenNoResponse,
        "{err:?}"
    );
    // A GET written on a fresh connection is not the keep-alive race: not resent.
    assert_eq!(server.seen.requests.load(Ordering::SeqCst), 1);
    assert_eq!(server.seen.accepted.load(Ordering::SeqCst), 1);
}

// --- Keep-alive ---

/// Sends a GET, reads its body to the end, and returns its `ConnectionInfo`.
async fn get_ok(client: &TestClient, url: &str) -> ConnectionInfo {
    bounded(&format!("GET {url}"), support::get(client, url))
        .await
        .0
}

/// A response with `Connection: close` is the connection's last: each request opens
/// its own, and each is counted as `connection_close`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_close_response_is_not_reused() {
    let server = TestServer::start(ServerConfig {
        connection_close: true,
        ..ServerConfig::default()
    });
    let client = client();
    for _ in 0..3 {
        let info = get_ok(&client, &server.url("/")).await;
        assert!(!info.reused, "{info:?}");
    }
    let stats = settle(&client, "every connection to close", |s| {
        s.active == 0 && s.evictions.connection_close == 3
    })
    .await;
    assert_eq!(
        (stats.idle, stats.reuses, stats.connections_opened),
        (0, 0, 3)
    );
    assert_accounted(&stats);
    assert_eq!(server.connections_accepted(), 3);
    assert_eq!(server.handler_calls(), 3);
}

/// Requests one after the other share one connection: once the first response has
/// been read, its connection is idle in the pool, and each later request reuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_requests_reuse_one_connection() {
    let server = TestServer::start(ServerConfig::default());
    let client = client();
    let mut infos = Vec::new();
    for _ in 0..5 {
        infos.push(get_ok(&client, &server.url("/")).await);
        // Check-in happens as hyper finishes the response, just behind the caller's
        // last read; wait for it rather than race it.
        settle(&client, "the connection to go idle", |s| s.idle == 1).await;
    }
    let reused: Vec<bool> = infos.iter().map(|i| i.reused).collect();
    assert_eq!(reused, [false, true, true, true, true]);
    assert!(infos.iter().all(|i| i.id == infos[0].id), "{infos:?}");
    assert_eq!(infos[4].requests, 5);
    let stats = client.stats();
    assert_eq!(
        (stats.connections_opened, stats.reuses),
        (1, 4),
        "{stats:?}"
    );
    assert_eq!(stats.evictions.total(), 0, "{stats:?}");
    assert_accounted(&stats);
    assert_eq!(server.connections_accepted(), 1);
    assert_eq!(server.requests_per_connection(), [5]);
}

/// A server that closes (FIN, unannounced) after every response: each request still
/// succeeds and runs exactly once server-side, whether the client sees the close
/// before reuse or resends a request that came back unsent; nothing stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_closes_after_each_response() {
    let server = TestServer::start(ServerConfig {
        close_after_requests: Some(1),
        ..ServerConfig::default()
    });
    let client = client();
    for i in 0..3 {
        let id = format!("req-{i}");
        let req = Request::get(server.url("/"))
            .header("x-request-id", id.as_str())
            .body(Empty::new())
            .expect("a valid request");
        let resp = bounded(&id, client.request(req))
            .await
            .unwrap_or_else(|e| panic!("{id} fails: {e:?}"));
        assert_eq!(resp.status(), StatusCode::OK);
        bounded("the body", resp.into_body().collect())
            .await
            .expect("the body is complete");
        assert_eq!(server.calls_for(&id), 1, "{id} ran once server-side");
    }
    assert_eq!(server.connections_accepted(), 3);
    assert_eq!(server.requests_per_connection(), [1, 1, 1]);
    // The last connection's close may still be on its way: the count settles.
    let stats = settle(&client, "every connection to close", |s| {
        s.active == 0 && s.idle == 0 && s.evictions.total() == 3
    })
    .await;
    assert_eq!(stats.connections_opened, 3, "{stats:?}");
    assert_accounted(&stats);
}

// --- Upgrades ---

/// `101 Switching Protocols`: the connection goes to the caller through
/// `hyper::upgrade::on`, still works after the pool has counted it as `upgraded`, and
/// never returns to the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_hands_the_connection_over_and_never_pools_it() {
    let server = RawServer::start(|mut stream, seen| async move {
        let Some(head) = read_head(&mut stream, &seen).await else {
            return;
        };
        if !head.contains("upgrade: echo") {
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
            return;
        }
        let _ = stream
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
            )
            .await;
        let mut buf = [0u8; 256];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    seen.client_closes.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Ok(n) => {
                    if stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    let client = client();
    let req = Request::get(server.url("/echo"))
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, "echo")
        .body(Empty::new())
        .expect("a valid request");
    let resp = bounded("the upgrade request", client.request(req))
        .await
        .expect("the 101 reaches the caller");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let upgraded = bounded("hyper::upgrade::on", hyper::upgrade::on(resp))
        .await
        .expect("the connection is handed over");

    let stats = settle(&client, "the upgrade to be counted", |s| {
        s.evictions.upgraded == 1 && s.active == 0
    })
    .await;
    assert_eq!((stats.idle, stats.evictions.total()), (0, 1), "{stats:?}");
    assert_accounted(&stats);

    // Counted, yet the caller's: the pool did not close it.
    let mut io = TokioIo::new(upgraded);
    bounded("the echo", async {
        io.write_all(b"ping")
            .await
            .expect("write on the upgraded IO");
        let mut echoed = [0u8; 4];
        io.read_exact(&mut echoed).await.expect("read the echo");
        assert_eq!(&echoed, b"ping");
    })
    .await;
    drop(io);
    server_count("the server to see the close", &server.seen.client_closes, 1).await;

    // Never pooled: the next request opens a connection of its own.
    let resp = bounded("a plain GET", client.request(get(&server.url("/"))))
        .await
        .expect("a plain GET gets an answer");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let info = resp.extensions().get::<ConnectionInfo>().cloned();
    assert!(!info.expect("ConnectionInfo on every response").reused);
    assert_eq!(server.seen.accepted.load(Ordering::SeqCst), 2);
}

// --- Errors ---

/// A refused connection is a connect error, with nothing written and nothing opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_a_connect_error() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("local address")
        // Dropped here: nothing listens on `addr` any more.
    };
    let client = client();
    let err = bounded(
        "the refused request",
        client.request(get(&format!("http://{addr}/"))),
    )
    .await
    .expect_err("nothing listens");
    assert!(err.is_connect(), "{err:?}");
    assert_eq!(err.request_progress(), Progress::NotWritten);
    let stats = client.stats();
    assert_eq!(
        (stats.connections_opened, stats.idle, stats.active),
        (0, 0, 0),
        "{stats:?}"
    );
}

/// A server that closes in the middle of the response head: the request fails with
/// an incomplete-message (or I/O) cause, having started its response, so it is not
/// resent; the connection is counted as `request_failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_closing_mid_head_is_an_incomplete_message() {
    let server = RawServer::start(|mut stream, seen| async move {
        if read_head(&mut stream, &seen).await.is_some() {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-le").await;
            // Dropped: FIN in the middle of the head.
        }
    })
    .await;
    let client = client();
    let err = bounded("the request", client.request(get(&server.url("/"))))
        .await
        .expect_err("the head never completes");
    assert!(incomplete_or_io(&err), "{err:?}");
    assert_eq!(err.request_progress(), Progress::ResponseStarted, "{err:?}");
    assert_eq!(server.seen.requests.load(Ordering::SeqCst), 1, "not resent");
    let stats = settle(&client, "the failed connection to be counted", |s| {
        s.active == 0 && s.evictions.total() == 1
    })
    .await;
    assert_eq!(stats.evictions.request_failed, 1, "{stats:?}");
    assert_accounted(&stats);
}

/// A server that closes in the middle of the response body: the head arrived, the
/// body read fails with an incomplete-message (or I/O) cause, and the connection is
/// closed and counted, not pooled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_closing_mid_body_fails_the_body_read() {
    let server = RawServer::start(|mut stream, seen| async move {
        if read_head(&mut stream, &seen).await.is_some() {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten..")
                .await;
            // Dropped: FIN 90 bytes short.
        }
    })
    .await;
    let client = client();
    let resp = bounded("the request", client.request(get(&server.url("/"))))
        .await
        .expect("the head arrives whole");
    assert_eq!(resp.status(), StatusCode::OK);
    let err = bounded("the body", resp.into_body().collect())
        .await
        .expect_err("the body is 90 bytes short");
    assert!(incomplete_or_io(&err), "{err:?}");
    let stats = settle(&client, "the connection to be counted", |s| {
        s.active == 0 && s.evictions.total() == 1
    })
    .await;
    assert_eq!((stats.idle, stats.connections_opened), (0, 1), "{stats:?}");
    assert_accounted(&stats);
    assert_eq!(server.seen.requests.load(Ordering::SeqCst), 1);
}
