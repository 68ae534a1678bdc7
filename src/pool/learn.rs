//! What the pool knows of each server's idle timer, and how it learns it, downward and
//! upward, without risking a request.
//!
//! Most servers close idle connections on a timer without announcing it (uvicorn 5 s,
//! gunicorn 2 s, nginx 75 s, Go's `IdleTimeout`). Per origin the pool keeps two pieces
//! of evidence ([`Evidence`]):
//!
//! - **A close**: the idle time after which the server was last seen closing a
//!   connection (an idle connection's future ended, the pre-reuse check found a FIN or
//!   RST, a request met a connection that was closing, or the origin's probe was
//!   closed). The latest one counts: a server that shortens its timer (a redeploy) is
//!   followed after one close. A close after less than `keep_alive_margin` is not kept,
//!   as nothing could be done about it and it is more likely a crash, restart or
//!   deliberate reset than an idle timer.
//! - **A proof**: the longest idle time the server was seen to allow: a connection
//!   reused after that long that got its response, or the origin's probe still open
//!   at that idle time. A proof longer than the last close means the server's timer
//!   grew: the close is forgotten.
//!
//! **The probe.** With no hint, a connection may stay idle for `idle_timeout` (4 s by
//! default) while nothing else is known. To learn that a server keeps connections
//! longer without a request riding on the guess, the first idle connection of an
//! origin to reach such a deadline is not closed but kept out of rotation as the
//! origin's probe (at most one per origin), until the server closes it (then its timer
//! is known, and no request met the close) or until about twice its idle time passes
//! (then that much is proven, and the probe is closed). Requests only ride connections
//! idle below what is proven or hinted, minus the margin; see `deadline::allowed_idle`.
//!
//! **Bounded.** A client that talks to many origins must not keep one entry per origin
//! forever: [`LearnedOrigins`] holds at most [`MAX_LEARNED_ORIGINS`] and forgets the one
//! observed least recently when a new one arrives.

use std::sync::Arc;
use std::time::Duration;

use super::{OriginState, Pool};
use crate::origin::{Origin, OriginMap};

/// What the pool knows of one origin's idle timer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Evidence {
    /// The idle time after which the server was last seen closing a connection.
    pub(crate) closed_after: Option<Duration>,
    /// The longest idle time after which the server was seen to keep a connection.
    pub(crate) proven: Duration,
}

impl Evidence {
    /// Records a close after `idle_for`; returns whether anything changed.
    pub(crate) fn observe_close(&mut self, idle_for: Duration) -> bool {
        let before = *self;
        self.closed_after = Some(idle_for);
        // It allowed that much and no more: a longer proof is out of date.
        self.proven = self.proven.min(idle_for);
        *self != before
    }

    /// Records that the server kept a connection for `idle_for`; returns whether
    /// anything changed.
    pub(crate) fn prove(&mut self, idle_for: Duration) -> bool {
        if idle_for <= self.proven {
            return false;
        }
        self.proven = idle_for;
        if self.closed_after.is_some_and(|closed| idle_for > closed) {
            // The server keeps connections longer than when it last closed one: its
            // timer grew (a redeploy). That close no longer tells its timer.
            self.closed_after = None;
        }
        true
    }
}

/// The most origins whose evidence is kept.
pub(crate) const MAX_LEARNED_ORIGINS: usize = 1024;

/// The evidence of every origin, at most [`MAX_LEARNED_ORIGINS`] of them.
pub(super) struct LearnedOrigins {
    map: OriginMap<Entry>,
    /// Orders observations, even ones made at the same instant.
    observations: u64,
}

struct Entry {
    evidence: Evidence,
    /// `http://host:port`, made once so that [`LearnedOrigins::snapshot`] does not
    /// format under the pool's lock.
    display: Arc<str>,
    /// The value of [`LearnedOrigins::observations`] at its latest observation.
    last_observed: u64,
}

