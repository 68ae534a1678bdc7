//! The pool across its lifetime on real sockets: back-to-back requests keep one
//! connection, and the reaper comes back on a new runtime after its runtime is gone.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;

use closefirst::{Client, ConnectionInfo};
use support::{until, ServerConfig, TestServer};

async fn get(client: &Client<Empty<Bytes>>, url: &str) -> ConnectionInfo {
    support::get(client, url).await.0
}

const WAIT: Duration = Duration::from_secs(5);

/// 50 requests, each sent as soon as the previous body has been read to its end.
/// Returns the connection id of each.
async fn fifty_back_to_back(server: &TestServer) -> (Client<Empty<Bytes>>, Vec<u64>) {
    let client = Client::builder().build().expect("valid settings");
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(get(&client, &server.url("/")).await.id);
    }
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    until(&client, |s| s.idle == distinct.len() && s.active == 0).await;
    assert_eq!(client.stats().waiting, 0);
    (client, ids)
}

/// How often a request went to another connection than the one before it.
fn switches(ids: &[u64]) -> usize {
    ids.windows(2).filter(|pair| pair[0] != pair[1]).count()
}

#[tokio::test(flavor = "current_thread")]
async fn back_to_back_requests_use_one_connection_on_a_current_thread_runtime() {
    let server = TestServer::start(ServerConfig::default());
    let (client, ids) = fifty_back_to_back(&server).await;
    assert_eq!(switches(&ids), 0, "connections used: {ids:?}");
    assert_eq!(server.connections_accepted(), 1);
    assert_eq!(server.requests_per_connection(), [50]);
    let stats = client.stats();
    assert_eq!((stats.connections_opened, stats.reuses), (1, 49));
    // No check-in task is left, and the idle connection has no task either (its hyper
    // connection future is parked in the pool): what is left is the reaper.
    let metrics = tokio::runtime::Handle::current().metrics();
    let deadline = std::time::Instant::now() + WAIT;
    while metrics.num_alive_tasks() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "tasks alive: {}",
            metrics.num_alive_tasks()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// On a multi-thread runtime too: a small response is read to its end by the request's
/// own task (see `pool::driver`), which checks the connection in before it returns, so
/// no other worker can be behind. (When a connection task on another worker read the
/// response, a second connection opened now and then; before the pending check-ins,
/// requests alternated between two connections.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_requests_keep_one_connection_on_a_multi_thread_runtime() {
    let server = TestServer::start(ServerConfig::default());
    let (_client, ids) = fifty_back_to_back(&server).await;
    assert_eq!(switches(&ids), 0, "connections used: {ids:?}");
    assert_eq!(
        server.connections_accepted(),
        1,
        "connections used: {ids:?}"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn the_reaper_starts_again_on_a_new_runtime_after_its_runtime_was_dropped() {
    let server = TestServer::start(ServerConfig::default());
    // As a client held in a static would be: made once, used from several runtimes.
    let client: Client<Empty<Bytes>> = Client::builder()
        .idle_timeout(Duration::from_millis(300))
        .keep_alive_margin(Duration::from_millis(100))
        .build()
        .expect("valid settings");

    let first = runtime();
    first.block_on(async {
        get(&client, &server.url("/")).await;
        until(&client, |s| s.idle == 1).await;
    });
    // Its reaper and connection task go with it.
    drop(first);
    // Idle longer than the margin, within the idle timeout: had the dead task been
    // taken for a server close, the pool would learn a 150 ms idle timeout from it.
    std::thread::sleep(Duration::from_millis(150));

    let second = runtime();
    second.block_on(async {
        let info = get(&client, &server.url("/")).await;
        assert!(
            !info.reused,
            "the first connection's task is gone with its runtime"
        );
        let stats = client.stats();
        assert_eq!(stats.evictions.task_gone, 1, "{stats:?}");
        assert_eq!(stats.evictions.closed_by_server, 0, "{stats:?}");
        assert!(
            stats.learned_idle_timeouts.is_empty(),
            "a runtime shutting down taught the pool an idle timeout: {stats:?}"
        );
        until(&client, |s| s.idle == 1).await;
        // The client closes the idle connection at 300 ms: well within WAIT.
        until(&client, |s| s.evictions.idle_timeout == 1 && s.idle == 0).await;
        assert!(
            server
                .wait_until_async(|s| s.client_closed_first() >= 1, WAIT)
                .await
        );
        let stats = client.stats();
        assert_eq!((stats.idle, stats.active, stats.waiting), (0, 0, 0));
    });
}
