//! Unix domain sockets (`Builder::unix_socket`) against the lab origin listening on a
//! socket path: reuse, the pre-reuse check after the server closed an idle connection
//! while the client's thread was blocked, and a GET resent after a close in the race
//! window (the request written, no answer), all classified as on TCP.
#![cfg(unix)]

mod support;

#[path = "support/faults.rs"]
mod harness;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;

use closefirst::lab::{Fault, Origin, OriginConfig};
use closefirst::{Client, Progress};
use harness::{isolated, Flavor};

/// The server's idle timeout in the idle-close scenario.
const SERVER_IDLE: Duration = Duration::from_millis(100);
/// How long the client's thread is blocked past the server's idle close.
const BLOCKED: Duration = Duration::from_millis(800);

/// A socket path no other test (or earlier run) uses.
fn socket_path() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "closefirst-test-{}-{}.sock",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&path);
    path
}

/// The origin on its own thread, listening on `path` too.
fn origin(path: &PathBuf, idle: Duration, faults: &[(&str, Fault)]) -> Origin {
    let mut builder = Origin::builder(OriginConfig {
        idle_timeout: idle,
        send_keep_alive_hint: false,
        ..OriginConfig::default()
    })
    .numbered_responses(true)
    .unix_socket(path);
    for (id, fault) in faults {
        builder = builder.fault(*id, fault.clone());
    }
    builder
        .start_on_thread()
        .expect("a Unix listener and a thread")
}

fn client(path: &PathBuf) -> Client<Empty<Bytes>> {
    Client::builder()
        .idle_timeout(Duration::from_secs(30))
        // Pinned: the POST cases need a POST on a reused connection.
        .learn_idle_timeout(false)
        .unix_socket(path)
        .build()
        .expect("valid settings")
}

fn get(id: &str) -> Request<Empty<Bytes>> {
    request(http::Method::GET, id)
}

fn request(method: http::Method, id: &str) -> Request<Empty<Bytes>> {
    Request::builder()
        .method(method)
        .uri("http://localhost/")
        .header("x-request-id", id)
        .body(Empty::new())
        .expect("a valid request")
}

#[test]
fn requests_reuse_one_connection_on_the_socket() {
    isolated(Flavor::Multi, || async {
        let path = socket_path();
        let origin = origin(&path, Duration::MAX, &[]);
        let client = client(&path);
        let (first, body) = support::get(&client, "http://localhost/").await;
        assert_eq!(body, "ok 1");
        assert!(!first.reused);
        assert_eq!(first.remote_addr, None, "a Unix socket has no IP peer");
        let options = first.socket.expect("the pool holds the socket");
        assert_eq!(options.keepalive, None, "TCP options do not apply");
        assert_eq!(options.nodelay, None, "TCP options do not apply");
        support::until(&client, |s| s.idle == 1).await;
        let (second, body) = support::get(&client, "http://localhost/").await;
        assert_eq!(body, "ok 2");
        assert!(second.reused);
        assert_eq!(second.id, first.id);
        assert_eq!(origin.connections(), 1, "nothing went over TCP either");
        drop(client);
        drop(origin);
        let _ = std::fs::remove_file(&path);
    });
}

#[test]
fn an_idle_close_seen_only_by_the_peek_is_not_reused() {
    isolated(Flavor::Current, || async {
        let path = socket_path();
        let origin = origin(&path, SERVER_IDLE, &[]);
        let client = client(&path);
        support::get(&client, "http://localhost/").await;
        support::until(&client, |s| s.idle == 1).await;
        // Blocks every client task: hyper's connection task cannot see the FIN.
        std::thread::sleep(BLOCKED);
        assert_eq!(origin.closes_done(), 1, "the server closed");

        let resp = client.request(get("after-idle")).await.expect("sent");
        let info = resp
            .extensions()
            .get::<closefirst::ConnectionInfo>()
            .cloned()
            .expect("info attached");
        assert!(!info.reused, "the closed connection was not reused");
        assert_eq!(
            info.attempts, 1,
            "the stale connection was never written to"
        );
        assert_eq!(origin.executions("after-idle"), 1);
        assert_eq!(origin.connections(), 2);
        assert_eq!(client.stats().evictions.closed_by_server, 1);
        drop(resp);
        drop(client);
        drop(origin);
        let _ = std::fs::remove_file(&path);
    });
}

#[test]
fn a_close_after_the_request_was_written_resends_a_get_and_not_a_post() {
    isolated(Flavor::Multi, || async {
        let path = socket_path();
        let origin = origin(
            &path,
            Duration::MAX,
            &[
                ("raced-get", Fault::FinWithoutAnswer),
                ("raced-post", Fault::FinWithoutAnswer),
            ],
        );
        let client = client(&path);
        support::get(&client, "http://localhost/").await;
        support::until(&client, |s| s.idle == 1).await;

        let resp = client.request(get("raced-get")).await.expect("resent");
        let info = resp
            .extensions()
            .get::<closefirst::ConnectionInfo>()
            .cloned()
            .expect("info attached");
        assert_eq!(info.attempts, 2);
        assert_eq!(client.stats().resends.written_no_response, 1);
        assert_eq!(
            origin.executions("raced-get"),
            2,
            "read, closed, then resent"
        );
        drop(resp);

        support::until(&client, |s| s.idle == 1).await;
        let err = client
            .request(request(http::Method::POST, "raced-post"))
            .await
            .expect_err("a POST is not resent");
        assert_eq!(
            err.request_progress(),
            Progress::WrittenNoResponse,
            "{err:?}"
        );
        assert!(err.is_stale_connection(), "{err:?}");
        assert_eq!(origin.executions("raced-post"), 1, "run once");
        drop(client);
        drop(origin);
        let _ = std::fs::remove_file(&path);
    });
}
