//! What the pool counts, and why it closes connections.
//!
//! The counters are atomics outside the pool's lock, so that counting never makes a
//! request wait; [`Pool::stats`] reads them, plus the few gauges and learned values
//! kept under the lock, into a [`PoolStats`] snapshot for `Client::stats`. Every
//! connection the pool closes goes through [`Pool::evict`] (or, when its slot is
//! reused, [`Pool::count_eviction`]): counted under one [`Evict`] reason and logged at
//! `debug` level with it. Ones found unusable under the lock wait in a [`Closing`]
//! until it is released.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::{Conn, Pool};
use crate::info::{Evictions, PoolStats};
use crate::origin::Origin;

/// Why the pool closed a connection. The discriminants index the eviction counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Evict {
    IdleTimeout,
    ServerHint,
    Lifetime,
    MaxRequests,
    ConnectionClose,
    ClosedByServer,
    IdleListFull,
    LearnedTimeout,
    /// The request future was dropped while the connection carried its request.
    Cancelled,
    /// Closed to open a fresh connection in its place at `max_connections_per_origin`.
    ConnectionLimit,
    /// Found idle with its connection task gone: the runtime it ran on was shut down.
    TaskGone,
}

// Indexing the counters with `reason as usize` relies on this: the last variant's
// index is the last slot of the array.
const _: () = assert!(Evict::TaskGone as usize + 1 == Evict::COUNT);

impl Evict {
    pub(crate) const COUNT: usize = 11;

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Evict::IdleTimeout => "idle timeout",
            Evict::ServerHint => "server keep-alive hint",
            Evict::Lifetime => "max lifetime",
            Evict::MaxRequests => "max requests per connection",
            Evict::ConnectionClose => "Connection: close",
            Evict::ClosedByServer => "closed by the server while idle",
            Evict::IdleListFull => "max idle per origin",
            Evict::LearnedTimeout => "learned server idle timeout",
            Evict::Cancelled => "request cancelled mid-flight",
            Evict::ConnectionLimit => {
                "max connections per origin: making room for a fresh connection"
            }
            Evict::TaskGone => "connection task gone with its runtime",
        }
    }
}

/// A connection found unusable under the pool's lock, closed after it is released.
pub(super) struct Closing<B> {
    pub(super) conn: Conn<B>,
    pub(super) since: Instant,
    pub(super) reason: Evict,
    pub(super) detail: &'static str,
}

/// The pool's counters, kept outside its lock.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) opened: AtomicU64,
    pub(super) reuses: AtomicU64,
    /// Checkouts waiting under `max_connections_per_origin` right now.
    pub(super) waiting: AtomicUsize,
    evictions: [AtomicU64; Evict::COUNT],
}

impl<B> Pool<B> {
    /// Closes what a checkout found unusable on its way; a close by the server is an
    /// observation of its idle timer.
    #[inline]
    pub(super) fn close_all(&self, origin: &Origin, closing: Vec<Closing<B>>, now: Instant) {
        for Closing {
            conn,
            since,
            reason,
            detail,
        } in closing
        {
            let idle_for = now.saturating_duration_since(since);
            if reason == Evict::ClosedByServer {
                self.observe_server_close(origin, idle_for);
            }
            self.evict(origin, conn, reason, idle_for, detail);
        }
    }

    /// Closes `conn`, counting and logging why.
    pub(crate) fn evict(
        &self,
        origin: &Origin,
        conn: Conn<B>,
        reason: Evict,
        idle_for: Duration,
        detail: &str,
    ) {
        self.count_eviction(origin, &conn, reason, idle_for, detail);
        // Dropping the last `SendRequest` makes hyper close the socket: the client
        // sends the FIN.
        drop(conn);
    }

    /// Counts and logs the closing of `conn`; the caller closes it.
    pub(super) fn count_eviction(
        &self,
        origin: &Origin,
        conn: &Conn<B>,
        reason: Evict,
        idle_for: Duration,
        detail: &str,
    ) {
        self.counters.evictions[reason as usize].fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            origin = %origin,
            conn = conn.id,
            reason = reason.as_str(),
            detail,
            idle_ms = idle_for.as_millis() as u64,
            requests = conn.requests,
            "closing connection"
        );
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let now = Instant::now();
        let (idle, open, learned) = {
            let state = self.lock();
            let learned = state.learned.snapshot(now, self.config.idle_timeout);
            (state.idle.len(), state.open, learned)
        };
        let learned = learned
            .into_iter()
            .map(|(origin, value)| (String::from(&*origin), value))
            .collect();
        let e = |reason: Evict| self.counters.evictions[reason as usize].load(Ordering::Relaxed);
        PoolStats {
            connections_opened: self.counters.opened.load(Ordering::Relaxed),
            reuses: self.counters.reuses.load(Ordering::Relaxed),
            idle,
            active: open - idle,
            waiting: self.counters.waiting.load(Ordering::Relaxed),
            evictions: Evictions {
                idle_timeout: e(Evict::IdleTimeout),
                server_hint: e(Evict::ServerHint),
                lifetime: e(Evict::Lifetime),
                max_requests: e(Evict::MaxRequests),
                connection_close: e(Evict::ConnectionClose),
                closed_by_server: e(Evict::ClosedByServer),
                // Until `Evictions` has a field of its own for it: the other case of a
                // per-origin limit making the least recently used idle connection go.
                idle_list_full: e(Evict::IdleListFull),
                connection_limit: e(Evict::ConnectionLimit),
                task_gone: e(Evict::TaskGone),
                learned_timeout: e(Evict::LearnedTimeout),
                cancelled: e(Evict::Cancelled),
            },
            learned_idle_timeouts: learned,
            ..PoolStats::default()
        }
    }
}
