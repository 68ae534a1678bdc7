//! The retry policy on real sockets: a test server that resets chosen requests (by
//! `x-request-id`) once, and counts how often each was executed.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};

use closefirst::retry::{Policy, ReplayBody, RetryLayer};
use closefirst::{Client, ConnectionInfo, Error, Progress};
use support::{request, ServerConfig, TestServer};

type Body = Full<Bytes>;

async fn send(client: &Client<Body>, req: Request<Body>) -> Result<ConnectionInfo, Error> {
    let resp = client.request(req).await?;
    let info = resp.extensions().get::<ConnectionInfo>().cloned().unwrap();
    resp.into_body().collect().await.expect("body");
    Ok(info)
}

/// A client whose one pooled connection is warm, so the next request reuses it.
async fn warm(server: &TestServer, builder: closefirst::Builder) -> Client<Body> {
    // Pinned: the policy's rules are about requests on a reused connection, which one
    // that may not be resent rides only on evidence with learning on.
    let client: Client<Body> = builder.learn_idle_timeout(false).build().unwrap();
    send(&client, request(server, Method::GET, "warm-up"))
        .await
        .unwrap();
    until_idle(&client).await;
    client
}

/// Connections go back to the pool on a task of their own once their body is read.
async fn until_idle(client: &Client<Body>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while client.stats().idle != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "connection never went idle"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn resetting(ids: &[&str]) -> TestServer {
    TestServer::start(ServerConfig {
        rst_without_answer: ids.iter().map(|s| s.to_string()).collect(),
        ..ServerConfig::default()
    })
}

#[tokio::test]
async fn get_reset_after_it_was_written_is_resent_on_a_fresh_connection() {
    let server = resetting(&["get"]);
    let client = warm(&server, Client::builder()).await;
    let info = send(&client, request(&server, Method::GET, "get"))
        .await
        .unwrap();
    assert_eq!(info.attempts, 2);
    assert!(!info.reused, "the resend went on a new connection");
    // Once per attempt: the first was reset after the handler ran.
    assert_eq!(server.calls_for("get"), 2);
    let stats = client.stats();
    assert_eq!(stats.resends.written_no_response, 1);
    assert_eq!(stats.resends.not_written, 0);
}

#[tokio::test]
async fn post_reset_after_it_was_written_is_not_resent() {
    let server = resetting(&["post"]);
    let client = warm(&server, Client::builder()).await;
    let err = send(&client, request(&server, Method::POST, "post"))
        .await
        .unwrap_err();
    assert_eq!(err.request_progress(), Progress::WrittenNoResponse);
    assert!(err.is_stale_connection());
    assert_eq!(server.calls_for("post"), 1, "executed once, never twice");
    let stats = client.stats();
    assert_eq!(stats.refusals.not_idempotent, 1);
    assert_eq!(stats.resends.written_no_response, 0);
}

#[tokio::test]
async fn post_with_an_idempotency_key_is_resent() {
    let server = resetting(&["keyed"]);
    let client = warm(&server, Client::builder()).await;
    let mut req = request(&server, Method::POST, "keyed");
    req.headers_mut()
        .insert("idempotency-key", "order-42".parse().unwrap());
    let info = send(&client, req).await.unwrap();
    assert_eq!(info.attempts, 2);
    assert_eq!(server.calls_for("keyed"), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn post_that_was_never_written_is_resent() {
    // The server resets the idle connection while the client's thread is blocked, so
    // hyper's connection task has not seen the RST; with the pre-reuse check off the
    // dead connection is handed out, and the first write fails with nothing written.
    let server = TestServer::start(ServerConfig {
        idle_close: Some(Duration::from_millis(100)),
        close_mode: support::CloseMode::Rst,
        ..ServerConfig::default()
    });
    let client = warm(&server, Client::builder().check_before_reuse(false)).await;
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(server.server_closed_idle(), 1);

    let info = send(&client, request(&server, Method::POST, "unsent"))
        .await
        .unwrap();
    assert_eq!(info.attempts, 2);
    assert!(!info.reused);
    assert_eq!(server.calls_for("unsent"), 1);
    assert_eq!(client.stats().resends.not_written, 1);
}

#[tokio::test]
async fn a_failure_after_response_bytes_arrived_is_never_resent() {
    let server = TestServer::start(ServerConfig {
        partial_head_then_rst: vec!["partial".into()],
        ..ServerConfig::default()
    });
    let client = warm(&server, Client::builder()).await;
    let err = send(&client, request(&server, Method::GET, "partial"))
        .await
        .unwrap_err();
    assert_eq!(err.request_progress(), Progress::ResponseStarted);
    assert!(!err.is_stale_connection());
    assert_eq!(server.calls_for("partial"), 1);
    assert_eq!(client.stats().refusals.response_started, 1);
}

#[tokio::test]
async fn a_failure_on_a_fresh_connection_is_not_resent_by_default() {
    let server = resetting(&["fresh"]);
    let client: Client<Body> = Client::builder().build().unwrap();
    let err = send(&client, request(&server, Method::GET, "fresh"))
        .await
        .unwrap_err();
    assert_eq!(err.request_progress(), Progress::WrittenNoResponse);
    assert!(!err.is_reused_connection());
    assert!(!err.is_stale_connection());
    assert_eq!(server.calls_for("fresh"), 1);
    assert_eq!(client.stats().refusals.fresh_connection, 1);
}

#[tokio::test]
async fn the_budget_stops_resends_once_spent() {
    // No share of traffic, a floor of 1 per second over tower's 10 s window: 10 resends.
    let ids: Vec<String> = (0..11).map(|i| format!("b{i}")).collect();
    let server = resetting(&ids.iter().map(String::as_str).collect::<Vec<_>>());
    let client = warm(
        &server,
        Client::builder().retry(Policy::idempotent().budget(0.0, 1)),
    )
    .await;
    for id in &ids[..10] {
        let info = send(&client, request(&server, Method::GET, id))
            .await
            .unwrap();
        assert_eq!(info.attempts, 2, "{id}");
        until_idle(&client).await;
    }
    let err = send(&client, request(&server, Method::GET, "b10"))
        .await
        .unwrap_err();
    assert!(err.is_stale_connection());
    assert_eq!(server.calls_for("b10"), 1);
    let stats = client.stats();
    assert_eq!(stats.resends.written_no_response, 10);
    assert_eq!(stats.refusals.budget_exhausted, 1);
}

#[tokio::test]
async fn a_body_over_the_replay_cap_is_not_resent() {
    let server = resetting(&["big"]);
    let client = warm(&server, Client::builder()).await;
    let req = Request::put(server.url("/"))
        .header("x-request-id", "big")
        .body(Full::new(Bytes::from(vec![b'x'; 1 << 20])))
        .unwrap();
    let err = send(&client, req).await.unwrap_err();
    assert_eq!(err.request_progress(), Progress::WrittenNoResponse);
    assert_eq!(server.calls_for("big"), 1);
    assert_eq!(client.stats().refusals.body_too_large, 1);
}

#[tokio::test]
async fn all_methods_resends_post() {
    let server = resetting(&["post"]);
    let policy = Policy::all_methods()
        .attempts(2)
        .backoff(Duration::from_millis(20));
    let client = warm(&server, Client::builder().retry(policy)).await;
    let started = std::time::Instant::now();
    let info = send(&client, request(&server, Method::POST, "post"))
        .await
        .unwrap();
    assert_eq!(info.attempts, 2);
    assert!(
        started.elapsed() >= Duration::from_millis(20),
        "backoff honoured"
    );
    assert_eq!(server.calls_for("post"), 2);
}

#[tokio::test]
async fn never_resends_nothing() {
    let server = resetting(&["get"]);
    let client = warm(&server, Client::builder().retry(Policy::never())).await;
    let err = send(&client, request(&server, Method::GET, "get"))
        .await
        .unwrap_err();
    assert!(err.is_stale_connection());
    assert_eq!(server.calls_for("get"), 1);
    let stats = client.stats();
    assert_eq!(
        stats.resends.written_no_response + stats.resends.not_written,
        0
    );
    assert_eq!(stats.refusals.attempts_exhausted, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn never_does_not_resend_an_unwritten_request_either() {
    let server = TestServer::start(ServerConfig {
        idle_close: Some(Duration::from_millis(100)),
        close_mode: support::CloseMode::Rst,
        ..ServerConfig::default()
    });
    let client = warm(
        &server,
        Client::builder()
            .check_before_reuse(false)
            .retry(Policy::never()),
    )
    .await;
    assert_eq!(server.open_connections(), 1);
    std::thread::sleep(Duration::from_millis(400));
    let err = send(&client, request(&server, Method::POST, "unsent"))
        .await
        .unwrap_err();
    assert_eq!(err.request_progress(), Progress::NotWritten);
    assert_eq!(server.calls_for("unsent"), 0);
}

#[tokio::test]
async fn retry_layer_works_in_a_service_builder() {
    use tower::{Service, ServiceExt};

    let server = resetting(&["get"]);
    // Pinned: with learning on, the inner client (which sends each request once) gives
    // its requests only connections proven to be kept, and this test needs the GET on
    // a reused one.
    let inner: Client<ReplayBody<Body>> = Client::builder()
        .retry(Policy::never())
        .learn_idle_timeout(false)
        .build()
        .unwrap();
    let mut client = tower::ServiceBuilder::new()
        .layer(RetryLayer::new(Policy::idempotent()).unwrap())
        .service(inner.clone());
    // Warm one connection through the stack.
    let resp = client
        .ready()
        .await
        .unwrap()
        .call(request(&server, Method::GET, "warm"))
        .await
        .unwrap();
    resp.into_body().collect().await.unwrap();
    while inner.stats().idle != 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let resp = client
        .ready()
        .await
        .unwrap()
        .call(request(&server, Method::GET, "get"))
        .await
        .unwrap();
    let info = resp.extensions().get::<ConnectionInfo>().cloned().unwrap();
    assert_eq!(info.attempts, 2);
    assert_eq!(server.calls_for("get"), 2);
    assert_eq!(client.get_ref().stats().idle, inner.stats().idle);
    assert_eq!(client.stats().0.written_no_response, 1);
}

#[test]
fn invalid_policies_are_builder_errors() {
    let err = Client::builder()
        .retry(Policy::idempotent().attempts(0))
        .build::<Body>()
        .unwrap_err();
    assert!(err.is_config());
    assert!(
        err.to_string()
            .contains("retry attempts must be at least 1"),
        "{err}"
    );
    let err = RetryLayer::new(Policy::idempotent().budget(-1.0, 10)).unwrap_err();
    assert!(err.to_string().contains("retry budget ratio"), "{err}");
}
