//! The caps across origins on real sockets, seen from the servers:
//! `max_connections_total` closes another origin's idle connection to make room, and a
//! request with no room waits until a connection of another origin ends (which is then
//! closed for it, not pooled); `max_idle_total` closes the least recently used idle
//! connection of any origin. The servers' own idle timers never fire here: every EOF
//! they read is the client's.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;

use closefirst::{Client, ConnectionInfo};
use support::{until, ServerConfig, TestServer};

const WAIT: Duration = Duration::from_secs(5);

fn builder() -> closefirst::Builder {
    Client::builder().idle_timeout(Duration::from_secs(600))
}

async fn get(client: &Client<Empty<Bytes>>, url: &str) -> ConnectionInfo {
    support::get(client, url).await.0
}

#[tokio::test]
async fn at_max_connections_total_the_least_recently_used_idle_connection_makes_room() {
    let servers: Vec<TestServer> = (0..3)
        .map(|_| TestServer::start(ServerConfig::default()))
        .collect();
    let client: Client<Empty<Bytes>> = builder()
        .max_connections_total(2)
        .build()
        .expect("valid settings");
    get(&client, &servers[0].url("/")).await;
    get(&client, &servers[1].url("/")).await;
    until(&client, |s| s.idle == 2).await;

    let info = get(&client, &servers[2].url("/")).await;
    assert!(!info.reused);
    assert!(
        servers[0]
            .wait_until_async(|s| s.client_closed_first() == 1, WAIT)
            .await,
        "the least recently used idle connection was not closed"
    );
    assert_eq!(servers[1].client_closed_first(), 0);
    let stats = client.stats();
    assert_eq!(stats.evictions.connection_total_limit, 1, "{stats:?}");
    assert_eq!(stats.idle + stats.active, 2, "{stats:?}");
    assert!(get(&client, &servers[1].url("/")).await.reused);
}

#[tokio::test]
async fn with_no_room_a_request_waits_for_a_connection_of_another_origin_to_end() {
    let slow = TestServer::start(ServerConfig {
        response_delay: Some(Duration::from_millis(300)),
        ..ServerConfig::default()
    });
    let other = TestServer::start(ServerConfig::default());
    let client: Client<Empty<Bytes>> = builder()
        .max_connections_total(1)
        .build()
        .expect("valid settings");
    let in_flight = tokio::spawn({
        let client = client.clone();
        let url = slow.url("/");
        async move { get(&client, &url).await }
    });
    assert!(
        slow.wait_until_async(|s| s.handler_calls() == 1, WAIT)
            .await
    );
    let waiting = tokio::spawn({
        let client = client.clone();
        let url = other.url("/");
        async move { get(&client, &url).await }
    });
    until(&client, |s| s.waiting_for_room == 1).await;
    assert_eq!(other.connections_accepted(), 0, "it did not wait");

    in_flight.await.expect("the slow request");
    let info = waiting.await.expect("the waiting request");
    assert!(!info.reused);
    // The slow server's connection was closed for it rather than pooled.
    assert!(
        slow.wait_until_async(|s| s.client_closed_first() == 1, WAIT)
            .await
    );
    let stats = client.stats();
    assert_eq!(stats.evictions.connection_total_limit, 1, "{stats:?}");
    assert_eq!((stats.waiting, stats.waiting_for_room), (0, 0));
}

#[tokio::test]
async fn max_idle_total_closes_the_least_recently_used_idle_connection_of_any_origin() {
    let first = TestServer::start(ServerConfig::default());
    let second = TestServer::start(ServerConfig::default());
    let client: Client<Empty<Bytes>> = builder().max_idle_total(1).build().expect("valid settings");
    get(&client, &first.url("/")).await;
    until(&client, |s| s.idle == 1).await;
    get(&client, &second.url("/")).await;
    assert!(
        first
            .wait_until_async(|s| s.client_closed_first() == 1, WAIT)
            .await,
        "the older idle connection was not closed"
    );
    until(&client, |s| s.idle == 1).await;
    let stats = client.stats();
    assert_eq!(stats.evictions.idle_total_full, 1, "{stats:?}");
    assert_eq!(second.client_closed_first(), 0);
    assert!(get(&client, &second.url("/")).await.reused);
}
