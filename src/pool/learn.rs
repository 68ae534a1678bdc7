//! Learning a server's idle timeout from the closes the pool observes.
//!
//! Most servers send no `Keep-Alive` hint, yet close idle connections on a timer
//! (uvicorn 5 s, gunicorn 2 s, nginx 75 s, Go's `IdleTimeout`). Each time the pool sees
//! a server close an idle connection (hyper's connection task ends while the
//! connection is idle, the pre-reuse check finds a FIN, RST or stray bytes, or a
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

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Observations kept per origin.
pub(crate) const OBSERVATIONS: usize = 8;
/// Time without a new observation after which the learned value grows once.
pub(crate) const RELAX_PERIOD: Duration = Duration::from_secs(60);
/// How much the learned value grows per relax period.
pub(crate) const RELAX_FACTOR: f64 = 1.25;

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
}
