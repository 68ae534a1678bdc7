//! Issue 18, defect 3: a TLS record that arrives on an idle connection (a TLS 1.3
//! `KeyUpdate`, as servers send after so much traffic or time) is not a close.
#![cfg(feature = "rustls")]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;

use closefirst::lab::{Origin, OriginConfig};
use closefirst::Client;

#[allow(dead_code)]
#[path = "../examples/race/certs.rs"]
mod certs;

/// The bound on any one request.
const WAIT: Duration = Duration::from_secs(10);

/// Defect 3 (issue 18): over HTTPS (TLS 1.3) to a lab origin with a 30 s idle timeout
/// that sends a `KeyUpdate` once a connection has been idle 1.5 s: GET, read the body,
/// wait 2.5 s (the record arrives meanwhile; the server keeps the connection open),
/// GET again. Asserts that the second GET reused the connection (one connection
/// opened on both sides), that nothing was evicted as `closed_by_server`, and that no
/// idle timeout was learned from the record.
#[tokio::test(flavor = "current_thread")]
async fn defect_3_a_tls_key_update_on_an_idle_connection_is_not_a_close() {
    defect_3_a_tls_key_update_on_an_idle_connection_is_not_a_close_scenario().await;
}

/// The same from a spawned task, where the connection gets a task of its own, which
/// reads the record itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_3_a_tls_key_update_on_an_idle_connection_is_not_a_close_from_a_spawned_task() {
    tokio::spawn(defect_3_a_tls_key_update_on_an_idle_connection_is_not_a_close_scenario())
        .await
        .expect("the scenario's assertions hold");
}

async fn defect_3_a_tls_key_update_on_an_idle_connection_is_not_a_close_scenario() {
    let cert = certs::TestCert::new();
    // TLS 1.2 and 1.3 on both sides: they agree on 1.3, which the origin's count of
    // KeyUpdates sent proves below (TLS 1.2 has no such record).
    let server_config = cert.server_config();
    let origin = Origin::builder(OriginConfig {
        idle_timeout: Duration::from_secs(30),
        ..OriginConfig::default()
    })
    .numbered_responses(true)
    .tls(server_config)
    .tls_key_update_when_idle(Duration::from_millis(1_500))
    .start_on_thread()
    .expect("a listener and a thread");
    let client: Client<Empty<Bytes>> = Client::builder()
        .idle_timeout(Duration::from_secs(30))
        .tls_config(cert.client_config())
        .build()
        .expect("valid settings");
    let url = origin.url("/");

    let (first, _) = tokio::time::timeout(WAIT, support::get(&client, &url))
        .await
        .expect("the first GET ends in time");
    assert!(!first.reused);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        origin.tls_key_updates(),
        1,
        "the origin sent one KeyUpdate on the idle connection (TLS 1.3)"
    );
    assert_eq!(
        origin.idle_closes(),
        0,
        "the origin kept the connection open"
    );

    let (second, _) = tokio::time::timeout(WAIT, support::get(&client, &url))
        .await
        .expect("the second GET ends in time");
    let stats = client.stats();
    assert!(
        second.reused && second.id == first.id,
        "the second GET must reuse the connection the KeyUpdate arrived on: \
         {second:?} {stats:#?}"
    );
    assert_eq!(
        stats.evictions.closed_by_server, 0,
        "a KeyUpdate was taken for a server close: {stats:#?}"
    );
    assert!(
        stats.learned_idle_timeouts.is_empty(),
        "an idle timeout was learned from a KeyUpdate: {stats:#?}"
    );
    assert_eq!(stats.connections_opened, 1, "{stats:#?}");
    assert_eq!(origin.connections(), 1);
}
