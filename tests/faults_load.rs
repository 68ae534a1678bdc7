//! Fault behaviour under load: requests dropped at random points, and many requests
//! through a bounded number of connections. Nothing may leak (slots, waiters, fds)
//! and the client must keep working.

mod support;

#[path = "support/contract.rs"]
mod contract;
#[path = "support/faults.rs"]
mod harness;

use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use tokio::task::JoinSet;

use closefirst::Client;
use harness::{call, eventually, isolated, simple, Flavor, Kind, TestBody};
use support::{Rng, ServerConfig, TestServer};

/// Bound for a whole batch of requests; a hang fails instead of hanging.
const BATCH_LIMIT: Duration = Duration::from_secs(60);

/// Runs `total` requests from `concurrency` tasks; each task sends its share one
/// after another through `each`, which returns whether the request completed.
async fn batch<F, Fut>(total: usize, concurrency: usize, each: F) -> usize
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for worker in 0..concurrency {
        let each = each.clone();
        tasks.spawn(async move {
            let mut completed = 0;
            for i in (worker..total).step_by(concurrency) {
                if each(i).await {
                    completed += 1;
                }
            }
            completed
        });
    }
    tokio::time::timeout(BATCH_LIMIT, async {
        let mut completed = 0;
        while let Some(done) = tasks.join_next().await {
            completed += done.expect("a request task panicked");
        }
        completed
    })
    .await
    .expect("the batch finished in time")
}

#[test]
fn cancellation_at_random_points_leaks_nothing() {
    const REQUESTS: usize = 5_000;
    const CONCURRENCY: usize = 64;
    const MAX_DELAY: Duration = Duration::from_millis(5);

    isolated(Flavor::Multi, || async {
        let server = TestServer::start(ServerConfig {
            response_delay_range: Some((Duration::ZERO, MAX_DELAY)),
            delay_seed: 0x5eed,
            ..ServerConfig::default()
        });
        // Fewer connections than tasks: some requests are dropped while waiting.
        let client: Client<TestBody> = Client::builder()
            .max_connections_per_origin(CONCURRENCY / 2)
            .build()
            .expect("valid settings");
        let mut rng = Rng::new(0xca5ce1);
        let drop_after: std::sync::Arc<Vec<Duration>> = std::sync::Arc::new(
            (0..REQUESTS)
                .map(|_| rng.duration_between(Duration::ZERO, MAX_DELAY))
                .collect(),
        );
        let url = server.url("/");
        let each = {
            let client = client.clone();
            move |i: usize| {
                let client = client.clone();
                let url = url.clone();
                let limit = drop_after[i];
                async move {
                    let kind = if i % 2 == 0 { Kind::Get } else { Kind::Post };
                    let body = match kind {
                        Kind::Get => TestBody::empty(),
                        _ => TestBody::bytes("payload"),
                    };
                    let req = http::Request::builder()
                        .method(kind.method())
                        .uri(&url)
                        .body(body)
                        .expect("valid request");
                    // Dropped wherever it is when the time is up: connecting, writing,
                    // waiting for the head, or reading the body.
                    tokio::time::timeout(limit, async {
                        let resp = client.request(req).await.ok()?;
                        resp.into_body().collect().await.ok()
                    })
                    .await
                    .ok()
                    .flatten()
                    .is_some()
                }
            }
        };
        let completed = batch(REQUESTS, CONCURRENCY, each).await;
        eventually("every slot and waiter to be given back", || {
            let stats = client.stats();
            stats.active == 0 && stats.waiting == 0
        })
        .await;
        let stats = client.stats();
        eprintln!("{completed} of {REQUESTS} completed; {stats:?}");
        assert!(
            completed < REQUESTS,
            "some requests were cancelled ({completed} completed)"
        );
        assert!(stats.evictions.cancelled >= 1, "{stats:?}");

        // The client still works, on the same pool.
        for i in 0..100 {
            let answer = call(&client, simple(&server, Kind::Get, &format!("after-{i}")))
                .await
                .unwrap_or_else(|e| panic!("request {i} after the cancellations: {e:?}"));
            assert_eq!(answer.status, StatusCode::OK);
            answer.body.expect("the body is complete");
        }
        eventually("the last check-in", || client.stats().active == 0).await;
        let stats = client.stats();
        assert_eq!((stats.active, stats.waiting), (0, 0), "{stats:?}");
    });
}

#[test]
fn many_requests_through_a_bounded_number_of_connections() {
    const REQUESTS: usize = 10_000;
    const CONCURRENCY: usize = 256;
    const MAX_CONNECTIONS: usize = 32;

    isolated(Flavor::Multi, || async {
        let server = TestServer::start(ServerConfig::default());
        let client: Client<TestBody> = Client::builder()
            .max_connections_per_origin(MAX_CONNECTIONS)
            .build()
            .expect("valid settings");
        let url = server.url("/");
        let each = {
            let client = client.clone();
            move |i: usize| {
                let client = client.clone();
                let url = url.clone();
                async move {
                    let req = http::Request::get(&url)
                        .header("x-request-id", format!("many-{i}"))
                        .body(TestBody::empty())
                        .expect("valid request");
                    let resp = client
                        .request(req)
                        .await
                        .unwrap_or_else(|e| panic!("request {i}: {e:?}"));
                    assert_eq!(resp.status(), StatusCode::OK, "request {i}");
                    resp.into_body()
                        .collect()
                        .await
                        .unwrap_or_else(|e| panic!("body {i}: {e:?}"));
                    true
                }
            }
        };
        let completed = batch(REQUESTS, CONCURRENCY, each).await;
        assert_eq!(completed, REQUESTS);
        assert_eq!(server.handler_calls(), REQUESTS, "each executed once");
        let stats = client.stats();
        assert!(
            stats.connections_opened <= MAX_CONNECTIONS as u64,
            "{stats:?}"
        );
        assert!(
            server.connections_accepted() <= MAX_CONNECTIONS,
            "{} accepted",
            server.connections_accepted()
        );
        eventually("the last check-in", || {
            let stats = client.stats();
            stats.active == 0 && stats.waiting == 0
        })
        .await;
    });
}
