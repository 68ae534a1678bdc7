//! Issue 18: what the pool concludes from a wake-up, a quiet socket or a close, when
//! an idle period starts, who gets a connection back, and whether every close is
//! counted. Each test names the defect it shows; they fail on the code they were
//! written against and guard the fixes.
//!
//! Servers run on threads of their own (the lab origin via `support`, or a raw
//! `std::net::TcpListener` where the lab origin cannot misbehave the way a test
//! needs), so a test may block its own runtime's only thread while the server acts.
//! Every request is bounded by a `tokio::time::timeout`.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::Layer as _;

use closefirst::connect::{Connection, SocketHandle};
use closefirst::lab::{Origin, OriginConfig};
use closefirst::{Client, PoolStats, Progress};

/// The bound on any one request, or any one wait for the pool to settle.
const WAIT: Duration = Duration::from_secs(10);

/// A lab origin on its own thread with `idle_timeout`, no `Keep-Alive` hint, FIN.
fn origin(idle_timeout: Duration) -> Origin {
    Origin::builder(OriginConfig {
        idle_timeout,
        ..OriginConfig::default()
    })
    .numbered_responses(true)
    .start_on_thread()
    .expect("a listener on 127.0.0.1 and a thread")
}

fn get_request(url: &str, id: &str) -> Request<Empty<Bytes>> {
    Request::get(url)
        .header("x-request-id", id)
        .body(Empty::new())
        .expect("a valid request")
}

/// One GET, its body read to the end, bounded by [`WAIT`]; panics with `what` on a
/// failure or a status other than 200.
async fn get_ok(client: &Client<Empty<Bytes>>, url: &str, id: &str) -> closefirst::ConnectionInfo {
    let exchange = async {
        let resp = client
            .request(get_request(url, id))
            .await
            .unwrap_or_else(|e| panic!("GET {id} failed: {e}"));
        assert_eq!(resp.status(), 200, "GET {id}");
        let info = resp
            .extensions()
            .get::<closefirst::ConnectionInfo>()
            .cloned()
            .expect("info attached");
        resp.into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("body of GET {id}: {e}"));
        info
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("GET {id} took longer than {WAIT:?}"))
}

