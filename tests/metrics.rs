//! Feature `metrics`: after a scripted sequence on real sockets (open, reuse, evict by
//! several reasons, resend, refuse), `closefirst::metrics::publish` sets the documented
//! names to the right values in an in-memory recorder (`tests/support/recorder.rs`).

mod support;

#[path = "support/recorder.rs"]
mod recorder;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use metrics::Unit;

use closefirst::{Client, OriginStats};
use recorder::{Kind, TestRecorder, Value};
use support::{request, ServerConfig, TestServer};

type Body = Full<Bytes>;

async fn send(client: &Client<Body>, req: Request<Body>) -> Result<(), closefirst::Error> {
    let resp = client.request(req).await?;
    resp.into_body().collect().await.expect("body");
    Ok(())
}

async fn get(client: &Client<Body>, server: &TestServer) {
    send(client, request(server, Method::GET, "plain"))
        .await
        .expect("request succeeds");
}

/// `server`'s origin stats once `what` holds; panics after 10 s.
async fn until(
    client: &Client<Body>,
    server: &TestServer,
    what: impl Fn(&OriginStats) -> bool,
) -> OriginStats {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = client
            .origin_stats()
            .into_iter()
            .find(|s| s.port == server.addr().port());
        if let Some(stats) = stats {
            if what(&stats) {
                return stats;
            }
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting: {:?}",
            client.origin_stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn at(port: &str) -> Vec<(&'static str, &str)> {
    vec![("server.address", "127.0.0.1"), ("server.port", port)]
}

fn with<'a>(port: &'a str, key: &'static str, value: &'static str) -> Vec<(&'static str, &'a str)> {
    let mut labels = at(port);
    labels.push((key, value));
    labels
}

/// The value published under `name` with exactly `labels`.
fn value(s: &TestRecorder, kind: Kind, name: &str, labels: &[(&str, &str)]) -> Option<Value> {
    s.value(kind, name, labels)
}

fn counter(s: &TestRecorder, name: &str, labels: &[(&str, &str)]) -> u64 {
    match value(s, Kind::Counter, name, labels) {
        Some(Value::Counter(n)) => n,
        other => panic!("{name} {labels:?}: {other:?}"),
    }
}

fn gauge(s: &TestRecorder, name: &str, labels: &[(&str, &str)]) -> f64 {
    match value(s, Kind::Gauge, name, labels) {
        Some(Value::Gauge(v)) => v,
        other => panic!("{name} {labels:?}: {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn publish_sets_the_documented_names_after_a_scripted_sequence() {
    let recorder = TestRecorder::default();
    // This thread's recorder: the connection tasks run on it too (current-thread
    // runtime), so the connection durations they record land here.
    let _recorder = metrics::set_default_local_recorder(&recorder);

    let client: Client<Body> = Client::builder()
        .idle_timeout(Duration::from_millis(1_500))
        .keep_alive_margin(Duration::from_millis(100))
        .max_requests_per_connection(2)
        .build()
        .unwrap();

    // Open, reuse, retire after 2 requests, open again; then closed at idle_timeout.
    let plain = TestServer::start(ServerConfig::default());
    for _ in 0..3 {
        get(&client, &plain).await;
    }
    // The server closes an idle connection after 200 ms: it closes first.
    let closing = TestServer::start(ServerConfig {
        idle_close: Some(Duration::from_millis(200)),
        ..ServerConfig::default()
    });
    get(&client, &closing).await;
    // `Keep-Alive: timeout=1`: closed at 1 s - 100 ms, before the 1.5 s idle timeout.
    let hinting = TestServer::start(ServerConfig {
        keep_alive_header: Some("timeout=1".into()),
        ..ServerConfig::default()
    });
    get(&client, &hinting).await;
    // `Connection: close` on every response.
    let closer = TestServer::start(ServerConfig {
        connection_close: true,
        ..ServerConfig::default()
    });
    get(&client, &closer).await;
    // A request abandoned while its response is awaited.
    let slow = TestServer::start(ServerConfig {
        response_delay: Some(Duration::from_secs(30)),
        ..ServerConfig::default()
    });
    let abandoned = tokio::time::timeout(
        Duration::from_millis(300),
        send(&client, request(&slow, Method::GET, "slow")),
    )
    .await;
    assert!(abandoned.is_err(), "the response is 30 s away");
    // A GET reset on a reused connection is resent. A POST (which may not be resent)
    // rides a new connection while nothing proves the server keeps one that long,
    // and is refused a resend when that fails too.
    let resetting = TestServer::start(ServerConfig {
        rst_without_answer: vec!["get".into(), "post".into()],
        ..ServerConfig::default()
    });
    get(&client, &resetting).await;
    until(&client, &resetting, |s| s.idle == 1).await;
    send(&client, request(&resetting, Method::GET, "get"))
        .await
        .expect("resent");
    until(&client, &resetting, |s| s.idle == 1).await;
    let refused = send(&client, request(&resetting, Method::POST, "post")).await;
    assert!(refused.is_err(), "a POST is not resent");
    assert_eq!(resetting.calls_for("get"), 2);
    assert_eq!(resetting.calls_for("post"), 1);

    until(&client, &plain, |s| s.evictions.idle_timeout == 1).await;
    until(&client, &closing, |s| s.idle_closes.by_server == 1).await;
    until(&client, &hinting, |s| s.evictions.server_hint == 1).await;
    until(&client, &slow, |s| s.evictions.cancelled == 1).await;

    closefirst::metrics::describe();
    closefirst::metrics::publish(&client);
    let s = &recorder;
    let unit_of = |name: &str| s.unit(name);
    assert_eq!(
        unit_of("http.client.connection.duration"),
        Some(Unit::Seconds)
    );
    assert_eq!(
        unit_of("closefirst.pool.learned_idle_timeout"),
        Some(Unit::Seconds)
    );
    assert_eq!(unit_of("closefirst.pool.evictions"), Some(Unit::Count));
    let port = |server: &TestServer| server.addr().port().to_string();
    let (plain_port, closing_port) = (port(&plain), port(&closing));
    let plain_at = at(&plain_port);
    let closing_at = at(&closing_port);

    // Open and reuse.
    assert_eq!(
        counter(s, "closefirst.pool.connections_opened", &plain_at),
        2
    );
    // One on `plain`, one for the GET on `resetting`; the POST got a new connection.
    assert_eq!(counter(s, "closefirst.pool.reuses", &[]), 2);
    assert_eq!(gauge(s, "closefirst.pool.waiting_for_room", &[]), 0.0);
    for outcome in ["opened", "failed"] {
        let labels = [("closefirst.preconnect.outcome", outcome)];
        assert_eq!(counter(s, "closefirst.pool.preconnects", &labels), 0);
    }
    for state in ["idle", "active"] {
        let labels = with(&plain_port, "http.connection.state", state);
        assert_eq!(gauge(s, "http.client.open_connections", &labels), 0.0);
    }
    assert_eq!(gauge(s, "closefirst.pool.waiting_requests", &plain_at), 0.0);

    // Evictions by reason, per origin; every reason is published, zero or not.
    let evictions = |server: &TestServer, reason: &'static str| {
        let port = port(server);
        counter(
            s,
            "closefirst.pool.evictions",
            &with(&port, "closefirst.eviction.reason", reason),
        )
    };
    assert_eq!(evictions(&plain, "max_requests"), 1);
    assert_eq!(evictions(&plain, "idle_timeout"), 1);
    assert_eq!(evictions(&closing, "closed_by_server"), 1);
    assert_eq!(evictions(&hinting, "server_hint"), 1);
    assert_eq!(evictions(&closer, "connection_close"), 1);
    assert_eq!(evictions(&slow, "cancelled"), 1);
    for reason in [
        "lifetime",
        "idle_list_full",
        "learned_timeout",
        "connection_limit",
        "task_gone",
        "closed_by_user",
        "poisoned",
    ] {
        assert_eq!(evictions(&plain, reason), 0, "{reason}");
    }

    // Who closed first, and what was learned.
    assert_eq!(
        counter(s, "closefirst.pool.client_closed_first", &plain_at),
        1
    );
    assert_eq!(
        counter(s, "closefirst.pool.server_closed_first", &plain_at),
        0
    );
    assert_eq!(
        counter(
            s,
            "closefirst.pool.client_closed_first",
            &at(&port(&hinting))
        ),
        1
    );
    assert_eq!(
        counter(s, "closefirst.pool.server_closed_first", &closing_at),
        1
    );
    let shortest = gauge(s, "closefirst.pool.server_close_shortest_idle", &closing_at);
    assert!((0.05..5.0).contains(&shortest), "{shortest}");
    let learned = gauge(s, "closefirst.pool.learned_idle_timeout", &closing_at);
    assert_eq!(
        learned, shortest,
        "one close, above the margin: learned as is"
    );
    assert_eq!(
        gauge(s, "closefirst.pool.learned_idle_timeout", &plain_at),
        0.0
    );
    // `plain`'s idle connection became its probe at 1.5 s and was still open at
    // 2 x (1.5 s + 100 ms): 3.2 s is proven, connections may stay 3.1 s.
    assert_eq!(gauge(s, "closefirst.pool.proven_idle", &plain_at), 3.2);
    let deadline = gauge(s, "closefirst.pool.idle_deadline", &plain_at);
    assert!((deadline - 3.1).abs() < 1e-9, "{deadline}");
    let source = |port: &str, source| {
        gauge(
            s,
            "closefirst.pool.idle_deadline_source",
            &with(port, "closefirst.deadline.source", source),
        )
    };
    assert_eq!(source(&plain_port, "proven"), 1.0);
    assert_eq!(source(&plain_port, "configured"), 0.0);
    assert_eq!(source(&closing_port, "observed_close"), 1.0);
    assert!(value(
        s,
        Kind::Gauge,
        "closefirst.pool.server_close_shortest_idle",
        &plain_at
    )
    .is_none());

    // Resends by class, refusals by reason.
    let resends = |class| {
        counter(
            s,
            "closefirst.client.resends",
            &[("closefirst.resend.class", class)],
        )
    };
    assert_eq!(resends("written_no_response"), 1);
    assert_eq!(resends("not_written"), 0);
    let refusals = |reason| {
        counter(
            s,
            "closefirst.client.refusals",
            &[("closefirst.refusal.reason", reason)],
        )
    };
    assert_eq!(refusals("fresh_connection"), 1);
    assert_eq!(refusals("not_idempotent"), 0);
    assert_eq!(refusals("budget_exhausted"), 0);
    // Per origin too: published for each origin, whatever its count.
    assert_eq!(
        counter(s, "closefirst.client.retry_budget_exhausted", &plain_at),
        0
    );

    // Recorded as each connection ended: the first connection to `plain` ended after
    // its second request.
    match value(
        s,
        Kind::Histogram,
        "http.client.connection.duration",
        &plain_at,
    ) {
        Some(Value::Histogram(seconds)) => {
            assert!(!seconds.is_empty());
            assert!(
                seconds.iter().all(|v| (0.0..10.0).contains(v)),
                "{seconds:?}"
            );
        }
        other => panic!("no connection duration for {plain_at:?}: {other:?}"),
    }
}
