//! Timer logic under paused tokio time: idle deadlines, server hints, lifetime and
//! request limits, checkout timeouts, and the reaper's end.
//!
//! Connections here are in-memory (`tokio::io::duplex`) to an in-process hyper server
//! on the same runtime, made through `PoolLayer` with a custom connector: with no real
//! IO in flight, paused time only moves when the test moves it.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::DuplexStream;
use tower::Layer;

use closefirst::lab::DuplexIo;
use closefirst::{Client, ConnectionInfo};

/// Headers the server adds to the n-th response (1-based) on a connection.
type Headers = Arc<dyn Fn(usize) -> Vec<(&'static str, String)> + Send + Sync>;

#[derive(Clone)]
struct Server {
    headers: Headers,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Server {
    fn new(
        headers: impl Fn(usize) -> Vec<(&'static str, String)> + Send + Sync + 'static,
    ) -> Server {
        Server {
            headers: Arc::new(headers),
            accepted: Arc::default(),
            closed: Arc::default(),
            tasks: Arc::default(),
        }
    }

    fn plain() -> Server {
        Server::new(|_| Vec::new())
    }

    fn serve(&self, io: DuplexStream) {
        self.accepted.fetch_add(1, Ordering::SeqCst);
        let headers = Arc::clone(&self.headers);
        let closed = Arc::clone(&self.closed);
        let served = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let n = served.fetch_add(1, Ordering::SeqCst) + 1;
                // `/big` answers with more than hyper buffers, so the connection stays
                // busy until the caller reads the body.
                let body = if req.uri().path() == "/big" {
                    Bytes::from(vec![b'x'; 1 << 20])
                } else {
                    Bytes::from_static(b"hello")
                };
                let mut resp = Response::new(Full::new(body));
                for (name, value) in headers(n) {
                    resp.headers_mut().insert(name, value.parse().unwrap());
                }
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(io), service)
                .await;
            closed.fetch_add(1, Ordering::SeqCst);
        });
        self.tasks.lock().unwrap().push(task.abort_handle());
    }

    /// Closes every connection from the server's side, as an idle timer would.
    fn close_all(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }

    fn client(&self, builder: closefirst::Builder) -> Client<Empty<Bytes>> {
        let server = self.clone();
        let connector = tower::service_fn(move |_: Uri| {
            let server = server.clone();
            async move {
                let (client_side, server_side) = tokio::io::duplex(64 * 1024);
                server.serve(server_side);
                Ok::<_, Infallible>(DuplexIo::new(client_side))
            }
        });
        builder.layer().expect("valid settings").layer(connector)
    }
}

/// Lets every task that can run, run, without moving paused time.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

async fn get(client: &Client<Empty<Bytes>>) -> ConnectionInfo {
    get_from(client, "http://origin.test/").await
}