/// Waits (real time, at most [`WAIT`]) until the stats satisfy `what`.
async fn settle<B: closefirst::Body>(
    client: &Client<B>,
    what: impl Fn(&PoolStats) -> bool,
) -> PoolStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = client.stats();
        if what(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "never settled: {stats:#?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every connection the pool opened is open (idle or in use) or was evicted under
/// exactly one reason.
fn assert_every_close_counted(stats: &PoolStats, scenario: &str) {
    let accounted = (stats.idle + stats.active) as u64 + stats.evictions.total();
    assert_eq!(
        stats.connections_opened,
        accounted,
        "{scenario}: {} connections opened, but idle {} + active {} + evictions {} = \
         {accounted}: a connection ended uncounted. {stats:#?}",
        stats.connections_opened,
        stats.idle,
        stats.active,
        stats.evictions.total(),
    );
}

// ---------------------------------------------------------------------------------
// Defect 1: a busy task drops healthy connections.
// ---------------------------------------------------------------------------------

/// Requests in flight at once, all polled by one task.
const BURST: usize = 256;
/// Connections the pool may open to the origin.
const BUSY_MAX_CONNECTIONS: usize = 64;
/// Bursts, one after the other, on the same pool.
const BUSY_ROUNDS: usize = 10;

/// Runs [`BUSY_ROUNDS`] bursts of [`BURST`] GETs through `client`, each burst polled
/// by this one task through a `FuturesUnordered`, then waits until no connection is
/// in use.
async fn busy_task_bursts(client: &Client<Empty<Bytes>>, url: &str) -> PoolStats {
    for round in 0..BUSY_ROUNDS {
        let mut burst: FuturesUnordered<_> = (0..BURST)
            .map(|i| {
                let client = client.clone();
                let id = format!("r{round}-{i}");
                let url = url.to_owned();
                async move {
                    let resp = client.request(get_request(&url, &id)).await?;
                    let status = resp.status();
                    resp.into_body().collect().await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(status)
                }
            })
            .collect();
        let all = async {
            while let Some(result) = burst.next().await {
                let status = result.unwrap_or_else(|e| panic!("round {round}: a GET failed: {e}"));
                assert_eq!(status, 200, "round {round}");
            }
        };
        tokio::time::timeout(WAIT, all)
            .await
            .unwrap_or_else(|_| panic!("round {round} took longer than {WAIT:?}"));
    }
    settle(client, |s| s.active == 0).await
}

/// Defect 1 (issue 18): one task driving 256 GETs at once, on a current-thread
/// runtime, under `max_connections_per_origin(64)`, 10 rounds, against a keep-alive
/// server that never closes within the test (idle timeout 60 s). Asserts that the
/// pool opens exactly 64 connections and evicts none: no `task_gone` and no
/// `closed_by_server`. A poll of hyper's connection future at check-in that returns
/// `Pending` because tokio's cooperative budget is spent (and wakes the waker at once)
/// is not news from the server, nor a runtime gone.
#[tokio::test(flavor = "current_thread")]
async fn defect_1_a_busy_task_keeps_its_healthy_connections() {
    let origin = origin(Duration::from_secs(60));
    let client: Client<Empty<Bytes>> = Client::builder()
        .max_connections_per_origin(BUSY_MAX_CONNECTIONS)
        .build()
        .expect("valid settings");
    let stats = busy_task_bursts(&client, &origin.url("/")).await;
    assert_eq!(
        (
            stats.evictions.task_gone,
            stats.evictions.closed_by_server,
            stats.evictions.total()
        ),
        (0, 0, 0),
        "healthy connections of a busy task were evicted: {stats:#?}"
    );
    assert_eq!(
        stats.connections_opened, BUSY_MAX_CONNECTIONS as u64,
        "connections opened: {stats:#?}"
    );
    assert_eq!(origin.connections(), BUSY_MAX_CONNECTIONS);
    assert_eq!(origin.idle_closes(), 0, "the server closed nothing");
    assert_eq!(origin.handler_calls(), BURST * BUSY_ROUNDS);
}

/// A TCP stream that gives the pool no socket handle, as a connector of one's own
/// might (an in-process tunnel, a transport without a file descriptor).
struct NoSocket(TokioIo<TcpStream>);

impl Connection for NoSocket {
    fn socket(&self) -> Option<SocketHandle> {
        None
    }
}

impl hyper::rt::Read for NoSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for NoSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Defect 1 (issue 18), without a socket handle: the same busy task through
/// `PoolLayer` over a connector whose IO has no socket (`Connection::socket` is
/// `None`), so the pool cannot peek. Asserts that a wake-up with nothing behind it is
/// not counted as a server close (`closed_by_server == 0`, no eviction at all), that
/// no idle timeout is learned from it, and that exactly 64 connections are opened.
#[tokio::test(flavor = "current_thread")]
async fn defect_1_a_busy_task_without_a_socket_handle_sees_no_server_close() {
    let origin = origin(Duration::from_secs(60));
    let connector = tower::service_fn(|uri: Uri| async move {
        let authority = uri
            .authority()
            .expect("an absolute URI")
            .as_str()
            .to_owned();
        let stream = TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(NoSocket(TokioIo::new(stream)))
    });
    let client: Client<Empty<Bytes>> = Client::builder()
        .max_connections_per_origin(BUSY_MAX_CONNECTIONS)
        .layer()
        .expect("valid settings")
        .layer(connector);
    let stats = busy_task_bursts(&client, &origin.url("/")).await;
    assert_eq!(
        stats.evictions.closed_by_server, 0,
        "a server that closed nothing was counted as closing: {stats:#?}"
    );
    assert!(
        stats.learned_idle_timeouts.is_empty(),
        "an idle timeout was learned from a server that closed nothing: {stats:#?}"
    );
    assert_eq!(stats.evictions.total(), 0, "{stats:#?}");
    assert_eq!(
        stats.connections_opened, BUSY_MAX_CONNECTIONS as u64,
        "{stats:#?}"
    );
    assert_eq!(origin.idle_closes(), 0, "the server closed nothing");
}

// ---------------------------------------------------------------------------------
// Defect 2: idle time is counted from the wrong moment.
// ---------------------------------------------------------------------------------

/// Defect 2 (issue 18): the server (lab origin, idle timeout 2 s, no hint, FIN) starts
/// its idle timer when it has written a response; the caller reads the head, waits
/// 1.5 s before reading the body, then 1.2 s more. Four rounds at the client's defaults
/// (idle timeout 4 s, margin 1 s). Asserts that every GET succeeds with one handler
/// call, that the pool learns the server's timer measured from the response (an entry
/// between 1.5 s and 2.5 s in `learned_idle_timeouts`), and that the server closed an
/// idle connection first at most once (counted on both sides).
#[tokio::test(flavor = "current_thread")]
async fn defect_2_idle_time_counts_from_the_response_not_from_the_read() {
    defect_2_idle_time_counts_from_the_response_not_from_the_read_scenario().await;
}

/// The same from a spawned task, where each connection gets a task of its own (see
/// `Pool::connect`) instead of being polled inline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_2_idle_time_counts_from_the_response_not_from_the_read_from_a_spawned_task() {
    tokio::spawn(defect_2_idle_time_counts_from_the_response_not_from_the_read_scenario())
        .await
        .expect("the scenario's assertions hold");
}

