//! The learned idle timeouts of every origin, bounded.
//!
//! A client that talks to many origins (a webhook sender talks to thousands) must not
//! keep one entry per origin forever. The map holds at most [`MAX_LEARNED_ORIGINS`]
//! origins and, when a new one arrives, forgets the one observed least recently;
//! entries that have relaxed up to the idle timeout are dropped as they are met and by
//! the reaper every [`PRUNE_INTERVAL`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::learn::{self, Learned};
use crate::origin::Origin;

/// The most origins whose learned idle timeout is kept.
pub(crate) const MAX_LEARNED_ORIGINS: usize = 1024;

/// How often the reaper drops entries that have relaxed away. A relaxed entry does no
/// harm until then (it is ignored where it is read), so one relax period is enough.
pub(crate) const PRUNE_INTERVAL: Duration = learn::RELAX_PERIOD;

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

#[cfg(test)]
mod tests {
    use super::*;

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
