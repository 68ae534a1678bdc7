//! Pool control on real sockets, seen from the server: `Client::close_idle` and
//! `close_idle_origin` close idle connections now (the server reads EOF long before its
//! own timer, which never fires here), dropping the last clone of a client does the
//! same even while a request is in flight, and `ConnectionInfo::poison` keeps a
//! connection from being reused.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

use closefirst::lab::{Origin, OriginConfig};
use closefirst::{Client, ConnectionInfo};
use support::{until, ServerConfig, TestServer};

/// Long enough that no idle connection closes on its own while a test runs; the test
/// servers' own idle timers never fire.
const NEVER: Duration = Duration::from_secs(600);
const WAIT: Duration = Duration::from_secs(5);

fn client() -> Client<Empty<Bytes>> {
    Client::builder()
        .idle_timeout(NEVER)
        .build()
        .expect("valid settings")
}

async fn get(client: &Client<Empty<Bytes>>, url: &str) -> ConnectionInfo {
    support::get(client, url).await.0
}

fn get_request(url: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(url)
        .body(Empty::new())
        .expect("a valid request")
}

/// A listener that accepts (in the kernel's backlog) and never answers: a request to
/// it stays in flight until it is dropped.
fn silent_listener() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    let url = format!("http://{}/", listener.local_addr().expect("its address"));
    (listener, url)
}

#[tokio::test]
async fn close_idle_closes_every_idle_connection_and_leaves_those_in_use() {
    let a = TestServer::start(ServerConfig::default());
    let b = TestServer::start(ServerConfig::default());
    let slow = TestServer::start(ServerConfig {
        response_delay: Some(Duration::from_millis(500)),
        ..ServerConfig::default()
    });
    let client = client();
    get(&client, &a.url("/")).await;
    get(&client, &b.url("/")).await;
    until(&client, |s| s.idle == 2).await;
    // A request in flight on a third connection while the idle ones are closed.
    let in_flight = tokio::spawn({
        let client = client.clone();
        let url = slow.url("/");
        async move { get(&client, &url).await }
    });
    assert!(
        slow.wait_until_async(|s| s.handler_calls() == 1, WAIT)
            .await
    );

    assert_eq!(client.close_idle(), 2);
    for server in [&a, &b] {
        assert!(
            server
                .wait_until_async(|s| s.client_closed_first() == 1, WAIT)
                .await,
            "the server never read the client's FIN"
        );
    }
    let stats = client.stats();
    assert_eq!(stats.evictions.closed_by_user, 2, "{stats:?}");
    assert_eq!(stats.idle, 0);

    // The connection in use comes back to the pool as usual, and stays open.
    let info = in_flight.await.expect("the request task");
    assert!(!info.reused);
    until(&client, |s| s.idle == 1 && s.active == 0).await;
    assert_eq!(slow.client_closed_first(), 0);
    assert!(get(&client, &slow.url("/")).await.reused);
    // The others open new connections.
    assert!(!get(&client, &a.url("/")).await.reused);
    assert_eq!(a.connections_accepted(), 2);
    assert_eq!(client.close_idle(), 2);
    assert_eq!(client.stats().evictions.closed_by_user, 4);
}

#[tokio::test]
async fn close_idle_origin_closes_only_that_origins_idle_connections() {
    let a = TestServer::start(ServerConfig::default());
    let b = TestServer::start(ServerConfig::default());
    let client = client();
    get(&client, &a.url("/")).await;
    get(&client, &b.url("/")).await;
    until(&client, |s| s.idle == 2).await;

    // The path does not matter: the origin is scheme, host and port.
    let uri: http::Uri = a.url("/some/path?q=1").parse().unwrap();
    assert_eq!(client.close_idle_origin(&uri).expect("a valid origin"), 1);
    assert!(
        a.wait_until_async(|s| s.client_closed_first() == 1, WAIT)
            .await
    );
    assert_eq!(b.client_closed_first(), 0);
    assert_eq!(client.stats().idle, 1);
    assert!(get(&client, &b.url("/")).await.reused);
    let origins = client.origin_stats();
    let of = |server: &TestServer| {
        let port = server.addr().port();
        origins
            .iter()
            .find(|o| o.port == port)
            .expect("tracked")
            .evictions
            .closed_by_user
    };
    assert_eq!((of(&a), of(&b)), (1, 0));

    let err = client
        .close_idle_origin(&"/relative".parse().unwrap())
        .unwrap_err();
    assert!(err.is_invalid_uri(), "{err}");
    let err = client
        .close_idle_origin(&"ftp://host/".parse().unwrap())
        .unwrap_err();
    assert!(err.is_invalid_uri(), "{err}");
    assert!(err.to_string().contains("ftp"), "{err}");
}

