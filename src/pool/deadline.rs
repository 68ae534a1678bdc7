//! Deadline arithmetic: when an idle connection must be closed, and why.
//!
//! The client closes first: each idle connection gets a deadline, its idle start (when
//! its response head arrived) plus [`allowed_idle`] (a hint, a close seen, what is
//! proven, or `idle_timeout`, each less the margin; see [`learn`](super::learn)), or
//! the end of its lifetime if that comes first, which the
//! [`reaper`](super::evict) and checkout both enforce. A connection whose response
//! just ended may instead be retired at once ([`retire_reason`]).
//!
//! These are pure functions of a connection's facts, the settings and `now`. Settings
//! and server hints can be as large as `Duration::MAX`, so durations are compared
//! first and added to an `Instant` once, capped ([`deadline_after`]): no input can
//! make them panic.

use std::hash::BuildHasher;
use std::time::Duration;

use tokio::time::Instant;

use super::learn::Evidence;
use super::{Conn, Evict};
use crate::config::PoolConfig;
use crate::info::DeadlineSource;

/// The largest share of `max_lifetime` taken off at random, so that connections opened
/// together (a fleet restarting, a burst) do not all reconnect at the same moment.
const LIFETIME_JITTER_PERMILLE: u32 = 100;

/// The furthest ahead any deadline of the pool is set. A longer idle timeout, lifetime
/// or server hint behaves as "never" in practice, and `Instant + Duration` panics on
/// overflow, which `Duration::MAX` (a user setting) or `u64::MAX` seconds (a server's
/// `Keep-Alive` hint) would cause. tokio caps its own timers at the same 30 years,
/// because much later instants overflow on some platforms.
pub(crate) const MAX_DEADLINE_AHEAD: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// `now + ahead`, with `ahead` capped at [`MAX_DEADLINE_AHEAD`]; never panics.
pub(crate) fn deadline_after(now: Instant, ahead: Duration) -> Instant {
    // 30 years past any real monotonic clock reading fits in an `Instant`; should it
    // not, closing at once is the safe side (the client closes first).
    now.checked_add(ahead.min(MAX_DEADLINE_AHEAD))
        .unwrap_or(now)
}

/// `lifetime` shortened by a pseudo-random 0–10 %, derived from the connection id.
pub(crate) fn jittered_lifetime(lifetime: Duration, id: u64) -> Duration {
    let random = std::collections::hash_map::RandomState::new().hash_one(id);
    let permille = u32::try_from(random % u64::from(LIFETIME_JITTER_PERMILLE + 1))
        .expect("the remainder is at most LIFETIME_JITTER_PERMILLE, which fits in u32");
    // Integer steps of a thousandth: no float rounding, and no overflow, as the jitter
    // is at most a tenth of `lifetime`.
    let jitter = (lifetime / 1000)
        .checked_mul(permille)
        .unwrap_or(Duration::ZERO);
    lifetime.saturating_sub(jitter)
}

/// The longest a connection may stay idle, and where that comes from, for a request
/// that may be resent: the connection's own `Keep-Alive: timeout` hint, else the close
/// last seen, else what is proven if that is longer than `idle_timeout`, else
/// `idle_timeout`; each minus the margin, a close seen capping even a hint, and all up
/// to the ceiling (`max_idle_timeout`, at least `idle_timeout`). With learning off, as
/// before there was any: a hint can only shorten `idle_timeout`.
pub(crate) fn allowed_idle(
    hint: Option<Duration>,
    evidence: &Evidence,
    config: &PoolConfig,
) -> (Duration, DeadlineSource) {
    let margin = config.keep_alive_margin;
    if !config.learn_idle_timeout {
        return match hint.map(|hint| hint.saturating_sub(margin)) {
            Some(hinted) if hinted < config.idle_timeout => (hinted, DeadlineSource::Hint),
            _ => (config.idle_timeout, DeadlineSource::Configured),
        };
    }
    let closed = evidence
        .closed_after
        .map(|closed| closed.saturating_sub(margin));
    let (mut allowed, mut source) = match (hint, closed) {
        (Some(hint), _) => (hint.saturating_sub(margin), DeadlineSource::Hint),
        (None, Some(closed)) => (closed, DeadlineSource::ObservedClose),
        (None, None) => {
            let proven = evidence.proven.saturating_sub(margin);
            if proven > config.idle_timeout {
                (proven, DeadlineSource::Proven)
            } else {
                (config.idle_timeout, DeadlineSource::Configured)
            }
        }
    };
    if let Some(closed) = closed.filter(|closed| *closed < allowed) {
        // The server (or a middlebox on the way) closed that soon, whatever it says.
        (allowed, source) = (closed, DeadlineSource::ObservedClose);
    }
    (allowed.min(ceiling(config)), source)
}