impl LearnedOrigins {
    pub(super) fn new() -> LearnedOrigins {
        LearnedOrigins {
            map: OriginMap::default(),
            observations: 0,
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// The evidence for `origin`; none known is the default.
    #[inline]
    pub(super) fn evidence(&self, origin: &Origin) -> Evidence {
        if self.map.is_empty() {
            return Evidence::default();
        }
        self.map
            .get(origin)
            .map_or_else(Evidence::default, |entry| entry.evidence)
    }

    /// Changes `origin`'s evidence with `change`; returns the evidence before and after
    /// when it changed.
    pub(super) fn update(
        &mut self,
        origin: &Origin,
        change: impl FnOnce(&mut Evidence) -> bool,
    ) -> Option<(Evidence, Evidence)> {
        self.observations = self.observations.wrapping_add(1);
        if !self.map.contains_key(origin) {
            let mut evidence = Evidence::default();
            if !change(&mut evidence) {
                return None;
            }
            if self.map.len() >= MAX_LEARNED_ORIGINS {
                self.forget_least_recently_observed();
            }
            self.map.insert(
                origin.clone(),
                Entry {
                    evidence,
                    display: Arc::from(origin.to_string()),
                    last_observed: self.observations,
                },
            );
            return Some((Evidence::default(), evidence));
        }
        let entry = self.map.get_mut(origin)?;
        entry.last_observed = self.observations;
        let before = entry.evidence;
        change(&mut entry.evidence).then_some((before, entry.evidence))
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
                "forgetting the idle timer observed least recently"
            );
            self.map.remove(&origin);
        }
    }

    /// The last close seen per origin, with the origins' names; one allocation,
    /// whatever the number of origins.
    pub(super) fn snapshot(&self) -> Vec<(Arc<str>, Duration)> {
        let mut values = Vec::with_capacity(self.map.len());
        values.extend(self.map.values().filter_map(|entry| {
            let closed = entry.evidence.closed_after?;
            Some((Arc::clone(&entry.display), closed))
        }));
        values
    }
}

impl<B> Pool<B> {
    /// The evidence in force for `origin`: none when learning is off.
    #[inline]
    pub(super) fn evidence(&self, learned: &LearnedOrigins, origin: &Origin) -> Evidence {
        if self.config.learn_idle_timeout {
            learned.evidence(origin)
        } else {
            Evidence::default()
        }
    }

    /// [`evidence`](Pool::evidence) from an origin's entry, which keeps a copy.
    #[inline]
    pub(super) fn evidence_of(&self, entry: &OriginState<B>) -> Evidence {
        if self.config.learn_idle_timeout {
            entry.evidence
        } else {
            Evidence::default()
        }
    }

    /// The server closed a connection of `origin` that had been idle for `idle_for`
    /// (or a request met one that was closing): an observation of its idle timer.
    /// `probe` says the connection was the origin's probe: the close is learned from
    /// but is no parity violation, as no request could have met it.
    pub(crate) fn observe_server_close(&self, origin: &Origin, idle_for: Duration) {
        self.observe_close(origin, idle_for, false);
    }

    pub(super) fn observe_close(&self, origin: &Origin, idle_for: Duration, probe: bool) {
        if !probe {
            // Evidence for the operator whether or not the pool learns from it.
            self.record_server_close(origin, idle_for);
        }
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
        let changed = self.update_evidence(origin, |evidence| evidence.observe_close(idle_for));
        if let Some((before, after)) = changed {
            self.log_change(origin, before, after, "the server closed a connection");
        }
    }

    /// The server kept a connection of `origin` open for `idle_for`: a reuse after
    /// that long got its response, or the probe was still open then.
    pub(crate) fn prove(&self, origin: &Origin, idle_for: Duration) {
        if !self.config.learn_idle_timeout {
            return;
        }
        let changed = self.update_evidence(origin, |evidence| evidence.prove(idle_for));
        if let Some((before, after)) = changed {
            self.log_change(origin, before, after, "the server kept a connection open");
        }
    }