async fn get_from(client: &Client<Empty<Bytes>>, url: &str) -> ConnectionInfo {
    let req = Request::get(url).body(Empty::new()).unwrap();
    let resp = client.request(req).await.expect("request succeeds");
    let info = resp
        .extensions()
        .get::<ConnectionInfo>()
        .cloned()
        .expect("info attached");
    resp.into_body().collect().await.expect("body reads");
    settle().await;
    info
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn idle_connection_is_closed_by_the_client_exactly_at_idle_timeout() {
    let server = Server::plain();
    // Learning off: a fixed idle timeout, no probe (the next test has the probe).
    let client = server.client(
        Client::builder()
            .idle_timeout(Duration::from_secs(4))
            .learn_idle_timeout(false),
    );
    get(&client).await;
    assert_eq!(client.stats().idle, 1);

    tokio::time::advance(ms(3_999)).await;
    settle().await;
    assert_eq!(client.stats().idle, 1, "evicted before its deadline");
    assert_eq!(server.closed(), 0);

    tokio::time::advance(ms(1)).await;
    settle().await;
    let stats = client.stats();
    assert_eq!(stats.idle, 0, "not evicted at its deadline");
    assert_eq!(stats.evictions.idle_timeout, 1);
    assert_eq!(stats.evictions.total(), 1);
    assert_eq!(server.closed(), 1, "the client closed the connection");
}

#[tokio::test(start_paused = true)]
async fn at_its_deadline_an_idle_connection_probes_the_server_out_of_rotation() {
    let server = Server::plain();
    let client = server.client(Client::builder());
    let first = get(&client).await;
    assert!(!first.reused);

    // At the 4 s default it becomes the origin's probe instead of closing: no request
    // rides it; one that comes meanwhile gets a new connection.
    tokio::time::advance(Duration::from_secs(4)).await;
    settle().await;
    let stats = client.stats();
    assert_eq!((stats.probes.running, stats.probes.started), (1, 1));
    assert_eq!(stats.evictions.total(), 0);
    assert_eq!(server.closed(), 0);
    let during = get(&client).await;
    assert!(!during.reused && during.id != first.id, "{during:?}");
    assert_eq!(
        client.origin_stats()[0].probe,
        Some(Duration::from_secs(10))
    );

    // Still open at 10 s (2 x (4 s + 1 s margin)): 10 s is proven and the client
    // closes the probe; connections may now stay idle 9 s.
    tokio::time::advance(Duration::from_secs(6)).await;
    settle().await;
    let stats = client.stats();
    assert_eq!((stats.probes.running, stats.probes.proven), (0, 1));
    let origin = &client.origin_stats()[0];
    assert_eq!(origin.proven_idle, Duration::from_secs(10));
    assert_eq!(
        (origin.idle_deadline, origin.idle_deadline_source),
        (Duration::from_secs(9), closefirst::DeadlineSource::Proven)
    );
    // The connection opened meanwhile reached its 4 s deadline at 8 s, while the one
    // probe ran: closed then. From now on connections stay up to 9 s.
    assert_eq!(client.stats().evictions.idle_timeout, 2);
    let after = get(&client).await;
    assert!(!after.reused);
    tokio::time::advance(ms(8_999)).await;
    settle().await;
    let again = get(&client).await;
    assert!(again.reused && again.id == after.id, "{again:?}");
    assert_eq!(server.accepted(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_probe_the_server_closes_teaches_its_timer_and_no_request_meets_it() {
    let server = Server::plain();
    let client = server.client(Client::builder());
    get(&client).await;
    tokio::time::advance(Duration::from_secs(4)).await;
    settle().await;
    assert_eq!(client.stats().probes.running, 1);
    // The server closes it after 7 s idle: its timer is 7 s; no request was on it.
    tokio::time::advance(Duration::from_secs(3)).await;
    server.close_all();
    settle().await;
    let stats = client.stats();
    assert_eq!(
        (stats.probes.running, stats.probes.closed_by_server),
        (0, 1)
    );
    let origin = &client.origin_stats()[0];
    assert_eq!(origin.learned_idle_timeout, Some(Duration::from_secs(7)));
    assert_eq!(
        (origin.idle_deadline, origin.idle_deadline_source),
        (
            Duration::from_secs(6),
            closefirst::DeadlineSource::ObservedClose
        )
    );
    // Expected, not a parity violation.
    assert_eq!(origin.idle_closes.by_server, 0);
}

#[tokio::test(start_paused = true)]
async fn a_hint_above_the_default_is_honoured_up_to_the_ceiling() {
    let server = Server::new(|_| vec![("keep-alive", "timeout=30".into())]);
    let client = server.client(Client::builder().max_idle_timeout(Duration::from_secs(20)));
    get(&client).await;
    // 30 s − 1 s margin, capped at the 20 s ceiling.
    tokio::time::advance(ms(19_999)).await;
    settle().await;
    assert_eq!(client.stats().idle, 1);
    assert!(get(&client).await.reused);
    tokio::time::advance(Duration::from_secs(20)).await;
    settle().await;
    let stats = client.stats();
    assert_eq!((stats.idle, stats.evictions.server_hint), (0, 1));
    assert_eq!(stats.probes.started, 0, "a hinted timer is not probed");
}

#[tokio::test(start_paused = true)]
async fn keep_alive_hint_minus_margin_sets_the_deadline() {
    let server = Server::new(|_| vec![("keep-alive", "timeout=5".into())]);
    let client = server.client(
        Client::builder()
            .idle_timeout(Duration::from_secs(60))
            .keep_alive_margin(Duration::from_secs(1)),
    );
    get(&client).await;

    tokio::time::advance(ms(3_999)).await;
    settle().await;
    assert_eq!(client.stats().idle, 1);
    let info = get(&client).await;
    assert!(info.reused, "reused before the hinted deadline");
    assert_eq!(info.idle_for, ms(3_999));

    tokio::time::advance(ms(4_000)).await;
    settle().await;
    let stats = client.stats();
    assert_eq!(stats.idle, 0);
    assert_eq!(stats.evictions.server_hint, 1);
    assert_eq!(stats.evictions.idle_timeout, 0);
    assert_eq!(server.closed(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hint_that_leaves_no_time_after_the_margin_is_not_reused() {
    let server = Server::new(|_| vec![("keep-alive", "timeout=1".into())]);
    let client = server.client(Client::builder().keep_alive_margin(Duration::from_secs(1)));
    get(&client).await;
    let stats = client.stats();
    assert_eq!(stats.idle, 0);
    assert_eq!(stats.evictions.server_hint, 1);
    let info = get(&client).await;
    assert!(!info.reused);
    assert_eq!(server.accepted(), 2);
}

#[tokio::test(start_paused = true)]
async fn keep_alive_max_bounds_reuse_and_counts_down_without_a_new_hint() {
    // `max=2` on the first response only: two more requests, then the pool stops.
    let server = Server::new(|n| {
        if n == 1 {
            vec![("keep-alive", "timeout=30, max=2".into())]
        } else {
            Vec::new()
        }
    });
    let client = server.client(Client::builder());
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(get(&client).await.reused);
    }
    assert_eq!(seen, [false, true, true, false]);
    assert_eq!(client.stats().evictions.server_hint, 1);
    assert_eq!(server.accepted(), 2);
}

#[tokio::test(start_paused = true)]
async fn malformed_keep_alive_is_ignored_not_an_error() {
    let server = Server::new(|_| vec![("keep-alive", "timeout=soon".into())]);
    let client = server.client(
        Client::builder()
            .idle_timeout(Duration::from_secs(4))
            .learn_idle_timeout(false),
    );
    get(&client).await;
    assert!(get(&client).await.reused);
    tokio::time::advance(Duration::from_secs(4)).await;
    settle().await;
    assert_eq!(client.stats().evictions.idle_timeout, 1);
}

#[tokio::test(start_paused = true)]
async fn max_requests_per_connection_retires_the_connection() {
    let server = Server::plain();
    let client = server.client(Client::builder().max_requests_per_connection(3));
    let mut counts = Vec::new();
    for _ in 0..4 {
        counts.push(get(&client).await.requests);
    }
    assert_eq!(counts, [1, 2, 3, 1]);
    let stats = client.stats();
    assert_eq!(stats.evictions.max_requests, 1);
    assert_eq!(stats.connections_opened, 2);
    assert_eq!(server.closed(), 1);
}

#[tokio::test(start_paused = true)]
async fn max_lifetime_retires_the_connection_within_its_jitter() {
    let server = Server::plain();
    let client = server.client(
        Client::builder()
            .idle_timeout(Duration::from_secs(60))
            .max_lifetime(Duration::from_secs(10)),
    );
    // Lifetime is 9–10 s after jitter: every request before 9 s reuses the connection,
    // and none is left by 10 s.
    get(&client).await;
    for _ in 0..8 {
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(get(&client).await.reused);
    }
    tokio::time::advance(ms(2_001)).await;
    settle().await;
    let stats = client.stats();
    assert_eq!(stats.evictions.lifetime, 1, "{stats:?}");
    assert_eq!(stats.idle, 0);
    assert!(!get(&client).await.reused);
    assert_eq!(server.accepted(), 2);
}

#[tokio::test(start_paused = true)]
async fn waiting_for_a_busy_connection_times_out_with_is_timeout() {
    let server = Server::plain();
    let client = server.client(
        Client::builder()
            .max_connections_per_origin(1)
            .checkout_timeout(Duration::from_secs(2)),
    );
    let req = || {
        Request::get("http://origin.test/")
            .body(Empty::new())
            .unwrap()
    };
    // Hold the only connection: its large body is not read, so it is not back in the pool.
    let big = Request::get("http://origin.test/big")
        .body(Empty::new())
        .unwrap();
    let held = client.request(big).await.unwrap();
    settle().await;
    assert_eq!(client.stats().active, 1);
    let start = tokio::time::Instant::now();
    let err = client.request(req()).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(!err.is_connect());
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(client.stats().waiting, 0);

    // Once the body is read, the connection serves the next request.
    held.into_body().collect().await.unwrap();
    settle().await;
    assert!(get(&client).await.reused);
    assert_eq!(server.accepted(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_reaper_and_connection_tasks_end_when_the_client_is_dropped() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let server = Server::plain();
    let client = server.client(Client::builder().idle_timeout(Duration::from_secs(60)));
    get(&client).await;
    // The reaper and the server's connection task. The client's connection has no task
    // while it is idle: its hyper connection future is parked in the pool, woken only
    // if the server sends something.
    assert_eq!(metrics.num_alive_tasks(), 2);

    drop(client);
    settle().await;
    // Without moving time: the reaper did not wait for its 60 s deadline to notice.
    assert_eq!(metrics.num_alive_tasks(), 0);
    assert_eq!(server.closed(), 1);
}

fn learned(client: &Client<Empty<Bytes>>) -> Vec<(String, Duration)> {
    client.stats().learned_idle_timeouts.into_iter().collect()
}

#[tokio::test(start_paused = true)]
async fn a_learned_server_timeout_closes_connections_before_it_for_that_origin_only() {
    let server = Server::plain();
    let client = server.client(
        Client::builder()
            .idle_timeout(Duration::from_secs(30))
            .keep_alive_margin(ms(500)),
    );
    // The server closes a connection of origin.test after 2 s idle.
    get(&client).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    server.close_all();
    settle().await;
    assert_eq!(client.stats().evictions.closed_by_server, 1);
    assert_eq!(
        learned(&client),
        [("http://origin.test".to_string(), Duration::from_secs(2))]
    );

    // Now origin.test's connections are closed at 2 s - margin; other.test's are not.
    let first = get(&client).await;
    assert!(!first.reused);
    get_from(&client, "http://other.test/").await;
    assert_eq!(client.stats().idle, 2);
    tokio::time::advance(ms(1_499)).await;
    settle().await;
    assert_eq!(client.stats().idle, 2);
    tokio::time::advance(ms(1)).await;
    settle().await;
    let stats = client.stats();
    assert_eq!(stats.evictions.learned_timeout, 1);
    assert_eq!(stats.idle, 1, "other.test's connection stays");
    // At 30 s, other.test's connection (nothing known of its server) becomes its
    // probe rather than closing; origin.test's timer is known: no probe there.
    tokio::time::advance(Duration::from_secs(30)).await;
    settle().await;
    let stats = client.stats();
    assert_eq!((stats.probes.running, stats.evictions.idle_timeout), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_shorter_close_is_followed_at_once_and_one_under_the_margin_is_ignored() {
    let server = Server::plain();
    // A 200 ms margin: once 2 s is learned the pool closes at 1.8 s, so the server can
    // still be seen closing earlier.
    let client = server.client(
        Client::builder()
            .idle_timeout(Duration::from_secs(30))
            .keep_alive_margin(ms(200)),
    );
    get(&client).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    server.close_all();
    settle().await;
    assert_eq!(learned(&client)[0].1, Duration::from_secs(2));

    // The server shortens its timer (a redeploy): followed after one close.
    get(&client).await;
    tokio::time::advance(ms(1_200)).await;
    server.close_all();
    settle().await;
    assert_eq!(client.stats().evictions.closed_by_server, 2);
    assert_eq!(learned(&client)[0].1, ms(1_200));

    // A close sooner than the margin is not an observation at all.
    get(&client).await;
    tokio::time::advance(ms(100)).await;
    server.close_all();
    settle().await;
    assert_eq!(client.stats().evictions.closed_by_server, 3);
    assert_eq!(learned(&client)[0].1, ms(1_200));
}

#[tokio::test(start_paused = true)]
async fn learning_can_be_turned_off() {
    let server = Server::plain();
    let client = server.client(Client::builder().learn_idle_timeout(false));
    get(&client).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    server.close_all();
    settle().await;
    assert_eq!(client.stats().evictions.closed_by_server, 1);
    assert!(learned(&client).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_connector_that_never_finishes_hits_the_connect_timeout() {
    let connector =
        tower::service_fn(|_: Uri| std::future::pending::<Result<DuplexIo, Infallible>>());
    let client: Client<Empty<Bytes>> = Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .layer()
        .unwrap()
        .layer(connector);
    let start = tokio::time::Instant::now();
    let req = Request::get("http://origin.test/")
        .body(Empty::new())
        .unwrap();
    let err = client.request(req).await.unwrap_err();
    assert!(err.is_connect() && err.is_timeout(), "{err}");
    assert_eq!(
        err.to_string(),
        "GET http://origin.test: connect timed out after 3000 ms"
    );
    assert_eq!(err.attempts(), 1);
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(client.stats().active, 0, "the slot was given back");
}

#[tokio::test(start_paused = true)]
async fn a_waiting_request_is_pending_until_the_connection_is_free() {
    use tokio_test::assert_pending;

    let server = Server::plain();
    let client = server.client(Client::builder().max_connections_per_origin(1));
    let big = Request::get("http://origin.test/big")
        .body(Empty::new())
        .unwrap();
    let held = client.request(big).await.unwrap();

    let req = Request::get("http://origin.test/")
        .body(Empty::new())
        .unwrap();
    let mut waiting = tokio_test::task::spawn(client.request(req));
    assert_pending!(waiting.poll());
    settle().await;
    assert_pending!(waiting.poll());
    assert_eq!(client.stats().waiting, 1);

    // Reading the held body frees the connection; the waiter is woken and, polled on,
    // served on it.
    held.into_body().collect().await.unwrap();
    settle().await;
    assert!(waiting.is_woken());
    let resp = loop {
        if let std::task::Poll::Ready(resp) = waiting.poll() {
            break resp;
        }
        settle().await;
    };
    let resp = resp.expect("served on the freed connection");
    let info = resp.extensions().get::<ConnectionInfo>().unwrap();
    assert!(info.reused);
    assert_eq!(server.accepted(), 1);
}
