//! `Client::preconnect` on real sockets, counted on the server side: connections opened
//! before traffic (TLS included) that the first requests reuse, the limits, a warm
//! connection closed by the client before the server's idle timer (counted from its
//! accept), and a failed preconnect that no request sees.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::Empty;
use tower::{Layer as _, ServiceExt as _};

use closefirst::connect::TcpConnector;
use closefirst::{Client, ConnectionInfo};
use support::{until, ServerConfig, TestServer};

const WAIT: Duration = Duration::from_secs(5);

async fn get(client: &Client<Empty<Bytes>>, url: &str) -> ConnectionInfo {
    support::get(client, url).await.0
}

fn uri(server: &TestServer) -> Uri {
    server.url("/").parse().expect("a valid URI")
}

#[tokio::test]
async fn preconnected_connections_are_open_before_traffic_and_carry_the_first_requests() {
    let server = TestServer::start(ServerConfig::default());
    let client: Client<Empty<Bytes>> = Client::builder()
        .idle_timeout(Duration::from_secs(600))
        .build()
        .expect("valid settings");
    fn is_send<T: Send>(t: T) -> T {
        t
    }
    let opened = is_send(client.preconnect(&uri(&server), 3))
        .await
        .expect("a valid origin");
    assert_eq!(opened, 3);
    assert!(
        server
            .wait_until_async(|s| s.connections_accepted() == 3, WAIT)
            .await
    );
    assert_eq!(server.handler_calls(), 0, "no request was sent");
    let stats = client.stats();
    assert_eq!((stats.idle, stats.connections_opened), (3, 3), "{stats:?}");
    assert_eq!((stats.preconnects.opened, stats.preconnects.failed), (3, 0));

    // Three requests at once ride the three warm connections.
    let url = server.url("/");
    let infos = futures_util::future::join_all((0..3).map(|_| get(&client, &url))).await;
    for info in &infos {
        assert!(info.reused, "{info:?}");
        assert_eq!(info.requests, 1);
    }
    assert_eq!(server.connections_accepted(), 3);
    // It has three: none more; asked for five, two more.
    until(&client, |s| s.idle == 3).await;
    assert_eq!(client.preconnect(&uri(&server), 3).await.unwrap(), 0);
    assert_eq!(client.preconnect(&uri(&server), 5).await.unwrap(), 2);
    assert!(
        server
            .wait_until_async(|s| s.connections_accepted() == 5, WAIT)
            .await
    );

    let err = client
        .preconnect(&"/no-origin".parse().unwrap(), 1)
        .await
        .unwrap_err();
    assert!(err.is_invalid_uri(), "{err}");
}

#[tokio::test]
async fn preconnect_stays_within_the_per_origin_and_total_limits() {
    let a = TestServer::start(ServerConfig::default());
    let b = TestServer::start(ServerConfig::default());
    let client: Client<Empty<Bytes>> = Client::builder()
        .max_connections_per_origin(2)
        .max_connections_total(3)
        .build()
        .expect("valid settings");
    assert_eq!(client.preconnect(&uri(&a), 5).await.unwrap(), 2);
    assert_eq!(client.preconnect(&uri(&b), 5).await.unwrap(), 1);
    assert!(
        a.wait_until_async(|s| s.connections_accepted() == 2, WAIT)
            .await
    );
    assert!(
        b.wait_until_async(|s| s.connections_accepted() == 1, WAIT)
            .await
    );
    let stats = client.stats();
    assert_eq!(stats.idle, 3);
    assert_eq!(stats.evictions.total(), 0, "{stats:?}");
}

/// A client whose connector takes `delay` after the TCP connect (a slow TLS
/// handshake, say) and fails the connects for which `fails(n)` (1-based); and the
/// count of connects.
fn client_with(
    builder: closefirst::Builder,
    delay: Duration,
    fails: impl Fn(usize) -> bool + Send + Sync + 'static,
) -> (Client<Empty<Bytes>>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let fails = Arc::new(fails);
    let counter = Arc::clone(&calls);
    let connector = tower::service_fn(move |uri: Uri| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        let fails = fails(n);
        async move {
            let io = TcpConnector::new().oneshot(uri).await?;
            tokio::time::sleep(delay).await;
            if fails {
                // A handshake that failed after the TCP connect.
                drop(io);
                return Err("handshake failed (test)".into());
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(io)
        }
    });
    let layer = builder.layer().expect("valid settings");
    (layer.layer(connector), calls)
}