async fn defect_2_idle_time_counts_from_the_response_not_from_the_read_scenario() {
    const ROUNDS: usize = 4;
    // More than hyper takes in with the head, less than the loopback socket buffers
    // hold: the origin has written it all (and starts its timer) before the caller
    // reads it, and the connection is busy until the caller does.
    const BODY_PADDING: usize = 32 * 1024;
    let origin = Origin::builder(OriginConfig {
        idle_timeout: Duration::from_secs(2),
        ..OriginConfig::default()
    })
    .numbered_responses(true)
    .body_padding(BODY_PADDING)
    .start_on_thread()
    .expect("a listener and a thread");
    let client: Client<Empty<Bytes>> = Client::builder().build().expect("valid settings");
    let url = origin.url("/");
    for round in 0..ROUNDS {
        let id = format!("round-{round}");
        let resp = tokio::time::timeout(WAIT, client.request(get_request(&url, &id)))
            .await
            .unwrap_or_else(|_| panic!("GET {id} took longer than {WAIT:?}"))
            .unwrap_or_else(|e| panic!("GET {id} failed: {e}"));
        assert_eq!(resp.status(), 200, "GET {id}");
        // The server's idle timer runs from here; the body waits in hyper.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        tokio::time::timeout(WAIT, resp.into_body().collect())
            .await
            .unwrap_or_else(|_| panic!("body of {id} took longer than {WAIT:?}"))
            .unwrap_or_else(|e| panic!("body of {id}: {e}"));
        assert_eq!(origin.executions(&id), 1, "one handler call for {id}");
        tokio::time::sleep(Duration::from_millis(1_200)).await;
    }
    let stats = client.stats();
    let origin_stats = client.origin_stats();
    let learned = stats
        .learned_idle_timeouts
        .get(&format!("http://{}", origin.addr()));
    assert!(
        learned.is_some_and(
            |l| *l >= Duration::from_millis(1_500) && *l <= Duration::from_millis(2_500)
        ),
        "the server closes 2 s after each response; learned {learned:?}. \
         server idle closes {}, {stats:#?} {origin_stats:#?}",
        origin.idle_closes(),
    );
    assert!(
        origin.idle_closes() <= 1,
        "the server closed first {} times in {ROUNDS} rounds: {origin_stats:#?}",
        origin.idle_closes()
    );
    assert!(
        origin_stats[0].idle_closes.by_server <= 1,
        "{origin_stats:#?}"
    );
    assert_eq!(origin.handler_calls(), ROUNDS);
}

// ---------------------------------------------------------------------------------
// Defect 4: a waiter loses its place.
// ---------------------------------------------------------------------------------

