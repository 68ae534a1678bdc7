//! The caps across origins, under paused time: requests waiting for room under
//! `max_connections_total` are served in arrival order across origins, idle
//! connections of other origins make room, nothing is left behind by a waiter that
//! gives up, and `max_idle_total` closes the least recently used of any origin.

use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use tokio_test::task;

use super::{origin, pool, settle};
use crate::config::PoolConfig;

fn total(max: usize) -> PoolConfig {
    PoolConfig {
        max_connections_total: Some(max),
        checkout_timeout: Some(Duration::from_secs(10)),
        ..PoolConfig::default()
    }
}

/// Polls `waiter` (letting the connect run, without moving paused time) until it is
/// ready.
async fn ready<F: std::future::Future>(waiter: &mut task::Spawn<F>) -> F::Output {
    for _ in 0..100 {
        if let Poll::Ready(output) = waiter.poll() {
            return output;
        }
        settle().await;
    }
    panic!("the waiter was never served");
}

#[tokio::test(start_paused = true)]
async fn requests_wait_for_room_in_arrival_order_across_origins() {
    let (pool, made) = pool(total(2));
    let (a, b, c, d) = (
        origin("a.test"),
        origin("b.test"),
        origin("c.test"),
        origin("d.test"),
    );
    let a1 = pool.checkout(&a, false, true).await.unwrap();
    let b1 = pool.checkout(&b, false, true).await.unwrap();

    let mut for_c = task::spawn(pool.checkout(&c, false, true));
    assert!(for_c.poll().is_pending());
    let mut for_a = task::spawn(pool.checkout(&a, false, true));
    assert!(for_a.poll().is_pending());
    let mut for_d = task::spawn(pool.checkout(&d, false, true));
    assert!(for_d.poll().is_pending());
    let stats = pool.stats();
    assert_eq!((stats.waiting, stats.waiting_for_room), (3, 3), "{stats:?}");

    // B's connection closes: the room goes to the first in line, C's request.
    drop(b1);
    let c1 = ready(&mut for_c).await.expect("room for C");
    assert!(!c1.reused);
    assert!(for_a.poll().is_pending() && for_d.poll().is_pending());
    assert!(
        !pool.lock().origins.contains_key(&b),
        "B's entry went with it"
    );

    // A's connection comes back: A's own waiter takes it, D still waits.
    pool.checkin(a1.conn, true);
    let a2 = ready(&mut for_a).await.expect("A's connection");
    assert!(a2.reused, "A's request got A's connection back");
    assert!(for_d.poll().is_pending());

    // C's closes: D's turn.
    drop(c1);
    let d1 = ready(&mut for_d).await.expect("room for D");
    assert!(!d1.reused);
    assert_eq!(made.load(Ordering::SeqCst), 4);
    let stats = pool.stats();
    assert_eq!(
        (stats.active, stats.waiting, stats.waiting_for_room),
        (2, 0, 0)
    );
    assert_eq!(
        stats.evictions.connection_total_limit, 0,
        "nothing was closed for room"
    );
}

#[tokio::test(start_paused = true)]
async fn the_least_recently_used_idle_connection_of_another_origin_makes_room() {
    let (pool, made) = pool(total(2));
    let (a, b, c) = (origin("a.test"), origin("b.test"), origin("c.test"));
    let a1 = pool.checkout(&a, false, true).await.unwrap();
    tokio::time::advance(Duration::from_millis(100)).await;
    let b1 = pool.checkout(&b, false, true).await.unwrap();
    // Checked in in the other order: A's connection is still the one used longest ago
    // (its idle period began first).
    pool.checkin(b1.conn, true);
    pool.checkin(a1.conn, true);
    assert_eq!(pool.stats().idle, 2);

    let started = tokio::time::Instant::now();
    let c1 = pool.checkout(&c, false, true).await.expect("room made");
    assert_eq!(started.elapsed(), Duration::ZERO, "made at once");
    assert!(!c1.reused);
    assert_eq!(made.load(Ordering::SeqCst), 3);
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.active, stats.waiting), (1, 1, 0));
    assert_eq!(stats.evictions.connection_total_limit, 1, "{stats:?}");
    assert!(
        !pool.lock().origins.contains_key(&a),
        "A's connection made room"
    );
    assert!(pool.checkout(&b, false, true).await.unwrap().reused);
}