#[tokio::test]
async fn a_warm_connection_is_closed_by_the_client_before_the_servers_timer_from_its_accept() {
    // The server closes connections idle 1 s, counted from its accept; the handshake
    // ends 600 ms after the connect (a slow TLS handshake, say). The client's 600 ms
    // idle timeout must count from the connect too: it closes at about 600 ms after
    // the accept, not at 1.2 s, after the server.
    let server = TestServer::start(ServerConfig {
        idle_close: Some(Duration::from_secs(1)),
        ..ServerConfig::default()
    });
    let (client, _) = client_with(
        Client::builder()
            .idle_timeout(Duration::from_millis(600))
            // No probe: the deadline alone decides.
            .learn_idle_timeout(false),
        Duration::from_millis(600),
        |_| false,
    );
    assert_eq!(client.preconnect(&uri(&server), 1).await.unwrap(), 1);
    until(&client, |s| s.evictions.idle_timeout == 1).await;
    assert!(
        server
            .wait_until_async(|s| s.client_closed_first() == 1, WAIT)
            .await
    );
    assert_eq!(server.server_closed_idle(), 0, "the server closed it first");
    assert_eq!(client.stats().evictions.closed_by_server, 0);
}

#[tokio::test]
async fn a_failed_preconnect_is_logged_and_counted_and_no_request_sees_it() {
    let server = TestServer::start(ServerConfig::default());
    // The first connect fails after its TCP connect; the others succeed.
    let (client, calls) = client_with(Client::builder(), Duration::ZERO, |n| n == 1);
    assert_eq!(client.preconnect(&uri(&server), 2).await.unwrap(), 1);
    let stats = client.stats();
    assert_eq!((stats.preconnects.opened, stats.preconnects.failed), (1, 1));
    // Later requests: one rides the warm connection, the other opens one.
    let first = get(&client, &server.url("/")).await;
    assert!(first.reused);
    let url = server.url("/");
    let (a, b) = tokio::join!(get(&client, &url), get(&client, &url));
    assert_eq!(u32::from(a.reused) + u32::from(b.reused), 1, "{a:?} {b:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let stats = client.stats();
    assert_eq!(
        stats.resends.not_written + stats.resends.written_no_response,
        0
    );

    // Nothing listening: refused, counted, and not an error for the caller.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = closed.local_addr().expect("its address").port();
    drop(closed);
    let nowhere: Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
    assert_eq!(client.preconnect(&nowhere, 3).await.unwrap(), 0);
    // The three ran at once; each failed and counts.
    assert_eq!(client.stats().preconnects.failed, 4);
}

#[cfg(feature = "rustls")]
#[allow(dead_code)]
#[path = "../examples/race/certs.rs"]
mod certs;

/// TLS 1.3 servers send session tickets just after the handshake: on a warm
/// connection they arrive while it is idle, and a request sent right after
/// `preconnect` must read them through rather than take them for a close.
#[cfg(feature = "rustls")]
#[tokio::test]
async fn preconnect_completes_the_tls_handshake_ahead_of_the_request() {
    tls_scenario().await;
}

/// The same from a spawned task on the multi-thread runtime, where the connection
/// gets a task of its own.
#[cfg(feature = "rustls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preconnect_completes_the_tls_handshake_ahead_of_the_request_from_a_task() {
    tokio::spawn(tls_scenario()).await.expect("the scenario");
}

#[cfg(feature = "rustls")]
async fn tls_scenario() {
    use closefirst::lab::{Origin, OriginConfig};
    let cert = certs::TestCert::new();
    let origin = Origin::builder(OriginConfig {
        idle_timeout: Duration::from_secs(600),
        ..OriginConfig::default()
    })
    .tls(cert.server_config())
    .start_on_thread()
    .expect("a TLS lab origin");
    let client: Client<Empty<Bytes>> = Client::builder()
        .tls_config(cert.client_config())
        .build()
        .expect("valid settings");
    let url = origin.url("/");
    assert!(url.starts_with("https://"), "{url}");
    assert_eq!(
        client.preconnect(&url.parse().unwrap(), 1).await.unwrap(),
        1
    );
    let info = get(&client, &url).await;
    assert!(
        info.reused,
        "the request did not ride the warm TLS connection: {:?}",
        client.stats()
    );
    assert_eq!(origin.connections(), 1);
    assert_eq!(origin.handler_calls(), 1);
}
