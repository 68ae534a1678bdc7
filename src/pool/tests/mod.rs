//! The pool's internals under paused time, over in-memory connections to an
//! in-process hyper server: waiters, fresh checkouts at the connection limit, and the
//! learned-timeout map.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, Uri};
use http_body_util::{Empty, Full};
use hyper_util::rt::TokioIo;
use tokio_test::task;

use super::{ConnectFn, Connected, DriverHome, Pool};
use crate::config::PoolConfig;
use crate::error::Error;
use crate::origin::Origin;

type TestPool = Arc<Pool<Empty<Bytes>>>;

/// A pool whose connections go to an in-process server; counts connections made.
fn pool(config: PoolConfig) -> (TestPool, Arc<AtomicUsize>) {
    pool_with(config, Duration::ZERO, |_| true)
}

/// [`pool`], with each connect taking `delay` before its handshake, and failing
/// unless `succeeds(n)` for the n-th connect (1-based).
fn pool_with(
    config: PoolConfig,
    delay: Duration,
    succeeds: impl Fn(usize) -> bool + Send + Sync + 'static,
) -> (TestPool, Arc<AtomicUsize>) {
    let made = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&made);
    let succeeds = Arc::new(succeeds);
    let connect: ConnectFn<Empty<Bytes>> = Box::new(move |_: Uri, home: DriverHome| {
        let counter = Arc::clone(&counter);
        let succeeds = Arc::clone(&succeeds);
        Box::pin(async move {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if !succeeds(n) {
                let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
                return Err(Error::connect("test origin", refused));
            }
            let (client, server) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: http::Request<_>| async move {
                    // `/big` is more than hyper buffers: the connection stays busy
                    // until the caller reads the body.
                    let body = if req.uri().path() == "/big" {
                        Bytes::from(vec![b'x'; 1 << 20])
                    } else {
                        Bytes::from_static(b"hi")
                    };
                    Ok::<_, Infallible>(Response::new(Full::new(body)))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(server), service)
                    .await;
            });
            let (tx, driver) = hyper::client::conn::http1::handshake(TokioIo::new(client))
                .await
                .map_err(|e| Error::connect("test origin", e))?;
            Ok(Connected {
                tx,
                socket: None,
                driver: home.start(driver),
            })
        })
    });
    (Pool::new(config, connect), made)
}

fn origin(host: &str) -> Origin {
    let uri: Uri = format!("http://{host}/").parse().unwrap();
    Origin::from_uri(&uri).unwrap()
}

fn one_connection() -> PoolConfig {
    PoolConfig {
        max_connections_per_origin: Some(1),
        checkout_timeout: Some(Duration::from_secs(2)),
        ..PoolConfig::default()
    }
}

fn waiters(pool: &TestPool, origin: &Origin) -> usize {
    pool.lock()
        .origins
        .get(origin)
        .map_or(0, |entry| entry.waiters.len())
}