/// Defect 4 (issue 18): `max_connections_per_origin(1)`. Request A holds the only
/// connection (the origin answers after 300 ms); W1 queues, then W2. A's connection is
/// granted to W1 as A finishes, but A's task then blocks the client's only thread for
/// 400 ms, during which the origin (idle timeout 100 ms) closes the idle connection;
/// W1's pre-reuse check then finds the FIN. Asserts that W1 keeps its place: W1's
/// response comes before W2's (completion order), and both succeed.
#[tokio::test(flavor = "current_thread")]
async fn defect_4_a_waiter_keeps_its_place_when_its_grant_is_found_closed() {
    let origin = Origin::builder(OriginConfig {
        idle_timeout: Duration::from_millis(100),
        response_delay: Duration::from_millis(300),
        ..OriginConfig::default()
    })
    .numbered_responses(true)
    .start_on_thread()
    .expect("a listener and a thread");
    let client: Client<Empty<Bytes>> = Client::builder()
        .max_connections_per_origin(1)
        .idle_timeout(Duration::from_secs(30))
        .build()
        .expect("valid settings");
    let url = origin.url("/");
    let done: Arc<Mutex<Vec<&'static str>>> = Arc::default();

    let a = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            get_ok(&client, &url, "A").await;
            // Whether A's connection was granted to W1 just before or just after this,
            // W1 has not run yet: the server closes the idle connection meanwhile.
            std::thread::sleep(Duration::from_millis(400));
        })
    };
    let spawn_waiter = |name: &'static str| {
        let (client, url, done) = (client.clone(), url.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            get_ok(&client, &url, name).await;
            done.lock().unwrap().push(name);
        })
    };
    let deadline = Instant::now() + WAIT;
    while origin.heads_seen("A") == 0 {
        assert!(Instant::now() < deadline, "A never reached the server");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let w1 = spawn_waiter("W1");
    settle(&client, |s| s.waiting == 1).await;
    let w2 = spawn_waiter("W2");
    settle(&client, |s| s.waiting == 2).await;

    for task in [a, w1, w2] {
        tokio::time::timeout(WAIT, task)
            .await
            .expect("every request ends in time")
            .expect("no task panicked");
    }
    assert_eq!(
        origin.idle_closes(),
        1,
        "the server closed A's idle connection"
    );
    let stats = client.stats();
    assert_eq!(
        stats.evictions.closed_by_server, 1,
        "the scenario: the connection granted to W1 was found closed before reuse: \
         {stats:#?}"
    );
    assert_eq!(
        *done.lock().unwrap(),
        ["W1", "W2"],
        "W1 queued first and must be served first (completion order); {stats:#?}"
    );
}

// ---------------------------------------------------------------------------------
// Defect 5: `DispatchGone` reported as "unsupported, nothing sent".
// ---------------------------------------------------------------------------------

/// What the raw server of [`slow_body_then_silent_post`] saw.
#[derive(Default)]
struct RawCounts {
    gets: AtomicUsize,
    posts: AtomicUsize,
}

/// Reads one request (head and `Content-Length` body) from `stream`; its method, or
/// `None` at EOF.
fn read_request(stream: &mut StdStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    head.split_whitespace().next().map(str::to_owned)
}

/// A raw HTTP/1.1 server on its own thread, one connection: a GET is answered with a
/// body whose second half comes 300 ms after the first; a POST is read in full,
/// counted, and answered only after 3 s.
fn slow_body_then_silent_post() -> (SocketAddr, Arc<RawCounts>) {
    let listener = StdListener::bind("127.0.0.1:0").expect("a listener on loopback");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let counts = Arc::new(RawCounts::default());
    let seen = Arc::clone(&counts);
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.set_nodelay(true);
        while let Some(method) = read_request(&mut stream) {
            if method == "GET" {
                seen.gets.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello");
                std::thread::sleep(Duration::from_millis(300));
                let _ = stream.write_all(b"world");
            } else {
                seen.posts.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_secs(3));
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            }
        }
    });
    (addr, counts)
}

