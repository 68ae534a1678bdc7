//! The deadline arithmetic: sources, the rule for requests that may not be resent, probe
//! targets, and values up to `Duration::MAX`.
use super::*;
use crate::pool::connection::tests::test_conn;

fn config(idle_timeout: Duration, keep_alive_margin: Duration) -> PoolConfig {
    PoolConfig {
        idle_timeout,
        keep_alive_margin,
        ..PoolConfig::default()
    }
}

/// The latest `Instant` reachable from `now`.
fn latest_instant(now: Instant) -> Instant {
    let mut latest = now;
    for shift in (0..64).rev() {
        if let Some(later) = latest.checked_add(Duration::from_secs(1 << shift)) {
            latest = later;
        }
    }
    for shift in (0..30).rev() {
        if let Some(later) = latest.checked_add(Duration::from_nanos(1 << shift)) {
            latest = later;
        }
    }
    latest
}

#[test]
fn deadline_after_caps_and_never_panics() {
    let now = Instant::now();
    assert_eq!(deadline_after(now, Duration::ZERO), now);
    assert_eq!(
        deadline_after(now, Duration::from_secs(5)),
        now + Duration::from_secs(5)
    );
    assert_eq!(deadline_after(now, Duration::MAX), now + MAX_DEADLINE_AHEAD);
    let latest = latest_instant(now);
    assert_eq!(deadline_after(latest, Duration::MAX), latest);
    assert_eq!(deadline_after(latest, Duration::from_nanos(1)), latest);
}

fn closed(after: Duration) -> Evidence {
    Evidence {
        closed_after: Some(after),
        proven: Duration::ZERO,
    }
}

fn proven(idle: Duration) -> Evidence {
    Evidence {
        closed_after: None,
        proven: idle,
    }
}

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

#[test]
fn allowed_idle_by_source() {
    use DeadlineSource::*;
    let c = config(s(4), s(1)); // ceiling: the default 90 s
    let none = Evidence::default();
    assert_eq!(allowed_idle(None, &none, &c), (s(4), Configured));
    // Hints both ways, up to the ceiling.
    assert_eq!(allowed_idle(Some(s(3)), &none, &c), (s(2), Hint));
    assert_eq!(allowed_idle(Some(s(75)), &none, &c), (s(74), Hint));
    assert_eq!(allowed_idle(Some(s(600)), &none, &c), (s(90), Hint));
    // A close seen, downward or upward, and capping a hint.
    assert_eq!(allowed_idle(None, &closed(s(2)), &c), (s(1), ObservedClose));
    assert_eq!(
        allowed_idle(None, &closed(s(75)), &c),
        (s(74), ObservedClose)
    );
    assert_eq!(
        allowed_idle(Some(s(75)), &closed(s(30)), &c),
        (s(29), ObservedClose)
    );
    // What is proven counts only above idle_timeout.
    assert_eq!(allowed_idle(None, &proven(s(3)), &c), (s(4), Configured));
    assert_eq!(allowed_idle(None, &proven(s(10)), &c), (s(9), Proven));
    assert_eq!(allowed_idle(None, &proven(s(1000)), &c), (s(90), Proven));
    // Learning off: fixed, a hint only shortens it.
    let off = PoolConfig {
        learn_idle_timeout: false,
        ..c.clone()
    };
    assert_eq!(
        allowed_idle(Some(s(75)), &proven(s(10)), &off),
        (s(4), Configured)
    );
    assert_eq!(allowed_idle(Some(s(3)), &none, &off), (s(2), Hint));
}

#[test]
fn a_request_that_may_not_be_resent_rides_only_what_was_seen() {
    let c = config(s(4), s(1));
    let none = Evidence::default();
    assert_eq!(allowed_idle_unresendable(None, &none, &c), Duration::ZERO);
    assert_eq!(allowed_idle_unresendable(None, &proven(s(3)), &c), s(2));
    assert_eq!(allowed_idle_unresendable(None, &closed(s(2)), &c), s(1));
    assert_eq!(allowed_idle_unresendable(Some(s(5)), &none, &c), s(4));
    // Never above what a request that may be resent gets.
    assert_eq!(allowed_idle_unresendable(None, &proven(s(30)), &c), s(29));
    let off = PoolConfig {
        learn_idle_timeout: false,
        ..c
    };
    assert_eq!(allowed_idle_unresendable(None, &none, &off), s(4));
}

#[test]
fn probes_double_the_bound_up_to_the_ceiling() {
    let c = config(s(4), s(1));
    assert_eq!(probe_target(s(4), &c), Some(s(10)));
    assert_eq!(probe_target(s(9), &c), Some(s(20)));
    assert_eq!(probe_target(s(79), &c), Some(s(91)));
    assert_eq!(probe_target(s(90), &c), None, "at the ceiling");
    let off = PoolConfig {
        learn_idle_timeout: false,
        ..c
    };
    assert_eq!(probe_target(s(4), &off), None);
    let huge = config(Duration::MAX, Duration::MAX);
    assert_eq!(probe_target(Duration::MAX, &huge), None);
    assert_eq!(
        probe_target(s(1), &config(s(2), Duration::MAX)),
        Some(Duration::MAX)
    );
}