/// Lets every task that can run, run, without moving paused time.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_or_timed_out_waiter_leaves_the_queue() {
    let (pool, _) = pool(one_connection());
    let origin = origin("origin.test");
    let held = pool.checkout(&origin, false, true).await.unwrap();

    let mut dropped = task::spawn(pool.checkout(&origin, false, true));
    assert!(dropped.poll().is_pending());
    assert_eq!(waiters(&pool, &origin), 1);
    assert_eq!(pool.stats().waiting, 1);
    drop(dropped);
    assert_eq!(
        waiters(&pool, &origin),
        0,
        "the dropped waiter stayed queued"
    );

    let err = match pool.checkout(&origin, false, true).await {
        Ok(_) => panic!("the only connection is held"),
        Err(err) => err,
    };
    assert!(err.is_timeout(), "{err}");
    assert_eq!(
        waiters(&pool, &origin),
        0,
        "the timed-out waiter stayed queued"
    );
    assert_eq!(pool.stats().waiting, 0);
    drop(held);
    let stats = pool.stats();
    assert_eq!((stats.active, stats.idle, stats.waiting), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_connection_granted_to_a_waiter_that_is_then_dropped_goes_back_to_the_pool() {
    let (pool, made) = pool(one_connection());
    let origin = origin("origin.test");
    let held = pool.checkout(&origin, false, true).await.unwrap();
    let mut waiter = task::spawn(pool.checkout(&origin, false, true));
    assert!(waiter.poll().is_pending());

    // The connection is granted to the waiter, which is dropped before it runs.
    pool.checkin(held.conn, true);
    drop(waiter);
    let stats = pool.stats();
    assert_eq!(
        (stats.idle, stats.active, stats.waiting),
        (1, 0, 0),
        "the granted connection was lost: {stats:?}"
    );
    let again = pool.checkout(&origin, false, true).await.unwrap();
    assert!(again.reused);
    assert_eq!(made.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_permit_granted_to_a_waiter_that_is_then_dropped_passes_to_the_next() {
    let (pool, made) = pool(one_connection());
    let origin = origin("origin.test");
    let held = pool.checkout(&origin, false, true).await.unwrap();
    let mut first = task::spawn(pool.checkout(&origin, false, true));
    assert!(first.poll().is_pending());
    let mut second = task::spawn(pool.checkout(&origin, false, true));
    assert!(second.poll().is_pending());

    // Closing the held connection grants its slot to the first waiter.
    drop(held);
    drop(first);
    assert!(second.is_woken());
    let checkout = loop {
        if let std::task::Poll::Ready(checkout) = second.poll() {
            break checkout.expect("the slot passed on");
        }
        settle().await;
    };
    assert!(!checkout.reused);
    assert_eq!(made.load(Ordering::SeqCst), 2);
    drop(checkout);
    let stats = pool.stats();
    assert_eq!((stats.active, stats.idle, stats.waiting), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_fresh_checkout_at_the_limit_replaces_the_least_recently_used_idle_connection() {
    let (pool, made) = pool(PoolConfig {
        max_connections_per_origin: Some(2),
        ..one_connection()
    });
    let origin = origin("origin.test");
    let older = pool.checkout(&origin, false, true).await.unwrap();
    let newer = pool.checkout(&origin, false, true).await.unwrap();
    let (older_id, newer_id) = (older.conn.id(), newer.conn.id());
    pool.checkin(older.conn, true);
    pool.checkin(newer.conn, true);
    assert_eq!(pool.stats().idle, 2);

    let fresh = match pool.checkout(&origin, true, true).await {
        Ok(fresh) => fresh,
        Err(err) => panic!("a fresh checkout waited behind idle connections: {err}"),
    };
    assert!(!fresh.reused);
    assert_eq!(made.load(Ordering::SeqCst), 3);
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.active), (1, 1), "{stats:?}");
    assert_eq!(stats.evictions.total(), 1);
    assert_eq!(stats.evictions.connection_limit, 1);
    // The least recently used one went; the other is still there.
    let reused = pool.checkout(&origin, false, true).await.unwrap();
    assert_eq!(reused.conn.id(), newer_id);
    assert_ne!(reused.conn.id(), older_id);
}

#[tokio::test(start_paused = true)]
async fn the_learned_timeouts_are_bounded() {
    let (pool, _) = pool(PoolConfig::default());
    for n in 0..1100 {
        pool.observe_server_close(&origin(&format!("host{n}.test")), Duration::from_secs(2));
    }
    assert_eq!(pool.stats().learned_idle_timeouts.len(), 1024);
    // The first ones observed were forgotten first.
    let learned = pool.stats().learned_idle_timeouts;
    assert!(!learned.contains_key("http://host0.test"));
    assert!(learned.contains_key("http://host1099.test"));
}

#[tokio::test(start_paused = true)]
async fn a_close_seen_after_check_in_shortens_the_deadlines_of_idle_connections() {
    let (pool, _) = pool(PoolConfig::default());
    let origin = origin("origin.test");
    // The server was proven to keep connections 20 s: a check-in gets 19 s.
    pool.prove(&origin, Duration::from_secs(20));
    let first = pool.checkout(&origin, false, true).await.unwrap();
    let id = first.conn.id();
    pool.checkin(first.conn, true);
    tokio::time::advance(Duration::from_secs(5)).await;
    // It redeploys with a 3 s timer, seen on another connection: 2 s from now on.
    pool.observe_server_close(&origin, Duration::from_secs(3));
    let next = pool.checkout(&origin, false, true).await.unwrap();
    assert!(
        !next.reused && next.conn.id() != id,
        "idle 5 s, past the 2 s now allowed"
    );
    assert_eq!(pool.stats().evictions.learned_timeout, 1);
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_at_its_deadline_becomes_the_probe_and_proves_a_longer_timer() {
    let (pool, _) = pool(PoolConfig::default());
    let origin = origin("origin.test");
    let first = pool.checkout(&origin, false, true).await.unwrap();
    pool.checkin(first.conn, true);
    let probe_id = pool.lock().origins[&origin].idle[0].conn.id();

    // At the 4 s default deadline it is not closed: it becomes the probe, out of
    // rotation, testing 2 x (4 s + 1 s margin) = 10 s.
    tokio::time::advance(Duration::from_secs(4)).await;
    settle().await;
    let stats = pool.stats();
    assert_eq!(
        (stats.idle, stats.probes.running, stats.probes.started),
        (1, 1, 1)
    );
    assert_eq!(stats.evictions.total(), 0);
    let during = pool.checkout(&origin, false, true).await.unwrap();
    assert!(!during.reused, "the probe carries no request");
    assert_ne!(during.conn.id(), probe_id);
    drop(during);

    // Still open at 10 s: 10 s is proven, and connections may stay idle 9 s.
    tokio::time::advance(Duration::from_secs(6)).await;
    settle().await;
    let stats = pool.stats();
    assert_eq!((stats.probes.running, stats.probes.proven), (0, 1));
    assert_eq!(
        stats.evictions.idle_timeout, 1,
        "the probe closes when proven"
    );
    let origin_stats = &pool.origin_stats()[0];
    assert_eq!(origin_stats.proven_idle, Duration::from_secs(10));
    assert_eq!(origin_stats.idle_deadline, Duration::from_secs(9));
    assert_eq!(
        origin_stats.idle_deadline_source,
        crate::DeadlineSource::Proven
    );
}

#[tokio::test(start_paused = true)]
async fn a_check_in_to_a_full_idle_list_closes_the_least_recently_used() {
    let (pool, _) = pool(PoolConfig {
        max_idle_per_origin: 1,
        ..PoolConfig::default()
    });
    let origin = origin("origin.test");
    let first = pool.checkout(&origin, false, true).await.unwrap();
    let second = pool.checkout(&origin, false, true).await.unwrap();
    let second_id = second.conn.id();
    pool.checkin(first.conn, true);
    pool.checkin(second.conn, true);
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.active), (1, 0));
    assert_eq!(stats.evictions.idle_list_full, 1);
    assert_eq!(
        pool.checkout(&origin, false, true).await.unwrap().conn.id(),
        second_id
    );
}

#[test]
fn a_waiter_dropped_outside_any_runtime_checks_its_grant_in_without_panicking() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (pool, made) = pool(PoolConfig {
        checkout_timeout: None,
        idle_timeout: Duration::from_millis(300),
        keep_alive_margin: Duration::from_millis(100),
        ..one_connection()
    });
    let origin = origin("origin.test");
    let held = runtime
        .block_on(pool.checkout(&origin, false, true))
        .unwrap();
    let mut waiter = task::spawn(pool.checkout(&origin, false, true));
    runtime.block_on(async {
        assert!(waiter.poll().is_pending());
        pool.checkin(held.conn, true);
    });
    // No runtime here: the check-in cannot start the reaper, and must not try to.
    assert!(tokio::runtime::Handle::try_current().is_err());
    drop(waiter);
    assert_eq!(pool.stats().idle, 1);

    runtime.block_on(async {
        let checkout = pool.checkout(&origin, false, true).await.unwrap();
        assert!(checkout.reused);
        assert_eq!(made.load(Ordering::SeqCst), 1);
        // This check-in starts the reaper, which closes the connection at 300 ms.
        pool.checkin(checkout.conn, true);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while pool.stats().idle != 0 {
            assert!(tokio::time::Instant::now() < deadline, "never reaped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pool.stats().evictions.idle_timeout, 1);
    });
}

#[test]
fn a_connection_waiting_for_its_body_gives_its_slot_back_when_its_runtime_shuts_down() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (pool, _) = pool(PoolConfig::default());
    let origin = origin("origin.test");
    let response = runtime.block_on(async {
        let mut checkout = pool.checkout(&origin, false, true).await.unwrap();
        let request = http::Request::get("/big").body(Empty::new()).unwrap();
        let response = checkout.conn.send(request).await.unwrap();
        // The body is not read: the connection waits in the pool's pending list.
        checkout.conn.check_in_when_ready();
        settle().await;
        let stats = pool.stats();
        assert_eq!((stats.active, stats.idle), (1, 0));
        response
    });
    drop(runtime);
    let stats = pool.stats();
    assert_eq!((stats.active, stats.idle, stats.waiting), (0, 0, 0));
    assert!(
        !pool.lock().origins.contains_key(&origin),
        "the origin entry went with its last slot"
    );
    drop(response);
}

mod total;
mod warm;
