//! Connections whose response body is still being read, waiting to be checked in.
//!
//! hyper can take the next request on an HTTP/1.1 connection once the response body
//! has been read to its end. Most small responses are read to the end before the
//! request returns, and go straight back to the pool (see [`connection`](super::connection)).
//! For the others a task per response waits for that moment and checks the
//! connection in. But a caller who reads a body to its end and sends the next request
//! at once usually gets there before that task has run, finds no idle connection and
//! opens a second one; sequential requests would then alternate between two
//! connections. So the connection stays reachable from the pool while its task waits:
//! a checkout that finds no idle connection takes one that hyper already reports ready
//! (after the same checks as a check-in), and the task, finding its cell empty, ends.
//!
//! Lock order: the pool's lock, then a cell's. Nothing holds a cell while it takes the
//! pool's lock.

use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use super::idle::Idle;
use super::learn::Evidence;
use super::{deadline, Closing, Conn, OriginState, Pool};
use crate::config::PoolConfig;

/// What a check-in returns to the pool.
pub(super) enum Returned<'a, B> {
    Conn(Conn<B>),
    /// A connection in its check-in task's cell, if a checkout has not taken it.
    Pending(&'a Pending<B>),
}

/// A connection shared between its check-in task and the pool.
pub(super) struct Pending<B> {
    pub(super) id: u64,
    cell: Mutex<Option<Conn<B>>>,
}

impl<B> Pending<B> {
    /// `conn`, waiting in its cell for its check-in task.
    pub(super) fn new(conn: Conn<B>) -> Pending<B> {
        Pending {
            id: conn.id(),
            cell: Mutex::new(Some(conn)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Conn<B>>> {
        self.cell.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection, unless a checkout took it.
    pub(super) fn take(&self) -> Option<Conn<B>> {
        self.lock().take()
    }

    /// How long its connection has been idle at `now`, unless a checkout took it.
    fn idle_for(&self, now: Instant) -> Option<Duration> {
        let cell = self.lock();
        Some(now.saturating_duration_since(cell.as_ref()?.idle_since))
    }

    /// The connection, if hyper reports it ready for the next request.
    pub(super) fn take_if_ready(&self) -> Option<Conn<B>> {
        let mut cell = self.lock();
        if cell.as_ref()?.tx.is_ready() {
            cell.take()
        } else {
            None
        }
    }
}

/// Owns the check-in task's share of a [`Pending`]. If the task is dropped before the
/// connection is ready (its runtime shut down), the connection is taken out of the
/// pool's reach and closed, so that its slot is given back.
pub(super) struct Task<B> {
    pub(super) pool: Weak<Pool<B>>,
    pub(super) pending: Arc<Pending<B>>,
}

impl<B: Send + 'static> Task<B> {
    pub(super) async fn run(self) {
        let ready = poll_fn(|cx| match self.pending.lock().as_mut() {
            Some(conn) => conn.tx.poll_ready(cx).map(|ready| Some(ready.is_ok())),
            // A checkout took the connection.
            None => Poll::Ready(None),
        })
        .await;
        if let Some(reusable) = ready {
            if let Some(pool) = self.pool.upgrade() {
                // The connection stays in its cell until the pool, under its lock,
                // moves it to the idle list: a checkout always finds it in one or the
                // other.
                pool.checkin_pending(&self.pending, reusable);
            }
        }
    }
}

impl<B> Drop for Task<B> {
    fn drop(&mut self) {
        let conn = self.pending.lock().take();
        if let Some(conn) = conn {
            if let Some(pool) = self.pool.upgrade() {
                pool.forget_pending(conn.origin(), self.pending.id);
            }
            // After the pool's lock is released: dropping the connection gives its
            // slot back, which takes the lock.
            drop(conn);
        }
    }
}

impl<B: Send + 'static> Pool<B> {}

impl<B> Pool<B> {}

/// A connection of `entry` whose response has been read to its end, taken from its
/// check-in task, if one passes the checks a check-in makes. Ones that fail go to
/// `closing`.
///
/// `unresendable`: for a request that may not be resent, the longest a connection may
/// have been idle; one idle longer stays with its task.
pub(super) fn take_ready_pending<B>(
    entry: &mut OriginState<B>,
    config: &PoolConfig,
    now: Instant,
    evidence: &Evidence,
    unresendable: Option<Duration>,
    closing: &mut Vec<Closing<B>>,
) -> Option<Idle<B>> {
    // The most recent first: the likeliest to have just finished.
    let mut i = entry.pending.len();
    while i > 0 {
        i -= 1;
        if let Some(limit) = unresendable {
            if entry.pending[i]
                .idle_for(now)
                .is_none_or(|idle_for| idle_for >= limit)
            {
                continue;
            }
        }
        let Some(conn) = entry.pending[i].take_if_ready() else {
            continue;
        };
        entry.pending.swap_remove(i);
        let since = conn.idle_since;
        let (deadline, reason) = deadline::deadline(&conn, config, since, evidence);
        let retire = deadline::retire_reason(&conn, config, now, evidence)
            .or((deadline <= now).then_some(reason));
        match retire {
            Some(reason) => closing.push(Closing {
                conn,
                since,
                reason,
                detail: "",
            }),
            None => {
                return Some(Idle {
                    conn,
                    deadline,
                    reason,
                })
            }
        }
    }
    None
}

/// Connection `id` of `entry` is no longer pending.
pub(super) fn remove_pending<B>(entry: &mut OriginState<B>, id: u64) {
    if let Some(position) = entry.pending.iter().position(|pending| pending.id == id) {
        entry.pending.swap_remove(position);
    }
}
