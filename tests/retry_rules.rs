//! The resend rules users expect, on real sockets against the lab origin, counting the
//! server's handler calls per request id:
//!
//! - `X-Idempotency-Key` marks a request as safe to resend like `Idempotency-Key`, and
//!   the `retry::Idempotent` extension does without sending any header; either way the
//!   pool lets the request ride a warm connection, and a reset after the server read it
//!   resends it once. A plain POST is still never resent.
//! - The retry budget is kept per origin: an origin that fails every request spends
//!   its own budget, and a healthy origin still gets its resends, through the client
//!   and through a standalone `RetryLayer`.

mod support;

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};

use closefirst::retry::{Idempotent, Policy, ReplayBody, RetryLayer};
use closefirst::{Client, ConnectionInfo, Error, Progress, Refusals, Resends};
use support::{request, ServerConfig, TestServer};

type Body = Full<Bytes>;

/// A server that reads each listed request in full (a handler call), then resets the
/// connection without answering, the first time it sees the id.
fn resetting(ids: &[String]) -> TestServer {
    TestServer::start(ServerConfig {
        rst_without_answer: ids.to_vec(),
        ..ServerConfig::default()
    })
}

fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn read(resp: http::Response<hyper::body::Incoming>) -> ConnectionInfo {
    let info = resp
        .extensions()
        .get::<ConnectionInfo>()
        .cloned()
        .expect("info attached");
    resp.into_body().collect().await.expect("body");
    info
}

async fn send(client: &Client<Body>, req: Request<Body>) -> Result<ConnectionInfo, Error> {
    Ok(read(client.request(req).await?).await)
}

