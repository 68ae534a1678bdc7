//! `Client::origin_stats` on real sockets: who closed idle connections first, per
//! origin, and the one `warn` event that names a live parity violation.

mod support;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use closefirst::{Client, OriginStats};
use support::{ServerConfig, TestServer};

/// Collects the `warn` events of the thread it is the default subscriber of, each as
/// `name=value` pairs.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl Warnings {
    fn taken(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.push_str(&format!("{}={value:?} ", field.name()));
    }
}

impl Subscriber for Warnings {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() == Level::WARN
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

const WAIT: Duration = Duration::from_secs(10);

/// The one origin's stats once `what` holds; panics after [`WAIT`].
async fn until_origin(
    client: &Client<Empty<Bytes>>,
    what: impl Fn(&OriginStats) -> bool,
) -> OriginStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = client.origin_stats();
        assert_eq!(stats.len(), 1, "{stats:?}");
        if what(&stats[0]) {
            return stats.into_iter().next().unwrap();
        }
        assert!(Instant::now() < deadline, "gave up waiting: {stats:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_server_closing_before_the_client_deadline_is_server_closed_first_with_one_warning() {
    let warnings = Warnings::default();
    let _guard = tracing::subscriber::set_default(warnings.clone());
    let server = TestServer::start(ServerConfig {
        idle_close: Some(Duration::from_millis(300)),
        ..ServerConfig::default()
    });
    let client: Client<Empty<Bytes>> = Client::builder()
        .idle_timeout(Duration::from_secs(4))
        .keep_alive_margin(Duration::from_millis(100))
        .build()
        .unwrap();

    let (info, _) = support::get(&client, &server.url("/")).await;
    let local = info.local_addr.expect("the built-in connector reports it");
    assert!(local.ip().is_loopback());
    assert_ne!(local.port(), 0);
    assert_ne!(Some(local), info.remote_addr);

    let stats = until_origin(&client, |s| s.idle_closes.by_server == 1).await;
    assert_eq!(stats.origin, format!("http://{}", server.addr()));
    assert_eq!(
        (stats.host.as_str(), stats.port),
        ("127.0.0.1", server.addr().port())
    );
    assert_eq!(stats.idle_closes.by_client, 0);
    assert_eq!(stats.connections_opened, 1);
    assert_eq!(stats.evictions.closed_by_server, 1);
    assert_eq!((stats.idle, stats.active, stats.waiting), (0, 0, 0));
    let shortest = stats.idle_closes.shortest_server_close.expect("recorded");
    assert!(
        // Wide: the client's clock starts when it checks the connection in, a moment
        // after the server's, and a busy machine stretches that moment.
        shortest >= Duration::from_millis(100) && shortest < Duration::from_secs(3),
        "the server closes after 300 ms idle; measured {shortest:?}"
    );
    // Learned from the close (above the 100 ms margin).
    assert_eq!(stats.learned_idle_timeout, Some(shortest));

    // Having learned, the pool closes the next connection first, before the server.
    support::get(&client, &server.url("/")).await;
    let stats = until_origin(&client, |s| s.idle_closes.by_client == 1).await;
    assert_eq!(stats.evictions.learned_timeout, 1);
    assert_eq!(stats.idle_closes.by_server, 1);
    assert_eq!(stats.connections_opened, 2);

    let warnings = warnings.taken();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    let warning = &warnings[0];
    for expected in [
        "keep-alive parity fails",
        "client_idle_timeout_ms=4000",
        "keep_alive_margin_ms=100",
        "client's idle timeout of 4000 ms",
        &format!("origin=http://{}", server.addr()),
    ] {
        assert!(warning.contains(expected), "`{expected}` in {warning}");
    }
    let logged_ms = shortest.as_millis();
    assert!(
        warning.contains(&format!("server_closed_after_ms={logged_ms}")),
        "{warning}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn every_server_close_is_counted_and_the_violation_warned_once_per_origin() {
    let warnings = Warnings::default();
    let _guard = tracing::subscriber::set_default(warnings.clone());
    let server = TestServer::start(ServerConfig {
        idle_close: Some(Duration::from_millis(100)),
        ..ServerConfig::default()
    });
    let client: Client<Empty<Bytes>> = Client::builder().learn_idle_timeout(false).build().unwrap();
    for closes in 1..=3 {
        support::get(&client, &server.url("/")).await;
        let stats = until_origin(&client, |s| s.idle_closes.by_server == closes).await;
        assert_eq!(stats.learned_idle_timeout, None);
    }
    assert_eq!(warnings.taken().len(), 1, "{:#?}", warnings.taken());
}

#[tokio::test(flavor = "current_thread")]
async fn a_client_closing_first_counts_as_client_closed_and_warns_nothing() {
    let warnings = Warnings::default();
    let _guard = tracing::subscriber::set_default(warnings.clone());
    // The server never closes an idle connection.
    let server = TestServer::start(ServerConfig::default());
    let client: Client<Empty<Bytes>> = Client::builder()
        .idle_timeout(Duration::from_millis(200))
        .keep_alive_margin(Duration::from_millis(50))
        .build()
        .unwrap();
    support::get(&client, &server.url("/")).await;
    let stats = until_origin(&client, |s| s.idle_closes.by_client == 1).await;
    assert_eq!(stats.idle_closes.by_server, 0);
    assert_eq!(stats.idle_closes.shortest_server_close, None);
    assert_eq!(stats.evictions.idle_timeout, 1);
    assert_eq!(stats.learned_idle_timeout, None);
    assert_eq!(stats.idle, 0);
    assert!(warnings.taken().is_empty(), "{:#?}", warnings.taken());
}

#[tokio::test(flavor = "current_thread")]
async fn gauges_are_per_origin() {
    let one = TestServer::start(ServerConfig::default());
    let two = TestServer::start(ServerConfig::default());
    let client: Client<Empty<Bytes>> = Client::builder().build().unwrap();
    support::get(&client, &one.url("/")).await;
    support::get(&client, &two.url("/")).await;
    support::get(&client, &two.url("/")).await;
    support::until(&client, |s| s.idle == 2).await;
    let stats = client.origin_stats();
    assert_eq!(stats.len(), 2);
    for s in &stats {
        assert_eq!((s.idle, s.active, s.connections_opened), (1, 0, 1), "{s:?}");
    }
    let mut names: Vec<_> = [one.addr(), two.addr()]
        .iter()
        .map(|a| format!("http://{a}"))
        .collect();
    names.sort();
    assert_eq!(
        stats.iter().map(|s| s.origin.clone()).collect::<Vec<_>>(),
        names
    );
}
