//! Learning a server's idle timeout from the closes the pool observes.
//!
//! Most servers send no `Keep-Alive` hint, yet close idle connections on a timer
//! (uvicorn 5 s, gunicorn 2 s, nginx 75 s, Go's `IdleTimeout`). Each time the pool sees
//! a server close an idle connection (the socket of an idle connection wakes its
//! parked connection future, or that future's task ends, the pre-reuse check finds a
//! FIN, RST or stray bytes, or a
//! request fails on a stale reused connection), it records how long the connection had
//! been idle. Per origin it keeps the last [`OBSERVATIONS`] such durations; a close
//! after less than `keep_alive_margin` is not kept, as nothing could be done about it
//! and it is more likely a crash, restart or deliberate reset than an idle timer.
//!
//! **The learned value** is the second-smallest observation (the only one while there
//! is just one). A single early close, such as every connection dropping at once when
//! the server restarts, therefore cannot drag the value down on its own; a real
//! shorter timer shows up twice and is adopted at its second sighting.
//!
//! **Relaxing.** Connections are closed `keep_alive_margin` before the learned value,
//! so the pool never sees whether the server would now keep them longer. Instead, each
//! [`RELAX_PERIOD`] without a new observation raises the value by
//! [`RELAX_FACTOR`]; once it reaches `idle_timeout`, the origin is forgotten. If the
//! server's timer is still short, the next close is observed and the value drops again.
//!
//! **Bounded.** A client that talks to many origins (a webhook sender talks to
//! thousands) must not keep one entry per origin forever. [`LearnedOrigins`] holds at
//! most [`MAX_LEARNED_ORIGINS`] origins and, when a new one arrives, forgets the one
//! observed least recently; entries that have relaxed up to the idle timeout are
//! dropped as they are met and by the reaper every [`PRUNE_INTERVAL`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Pool;
use crate::config::PoolConfig;
use crate::origin::Origin;

/// Observations kept per origin.
pub(crate) const OBSERVATIONS: usize = 8;
/// Time without a new observation after which the learned value grows once.
pub(crate) const RELAX_PERIOD: Duration = Duration::from_secs(60);
/// How much the learned value grows per relax period.
pub(crate) const RELAX_FACTOR: f64 = 1.25;

/// One origin's observations and the idle timeout learned from them.
#[derive(Debug)]
pub(crate) struct Learned {
    observations: VecDeque<Duration>,
    value: Duration,
    last_observed: Instant,
}

impl Learned {
    pub(crate) fn new(first: Duration, now: Instant) -> Learned {
        Learned {
            observations: VecDeque::from([first]),
            value: first,
            last_observed: now,
        }
    }

    /// Records a close after `idle_for`; returns whether the learned value changed.
    pub(crate) fn observe(&mut self, idle_for: Duration, now: Instant) -> bool {
        if self.observations.len() == OBSERVATIONS {
            self.observations.pop_front();
        }
        self.observations.push_back(idle_for);
        self.last_observed = now;
        let mut sorted: Vec<Duration> = self.observations.iter().copied().collect();
        sorted.sort_unstable();
        let value = sorted.get(1).copied().unwrap_or(sorted[0]);
        let changed = value != self.value;
        self.value = value;
        changed
    }

    /// The value in force at `now`, after relaxing; `None` once it has relaxed up to
    /// `ceiling` (the idle timeout), when it no longer matters.
    pub(crate) fn effective(&self, now: Instant, ceiling: Duration) -> Option<Duration> {
        let quiet = now.saturating_duration_since(self.last_observed);
        let periods = (quiet.as_secs_f64() / RELAX_PERIOD.as_secs_f64()).floor();
        let relaxed = self.value.as_secs_f64() * RELAX_FACTOR.powf(periods.min(64.0));
        // `try_from` refuses what no `Duration` holds (and NaN), which is past any
        // ceiling anyway; `from_secs_f64` would panic on it.
        Duration::try_from_secs_f64(relaxed)
            .ok()
            .filter(|relaxed| *relaxed < ceiling)
    }
}

/// The most origins whose learned idle timeout is kept.
pub(crate) const MAX_LEARNED_ORIGINS: usize = 1024;

/// How often the reaper drops entries that have relaxed away. A relaxed entry does no
/// harm until then (it is ignored where it is read), so one relax period is enough.
pub(crate) const PRUNE_INTERVAL: Duration = RELAX_PERIOD;

/// The learned idle timeouts of every origin, at most [`MAX_LEARNED_ORIGINS`] of them.
pub(super) struct LearnedOrigins {
    map: HashMap<Origin, Entry>,
    /// Orders observations, even ones made at the same instant.
    observations: u64,
}

struct Entry {
    learned: Learned,
    /// `http://host:port`, made once so that [`LearnedOrigins::snapshot`] does not
    /// format under the pool's lock.
    display: Arc<str>,
    /// The value of [`LearnedOrigins::observations`] at its latest observation.
    last_observed: u64,
}

