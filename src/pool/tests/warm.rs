//! Warm connections under paused time: their idle time counts from when the connect
//! began, they take only the room a request would get at once, and a failed one is
//! counted and seen by no request.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_test::task;

use super::{origin, pool, pool_with, settle};
use crate::config::PoolConfig;

fn pinned() -> PoolConfig {
    PoolConfig {
        // No probe: the idle deadline alone decides.
        learn_idle_timeout: false,
        ..PoolConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_warm_connections_idle_time_counts_from_when_its_connect_began() {
    // The handshake ends 3 s after the connect began (a slow TLS handshake, say);
    // the server's idle timer has run since its accept, before that.
    let (pool, made) = pool_with(pinned(), Duration::from_secs(3), |_| true);
    let origin = origin("origin.test");
    let began = tokio::time::Instant::now();
    assert_eq!(pool.preconnect(&origin, 1).await, 1);
    assert_eq!(began.elapsed(), Duration::from_secs(3));
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.preconnects.opened), (1, 1), "{stats:?}");

    // The default 4 s idle timeout runs out 4 s after the connect began, not 4 s
    // after the handshake.
    tokio::time::advance(Duration::from_millis(1001)).await;
    settle().await;
    let stats = pool.stats();
    assert_eq!(stats.idle, 0, "still idle 4 s after the connect began");
    assert_eq!(stats.evictions.idle_timeout, 1);
    assert_eq!(made.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_warm_connection_is_handed_out_like_any_idle_one() {
    let (pool, made) = pool(PoolConfig::default());
    let origin = origin("origin.test");
    assert_eq!(pool.preconnect(&origin, 3).await, 3);
    assert_eq!(pool.preconnect(&origin, 3).await, 0, "it has 3 already");
    assert_eq!(pool.preconnect(&origin, 4).await, 1);
    let checkout = pool.checkout(&origin, false, true).await.unwrap();
    assert!(checkout.reused);
    assert_eq!(made.load(Ordering::SeqCst), 4);
    // Counted toward `n`: idle or in use.
    assert_eq!(pool.preconnect(&origin, 4).await, 0);
    drop(checkout);
    assert_eq!(pool.preconnect(&origin, usize::MAX).await, 1024 - 3);
    assert_eq!(pool.stats().idle, 1024);
}

#[tokio::test(start_paused = true)]
async fn warm_connections_take_only_the_room_a_request_would_get_at_once() {
    let (a, b) = (origin("a.test"), origin("b.test"));
    let limited = |config: PoolConfig| pool(config).0;

    let per_origin = limited(PoolConfig {
        max_connections_per_origin: Some(2),
        ..PoolConfig::default()
    });
    assert_eq!(per_origin.preconnect(&a, 5).await, 2);

    let total = limited(PoolConfig {
        max_connections_total: Some(3),
        ..PoolConfig::default()
    });
    assert_eq!(total.preconnect(&a, 2).await, 2);
    assert_eq!(total.preconnect(&b, 5).await, 1);
    assert_eq!(
        total.stats().evictions.total(),
        0,
        "nothing closed for them"
    );

    let idle_per_origin = limited(PoolConfig {
        max_idle_per_origin: 2,
        ..PoolConfig::default()
    });
    assert_eq!(idle_per_origin.preconnect(&a, 5).await, 2);
    let no_reuse = limited(PoolConfig {
        max_idle_per_origin: 0,
        ..PoolConfig::default()
    });
    assert_eq!(no_reuse.preconnect(&a, 5).await, 0);
    assert!(no_reuse.lock().origins.is_empty(), "no entry left behind");

    let idle_total = limited(PoolConfig {
        max_idle_total: Some(3),
        ..PoolConfig::default()
    });
    assert_eq!(idle_total.preconnect(&a, 2).await, 2);
    assert_eq!(idle_total.preconnect(&b, 5).await, 1);
    assert_eq!(idle_total.stats().evictions.total(), 0);

    // A request waiting for room comes first.
    let waiting = limited(PoolConfig {
        max_connections_total: Some(1),
        ..PoolConfig::default()
    });
    let held = waiting.checkout(&a, false, true).await.unwrap();
    let mut for_b = task::spawn(waiting.checkout(&b, false, true));
    assert!(for_b.poll().is_pending());
    assert_eq!(waiting.preconnect(&b, 1).await, 0);
    drop(held);
    drop(for_b);
}

#[tokio::test(start_paused = true)]
async fn a_failed_preconnect_is_counted_and_no_request_sees_it() {
    // The first connect fails, the next ones succeed.
    let (pool, made) = pool_with(PoolConfig::default(), Duration::ZERO, |n| n > 1);
    let origin = origin("origin.test");
    assert_eq!(pool.preconnect(&origin, 1).await, 0);
    let stats = pool.stats();
    assert_eq!((stats.preconnects.opened, stats.preconnects.failed), (0, 1));
    assert_eq!((stats.idle, stats.active), (0, 0));
    assert!(pool.lock().origins.is_empty(), "its slot was given back");
    let checkout = pool
        .checkout(&origin, false, true)
        .await
        .expect("a request");
    assert!(!checkout.reused);
    assert_eq!(made.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn after_a_failed_connect_no_more_are_started() {
    let (pool, made) = pool_with(PoolConfig::default(), Duration::from_millis(10), |_| false);
    let origin = origin("origin.test");
    assert_eq!(pool.preconnect(&origin, 100).await, 0);
    // The first eight run at once; none starts after they failed.
    assert_eq!(made.load(Ordering::SeqCst), 8);
    assert_eq!(pool.stats().preconnects.failed, 8);
}

#[tokio::test(start_paused = true)]
async fn a_preconnect_dropped_mid_connect_leaves_nothing_behind() {
    let (pool, made) = pool_with(PoolConfig::default(), Duration::from_secs(3), |_| true);
    let origin = origin("origin.test");
    let mut warming = task::spawn(pool.preconnect(&origin, 4));
    assert!(warming.poll().is_pending());
    settle().await;
    assert_eq!(made.load(Ordering::SeqCst), 4);
    assert_eq!(pool.stats().active, 4, "four slots taken while connecting");
    drop(warming);
    let stats = pool.stats();
    assert_eq!((stats.active, stats.idle), (0, 0), "{stats:?}");
    assert!(
        pool.lock().origins.is_empty(),
        "the origin entry was left behind"
    );
    assert_eq!(pool.lock().open, 0);
}