/// Waits (real time, at most 5 s) until `idle()` reports `n` idle connections:
/// connections go back to the pool on a task of their own once their body is read.
async fn until_idle(n: usize, idle: impl Fn() -> usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while idle() != n {
        assert!(Instant::now() < deadline, "never {n} idle, {} now", idle());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A client with the default settings (learning on: a request that may not be resent
/// rides only a connection the server was seen to keep that long) and one warm
/// connection to `server`, idle for a moment only.
async fn warm_default(server: &TestServer) -> Client<Body> {
    let client: Client<Body> = Client::builder().build().unwrap();
    send(&client, request(server, Method::GET, "warm-up"))
        .await
        .unwrap();
    until_idle(1, || client.stats().idle).await;
    client
}

/// What the server saw of a marked POST: the first attempt rode the warm connection
/// (the pool let it) and was reset after the handler ran; the resend went on a second
/// connection and ran once more.
async fn assert_resent_once(
    client: &Client<Body>,
    server: &TestServer,
    id: &str,
    req: Request<Body>,
) {
    let info = send(client, req).await.expect("resent and answered");
    assert_eq!(info.attempts, 2, "{id}");
    assert!(!info.reused, "{id}: the resend went on a new connection");
    assert_eq!(server.calls_for(id), 2, "{id}: once per attempt");
    assert_eq!(
        server.requests_per_connection(),
        [2, 1],
        "{id}: the first attempt rode the warm connection"
    );
    let stats = client.stats();
    assert_eq!(stats.resends.written_no_response, 1, "{id}");
    assert_eq!(stats.refusals.total(), 0, "{id}");
}

#[tokio::test]
async fn post_with_x_idempotency_key_is_resent_once() {
    let server = resetting(&ids(&["x-keyed"]));
    let client = warm_default(&server).await;
    let mut req = request(&server, Method::POST, "x-keyed");
    req.headers_mut()
        .insert("x-idempotency-key", "order-42".parse().unwrap());
    assert_resent_once(&client, &server, "x-keyed", req).await;
    // The header went out on both attempts, as given.
    let heads = server.origin().request_headers("x-keyed");
    assert_eq!(heads.len(), 2);
    for head in &heads {
        assert_eq!(head["x-idempotency-key"], "order-42");
    }
}

#[tokio::test]
async fn post_marked_with_the_extension_is_resent_once_and_sends_no_header() {
    let server = resetting(&ids(&["marked"]));
    let client = warm_default(&server).await;
    let mut req = request(&server, Method::POST, "marked");
    req.extensions_mut().insert(Idempotent);
    assert_resent_once(&client, &server, "marked", req).await;
    let heads = server.origin().request_headers("marked");
    assert_eq!(heads.len(), 2);
    for head in &heads {
        assert_eq!(head["x-request-id"], "marked", "the heads were recorded");
        assert!(!head.contains_key("idempotency-key"), "{head:?}");
        assert!(!head.contains_key("x-idempotency-key"), "{head:?}");
    }
}

#[tokio::test]
async fn a_plain_post_is_still_never_resent() {
    let server = resetting(&ids(&["plain"]));
    let client = warm_default(&server).await;
    let err = send(&client, request(&server, Method::POST, "plain"))
        .await
        .unwrap_err();
    assert_eq!(err.request_progress(), Progress::WrittenNoResponse);
    assert_eq!(err.attempts(), 1);
    assert_eq!(server.calls_for("plain"), 1, "executed once, never twice");
    // Nothing was known of the server's timer: the POST did not ride the warm
    // connection but a new one, where a failure is not the keep-alive race.
    assert!(!err.is_reused_connection());
    assert_eq!(server.requests_per_connection(), [1, 1]);
    let stats = client.stats();
    assert_eq!(stats.refusals.fresh_connection, 1);
    assert_eq!(stats.resends.written_no_response, 0);

    // Pinned, it rides the warm connection, and is refused for its method.
    let server = resetting(&ids(&["plain"]));
    let client: Client<Body> = Client::builder().learn_idle_timeout(false).build().unwrap();
    send(&client, request(&server, Method::GET, "warm-up"))
        .await
        .unwrap();
    until_idle(1, || client.stats().idle).await;
    let err = send(&client, request(&server, Method::POST, "plain"))
        .await
        .unwrap_err();
    assert!(err.is_stale_connection());
    assert_eq!(server.calls_for("plain"), 1);
    assert_eq!(client.stats().refusals.not_idempotent, 1);
}

// ---------------------------------------------------------------------------------
// The retry budget, per origin.
// ---------------------------------------------------------------------------------

/// No share of traffic and a floor of 1 per second over tower's 10 s window: 10
/// resends per origin. The scenario takes well under a second of those 10.
fn small_budget() -> Policy {
    Policy::idempotent().budget(0.0, 1)
}

/// Resends the failing origin's budget allows.
const BUDGET: usize = 10;

/// The healthy origin's warm connection waits idle while the failing origin spends
/// its budget: far longer than that takes (the test server never closes it).
const KEEP_WARM: Duration = Duration::from_secs(60);

/// Two origins, each with one warm connection: `failing` resets every request the
/// first time (after its handler ran), `healthy` resets only `h`. `send` sends one
/// request through the stack under test, `idle` counts its pool's idle connections.
async fn one_failing_origin<F, Fut>(
    failing: &TestServer,
    healthy: &TestServer,
    send: F,
    idle: impl Fn() -> usize,
) where
    F: Fn(Request<Body>) -> Fut,
    Fut: Future<Output = Result<ConnectionInfo, Error>>,
{
    for server in [failing, healthy] {
        send(request(server, Method::GET, "warm-up")).await.unwrap();
    }
    until_idle(2, &idle).await;
    // Each request meets a reset on the reused connection and is resent on a new
    // one, which then waits idle for the next request: ten resends spend the budget.
    for n in 0..BUDGET {
        let id = format!("f{n}");
        let info = send(request(failing, Method::GET, &id)).await.unwrap();
        assert_eq!(info.attempts, 2, "{id}");
        assert_eq!(failing.calls_for(&id), 2, "{id}");
        until_idle(2, &idle).await;
    }
    let id = format!("f{BUDGET}");
    let err = send(request(failing, Method::GET, &id)).await.unwrap_err();
    assert!(err.is_stale_connection(), "{err}");
    assert_eq!(
        failing.calls_for(&id),
        1,
        "the failing origin's budget is spent"
    );

    // The healthy origin's warm connection is reset once: its own budget resends it.
    let info = send(request(healthy, Method::GET, "h"))
        .await
        .expect("the healthy origin still gets its resend: its budget is its own");
    assert_eq!(info.attempts, 2);
    assert_eq!(healthy.calls_for("h"), 2);
}

/// Across both origins: one resend for each failing request the budget allowed and
/// one for the healthy origin, and the one refusal.
fn assert_totals(resends: &Resends, refusals: &Refusals) {
    assert_eq!(resends.written_no_response, BUDGET as u64 + 1);
    assert_eq!(refusals.budget_exhausted, 1);
    assert_eq!(refusals.total(), 1);
}

fn failing_ids() -> Vec<String> {
    (0..=BUDGET).map(|n| format!("f{n}")).collect()
}

#[tokio::test]
async fn a_failing_origin_spends_its_own_budget_not_the_clients() {
    let (failing, healthy) = (resetting(&failing_ids()), resetting(&ids(&["h"])));
    // Pinned: with learning on, the failing origin's first reset teaches the pool a
    // timer of a few milliseconds, and its later requests would find no warm
    // connection to fail on.
    let client: Client<Body> = Client::builder()
        .retry(small_budget())
        .learn_idle_timeout(false)
        .idle_timeout(KEEP_WARM)
        .build()
        .unwrap();
    one_failing_origin(
        &failing,
        &healthy,
        |req| send(&client, req),
        || client.stats().idle,
    )
    .await;

    let stats = client.stats();
    assert_totals(&stats.resends, &stats.refusals);
    let by_origin = client.origin_stats();
    let spent = |server: &TestServer| {
        let origin = server.url("");
        by_origin
            .iter()
            .find(|o| o.origin == origin)
            .unwrap_or_else(|| panic!("{origin} in {by_origin:?}"))
            .retry_budget_exhausted
    };
    assert_eq!(spent(&failing), 1);
    assert_eq!(spent(&healthy), 0);
}

#[tokio::test]
async fn a_standalone_retry_layer_keeps_a_budget_per_origin_too() {
    use tower::{Service, ServiceExt};

    let (failing, healthy) = (resetting(&failing_ids()), resetting(&ids(&["h"])));
    // The inner client sends each request once; pinned so that such requests may
    // ride warm connections.
    let inner: Client<ReplayBody<Body>> = Client::builder()
        .retry(Policy::never())
        .learn_idle_timeout(false)
        .idle_timeout(KEEP_WARM)
        .build()
        .unwrap();
    let stack = tower::ServiceBuilder::new()
        .layer(RetryLayer::new(small_budget()).unwrap())
        .service(inner.clone());
    let send = |req: Request<Body>| {
        let mut stack = stack.clone();
        async move { Ok(read(stack.ready().await?.call(req).await?).await) }
    };
    one_failing_origin(&failing, &healthy, send, || inner.stats().idle).await;

    let (resends, refusals) = stack.stats();
    assert_totals(&resends, &refusals);
}
