//! The idle connections: each origin's list, least recently used first, and the
//! pool-wide index of their deadlines that the [`reaper`](super::evict) reads (and,
//! with a cap across origins, of their last use, for [`take_least_recently_used`]).
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

use super::{Conn, Evict, OriginState, State};
use crate::origin::{Origin, OriginMap};

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

    /// Its key in the order of use: when its idle period began.
    #[inline]
    fn lru_key(&self) -> (Instant, u64) {
        (self.since(), self.conn.id())
    }
}

/// Every idle connection's deadline, so the reaper finds the earliest one without
/// looking at every origin, and how many connections are idle. With a cap across
/// origins, also every idle connection by when it was last used, so the least recently
/// used one of any origin is found without looking at every origin either.
pub(super) struct IdleIndex {
    /// The origin is the pool's shared copy: a pointer per entry, not 56 bytes.
    deadlines: BTreeMap<(Instant, u64), Arc<Origin>>,
    /// By when each idle period began (the connection's last use), then id: only with
    /// `max_idle_total` or `max_connections_total`, so that a pool without them pays
    /// nothing for it on check-in and checkout.
    lru: Option<BTreeMap<(Instant, u64), Arc<Origin>>>,
    count: usize,
}

impl IdleIndex {
    /// An empty index; `lru`: keep the order of use too.
    pub(super) fn new(lru: bool) -> IdleIndex {
        IdleIndex {
            deadlines: BTreeMap::new(),
            lru: lru.then(BTreeMap::new),
            count: 0,
        }
    }

    #[inline]
    pub(super) fn len(&self) -> usize {
        self.count
    }

    /// `idle`, a connection of `origin`, joins (or has just joined) its list.
    #[inline]
    pub(super) fn insert<B>(&mut self, idle: &Idle<B>, origin: &Arc<Origin>) {
        self.deadlines.insert(idle.key(), Arc::clone(origin));
        if let Some(lru) = &mut self.lru {
            lru.insert(idle.lru_key(), Arc::clone(origin));
        }
        self.count += 1;
    }

    /// `idle` has left its origin's list.
    #[inline]
    pub(super) fn remove<B>(&mut self, idle: &Idle<B>) {
        self.deadlines.remove(&idle.key());
        if let Some(lru) = &mut self.lru {
            lru.remove(&idle.lru_key());
        }
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

    /// The least recently used idle connection's key and origin, if the order of use
    /// is kept and any connection is idle.
    fn least_recently_used(&self) -> Option<((Instant, u64), Arc<Origin>)> {
        let (key, origin) = self.lru.as_ref()?.first_key_value()?;
        Some((*key, Arc::clone(origin)))
    }
}

/// Takes idle connection `id` of `origin` out of its list (or out of its probe's
/// place) and out of `index`; the second value says whether it was the probe.
fn take<B>(
    origins: &mut OriginMap<OriginState<B>>,
    index: &mut IdleIndex,
    origin: &Origin,
    id: u64,
) -> Option<(Idle<B>, bool)> {
    let entry = origins.get_mut(origin)?;
    let (idle, probe) = if entry.probe.as_ref().is_some_and(|p| p.conn.id() == id) {
        (entry.probe.take()?, true)
    } else {
        let position = entry.idle.iter().position(|idle| idle.conn.id() == id)?;
        (entry.idle.remove(position)?, false)
    };
    index.remove(&idle);
    Some((idle, probe))
}

/// Takes the least recently used idle connection of any origin, probes included, out
/// of its list and `index`: none unless the order of use is kept (a cap across
/// origins). Usually at the front of its origin's list, so found at once.
pub(super) fn take_least_recently_used<B>(
    origins: &mut OriginMap<OriginState<B>>,
    index: &mut IdleIndex,
) -> Option<Idle<B>> {
    loop {
        let (key, origin) = index.least_recently_used()?;
        if let Some((idle, _)) = take(origins, index, &origin, key.1) {
            return Some(idle);
        }
        debug_assert!(false, "an indexed idle connection is in its origin's list");
        if let Some(lru) = &mut index.lru {
            lru.remove(&key);
        }
    }
}

impl<B> State<B> {
    /// Takes idle connection `id` of `origin` out of its list and the index.
    /// The origin's probe counts: the second value says whether it was the probe.
    pub(super) fn take_idle(&mut self, origin: &Origin, id: u64) -> Option<(Idle<B>, bool)> {
        take(&mut self.origins, &mut self.idle, origin, id)
    }
}
