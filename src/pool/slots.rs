//! Slots of an origin's connection count, and the FIFO queue of checkouts waiting for
//! one under `max_connections_per_origin`.
//!
//! Every open (or opening) connection owns a [`Slot`]: dropping the slot, wherever
//! that happens, gives the origin's connection count back, or hands it on to the first
//! waiter, which opens a connection in its place. So no path (an error, a cancelled
//! request, a dropped response body) can leak a slot or strand a waiter.
//!
//! A waiter receives a [`Turn`]: a connection someone just finished with (see
//! [`grant_conn`]), or a slot. A waiting checkout that is dropped (its
//! `checkout_timeout` ran out, or the caller dropped the request) leaves the queue at
//! once, and hands on whatever was granted to it in the meantime.
//!
//! Locking: a slot's `Drop` takes the pool's lock, so no slot (nor any connection,
//! which owns one) is dropped under it. Grants are sent under the lock; a grant that
//! comes back from a waiter that has gone is taken back at once, not dropped.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::oneshot;

use super::idle::Idle;
use super::Pool;
use crate::error::{Error, Kind};
use crate::origin::Origin;
use tokio::time::Instant;

/// One unit of an origin's connection count. See the module docs.
pub(crate) struct Slot<B> {
    pool: Weak<Pool<B>>,
    /// The pool's one copy for the origin ([`OriginState::origin`](super::OriginState)):
    /// a pointer, not an `Origin` (56 bytes), in every connection.
    origin: Arc<Origin>,
    /// Whether dropping the slot gives it back; off only for a slot that has already
    /// been handed on, or one that belongs to no pool.
    armed: bool,
}

impl<B> Slot<B> {
    /// A slot counted in `origin`'s entry of `pool`; the caller has counted it.
    #[inline]
    pub(super) fn new(pool: Weak<Pool<B>>, origin: Arc<Origin>) -> Slot<B> {
        Slot {
            pool,
            origin,
            armed: true,
        }
    }

    /// A slot of no pool, for connections in tests of the pool's bookkeeping.
    #[cfg(test)]
    pub(super) fn detached(origin: Arc<Origin>) -> Slot<B> {
        Slot {
            pool: Weak::new(),
            origin,
            armed: false,
        }
    }

    /// Dropping it will not give it back: it was handed on, or never counted.
    #[inline]
    pub(super) fn disarm(&mut self) {
        self.armed = false;
    }

    #[inline]
    pub(super) fn origin(&self) -> &Arc<Origin> {
        &self.origin
    }

    #[inline]
    pub(super) fn pool(&self) -> Option<Arc<Pool<B>>> {
        self.pool.upgrade()
    }
}

impl<B> Drop for Slot<B> {
    fn drop(&mut self) {
        if self.armed {
            if let Some(pool) = self.pool.upgrade() {
                pool.release(&self.pool, &self.origin);
            }
        }
    }
}

/// What a waiting checkout receives: a connection someone just finished with, or the
/// right to open a new one.
pub(super) enum Turn<B> {
    /// With the deadline it had when it was checked in.
    Conn(Idle<B>),
    Slot(Slot<B>),
}

/// A checkout waiting under `max_connections_per_origin` (or for room under
/// `max_connections_total`), in FIFO order.
pub(super) struct Waiter<B> {
    id: u64,
    pub(super) tx: oneshot::Sender<Turn<B>>,
}

impl<B> Waiter<B> {
    pub(super) fn id(&self) -> u64 {
        self.id
    }
}

/// Offers `conn` to the first live waiter of `waiters`; returns it when none took it.
/// The waiter served leaves `starved` too, if it waited there.
#[inline]
pub(super) fn grant_conn<B>(
    waiters: &mut VecDeque<Waiter<B>>,
    starved: &mut BTreeMap<u64, Arc<Origin>>,
    idle: Idle<B>,
) -> Option<Idle<B>> {
    let mut idle = idle;
    while let Some(waiter) = waiters.pop_front() {
        match waiter.tx.send(Turn::Conn(idle)) {
            Ok(()) => {
                served(starved, waiter.id);
                return None;
            }
            Err(Turn::Conn(returned)) => idle = returned,
            Err(Turn::Slot(_)) => unreachable!("a Conn grant comes back as sent"),
        }
    }
    Some(idle)
}

/// Waiter `id` was served: if it also waited for room under `max_connections_total`,
/// it no longer does (so that no connection is closed to make room for it).
#[inline]
pub(super) fn served(starved: &mut BTreeMap<u64, Arc<Origin>>, id: u64) {
    if !starved.is_empty() {
        starved.remove(&id);
    }
}

/// A checkout's place in the FIFO queue and the receiving end of its grant.
///
/// Dropping it before the grant arrives (the checkout timed out, or the caller dropped
/// the request) removes the waiter from the queue; a grant that raced with the
/// cancellation is not lost: a connection is checked in again, a permit passes to the
/// next waiter. Keeps the `waiting` gauge, however the wait ends.
pub(super) struct Waiting<'a, B: Send + 'static> {
    pool: &'a Arc<Pool<B>>,
    origin: &'a Origin,
    id: u64,
    rx: oneshot::Receiver<Turn<B>>,
    finished: bool,
    /// Also in the pool's queue of checkouts waiting for room under
    /// `max_connections_total` (see [`total`](super::total)), which it leaves as it goes.
    starved: bool,
}

