//! Issue 19, in real time on sockets (the paused-time twins are in `paused_time.rs`):
//! the pool learns a server's idle timer upward with a probe that no request rides,
//! and a request that may not be resent rides only a connection idle below what the
//! server was seen to allow.
//!
//! The lab origin runs on a thread of its own with an exact idle timer, no
//! `Keep-Alive` hint, and a FIN close. Every wait has hundreds of milliseconds of
//! margin on both sides of the timers it straddles.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};

use closefirst::lab::{Origin, OriginConfig};
use closefirst::{Client, ConnectionInfo, DeadlineSource};

/// The bound on any one request.
const WAIT: Duration = Duration::from_secs(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn origin(idle_timeout: Duration) -> Origin {
    Origin::builder(OriginConfig {
        idle_timeout,
        ..OriginConfig::default()
    })
    .numbered_responses(true)
    .start_on_thread()
    .expect("a listener on 127.0.0.1 and a thread")
}

/// One request with `x-request-id: id`, its body read to the end; panics unless 200.
async fn send(client: &Client<Full<Bytes>>, method: &str, url: &str, id: &str) -> ConnectionInfo {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("x-request-id", id)
        .body(Full::new(Bytes::from_static(b"payload")))
        .expect("a valid request");
    let exchange = async {
        let resp = client.request(req).await.expect("the request succeeds");
        assert_eq!(resp.status(), 200, "{method} {id}");
        let info = resp
            .extensions()
            .get::<ConnectionInfo>()
            .cloned()
            .expect("attached to every response");
        resp.into_body().collect().await.expect("the body ends");
        info
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {id} took longer than {WAIT:?}"))
}

/// The origin's server closes after 3 s idle. With `idle_timeout` 500 ms and a 125 ms
/// margin the first probe tests 1.25 s and proves it; the next tests 2.5 s and proves
/// it; the third tests 5 s and is closed by the server at 3 s: its timer is then
/// known, and no request met any of it.
#[tokio::test]
async fn a_probe_proves_longer_idle_times_then_finds_the_servers_timer() {
    let origin = origin(Duration::from_secs(3));
    let url = origin.url("/");
    let client: Client<Full<Bytes>> = Client::builder()
        .idle_timeout(ms(500))
        .keep_alive_margin(ms(125))
        .build()
        .expect("valid settings");

    // 500 ms: the connection becomes the probe; 1.25 s: proven, closed by the client.
    send(&client, "GET", &url, "one").await;
    tokio::time::sleep(ms(1_700)).await;
    let stats = client.stats();
    assert_eq!(
        (stats.probes.started, stats.probes.proven),
        (1, 1),
        "{stats:?}"
    );
    let o = &client.origin_stats()[0];
    assert_eq!(o.proven_idle, ms(1_250));
    assert_eq!(
        (o.idle_deadline, o.idle_deadline_source),
        (ms(1_125), DeadlineSource::Proven)
    );

    // 1.125 s: the probe again, testing 2.5 s, which the server allows.
    send(&client, "GET", &url, "two").await;
    tokio::time::sleep(ms(2_900)).await;
    let stats = client.stats();
    assert_eq!(
        (stats.probes.started, stats.probes.proven),
        (2, 2),
        "{stats:?}"
    );
    assert_eq!(client.origin_stats()[0].proven_idle, ms(2_500));

    // 2.375 s: the probe, testing 5 s; the server closes it at 3 s.
    send(&client, "GET", &url, "three").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.stats().probes.closed_by_server == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            client.stats()
        );
        tokio::time::sleep(ms(50)).await;
    }
    let o = &client.origin_stats()[0];
    let learned = o
        .learned_idle_timeout
        .expect("the probe's close is learned");
    assert!((ms(2_800)..ms(3_500)).contains(&learned), "{learned:?}");
    assert_eq!(o.idle_deadline_source, DeadlineSource::ObservedClose);
    assert_eq!(
        o.idle_closes.by_server, 0,
        "a probe's close is no parity violation"
    );
    assert_eq!(origin.handler_calls(), 3);
    for id in ["one", "two", "three"] {
        assert_eq!(origin.executions(id), 1, "{id}");
    }
}

/// The origin's server closes after 1 s idle. A POST without `Idempotency-Key` may not
/// be resent, so it rides only a connection idle below what the server was seen to
/// allow: at first contact nothing is known, and the POST 900 ms after the first one
/// (in the race window of a pool that reused on hope) gets a new connection. Once the
/// server's close has been seen (1 s), a POST 400 ms after the last response rides the
/// idle connection (below 1 s - 250 ms).
#[tokio::test]
async fn a_post_rides_only_a_connection_the_server_was_seen_to_keep_that_long() {
    let origin = origin(Duration::from_secs(1));
    let url = origin.url("/");
    let client: Client<Full<Bytes>> = Client::builder()
        .keep_alive_margin(ms(250))
        .build()
        .expect("valid settings");

    let first = send(&client, "POST", &url, "p1").await;
    tokio::time::sleep(ms(900)).await;
    let second = send(&client, "POST", &url, "p2").await;
    assert!(
        !first.reused && !second.reused,
        "nothing known: a new connection"
    );
    assert_ne!(first.id, second.id);

    // The server closes the first connection at 1 s: its timer is now known.
    tokio::time::sleep(ms(600)).await;
    let learned = client.origin_stats()[0].learned_idle_timeout;
    assert!(
        learned.is_some_and(|l| (ms(900)..ms(1_300)).contains(&l)),
        "{learned:?}"
    );

    // The second connection closes at 1 s too; a third POST opens one more, and a
    // fourth 400 ms after it rides it.
    let third = send(&client, "POST", &url, "p3").await;
    tokio::time::sleep(ms(400)).await;
    let fourth = send(&client, "POST", &url, "p4").await;
    assert!(fourth.reused && fourth.id == third.id, "{fourth:?}");
    assert_eq!(origin.handler_calls(), 4);
    for id in ["p1", "p2", "p3", "p4"] {
        assert_eq!(origin.executions(id), 1, "{id}");
    }
}
