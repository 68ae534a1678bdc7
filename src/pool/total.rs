//! The caps across origins: `max_connections_total`, and the order in which requests
//! to different origins get the room it leaves.
//!
//! Each origin keeps its own FIFO queue of waiters ([`slots`](super::slots)). A
//! checkout that needs a new connection while its origin is below
//! `max_connections_per_origin` but the pool is at `max_connections_total` also joins
//! the pool's queue of checkouts waiting for room (`State::starved`), keyed by its
//! waiter id, so in arrival order across origins. Room is made, or found, three ways,
//! each handing it to the first of that queue:
//! - the checkout closes the least recently used idle connection of any origin (an
//!   O(log n) index, see [`idle`](super::idle)) as it starts to wait;
//! - a connection checked in while the queue is not empty is closed rather than kept
//!   idle, unless its own origin has waiters ([`checkin`](super::checkin));
//! - any connection that closes gives its slot back ([`Pool::release`]), and with no
//!   waiter of its own origin, the room goes to [`Pool::serve_starved`].
//!
//! The slot's unit moves from one origin's count to the other's under the lock; the
//! total never passes the cap. A waiter that gives up leaves both queues (see
//! `Waiting`'s `Drop`), and an origin with nothing open and no one waiting leaves the
//! map. Nothing here runs on a checkout that finds an idle connection or room, so
//! checkout stays flat in the number of origins.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use super::slots::{self, Slot, Turn, Waiting};
use super::stats::Closing;
use super::{idle, Evict, Origin, OriginState, Pool, State};

impl<B: Send + 'static> Pool<B> {
    /// Queues `waiting` (just enqueued in its origin's queue) for room under
    /// `max_connections_total`, and closes the least recently used idle connection of
    /// any origin, if there is one, to make room for the first in line: it goes to
    /// `closing`, and its slot, given back after the lock, to [`Pool::serve_starved`].
    pub(super) fn wait_for_room(
        &self,
        state: &mut State<B>,
        origin: &Arc<Origin>,
        waiting: &mut Waiting<'_, B>,
        closing: &mut Vec<Closing<B>>,
    ) {
        waiting.mark_starved();
        state.starved.insert(waiting.id(), Arc::clone(origin));
        if let Some(lru) = idle::take_least_recently_used(&mut state.origins, &mut state.idle) {
            closing.push(Closing {
                since: lru.since(),
                conn: lru.conn,
                reason: Evict::ConnectionTotalLimit,
                detail: "",
            });
        }
    }
}

impl<B> Pool<B> {
    /// Hands the room under `max_connections_total` to the checkouts waiting for it,
    /// first come first served across origins: the origin of the first one in line
    /// counts one more connection and its first live waiter gets the slot. Under the
    /// lock; dropping a slot that no waiter took does nothing (it is disarmed).
    pub(super) fn serve_starved(&self, state: &mut State<B>, weak: &Weak<Pool<B>>) {
        let Some(max) = self.config.max_connections_total else {
            return;
        };
        while state.open < max {
            let Some((_, origin)) = state.starved.pop_first() else {
                return;
            };
            let Some(entry) = state.origins.get_mut(&*origin) else {
                continue;
            };
            if self
                .config
                .max_connections_per_origin
                .is_some_and(|per_origin| entry.open >= per_origin)
            {
                // Its origin is at its own limit now: its own connections serve it.
                continue;
            }
            entry.open += 1;
            state.open += 1;
            if !grant_slot(entry, &mut state.starved, weak) {
                // None of its waiters is left.
                entry.open -= 1;
                state.open -= 1;
                if entry.open == 0 && entry.waiters.is_empty() {
                    state.origins.remove(&*origin);
                }
            }
        }
    }
}

/// Gives a new slot of `entry`'s origin, already counted, to its first live waiter;
/// `false` when none took it.
fn grant_slot<B>(
    entry: &mut OriginState<B>,
    starved: &mut BTreeMap<u64, Arc<Origin>>,
    weak: &Weak<Pool<B>>,
) -> bool {
    while let Some(waiter) = entry.waiters.pop_front() {
        let slot = Slot::new(weak.clone(), Arc::clone(&entry.origin));
        let id = waiter.id();
        match waiter.tx.send(Turn::Slot(slot)) {
            Ok(()) => {
                slots::served(starved, id);
                return true;
            }
            Err(Turn::Slot(mut slot)) => slot.disarm(),
            Err(Turn::Conn(_)) => unreachable!("a Slot grant comes back as sent"),
        }
    }
    false
}