/// The longest a connection may stay idle for a request that may not be resent (a
/// POST without `Idempotency-Key`): below what the server was seen to allow (its hint,
/// a close seen, what is proven), minus the margin, and never above
/// [`allowed_idle`]. Zero while nothing is known: such a request gets a new
/// connection. With learning off, the same as [`allowed_idle`]: the user pinned it.
pub(crate) fn allowed_idle_unresendable(
    hint: Option<Duration>,
    evidence: &Evidence,
    config: &PoolConfig,
) -> Duration {
    let (allowed, _) = allowed_idle(hint, evidence, config);
    if !config.learn_idle_timeout {
        return allowed;
    }
    let seen = hint
        .into_iter()
        .chain(evidence.closed_after)
        .fold(evidence.proven, Duration::max);
    seen.saturating_sub(config.keep_alive_margin).min(allowed)
}

/// The idle time a probe tests when a connection allowed `allowed` reaches its
/// deadline: twice the bound being tested (`allowed` plus the margin), up to the
/// ceiling plus the margin; `None` when learning is off or the ceiling is reached.
pub(crate) fn probe_target(allowed: Duration, config: &PoolConfig) -> Option<Duration> {
    let ceiling = ceiling(config);
    if !config.learn_idle_timeout || allowed >= ceiling {
        return None;
    }
    let margin = config.keep_alive_margin;
    Some(
        allowed
            .saturating_add(margin)
            .saturating_mul(2)
            .min(ceiling.saturating_add(margin)),
    )
}

/// The longest any connection may stay idle: `max_idle_timeout`, at least
/// `idle_timeout`.
fn ceiling(config: &PoolConfig) -> Duration {
    config.max_idle_timeout.max(config.idle_timeout)
}

/// Whether a connection whose response just ended must not go back to the idle list.
pub(crate) fn retire_reason<B>(
    conn: &Conn<B>,
    config: &PoolConfig,
    now: Instant,
    evidence: &Evidence,
) -> Option<Evict> {
    if conn.close_requested() {
        return Some(Evict::ConnectionClose);
    }
    if conn.expires.is_some_and(|expires| now >= expires) {
        return Some(Evict::Lifetime);
    }
    if config
        .max_requests_per_connection
        .is_some_and(|max| conn.requests >= max)
    {
        return Some(Evict::MaxRequests);
    }
    if conn.server_remaining == Some(0) {
        return Some(Evict::ServerHint);
    }
    let (allowed, source) = allowed_idle(conn.hint_timeout, evidence, config);
    if allowed.is_zero() {
        // No time left after the margin: the server may close any moment.
        return Some(source_reason(source));
    }
    None
}

/// The eviction reason of a deadline from `source`.
pub(crate) fn source_reason(source: DeadlineSource) -> Evict {
    match source {
        DeadlineSource::Hint => Evict::ServerHint,
        DeadlineSource::ObservedClose => Evict::LearnedTimeout,
        _ => Evict::IdleTimeout,
    }
}

/// When an idle connection, idle since `since`, must be closed, and which bound
/// decided it: [`allowed_idle`], or its lifetime if that ends first.
///
/// The durations are compared before one capped addition to `since`, so no setting or
/// hint, however large, can overflow an `Instant`.
pub(crate) fn deadline<B>(
    conn: &Conn<B>,
    config: &PoolConfig,
    since: Instant,
    evidence: &Evidence,
) -> (Instant, Evict) {
    let (allowed, source) = allowed_idle(conn.hint_timeout, evidence, config);
    let idle_deadline = (deadline_after(since, allowed), source_reason(source));
    match conn.expires {
        Some(expires) if expires < idle_deadline.0 => (expires, Evict::Lifetime),
        _ => idle_deadline,
    }
}

#[cfg(test)]
mod tests {
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
}
