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
    if conn.poisoned() {
        return Some(Evict::Poisoned);
    }
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
mod tests;
