//! Idle deadlines and the reaper that enforces them.
//!
//! The client closes first: each idle connection gets a deadline,
//! `now + min(idle_timeout, server hint − margin, learned − margin, lifetime left)`
//! (see [`learn`](super::learn) for the learned value), and is
//! closed by the client when it passes. The reaper is one task per pool that sleeps
//! until the earliest deadline (not a fixed tick), closes what has expired, and ends
//! when the pool is dropped. If its runtime shuts down under a pool that lives on (a
//! client in a static), the next check-in on another runtime starts a new one. Checkout refuses an expired connection on its own, so
//! correctness never depends on when the reaper runs.

use std::future::Future;
use std::hash::BuildHasher;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Conn, Pool};
use crate::builder::PoolConfig;

/// Why the pool closed a connection. The discriminants index the eviction counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Evict {
    IdleTimeout,
    ServerHint,
    Lifetime,
    MaxRequests,
    ConnectionClose,
    ClosedByServer,
    IdleListFull,
    LearnedTimeout,
    /// Closed to open a fresh connection in its place at `max_connections_per_origin`.
    ConnectionLimit,
}

impl Evict {
    pub(crate) const COUNT: usize = 9;

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Evict::IdleTimeout => "idle timeout",
            Evict::ServerHint => "server keep-alive hint",
            Evict::Lifetime => "max lifetime",
            Evict::MaxRequests => "max requests per connection",
            Evict::ConnectionClose => "Connection: close",
            Evict::ClosedByServer => "closed by the server while idle",
            Evict::IdleListFull => "max idle per origin",
            Evict::LearnedTimeout => "learned server idle timeout",
            Evict::ConnectionLimit => {
                "max connections per origin: making room for a fresh connection"
            }
        }
    }
}

/// The largest share of `max_lifetime` taken off at random, so that connections opened
/// together (a fleet restarting, a burst) do not all reconnect at the same moment.
const LIFETIME_JITTER_PERMILLE: u64 = 100;

/// `lifetime` shortened by a pseudo-random 0–10 %, derived from the connection id.
pub(crate) fn jittered_lifetime(lifetime: Duration, id: u64) -> Duration {
    let random = std::collections::hash_map::RandomState::new().hash_one(id);
    let permille = random % (LIFETIME_JITTER_PERMILLE + 1);
    let jitter = lifetime.mul_f64(permille as f64 / 1000.0);
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
pub(crate) fn deadline<B>(
    conn: &Conn<B>,
    config: &PoolConfig,
    now: Instant,
    learned: Option<Duration>,
) -> (Instant, Evict) {
    let mut best = (now + config.idle_timeout, Evict::IdleTimeout);
    if let Some(timeout) = learned {
        let learned_deadline = now + timeout.saturating_sub(config.keep_alive_margin);
        if learned_deadline < best.0 {
            best = (learned_deadline, Evict::LearnedTimeout);
        }
    }
    if let Some(timeout) = conn.hint_timeout {
        let hinted = now + timeout.saturating_sub(config.keep_alive_margin);
        if hinted < best.0 {
            best = (hinted, Evict::ServerHint);
        }
    }
    if let Some(expires) = conn.expires {
        if expires < best.0 {
            best = (expires, Evict::Lifetime);
        }
    }
    best
}

/// The reaper task. Holds only a `Weak` to the pool, so it never keeps the pool alive,
/// and ends at its next wake-up after the pool is gone (the pool's `Drop` wakes it).
///
/// `generation` tells this reaper from a later one: however the task ends (the pool
/// is gone, or its runtime shut down and dropped it), it marks the pool as having no
/// reaper, unless a newer one has started since, so that the next check-in starts one.
pub(crate) fn reap<B: Send + 'static>(
    pool: Weak<Pool<B>>,
    wake: Arc<Notify>,
    generation: u64,
) -> impl Future<Output = ()> + Send {
    // Made outside the `async` block so that it is dropped (and resets the flag) even
    // if the task is dropped before it first runs.
    let running = Running {
        pool: pool.clone(),
        generation,
    };
    async move {
        let _running = running;
        loop {
            let next = match pool.upgrade() {
                Some(pool) => pool.evict_expired(Instant::now()),
                None => return,
            };
            match next {
                Some(deadline) => {
                    let _ = tokio::time::timeout_at(deadline, wake.notified()).await;
                }
                None => wake.notified().await,
            }
        }
    }
}

/// Marks the pool as having no reaper when the reaper task ends or is dropped.
struct Running<B> {
    pool: Weak<Pool<B>>,
    generation: u64,
}

impl<B> Drop for Running<B> {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.reaper_ended(self.generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