impl<'a, B: Send + 'static> Waiting<'a, B> {
    /// Queues a waiter at the back of `waiters` (`origin`'s queue), named by the next
    /// value of `next_id`. Under the pool's lock.
    pub(super) fn enqueue(
        pool: &'a Arc<Pool<B>>,
        origin: &'a Origin,
        waiters: &mut VecDeque<Waiter<B>>,
        next_id: &mut u64,
    ) -> Self {
        let (tx, rx) = oneshot::channel();
        let id = *next_id;
        *next_id = id.wrapping_add(1);
        waiters.push_back(Waiter { id, tx });
        pool.counters.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting {
            pool,
            origin,
            id,
            rx,
            finished: false,
            starved: false,
        }
    }

    /// Its name in the queues.
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// It waits for room under `max_connections_total`, in that queue too.
    pub(super) fn mark_starved(&mut self) {
        self.starved = true;
    }

    /// Waits for the grant until `until` (the checkout's deadline, and the
    /// `checkout_timeout` it came from). `Ok(None)` when the queue was dropped
    /// without a grant.
    pub(super) async fn granted(
        mut self,
        until: Option<(Instant, Duration)>,
    ) -> Result<Option<Turn<B>>, Error> {
        let grant = match until {
            Some((deadline, limit)) => tokio::time::timeout_at(deadline, &mut self)
                .await
                .map_err(|_| Error::new(Kind::CheckoutTimeout(limit)))?,
            None => (&mut self).await,
        };
        Ok(grant.ok())
    }
}

impl<B: Send + 'static> Future for Waiting<'_, B> {
    type Output = Result<Turn<B>, oneshot::error::RecvError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let grant = std::task::ready!(Pin::new(&mut self.rx).poll(cx));
        self.finished = true;
        Poll::Ready(grant)
    }
}

impl<B: Send + 'static> Drop for Waiting<'_, B> {
    fn drop(&mut self) {
        self.pool.counters.waiting.fetch_sub(1, Ordering::Relaxed);
        if self.finished {
            if self.starved {
                // Served by its own origin, or by the room it waited for.
                self.pool.lock().starved.remove(&self.id);
            }
            return;
        }
        // After `close`, every send fails and hands the grant back to the sender, which
        // offers it to the next waiter; a grant sent before is still in the channel.
        self.rx.close();
        let raced = self.rx.try_recv().ok();
        let removed = {
            let mut guard = self.pool.lock();
            let state = &mut *guard;
            if self.starved {
                state.starved.remove(&self.id);
            }
            let entry = state.origins.get_mut(self.origin);
            let removed = entry.and_then(|entry| {
                let position = entry.waiters.iter().position(|w| w.id == self.id)?;
                entry.waiters.remove(position)
            });
            // An origin with nothing open whose only waiters waited for room under
            // `max_connections_total` goes with the last of them (nothing is dropped:
            // with nothing open, it holds no connection).
            if state
                .origins
                .get(self.origin)
                .is_some_and(|entry| entry.open == 0 && entry.waiters.is_empty())
            {
                state.origins.remove(self.origin);
            }
            removed
        };
        drop(removed);
        // Outside the lock: both paths below take it.
        match raced {
            Some(Turn::Conn(idle)) => self.pool.checkin(idle.conn, true),
            // Dropping the slot passes it to the next waiter.
            Some(Turn::Slot(slot)) => drop(slot),
            None => {}
        }
    }
}

impl<B> Pool<B> {
    /// A slot was dropped: its connection closed or was never opened.
    fn release(&self, weak: &Weak<Pool<B>>, origin: &Origin) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Entry::Occupied(mut entry) = state.origins.entry(origin.clone()) else {
            debug_assert!(false, "a slot outlived its origin entry");
            return;
        };
        let origin_state = entry.get_mut();
        // The first live waiter takes the slot over; the counts stay as they are.
        while let Some(waiter) = origin_state.waiters.pop_front() {
            let slot = Slot::new(weak.clone(), Arc::clone(&origin_state.origin));
            match waiter.tx.send(Turn::Slot(slot)) {
                Ok(()) => {
                    served(&mut state.starved, waiter.id);
                    return;
                }
                Err(Turn::Slot(mut slot)) => slot.armed = false,
                Err(Turn::Conn(_)) => unreachable!("a Permit grant comes back as sent"),
            }
        }
        origin_state.open -= 1;
        state.open -= 1;
        if origin_state.open == 0 {
            entry.remove();
        }
        // Room under `max_connections_total`, for whoever waits for it first.
        if !state.starved.is_empty() {
            self.serve_starved(state, weak);
        }
    }
}
