//! Deadline arithmetic: when an idle connection must be closed, and why.
//!
//! The client closes first: each idle connection gets a deadline,
//! `now + min(idle_timeout, server hint − margin, learned − margin, lifetime left)`
//! (see [`learn`](super::learn) for the learned value), which the
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

use super::{Conn, Evict};
use crate::config::PoolConfig;

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

/// Whether a connection whose response just ended must not go back to the idle list.
pub(crate) fn retire_reason<B>(
    conn: &Conn<B>,
    config: &PoolConfig,
    now: Instant,
    learned: Option<Duration>,
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
    // A hint that leaves no time after the margin: the server may close any moment.
    if conn
        .hint_timeout
        .is_some_and(|timeout| timeout <= config.keep_alive_margin)
    {
        return Some(Evict::ServerHint);
    }
    if learned.is_some_and(|timeout| timeout <= config.keep_alive_margin) {
        return Some(Evict::LearnedTimeout);
    }
    None
}

/// When an idle connection must be closed, and which bound decided it.
///
/// The durations are compared before one capped addition to `now`, so no setting or
/// hint, however large, can overflow an `Instant`.
pub(crate) fn deadline<B>(
    conn: &Conn<B>,
    config: &PoolConfig,
    now: Instant,
    learned: Option<Duration>,
) -> (Instant, Evict) {
    // Capped first, so that bounds past the cap tie and the idle timeout keeps its
    // precedence among them, as it would with exact instants.
    let ahead = |timeout: Duration| timeout.min(MAX_DEADLINE_AHEAD);
    let mut best = (ahead(config.idle_timeout), Evict::IdleTimeout);
    if let Some(timeout) = learned {
        let learned_idle = ahead(timeout.saturating_sub(config.keep_alive_margin));
        if learned_idle < best.0 {
            best = (learned_idle, Evict::LearnedTimeout);
        }
    }
    if let Some(timeout) = conn.hint_timeout {
        let hinted_idle = ahead(timeout.saturating_sub(config.keep_alive_margin));
        if hinted_idle < best.0 {
            best = (hinted_idle, Evict::ServerHint);
        }
    }
    let idle_deadline = (deadline_after(now, best.0), best.1);
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

    #[tokio::test(start_paused = true)]
    async fn deadline_with_duration_max_everywhere() {
        let now = Instant::now();
        let far = now + MAX_DEADLINE_AHEAD;
        let mut conn = test_conn(None).await;
        conn.hint_timeout = Some(Duration::MAX);

        let huge = config(Duration::MAX, Duration::from_secs(1));
        assert_eq!(
            deadline(&conn, &huge, now, Some(Duration::MAX)),
            (far, Evict::IdleTimeout)
        );
        // A margin as large as every hint leaves nothing: close now.
        let all_margin = config(Duration::MAX, Duration::MAX);
        assert_eq!(
            deadline(&conn, &all_margin, now, Some(Duration::MAX)).0,
            now
        );

        // Bounded values still win over huge ones, each under its own reason.
        conn.hint_timeout = Some(Duration::from_secs(10));
        assert_eq!(
            deadline(&conn, &huge, now, Some(Duration::MAX)),
            (now + Duration::from_secs(9), Evict::ServerHint)
        );
        assert_eq!(
            deadline(&conn, &huge, now, Some(Duration::from_secs(5))),
            (now + Duration::from_secs(4), Evict::LearnedTimeout)
        );
        let short = config(Duration::from_secs(3), Duration::from_secs(1));
        conn.hint_timeout = Some(Duration::MAX);
        assert_eq!(
            deadline(&conn, &short, now, Some(Duration::MAX)),
            (now + Duration::from_secs(3), Evict::IdleTimeout)
        );

        // A lifetime of `Duration::MAX`, set the way `Pool::connect` sets it.
        let expires = deadline_after(now, jittered_lifetime(Duration::MAX, 7));
        let conn = test_conn(Some(expires)).await;
        assert_eq!(deadline(&conn, &huge, now, None), (far, Evict::IdleTimeout));
        let conn = test_conn(Some(now + Duration::from_secs(2))).await;
        assert_eq!(
            deadline(&conn, &huge, now, None),
            (now + Duration::from_secs(2), Evict::Lifetime)
        );

        // The reaper sleeps until such a deadline with `timeout_at`: tokio's timer takes
        // it, and it passes when (paused) time gets there, not before.
        let (deadline, _) = deadline(&test_conn(None).await, &huge, now, None);
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
        assert_eq!(retire_reason(&conn, &huge, now, Some(Duration::MAX)), None);
        assert_eq!(
            retire_reason(&conn, &huge, now + MAX_DEADLINE_AHEAD, None),
            Some(Evict::Lifetime)
        );
        // A margin no hint can beat: the server may close at any moment.
        let all_margin = config(Duration::MAX, Duration::MAX);
        let conn = test_conn(None).await;
        assert_eq!(
            retire_reason(&conn, &all_margin, now, Some(Duration::MAX)),
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
