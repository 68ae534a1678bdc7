//! What an origin counts and records, shared by its connections and its handle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::lab::Rng;

/// The body bytes an origin received after one request head, and whether the body
/// was complete (only a complete one counts as a handler call). See
/// [`Origin::bodies`](super::Origin::bodies).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedBody {
    /// The body as received, de-chunked.
    pub bytes: Vec<u8>,
    /// Whether the whole body arrived.
    pub complete: bool,
}

/// Counters shared between the connections and the [`Origin`](super::Origin) handle.
/// `SeqCst` throughout: a test that observes one counter (a close, say) must also
/// observe the ones updated before it.
#[derive(Debug, Default)]
pub(super) struct Stats {
    pub(super) connections: AtomicUsize,
    pub(super) open_connections: AtomicUsize,
    pub(super) handler_calls: AtomicUsize,
    pub(super) client_closes: AtomicUsize,
    pub(super) idle_closes: AtomicUsize,
    /// Closes by the origin whose FIN or RST has been sent.
    pub(super) closes_done: AtomicUsize,
    /// TLS `KeyUpdate` records written on idle connections.
    pub(super) tls_key_updates: AtomicUsize,
    /// Handler calls per request id.
    pub(super) executions: Mutex<HashMap<String, usize>>,
    /// Request heads read per id, complete or not.
    pub(super) heads_seen: Mutex<HashMap<String, usize>>,
    pub(super) bodies: Mutex<HashMap<String, Vec<RecordedBody>>>,
    /// Header fields of each request head read per id.
    pub(super) headers: Mutex<HashMap<String, Vec<http::HeaderMap>>>,
    pub(super) requests_per_connection: Mutex<Vec<usize>>,
    /// `None` until the first random delay is drawn.
    pub(super) delay_rng: Mutex<Option<Rng>>,
    /// Asks the accept loop to close the listener.
    pub(super) stop_listening: Notify,
    /// The accept loop closed the listener.
    pub(super) listener_closed: Notify,
}

impl Stats {
    /// Adds one; returns the count before.
    pub(super) fn add(counter: &AtomicUsize) -> usize {
        counter.fetch_add(1, Ordering::SeqCst)
    }

    pub(super) fn sub(counter: &AtomicUsize) {
        // Saturating: a miscount must not wrap into a huge number of open connections.
        let _ = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            Some(n.saturating_sub(1))
        });
    }

    pub(super) fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }

    /// Adds one to `id`'s count in `map` and returns the new count.
    pub(super) fn bump(map: &Mutex<HashMap<String, usize>>, id: &str) -> usize {
        let mut map = lock(map);
        let count = map.entry(id.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    pub(super) fn count(map: &Mutex<HashMap<String, usize>>, id: &str) -> usize {
        lock(map).get(id).copied().unwrap_or(0)
    }
}

/// Locks a mutex, ignoring poisoning: each update under these locks is one insertion
/// or increment, so a panic elsewhere cannot leave them half-done, and a panicking
/// test must not hide the counters from another assertion.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
