//! The idle connections: each origin's list, least recently used first, and the
//! pool-wide index of their deadlines that the [`reaper`](super::evict) reads.
//!
//! A connection is in its origin's list exactly when its deadline is in the index:
//! whoever pushes to or pops from a list tells the index ([`IdleIndex::insert`],
//! [`IdleIndex::remove`]), which keeps the pool's idle count too. The lists are
//! changed in place by checkout and check-in, as moving a connection through helper
//! functions costs copies of it on the hottest path. All of it runs under the pool's
//! lock; what is taken out is returned, never dropped here (see the locking rule in
//! [`pool`](super)).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::{Conn, Evict, State};
use crate::origin::Origin;

/// An idle connection and when it must close.
pub(super) struct Idle<B> {
    pub(super) conn: Conn<B>,
    pub(super) deadline: Instant,
    /// Which bound set the deadline, reported when it passes.
    pub(super) reason: Evict,
}

impl<B> Idle<B> {
    /// When its idle period began ([`Conn::idle_since`]).
    #[inline]
    pub(super) fn since(&self) -> Instant {
        self.conn.idle_since
    }

    /// Its key in the deadline index: connection ids tell equal deadlines apart.
    #[inline]
    pub(super) fn key(&self) -> (Instant, u64) {
        (self.deadline, self.conn.id())
    }
}

/// Every idle connection's deadline, so the reaper finds the earliest one without
/// looking at every origin, and how many connections are idle.
#[derive(Default)]
pub(super) struct IdleIndex {
    /// The origin is the pool's shared copy: a pointer per entry, not 56 bytes.
    deadlines: BTreeMap<(Instant, u64), Arc<Origin>>,
    count: usize,
}

impl IdleIndex {
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.count
    }

    /// An idle connection of `origin` whose key is `key` has joined its list.
    #[inline]
    pub(super) fn insert(&mut self, key: (Instant, u64), origin: &Arc<Origin>) {
        self.deadlines.insert(key, Arc::clone(origin));
        self.count += 1;
    }

    /// `idle` has left its origin's list.
    #[inline]
    pub(super) fn remove<B>(&mut self, idle: &Idle<B>) {
        self.deadlines.remove(&idle.key());
        self.count -= 1;
    }

    /// The earliest deadline, if any connection is idle.
    #[inline]
    pub(super) fn earliest(&self) -> Option<Instant> {
        self.deadlines.keys().next().map(|&(deadline, _)| deadline)
    }

    /// Takes out of the index the earliest deadline if it is not after `now`: the id
    /// and origin of a connection to close. The caller takes it from its list.
    pub(super) fn pop_expired(&mut self, now: Instant) -> Option<(u64, Arc<Origin>)> {
        let earliest = self.deadlines.first_entry()?;
        if earliest.key().0 > now {
            return None;
        }
        let ((_, id), origin) = earliest.remove_entry();
        Some((id, origin))
    }
}

impl<B> State<B> {
    /// Takes idle connection `id` of `origin` out of its list and the index.
    /// The origin's probe counts: the second value says whether it was the probe.
    pub(super) fn take_idle(&mut self, origin: &Origin, id: u64) -> Option<(Idle<B>, bool)> {
        let entry = self.origins.get_mut(origin)?;
        let (idle, probe) = if entry.probe.as_ref().is_some_and(|p| p.conn.id() == id) {
            (entry.probe.take()?, true)
        } else {
            let position = entry.idle.iter().position(|idle| idle.conn.id() == id)?;
            (entry.idle.remove(position)?, false)
        };
        self.idle.remove(&idle);
        Some((idle, probe))
    }
}