/// Defect 5 (issue 18): a connection whose response body was still arriving when its
/// request returned has its hyper future on a task of the runtime it ran on (runtime
/// A). A POST from another runtime rides it; the server reads the POST and does not
/// answer; runtime A shuts down meanwhile, dropping the future ("dispatch task is
/// gone"). Asserts that the error tells the truth: the POST reached the server
/// (counted server-side, once), so `request_progress()` is `WrittenNoResponse` and the
/// error is not `is_unsupported()`.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn defect_5_a_dispatch_task_gone_mid_request_reports_what_was_written() {
    let (addr, counts) = slow_body_then_silent_post();
    let client: Client<Full<Bytes>> = Client::builder()
        .idle_timeout(Duration::from_secs(30))
        // Pinned: the POST must ride the connection whose future runs on runtime A,
        // which with learning on it would only on evidence of the server's timer.
        .learn_idle_timeout(false)
        .build()
        .expect("valid settings");
    let url = format!("http://{addr}/");

    let runtime_a = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    {
        let (client, url) = (client.clone(), url.clone());
        runtime_a
            .spawn(async move {
                let req = Request::get(&url)
                    .body(Full::default())
                    .expect("a valid request");
                let resp = client.request(req).await.expect("the GET succeeds");
                let body = resp.into_body().collect().await.expect("the body reads");
                assert_eq!(body.to_bytes(), "helloworld");
            })
            .await
            .expect("the GET task ends well");
    }
    settle(&client, |s| s.idle == 1).await;

    let post = {
        let client = client.clone();
        tokio::spawn(async move {
            let req = Request::post(&url)
                .header("x-request-id", "post")
                .body(Full::new(Bytes::from_static(b"payload")))
                .expect("a valid request");
            client.request(req).await
        })
    };
    let deadline = Instant::now() + WAIT;
    while counts.posts.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the POST never reached the server: {:#?}",
            client.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    runtime_a.shutdown_background();

    let result = tokio::time::timeout(WAIT, post)
        .await
        .expect("the POST ends in time")
        .expect("the POST task does not panic");
    assert_eq!(
        counts.posts.load(Ordering::SeqCst),
        1,
        "the server saw the POST once"
    );
    assert_eq!(counts.gets.load(Ordering::SeqCst), 1);
    match result {
        Ok(resp) => panic!(
            "expected the POST to fail with its dispatch task gone, got {}",
            resp.status()
        ),
        Err(err) => {
            assert!(
                !err.is_unsupported(),
                "a POST the server received is reported as unsupported: {err:?}"
            );
            assert_eq!(
                err.request_progress(),
                Progress::WrittenNoResponse,
                "the POST reached the server: {err:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// Defect 9: closes at check-in are not counted.
// ---------------------------------------------------------------------------------

/// Defect 9 (issue 18), case (a): the server sends a FIN right behind each response,
/// without `Connection: close` (lab origin, `close_after_requests(Some(1))`,
/// `announce_close(false)`); five sequential GETs. So that the FIN is in before the
/// connection can go back to the pool, whatever the machine's load, each body is
/// larger than hyper takes in with the head (32 KiB) and is read only once the origin
/// has closed. Asserts, once nothing is in use, that every connection opened is idle,
/// in use or evicted under one reason, and that the server's closes are counted as
/// such (`idle_closes.by_server >= 1`).
#[tokio::test(flavor = "current_thread")]
async fn defect_9a_a_fin_behind_the_response_is_counted() {
    defect_9a_a_fin_behind_the_response_is_counted_scenario().await;
}

/// The same from a spawned task, where each connection gets a task of its own (see
/// `Pool::connect`) instead of being polled inline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_9a_a_fin_behind_the_response_is_counted_from_a_spawned_task() {
    tokio::spawn(defect_9a_a_fin_behind_the_response_is_counted_scenario())
        .await
        .expect("the scenario's assertions hold");
}

async fn defect_9a_a_fin_behind_the_response_is_counted_scenario() {
    let origin = Origin::builder(OriginConfig {
        idle_timeout: Duration::MAX,
        close_after_requests: Some(1),
        ..OriginConfig::default()
    })
    .announce_close(false)
    .numbered_responses(true)
    .body_padding(32 * 1024)
    .start_on_thread()
    .expect("a listener and a thread");
    let client: Client<Empty<Bytes>> = Client::builder().build().expect("valid settings");
    let url = origin.url("/");
    for i in 0..5 {
        let id = format!("get-{i}");
        let resp = tokio::time::timeout(WAIT, client.request(get_request(&url, &id)))
            .await
            .expect("the head arrives in time")
            .unwrap_or_else(|e| panic!("GET {id} failed: {e}"));
        assert_eq!(resp.status(), 200);
        assert!(
            closes_done(&origin, i + 1, WAIT).await,
            "the origin closes after each response"
        );
        // The FIN is in the client's kernel by now.
        tokio::time::sleep(Duration::from_millis(50)).await;
        tokio::time::timeout(WAIT, resp.into_body().collect())
            .await
            .expect("the body ends in time")
            .unwrap_or_else(|e| panic!("body of {id}: {e}"));
    }
    let stats = settle(&client, |s| s.active == 0).await;
    assert_eq!(origin.handler_calls(), 5);
    assert_every_close_counted(&stats, "FIN behind each response");
    let by_server = client.origin_stats()[0].idle_closes.by_server;
    assert!(
        by_server >= 1,
        "the server closed {} connections, counted {by_server}: {:#?}",
        origin.closes_done(),
        client.origin_stats()
    );
}

/// Whether `origin` has closed `n` connections within `timeout` (real time).
async fn closes_done(origin: &Origin, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while origin.closes_done() < n {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

/// A raw HTTP/1.1 server on its own thread: every accepted connection is handed to
/// `serve` on a thread of its own.
fn raw_server(serve: impl Fn(StdStream) + Send + Sync + 'static) -> SocketAddr {
    let listener = StdListener::bind("127.0.0.1:0").expect("a listener on loopback");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let serve = Arc::clone(&serve);
            std::thread::spawn(move || serve(stream));
        }
    });
    addr
}

/// Defect 9 (issue 18), case (b): a server that answers `HEAD` with a
/// `content-length` and writes a few stray bytes behind the head (a body where a HEAD
/// response has none). Three HEADs. Asserts the identity: every connection opened is
/// idle, in use, or evicted under one reason.
#[tokio::test(flavor = "current_thread")]
async fn defect_9b_stray_bytes_after_a_head_response_are_counted() {
    let addr = raw_server(|mut stream| {
        let _ = stream.set_nodelay(true);
        while read_request(&mut stream).is_some() {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstray");
        }
    });
    let client: Client<Empty<Bytes>> = Client::builder().build().expect("valid settings");
    for i in 0..3 {
        let req = Request::builder()
            .method(Method::HEAD)
            .uri(format!("http://{addr}/"))
            .header("x-request-id", format!("head-{i}"))
            .body(Empty::new())
            .expect("a valid request");
        let resp = tokio::time::timeout(WAIT, client.request(req))
            .await
            .expect("the HEAD ends in time")
            .expect("the HEAD succeeds");
        assert_eq!(resp.status(), 200);
        tokio::time::timeout(WAIT, resp.into_body().collect())
            .await
            .expect("the empty body ends in time")
            .expect("an empty body");
        // Let hyper read the stray bytes before the next request.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = settle(&client, |s| s.active == 0).await;
    assert_every_close_counted(&stats, "stray bytes after HEAD");
}

/// Defect 9 (issue 18), case (c): a response whose body is dropped before its end
/// (1 MiB announced, written slowly; the caller drops the response after the head).
/// Three times. Asserts the identity: every connection opened is idle, in use, or
/// evicted under one reason.
#[tokio::test(flavor = "current_thread")]
async fn defect_9c_a_body_dropped_before_its_end_is_counted() {
    defect_9c_a_body_dropped_before_its_end_is_counted_scenario().await;
}

/// The same from a spawned task, where each connection gets a task of its own (see
/// `Pool::connect`) instead of being polled inline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_9c_a_body_dropped_before_its_end_is_counted_from_a_spawned_task() {
    tokio::spawn(defect_9c_a_body_dropped_before_its_end_is_counted_scenario())
        .await
        .expect("the scenario's assertions hold");
}

async fn defect_9c_a_body_dropped_before_its_end_is_counted_scenario() {
    let addr = raw_server(|mut stream| {
        let _ = stream.set_nodelay(true);
        while read_request(&mut stream).is_some() {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n");
            let chunk = [b'x'; 16 * 1024];
            for _ in 0..64 {
                if stream.write_all(&chunk).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    let client: Client<Empty<Bytes>> = Client::builder().build().expect("valid settings");
    for i in 0..3 {
        let resp = tokio::time::timeout(
            WAIT,
            client.request(get_request(&format!("http://{addr}/"), &format!("big-{i}"))),
        )
        .await
        .expect("the head arrives in time")
        .expect("the GET succeeds");
        assert_eq!(resp.status(), 200);
        drop(resp);
    }
    let stats = settle(&client, |s| s.active == 0).await;
    assert_every_close_counted(&stats, "body dropped before its end");
    // The client's doing, not the server's: under its own reason, and not in the
    // server's idle closes.
    assert_eq!(stats.evictions.response_unfinished, 3, "{stats:?}");
    assert_eq!(stats.evictions.closed_by_server, 0, "{stats:?}");
}
