//! The look before reuse, made deterministic: on a current-thread runtime a *blocking*
//! sleep keeps hyper's connection task from running, so it cannot notice that the
//! server closed the idle connection. Only the pre-reuse peek can.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};

use closefirst::{Client, ConnectionInfo, Error};
use support::{CloseMode, ServerConfig, TestServer};

const WAIT: Duration = Duration::from_secs(5);
/// The server closes idle connections after this long...
const SERVER_IDLE: Duration = Duration::from_millis(100);
/// ...and the test blocks this long, far past it, so the FIN/RST is in the kernel.
const BLOCKED_FOR: Duration = Duration::from_millis(400);

/// The response's connection info and status.
type Outcome = Result<(ConnectionInfo, http::StatusCode), Error>;

async fn send(client: &Client<Empty<Bytes>>, server: &TestServer, id: &str) -> Outcome {
    let req = Request::get(server.url("/"))
        .header("x-request-id", id)
        .body(Empty::new())
        .unwrap();
    let resp = client.request(req).await?;
    let info = resp.extensions().get::<ConnectionInfo>().cloned().unwrap();
    let status = resp.status();
    resp.into_body().collect().await.expect("body");
    Ok((info, status))
}

/// One idle pooled connection that the server has closed (as `server` says) while
/// the client's runtime was blocked; then the next request. Returns what it got.
async fn request_after_server_closed_idle(
    server: ServerConfig,
    check: bool,
) -> (Outcome, Client<Empty<Bytes>>, TestServer) {
    let server = TestServer::start(ServerConfig {
        idle_close: Some(SERVER_IDLE),
        ..server
    });
    let client: Client<Empty<Bytes>> = Client::builder()
        .idle_timeout(Duration::from_secs(30))
        .check_before_reuse(check)
        .build()
        .unwrap();
    send(&client, &server, "first")
        .await
        .expect("first request");
    let deadline = std::time::Instant::now() + WAIT;
    while client.stats().idle != 1 {
        assert!(std::time::Instant::now() < deadline);
        tokio::task::yield_now().await;
    }

    std::thread::sleep(BLOCKED_FOR);
    assert_eq!(
        server.server_closed_idle(),
        1,
        "the server closed the idle connection"
    );

    let second = send(&client, &server, "second").await;
    (second, client, server)
}

async fn assert_discarded_before_reuse(config: ServerConfig) {
    let (second, client, server) = request_after_server_closed_idle(config, true).await;
    let (info, status) = second.expect("the request succeeds on a new connection");
    assert_eq!(status, 200);
    assert!(!info.reused);
    assert_eq!(info.attempts, 1, "never dispatched on the dead connection");
    assert_eq!(server.calls_for("second"), 1);
    assert_eq!(server.connections_accepted(), 2);
    let stats = client.stats();
    assert_eq!(stats.evictions.closed_by_server, 1);
    assert_eq!(stats.connections_opened, 2);
    assert_eq!(stats.reuses, 0);
}

async fn assert_dead_connection_used_without_the_check(config: ServerConfig) {
    let (second, client, server) = request_after_server_closed_idle(config, false).await;
    // The dead connection was handed out, and it shows: hyper returned the request
    // unsent (the pool resent it: two attempts), or the request failed as a stale
    // connection, or (stray bytes) the server's parting `408` was taken as the
    // response to a request the server never saw.
    match second {
        Ok((info, status)) if status == 408 => {
            assert!(info.reused);
            assert_eq!(server.calls_for("second"), 0);
        }
        Ok((info, _)) => assert_eq!(info.attempts, 2, "the first attempt must have failed"),
        Err(err) => assert!(err.is_stale_connection(), "{err}"),
    }
    assert!(server.calls_for("second") <= 1);
    // Nothing discarded it before reuse: the dead connection was handed out. (Its end
    // is counted too now, as the request met the server's close.)
    assert_eq!(
        client.stats().reuses,
        1,
        "the dead connection was handed out"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn fin_on_an_idle_connection_is_seen_before_reuse() {
    assert_discarded_before_reuse(ServerConfig::default()).await;
}

#[tokio::test(flavor = "current_thread")]
async fn rst_on_an_idle_connection_is_seen_before_reuse() {
    assert_discarded_before_reuse(ServerConfig {
        close_mode: CloseMode::Rst,
        ..ServerConfig::default()
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn stray_bytes_on_an_idle_connection_are_seen_before_reuse() {
    assert_discarded_before_reuse(ServerConfig {
        stray_bytes_on_idle_close: true,
        ..ServerConfig::default()
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn without_the_check_a_fin_reaches_the_request() {
    assert_dead_connection_used_without_the_check(ServerConfig::default()).await;
}

#[tokio::test(flavor = "current_thread")]
async fn without_the_check_a_rst_reaches_the_request() {
    assert_dead_connection_used_without_the_check(ServerConfig {
        close_mode: CloseMode::Rst,
        ..ServerConfig::default()
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn without_the_check_stray_bytes_reach_the_request() {
    assert_dead_connection_used_without_the_check(ServerConfig {
        stray_bytes_on_idle_close: true,
        ..ServerConfig::default()
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_live_idle_connection_passes_the_check() {
    let server = TestServer::start(ServerConfig::default());
    let client: Client<Empty<Bytes>> = Client::builder().build().unwrap();
    send(&client, &server, "a").await.unwrap();
    while client.stats().idle != 1 {
        tokio::task::yield_now().await;
    }
    std::thread::sleep(Duration::from_millis(50));
    let (info, _) = send(&client, &server, "b").await.unwrap();
    assert!(info.reused);
    assert_eq!(client.stats().evictions.closed_by_server, 0);
}