#[tokio::test(start_paused = true)]
async fn deadline_with_duration_max_everywhere() {
    let now = Instant::now();
    let far = now + MAX_DEADLINE_AHEAD;
    let mut conn = test_conn(None).await;
    conn.hint_timeout = Some(Duration::MAX);

    let huge = config(Duration::MAX, Duration::from_secs(1));
    assert_eq!(
        deadline(&conn, &huge, now, &closed(Duration::MAX)),
        (far, Evict::ServerHint)
    );
    // A margin as large as every hint leaves nothing: close now.
    let all_margin = config(Duration::MAX, Duration::MAX);
    assert_eq!(
        deadline(&conn, &all_margin, now, &closed(Duration::MAX)).0,
        now
    );

    // Bounded values still win over huge ones, each under its own reason.
    conn.hint_timeout = Some(Duration::from_secs(10));
    assert_eq!(
        deadline(&conn, &huge, now, &closed(Duration::MAX)),
        (now + Duration::from_secs(9), Evict::ServerHint)
    );
    assert_eq!(
        deadline(&conn, &huge, now, &closed(Duration::from_secs(5))),
        (now + Duration::from_secs(4), Evict::LearnedTimeout)
    );
    let short = config(Duration::from_secs(3), Duration::from_secs(1));
    conn.hint_timeout = None;
    assert_eq!(
        deadline(&conn, &short, now, &proven(Duration::MAX)),
        (now + Duration::from_secs(90), Evict::IdleTimeout)
    );

    // A lifetime of `Duration::MAX`, set the way `Conn::opened` sets it.
    let expires = deadline_after(now, jittered_lifetime(Duration::MAX, 7));
    let conn = test_conn(Some(expires)).await;
    let none = Evidence::default();
    assert_eq!(
        deadline(&conn, &huge, now, &none),
        (far, Evict::IdleTimeout)
    );
    let conn = test_conn(Some(now + Duration::from_secs(2))).await;
    assert_eq!(
        deadline(&conn, &huge, now, &none),
        (now + Duration::from_secs(2), Evict::Lifetime)
    );

    // The reaper sleeps until such a deadline with `timeout_at`: tokio's timer takes
    // it, and it passes when (paused) time gets there, not before.
    let (deadline, _) = deadline(&test_conn(None).await, &huge, now, &none);
    tokio::time::advance(MAX_DEADLINE_AHEAD - Duration::from_secs(1)).await;
    assert!(
        tokio::time::timeout_at(deadline, std::future::pending::<()>())
            .await
            .is_err()
    );
    assert!(Instant::now() >= deadline);
}

#[tokio::test(start_paused = true)]
async fn retire_reason_with_duration_max_everywhere() {
    let now = Instant::now();
    let huge = config(Duration::MAX, Duration::from_secs(1));
    let expires = deadline_after(now, jittered_lifetime(Duration::MAX, 3));
    let mut conn = test_conn(Some(expires)).await;
    conn.hint_timeout = Some(Duration::MAX);
    assert_eq!(
        retire_reason(&conn, &huge, now, &closed(Duration::MAX)),
        None
    );
    assert_eq!(
        retire_reason(&conn, &huge, now + MAX_DEADLINE_AHEAD, &Evidence::default()),
        Some(Evict::Lifetime)
    );
    // A margin no close can beat: the server may close at any moment.
    let all_margin = config(Duration::MAX, Duration::MAX);
    let conn = test_conn(None).await;
    assert_eq!(
        retire_reason(&conn, &all_margin, now, &closed(Duration::MAX)),
        Some(Evict::LearnedTimeout)
    );
}

#[test]
fn jitter_of_extreme_lifetimes_stays_within_ten_percent() {
    for id in 0..200 {
        let jittered = jittered_lifetime(Duration::MAX, id);
        assert!(jittered <= Duration::MAX);
        assert!(
            jittered >= Duration::MAX - Duration::MAX / 10,
            "{jittered:?}"
        );
        assert_eq!(jittered_lifetime(Duration::ZERO, id), Duration::ZERO);
        assert_eq!(
            jittered_lifetime(Duration::from_nanos(999), id),
            Duration::from_nanos(999)
        );
    }
}

#[test]
fn jitter_stays_within_ten_percent_and_varies() {
    let lifetime = Duration::from_secs(600);
    let values: Vec<Duration> = (0..200).map(|id| jittered_lifetime(lifetime, id)).collect();
    for value in &values {
        assert!(
            *value <= lifetime && *value >= Duration::from_secs(540),
            "{value:?}"
        );
    }
    let distinct: std::collections::HashSet<_> = values.iter().collect();
    assert!(
        distinct.len() > 50,
        "jitter should spread lifetimes, got {}",
        distinct.len()
    );
}