#[tokio::test]
async fn close_idle_closes_an_origins_probe_too() {
    let server = TestServer::start(ServerConfig::default());
    // With nothing known of the server's timer, the idle connection becomes the
    // origin's probe at 1 s, and stays open until about 2.2 s.
    let client: Client<Empty<Bytes>> = Client::builder()
        .idle_timeout(Duration::from_secs(1))
        .keep_alive_margin(Duration::from_millis(100))
        .build()
        .expect("valid settings");
    get(&client, &server.url("/")).await;
    until(&client, |s| s.probes.running == 1).await;
    assert_eq!(client.stats().idle, 1, "the probe counts as idle");

    assert_eq!(client.close_idle(), 1);
    assert!(
        server
            .wait_until_async(|s| s.client_closed_first() == 1, WAIT)
            .await
    );
    let stats = client.stats();
    assert_eq!((stats.idle, stats.probes.running), (0, 0), "{stats:?}");
    assert_eq!(stats.evictions.closed_by_user, 1);
    assert_eq!((stats.probes.proven, stats.probes.closed_by_server), (0, 0));
    assert!(stats.learned_idle_timeouts.is_empty(), "{stats:?}");
}

/// Drops the last clone of a client that has an idle connection to `idle_at`, a
/// request in flight to a server that never answers (which keeps the pool alive), and
/// a request to `slow_at` that is answered after the drop. Returns the two requests'
/// tasks.
async fn drop_with_requests_in_flight(
    idle_at: &TestServer,
    slow_at: &TestServer,
    silent_url: &str,
) -> (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>) {
    let client = client();
    let other_clone = client.clone();
    get(&client, &idle_at.url("/")).await;
    until(&client, |s| s.idle == 1).await;
    let silent = tokio::spawn({
        let request = client.request(get_request(silent_url));
        async move {
            let _ = request.await;
        }
    });
    let slow = tokio::spawn({
        let request = client.request(get_request(&slow_at.url("/")));
        async move {
            let resp = request.await.expect("the slow server answers");
            resp.into_body().collect().await.expect("its body");
        }
    });
    assert!(
        slow_at
            .wait_until_async(|s| s.handler_calls() == 1, WAIT)
            .await
    );
    drop(other_clone);
    assert_eq!(
        idle_at.client_closed_first(),
        0,
        "a clone is not the last one"
    );
    drop(client);
    (silent, slow)
}

/// What the servers see after [`drop_with_requests_in_flight`].
async fn assert_closed_after_the_drop(
    idle_at: &TestServer,
    slow_at: &TestServer,
    silent: tokio::task::JoinHandle<()>,
    slow: tokio::task::JoinHandle<()>,
) {
    assert!(
        idle_at
            .wait_until_async(|s| s.client_closed_first() == 1, WAIT)
            .await,
        "the idle connection stayed open after the last clone was dropped"
    );
    // The request answered after the drop: its connection is closed, not kept for a
    // client that is gone (the silent request still keeps the pool alive).
    slow.await.expect("the slow request");
    assert!(
        slow_at
            .wait_until_async(|s| s.client_closed_first() == 1, WAIT)
            .await,
        "a connection checked in after the last clone was dropped stayed open"
    );
    assert!(!silent.is_finished(), "the silent request was cut short");
    silent.abort();
}