impl LearnedOrigins {
    pub(super) fn new() -> LearnedOrigins {
        LearnedOrigins {
            map: HashMap::new(),
            observations: 0,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// The value in force for `origin`; forgets one that has relaxed up to `ceiling`.
    pub(super) fn effective(
        &mut self,
        origin: &Origin,
        now: Instant,
        ceiling: Duration,
    ) -> Option<Duration> {
        let effective = self.map.get(origin)?.learned.effective(now, ceiling);
        if effective.is_none() {
            self.map.remove(origin);
        }
        effective
    }

    /// Records that the server closed a connection of `origin` after `idle_for` idle.
    /// Returns the new learned value when it changed.
    pub(super) fn observe(
        &mut self,
        origin: &Origin,
        idle_for: Duration,
        now: Instant,
    ) -> Option<Duration> {
        self.observations = self.observations.wrapping_add(1);
        if let Some(entry) = self.map.get_mut(origin) {
            entry.last_observed = self.observations;
            return if entry.learned.observe(idle_for, now) {
                entry.learned.effective(now, Duration::MAX)
            } else {
                None
            };
        }
        if self.map.len() >= MAX_LEARNED_ORIGINS {
            self.forget_least_recently_observed();
        }
        self.map.insert(
            origin.clone(),
            Entry {
                learned: Learned::new(idle_for, now),
                display: Arc::from(origin.to_string()),
                last_observed: self.observations,
            },
        );
        Some(idle_for)
    }

    fn forget_least_recently_observed(&mut self) {
        let oldest = self
            .map
            .iter()
            .min_by_key(|(_, entry)| entry.last_observed)
            .map(|(origin, _)| origin.clone());
        if let Some(origin) = oldest {
            tracing::debug!(
                origin = %origin,
                max = MAX_LEARNED_ORIGINS,
                "forgetting the learned idle timeout observed least recently"
            );
            self.map.remove(&origin);
        }
    }

    /// Drops every entry that has relaxed up to `ceiling`.
    pub(super) fn prune(&mut self, now: Instant, ceiling: Duration) {
        self.map
            .retain(|_, entry| entry.learned.effective(now, ceiling).is_some());
    }

    /// The value in force for `origin`, without forgetting a relaxed one.
    pub(super) fn peek(
        &self,
        origin: &Origin,
        now: Instant,
        ceiling: Duration,
    ) -> Option<Duration> {
        self.map.get(origin)?.learned.effective(now, ceiling)
    }

    /// The values in force, with their origins' names; one allocation, whatever the
    /// number of origins.
    pub(super) fn snapshot(&self, now: Instant, ceiling: Duration) -> Vec<(Arc<str>, Duration)> {
        let mut values = Vec::with_capacity(self.map.len());
        values.extend(self.map.values().filter_map(|entry| {
            let value = entry.learned.effective(now, ceiling)?;
            Some((Arc::clone(&entry.display), value))
        }));
        values
    }
}

/// The learned idle timeout in force for `origin`, if any; forgets one that has
/// relaxed up to the idle timeout.
#[inline]
pub(super) fn learned_for(
    learned: &mut LearnedOrigins,
    origin: &Origin,
    now: Instant,
    config: &PoolConfig,
) -> Option<Duration> {
    if !config.learn_idle_timeout || learned.is_empty() {
        return None;
    }
    learned.effective(origin, now, config.idle_timeout)
}

impl<B> Pool<B> {
    /// The server closed a connection of `origin` that had been idle for `idle_for`
    /// (or a request met one that was closing): an observation of its idle timer.
    pub(crate) fn observe_server_close(&self, origin: &Origin, idle_for: Duration) {
        // Evidence for the operator whether or not the pool learns from it.
        self.record_server_close(origin, idle_for);
        if !self.config.learn_idle_timeout {
            return;
        }
        if idle_for < self.config.keep_alive_margin {
            // Sooner than the margin: nothing the pool could act on, and more likely a
            // crash, a restart or a deliberate reset than an idle timer.
            tracing::debug!(
                origin = %origin,
                observed_ms = idle_for.as_millis() as u64,
                "not learning from a close shorter than keep_alive_margin"
            );
            return;
        }
        let now = Instant::now();
        let (changed, wake_reaper) = {
            let mut state = self.lock();
            let changed = state.learned.observe(origin, idle_for, now);
            // A reaper asleep with no deadline must still come back to prune.
            let schedule = state.next_learned_prune.is_none();
            if schedule {
                state.next_learned_prune = now.checked_add(PRUNE_INTERVAL);
            }
            (changed, schedule && state.reaper_running)
        };
        if wake_reaper {
            self.reaper_wake.notify_one();
        }
        if let Some(value) = changed {
            tracing::info!(
                origin = %origin,
                learned_ms = value.as_millis() as u64,
                observed_ms = idle_for.as_millis() as u64,
                "learned the server's idle timeout"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn one_observation_is_used_and_a_lone_outlier_does_not_shrink_it() {
        let now = Instant::now();
        let mut learned = Learned::new(secs(2.0), now);
        assert_eq!(learned.effective(now, secs(60.0)), Some(secs(2.0)));
        assert!(
            !learned.observe(secs(0.1), now),
            "one early close is not believed"
        );
        assert_eq!(learned.effective(now, secs(60.0)), Some(secs(2.0)));
        assert!(learned.observe(secs(0.5), now), "a second short close is");
        assert_eq!(learned.effective(now, secs(60.0)), Some(secs(0.5)));
    }

    #[test]
    fn old_observations_fall_out() {
        let now = Instant::now();
        let mut learned = Learned::new(secs(1.0), now);
        learned.observe(secs(1.0), now);
        for _ in 0..OBSERVATIONS {
            learned.observe(secs(3.0), now);
        }
        assert_eq!(learned.effective(now, secs(60.0)), Some(secs(3.0)));
    }

    #[test]
    fn huge_values_relax_away_without_panicking() {
        let now = Instant::now();
        let learned = Learned::new(Duration::MAX, now);
        assert_eq!(learned.effective(now, Duration::MAX), None);
        // Powers of two, so that the float arithmetic is exact.
        let huge = Duration::from_secs(1 << 62);
        let learned = Learned::new(huge, now);
        assert_eq!(learned.effective(now, Duration::MAX), Some(huge));
        assert_eq!(
            learned.effective(now + RELAX_PERIOD, Duration::MAX),
            Some(Duration::from_secs(5 << 60))
        );
        // 1.25^7 > 4: relaxing has grown the value past what a `Duration` holds, so it
        // is forgotten, without a panic.
        for quiet_minutes in [7, 64, 1000] {
            let later = now + Duration::from_secs(60 * quiet_minutes);
            assert_eq!(learned.effective(later, Duration::MAX), None);
            assert_eq!(learned.effective(later, Duration::from_secs(60)), None);
        }
    }

    #[test]
    fn relaxes_by_a_quarter_per_quiet_minute_up_to_the_ceiling() {
        let now = Instant::now();
        let learned = Learned::new(secs(2.0), now);
        let at = |s: u64| learned.effective(now + Duration::from_secs(s), secs(3.0));
        assert_eq!(at(59), Some(secs(2.0)));
        assert_eq!(at(60), Some(secs(2.5)));
        assert_eq!(at(119), Some(secs(2.5)));
        assert_eq!(
            at(120),
            None,
            "3.125 s is past the 3 s idle timeout: forgotten"
        );
    }

    fn origin(n: usize) -> Origin {
        let uri: http::Uri = format!("http://host{n}.test/").parse().unwrap();
        Origin::from_uri(&uri).unwrap()
    }

    #[test]
    fn holds_at_most_the_bound_and_forgets_the_least_recently_observed() {
        let start = Instant::now();
        let mut map = LearnedOrigins::new();
        let second = |s| Duration::from_secs(s);
        for n in 0..MAX_LEARNED_ORIGINS {
            map.observe(&origin(n), second(2), start + second(n as u64));
        }
        // Origin 0 is observed again: origin 1 is now the least recently observed.
        let later = start + second(MAX_LEARNED_ORIGINS as u64);
        map.observe(&origin(0), second(2), later);
        assert_eq!(map.len(), MAX_LEARNED_ORIGINS);

        map.observe(&origin(MAX_LEARNED_ORIGINS), second(2), later);
        assert_eq!(map.len(), MAX_LEARNED_ORIGINS);
        let ceiling = Duration::from_secs(u64::from(u32::MAX));
        assert!(map.effective(&origin(0), later, ceiling).is_some());
        assert!(map.effective(&origin(1), later, ceiling).is_none());
        assert!(map.effective(&origin(2), later, ceiling).is_some());
        assert!(map
            .effective(&origin(MAX_LEARNED_ORIGINS), later, ceiling)
            .is_some());
    }

    #[test]
    fn prune_drops_what_has_relaxed_away_and_snapshot_names_the_rest() {
        let start = Instant::now();
        let mut map = LearnedOrigins::new();
        map.observe(&origin(1), Duration::from_secs(2), start);
        map.observe(
            &origin(2),
            Duration::from_secs(2),
            start + Duration::from_secs(600),
        );
        let now = start + Duration::from_secs(600);
        // Origin 1 has been quiet for ten relax periods: 2 s * 1.25^10 > 9 s.
        let ceiling = Duration::from_secs(9);
        map.prune(now, ceiling);
        assert_eq!(map.len(), 1);
        let snapshot = map.snapshot(now, ceiling);
        assert_eq!(snapshot.len(), 1);
        assert_eq!(&*snapshot[0].0, "http://host2.test");
        assert_eq!(snapshot[0].1, Duration::from_secs(2));
    }
}
