//! The pool as its user steers it: closing idle connections on demand
//! ([`Pool::close_idle`]), and when the last clone of the client goes ([`Owner`]).
//!
//! Only idle connections are closed: one carrying a request, or whose response body
//! is still being read, goes back to the pool as usual when its response ends (or,
//! once the client is gone, is closed then). An origin's probe is idle too, and is
//! closed with the others: it holds a socket on the server like any idle connection,
//! and what it would have proven is not worth keeping a connection the user asked to
//! close; nothing is learned from its close.

use std::sync::Arc;

use tokio::time::Instant;

use super::idle::{Idle, IdleIndex};
use super::{Evict, OriginState, Pool};
use crate::origin::Origin;

impl<B> Pool<B> {
    /// Closes every idle connection, or only those of `only`, probes included: the
    /// client sends the FIN. Counted as closed by the user. Returns how many it closed.
    pub(crate) fn close_idle(&self, only: Option<&Origin>) -> usize {
        let taken = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let mut taken = Vec::new();
            match only {
                Some(origin) => {
                    if let Some(entry) = state.origins.get_mut(origin) {
                        take_all_idle(entry, &mut state.idle, &mut taken);
                    }
                }
                None => {
                    for entry in state.origins.values_mut() {
                        take_all_idle(entry, &mut state.idle, &mut taken);
                    }
                }
            }
            taken
        };
        // After the lock is released: closing a connection gives its slot back, which
        // takes the lock.
        let closed = taken.len();
        let now = Instant::now();
        for idle in taken {
            let origin = Arc::clone(idle.conn.shared_origin());
            let idle_for = now.saturating_duration_since(idle.since());
            self.evict(
                &origin,
                idle.conn,
                Evict::ClosedByUser,
                idle_for,
                "closed on request",
            );
        }
        closed
    }
}

/// Moves `entry`'s idle connections and its probe to `into`, out of the index.
fn take_all_idle<B>(entry: &mut OriginState<B>, index: &mut IdleIndex, into: &mut Vec<Idle<B>>) {
    for idle in entry.idle.drain(..).chain(entry.probe.take()) {
        index.remove(&idle);
        into.push(idle);
    }
}

/// The clients' share of a pool: held by every clone of a `Client`, and by nothing
/// else (a request in flight holds the pool, not this). When the last clone goes, the
/// pool closes its idle connections at once, and from then on closes each connection
/// that a request still in flight hands back instead of keeping it for a client that
/// no longer exists. The pool itself goes with the last request.
pub(crate) struct Owner<B>(Arc<Pool<B>>);

impl<B> Owner<B> {
    pub(crate) fn new(pool: Arc<Pool<B>>) -> Owner<B> {
        Owner(pool)
    }
}

impl<B> Drop for Owner<B> {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.close_idle(None);
    }
}