fn slow_server() -> TestServer {
    TestServer::start(ServerConfig {
        response_delay: Some(Duration::from_millis(300)),
        ..ServerConfig::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_clone_closes_idle_connections_at_once_from_a_spawned_task() {
    let idle_at = Arc::new(TestServer::start(ServerConfig::default()));
    let slow_at = Arc::new(slow_server());
    let (_listener, silent_url) = silent_listener();
    // Used from a spawned task, as a proxy's handler would: its connections get tasks
    // of their own.
    let (silent, slow) = tokio::spawn({
        let (idle_at, slow_at) = (Arc::clone(&idle_at), Arc::clone(&slow_at));
        async move { drop_with_requests_in_flight(&idle_at, &slow_at, &silent_url).await }
    })
    .await
    .expect("the client's task");
    assert_closed_after_the_drop(&idle_at, &slow_at, silent, slow).await;
}

#[test]
fn dropping_the_last_clone_closes_idle_connections_at_once_from_block_on() {
    let idle_at = TestServer::start(ServerConfig::default());
    let slow_at = slow_server();
    let (_listener, silent_url) = silent_listener();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // Used from `block_on`, outside any task: the idle connection's future is parked
    // in the pool, not on a task.
    runtime.block_on(async {
        let (silent, slow) = drop_with_requests_in_flight(&idle_at, &slow_at, &silent_url).await;
        assert_closed_after_the_drop(&idle_at, &slow_at, silent, slow).await;
    });
}

#[tokio::test]
async fn a_poisoned_idle_connection_is_closed_and_never_reused() {
    let server = TestServer::start(ServerConfig::default());
    let client = client();
    let first = get(&client, &server.url("/")).await;
    // A small response is read to its end with its head: the connection is idle
    // already.
    until(&client, |s| s.idle == 1).await;
    first.poison();
    // At once, before the reaper has run (on this same thread): not reused.
    let second = get(&client, &server.url("/")).await;
    assert!(!second.reused, "a poisoned connection was reused");
    assert_eq!(server.connections_accepted(), 2);
    assert!(
        server
            .wait_until_async(|s| s.client_closed_first() == 1, WAIT)
            .await,
        "the poisoned connection stayed open"
    );
    let stats = client.stats();
    assert_eq!(stats.evictions.poisoned, 1, "{stats:?}");
    assert_eq!(stats.evictions.total(), 1, "{stats:?}");
    // Once more on the closed one, and on a clone of the info: nothing changes.
    first.poison();
    first.clone().poison();
    until(&client, |s| s.idle == 1).await;
    assert_eq!(client.stats().evictions.poisoned, 1);
    assert!(get(&client, &server.url("/")).await.reused);
}

#[tokio::test]
async fn a_poisoned_idle_connection_is_closed_by_the_reaper_without_a_request() {
    let server = TestServer::start(ServerConfig::default());
    let client = client();
    let info = get(&client, &server.url("/")).await;
    until(&client, |s| s.idle == 1).await;
    info.poison();
    assert!(
        server
            .wait_until_async(|s| s.client_closed_first() == 1, WAIT)
            .await,
        "the poisoned idle connection stayed open"
    );
    until(&client, |s| s.idle == 0 && s.evictions.poisoned == 1).await;
}

#[tokio::test]
async fn a_connection_poisoned_before_its_body_is_read_is_closed_instead_of_checked_in() {
    // A body larger than hyper takes in with the head: the connection is busy until
    // the caller reads it.
    let origin = Origin::builder(OriginConfig {
        idle_timeout: Duration::MAX,
        ..OriginConfig::default()
    })
    .body_padding(1 << 20)
    .start_on_thread()
    .expect("a lab origin");
    let client = client();
    let resp = client
        .request(get_request(&origin.url("/")))
        .await
        .expect("a response");
    let info = resp
        .extensions()
        .get::<ConnectionInfo>()
        .cloned()
        .expect("info attached");
    assert_eq!(client.stats().active, 1);
    info.poison();
    resp.into_body().collect().await.expect("the body");
    let deadline = std::time::Instant::now() + WAIT;
    while origin.client_closes() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the poisoned connection was kept"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = client.stats();
    assert_eq!((stats.idle, stats.active), (0, 0), "{stats:?}");
    assert_eq!(stats.evictions.poisoned, 1, "{stats:?}");
}