#[tokio::test(start_paused = true)]
async fn a_connection_checked_in_while_others_wait_for_room_is_closed_for_them() {
    let (pool, made) = pool(total(1));
    let (a, b) = (origin("a.test"), origin("b.test"));
    let a1 = pool.checkout(&a, false, true).await.unwrap();
    let mut for_b = task::spawn(pool.checkout(&b, false, true));
    assert!(for_b.poll().is_pending());

    pool.checkin(a1.conn, true);
    let b1 = ready(&mut for_b).await.expect("room for B");
    assert!(!b1.reused);
    assert_eq!(made.load(Ordering::SeqCst), 2);
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.active), (0, 1), "{stats:?}");
    assert_eq!(stats.evictions.connection_total_limit, 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_waiting_for_room_keeps_its_deadline_and_leaves_nothing_behind() {
    let (pool, made) = pool(total(1));
    let (a, b) = (origin("a.test"), origin("b.test"));
    let a1 = pool.checkout(&a, false, true).await.unwrap();

    // Dropped while waiting.
    let mut dropped = task::spawn(pool.checkout(&b, false, true));
    assert!(dropped.poll().is_pending());
    assert_eq!(pool.stats().waiting_for_room, 1);
    drop(dropped);
    // Timed out: 10 s after it began.
    let started = tokio::time::Instant::now();
    let err = match pool.checkout(&b, false, true).await {
        Ok(_) => panic!("no room was made"),
        Err(err) => err,
    };
    assert!(err.is_timeout(), "{err}");
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    {
        let state = pool.lock();
        assert!(state.starved.is_empty());
        assert!(!state.origins.contains_key(&b), "B's entry was left behind");
    }
    let stats = pool.stats();
    assert_eq!((stats.waiting, stats.waiting_for_room), (0, 0));

    // The room freed later goes to no one, and is not lost.
    drop(a1);
    let stats = pool.stats();
    assert_eq!((stats.active, stats.idle), (0, 0));
    assert!(pool.lock().origins.is_empty());
    pool.checkout(&b, false, true).await.expect("room");
    assert_eq!(made.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_request_at_its_origins_own_limit_is_not_served_by_room_elsewhere() {
    let (pool, _) = pool(PoolConfig {
        max_connections_per_origin: Some(1),
        ..total(2)
    });
    let (a, b) = (origin("a.test"), origin("b.test"));
    let a1 = pool.checkout(&a, false, true).await.unwrap();
    let a2 = pool.checkout(&a, false, true);
    // A is at its own limit: this one waits for A's connection, not for room.
    let mut a2 = task::spawn(a2);
    assert!(a2.poll().is_pending());
    assert_eq!(pool.stats().waiting_for_room, 0);
    let b0 = pool.checkout(&b, false, true).await.unwrap();
    drop(b0);
    settle().await;
    assert!(
        a2.poll().is_pending(),
        "room elsewhere took A past its own limit"
    );
    drop(a1);
    ready(&mut a2).await.expect("A's own slot");
}

#[tokio::test(start_paused = true)]
async fn a_second_request_waiting_for_room_then_waits_for_its_origins_own_limit() {
    // Two requests to B wait for room; the first gets it, the second then waits for
    // B's own limit, and room freed elsewhere must not take B past it.
    let (pool, _) = pool(PoolConfig {
        max_connections_per_origin: Some(1),
        ..total(2)
    });
    let (a, b) = (origin("a.test"), origin("b.test"));
    let x1 = pool.checkout(&a, false, true).await.unwrap();
    let x2 = pool.checkout(&origin("c.test"), false, true).await.unwrap();
    let mut b1 = task::spawn(pool.checkout(&b, false, true));
    assert!(b1.poll().is_pending());
    let mut b2 = task::spawn(pool.checkout(&b, false, true));
    assert!(b2.poll().is_pending());
    assert_eq!(pool.stats().waiting_for_room, 2);
    drop(x1);
    let first = ready(&mut b1).await.expect("room for the first");
    drop(x2);
    settle().await;
    assert!(
        b2.poll().is_pending(),
        "room elsewhere took B past its own limit"
    );
    assert_eq!(pool.lock().origins[&b].open, 1);
    drop(first);
    let _second = ready(&mut b2).await.expect("B's own slot");
    let state = pool.lock();
    assert!(state.starved.is_empty());
    assert_eq!((state.open, state.origins[&b].open), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn max_idle_total_closes_the_least_recently_used_idle_connection_of_any_origin() {
    let (pool, _) = pool(PoolConfig {
        max_idle_total: Some(2),
        ..PoolConfig::default()
    });
    let (a, b, c) = (origin("a.test"), origin("b.test"), origin("c.test"));
    let a1 = pool.checkout(&a, false, true).await.unwrap();
    tokio::time::advance(Duration::from_millis(10)).await;
    let b1 = pool.checkout(&b, false, true).await.unwrap();
    tokio::time::advance(Duration::from_millis(10)).await;
    let c1 = pool.checkout(&c, false, true).await.unwrap();
    pool.checkin(b1.conn, true);
    pool.checkin(a1.conn, true);
    assert_eq!(pool.stats().evictions.total(), 0);
    pool.checkin(c1.conn, true);
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.active), (2, 0), "{stats:?}");
    assert_eq!(stats.evictions.idle_total_full, 1);
    assert!(
        !pool.lock().origins.contains_key(&a),
        "A's was used longest ago"
    );
    assert!(pool.checkout(&b, false, true).await.unwrap().reused);
    assert!(pool.checkout(&c, false, true).await.unwrap().reused);
}

#[tokio::test(start_paused = true)]
async fn a_request_served_by_its_own_origin_no_longer_waits_for_room() {
    let (pool, _) = pool(total(2));
    let (a, b) = (origin("a.test"), origin("b.test"));
    let a1 = pool.checkout(&a, false, true).await.unwrap();
    let b1 = pool.checkout(&b, false, true).await.unwrap();
    let mut for_a = task::spawn(pool.checkout(&a, false, true));
    assert!(for_a.poll().is_pending());
    assert_eq!(pool.stats().waiting_for_room, 1);

    // A's connection goes to A's waiter, which has not run yet: B's, checked in now,
    // must not be closed to make room for a request already served.
    pool.checkin(a1.conn, true);
    pool.checkin(b1.conn, true);
    let stats = pool.stats();
    assert_eq!(stats.evictions.connection_total_limit, 0, "{stats:?}");
    assert_eq!(stats.idle, 1);
    assert!(ready(&mut for_a).await.expect("A's connection").reused);
}