    /// Changes `origin`'s evidence, and the copy in its entry; returns it before and
    /// after when it changed.
    fn update_evidence(
        &self,
        origin: &Origin,
        change: impl FnOnce(&mut Evidence) -> bool,
    ) -> Option<(Evidence, Evidence)> {
        let mut state = self.lock();
        let changed = state.learned.update(origin, change);
        if let Some((_, after)) = changed {
            if let Some(entry) = state.origins.get_mut(origin) {
                entry.evidence = after;
            }
        }
        changed
    }

    /// Logs at `info` when what an origin's deadline comes from changes, at `debug`
    /// when only its value does.
    fn log_change(&self, origin: &Origin, before: Evidence, after: Evidence, why: &str) {
        let (was, was_source) = super::deadline::allowed_idle(None, &before, &self.config);
        let (now, source) = super::deadline::allowed_idle(None, &after, &self.config);
        if source != was_source {
            tracing::info!(
                origin = %origin,
                idle_deadline_ms = now.as_millis() as u64,
                was_ms = was.as_millis() as u64,
                source = source.as_str(),
                was_source = was_source.as_str(),
                proven_ms = after.proven.as_millis() as u64,
                "{why}: the idle deadline now comes from {}",
                source.as_str()
            );
        } else if now != was {
            tracing::debug!(
                origin = %origin,
                idle_deadline_ms = now.as_millis() as u64,
                was_ms = was.as_millis() as u64,
                source = source.as_str(),
                "{why}: the idle deadline changed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_close_is_followed_at_once_and_caps_what_is_proven() {
        let mut e = Evidence::default();
        assert!(e.prove(secs(10)));
        assert!(e.observe_close(secs(3)));
        assert_eq!(e.closed_after, Some(secs(3)));
        assert_eq!(e.proven, secs(3), "it allowed 3 s and no more");
        assert!(!e.observe_close(secs(3)), "the same close changes nothing");
    }

    #[test]
    fn a_proof_past_the_close_forgets_it_one_below_keeps_it() {
        let mut e = Evidence::default();
        e.observe_close(secs(5));
        assert!(e.prove(secs(4)), "more is proven, below the close");
        assert_eq!(e.closed_after, Some(secs(5)));
        assert!(!e.prove(secs(3)), "less than proven changes nothing");
        assert!(e.prove(secs(8)), "the timer grew");
        assert_eq!(e.closed_after, None);
        assert_eq!(e.proven, secs(8));
    }

    #[test]
    fn huge_values_do_not_panic() {
        let mut e = Evidence::default();
        e.prove(Duration::MAX);
        e.observe_close(Duration::MAX);
        assert_eq!(e.proven, Duration::MAX);
    }

    fn origin(n: usize) -> Origin {
        let uri: http::Uri = format!("http://host{n}.test/").parse().unwrap();
        Origin::from_uri(&uri).unwrap()
    }

    #[test]
    fn holds_at_most_the_bound_and_forgets_the_least_recently_observed() {
        let mut map = LearnedOrigins::new();
        for n in 0..MAX_LEARNED_ORIGINS {
            map.update(&origin(n), |e| e.observe_close(secs(2)));
        }
        // Origin 0 is observed again: origin 1 is now the least recently observed.
        map.update(&origin(0), |e| e.prove(secs(1)));
        assert_eq!(map.len(), MAX_LEARNED_ORIGINS);
        map.update(&origin(MAX_LEARNED_ORIGINS), |e| e.observe_close(secs(2)));
        assert_eq!(map.len(), MAX_LEARNED_ORIGINS);
        assert_eq!(map.evidence(&origin(0)).closed_after, Some(secs(2)));
        assert_eq!(map.evidence(&origin(1)), Evidence::default());
        assert_eq!(
            map.evidence(&origin(MAX_LEARNED_ORIGINS)).closed_after,
            Some(secs(2))
        );
        assert_eq!(map.snapshot().len(), MAX_LEARNED_ORIGINS);
    }
}
