//! What the pool counts, and why it closes connections.
//!
//! The counters are atomics outside the pool's lock, so that counting never makes a
//! request wait; [`Pool::stats`] reads them, plus the few gauges and learned values
//! kept under the lock, into a [`PoolStats`] snapshot for `Client::stats`. Every
//! connection the pool closes goes through [`Pool::evict`] (or, when its slot is
//! reused, [`Pool::count_eviction`]): counted under one [`Evict`] reason and logged at
//! `debug` level with it. Ones found unusable under the lock wait in a [`Closing`]
//! until it is released.
//!
//! **Per origin** ([`Pool::origin_stats`]): each origin gets an `OriginRecord` of
//! atomics when the pool opens a connection to it, in a map of its own (not under the
//! pool's lock), bounded at [`MAX_TRACKED_ORIGINS`](crate::MAX_TRACKED_ORIGINS); see
//! `origins`. Evictions, opens and the closes
//! that tell who closed an idle connection first are counted there; the gauges and the
//! learned value are read from the pool's state only when a snapshot is taken.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::{Conn, Pool};

mod origins;

use super::deadline::allowed_idle;
use crate::info::{Evictions, OriginStats, PoolStats, Preconnects, Probes};
use crate::origin::Origin;
use origins::OriginRecords;

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
    /// Found idle and unusable: the runtime its socket was registered with shut down.
    TaskGone,
    /// A request on it failed.
    RequestFailed,
    /// Its response body was dropped or failed before its end.
    ResponseUnfinished,
    /// Handed to the caller after `101 Switching Protocols`.
    Upgraded,
    /// Closed by `Client::close_idle`, or as the last clone of the client went.
    ClosedByUser,
    /// The caller marked it not reusable (`ConnectionInfo::poison`).
    Poisoned,
    /// Closed because `max_idle_total` connections were already idle.
    IdleTotalFull,
    /// Closed to make room at `max_connections_total` for a request to any origin.
    ConnectionTotalLimit,
}

// Indexing the counters with `reason as usize` relies on this: the last variant's
// index is the last slot of the array.
const _: () = assert!(Evict::ConnectionTotalLimit as usize + 1 == Evict::COUNT);

impl Evict {
    pub(crate) const COUNT: usize = 18;

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
            Evict::TaskGone => "its runtime shut down",
            Evict::RequestFailed => "a request on it failed",
            Evict::ResponseUnfinished => "response body dropped before its end",
            Evict::Upgraded => "upgraded (101 Switching Protocols)",
            Evict::ClosedByUser => "closed by the user",
            Evict::Poisoned => "poisoned by the caller",
            Evict::IdleTotalFull => "max idle total",
            Evict::ConnectionTotalLimit => "max connections total: making room for a request",
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
    /// Checkouts waiting under `max_connections_per_origin` or `max_connections_total`
    /// right now.
    pub(super) waiting: AtomicUsize,
    evictions: [AtomicU64; Evict::COUNT],
    /// Per-origin counters, outside the pool's lock.
    pub(super) origins: OriginRecords,
    probes_started: AtomicU64,
    probes_proven: AtomicU64,
    probes_closed: AtomicU64,
    pub(super) preconnected: AtomicU64,
    pub(super) preconnect_failed: AtomicU64,
}

impl Counters {
    pub(super) fn probes_started(&self, n: u64) {
        if n > 0 {
            self.probes_started.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(super) fn probe_proven(&self) {
        self.probes_proven.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn probe_closed(&self) {
        self.probes_closed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection of `origin` closed for `reason` after `idle_for` idle.
    pub(super) fn count_eviction(&self, origin: &Origin, reason: Evict, idle_for: Duration) {
        self.evictions[reason as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(record) = self.origins.get(origin) {
            record.evictions[reason as usize].fetch_add(1, Ordering::Relaxed);
            // A connection retired as its response ended was never idle: only one that
            // sat idle until its deadline shows the client closing first.
            if reason.is_deadline() && !idle_for.is_zero() {
                record.closed_by_client.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Connection `opened_at` to `origin` has ended: with the `metrics` feature, its
    /// lifetime goes to `http.client.connection.duration`.
    pub(super) fn record_connection_closed(&self, origin: &Origin, opened_at: Instant) {
        #[cfg(feature = "metrics")]
        if let Some(record) = self.origins.get(origin) {
            let open_for = Instant::now().saturating_duration_since(opened_at);
            crate::record::record_connection_duration(&record.host, record.port, open_for);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (origin, opened_at);
    }
}

impl Evict {
    /// Whether a close for this reason, of a connection that was idle, is the client
    /// closing first at the connection's deadline.
    fn is_deadline(self) -> bool {
        matches!(
            self,
            Evict::IdleTimeout | Evict::ServerHint | Evict::LearnedTimeout | Evict::Lifetime
        )
    }
}

fn evictions(counters: &[AtomicU64; Evict::COUNT]) -> Evictions {
    let e = |reason: Evict| counters[reason as usize].load(Ordering::Relaxed);
    Evictions {
        idle_timeout: e(Evict::IdleTimeout),
        server_hint: e(Evict::ServerHint),
        lifetime: e(Evict::Lifetime),
        max_requests: e(Evict::MaxRequests),
        connection_close: e(Evict::ConnectionClose),
        closed_by_server: e(Evict::ClosedByServer),
        idle_list_full: e(Evict::IdleListFull),
        connection_limit: e(Evict::ConnectionLimit),
        task_gone: e(Evict::TaskGone),
        request_failed: e(Evict::RequestFailed),
        response_unfinished: e(Evict::ResponseUnfinished),
        upgraded: e(Evict::Upgraded),
        learned_timeout: e(Evict::LearnedTimeout),
        cancelled: e(Evict::Cancelled),
        closed_by_user: e(Evict::ClosedByUser),
        poisoned: e(Evict::Poisoned),
        idle_total_full: e(Evict::IdleTotalFull),
        connection_total_limit: e(Evict::ConnectionTotalLimit),
    }
}

impl<B> Pool<B> {
    pub(crate) fn stats(&self) -> PoolStats {
        let (idle, open, learned, running, waiting_for_room) = {
            let state = self.lock();
            let learned = if self.config.learn_idle_timeout {
                state.learned.snapshot()
            } else {
                Vec::new()
            };
            let running = state.origins.values().filter(|o| o.probe.is_some()).count();
            let starved = state.starved.len();
            (state.idle.len(), state.open, learned, running, starved)
        };
        let learned = learned
            .into_iter()
            .map(|(origin, value)| (String::from(&*origin), value))
            .collect();
        PoolStats {
            connections_opened: self.counters.opened.load(Ordering::Relaxed),
            reuses: self.counters.reuses.load(Ordering::Relaxed),
            idle,
            active: open - idle,
            waiting: self.counters.waiting.load(Ordering::Relaxed),
            waiting_for_room,
            evictions: evictions(&self.counters.evictions),
            learned_idle_timeouts: learned,
            probes: Probes {
                running,
                started: self.counters.probes_started.load(Ordering::Relaxed),
                proven: self.counters.probes_proven.load(Ordering::Relaxed),
                closed_by_server: self.counters.probes_closed.load(Ordering::Relaxed),
            },
            preconnects: Preconnects {
                opened: self.counters.preconnected.load(Ordering::Relaxed),
                failed: self.counters.preconnect_failed.load(Ordering::Relaxed),
            },
            ..PoolStats::default()
        }
    }

    /// Counts a connection opened to `origin`, making its record on its first.
    pub(super) fn record_opened(&self, origin: &Origin) {
        self.counters.opened.fetch_add(1, Ordering::Relaxed);
        self.counters.origins.opened(origin);
    }

    /// Records that the server closed an idle connection of `origin` first, after
    /// `idle_for`, and logs the first such close per origin: the live parity
    /// violation.
    pub(super) fn record_server_close(&self, origin: &Origin, idle_for: Duration) {
        let Some(record) = self.counters.origins.get(origin) else {
            return;
        };
        if record.server_closed(idle_for) {
            let idle_timeout = self.config.idle_timeout;
            let margin = self.config.keep_alive_margin;
            tracing::warn!(
                origin = %origin,
                server_closed_after_ms = idle_for.as_millis() as u64,
                client_idle_timeout_ms = idle_timeout.as_millis() as u64,
                keep_alive_margin_ms = margin.as_millis() as u64,
                "keep-alive parity fails: the server closed an idle connection after {} ms, \
                 before the client's idle timeout of {} ms; its keep-alive must be at least \
                 the idle timeout + keep_alive_margin = {} ms, or idle_timeout at most {} ms \
                 (logged once per origin; a server restart also closes idle connections early)",
                idle_for.as_millis(),
                idle_timeout.as_millis(),
                idle_timeout.saturating_add(margin).as_millis(),
                idle_for.saturating_sub(margin).as_millis(),
            );
        }
    }

    /// Per-origin snapshots, sorted by origin.
    pub(crate) fn origin_stats(&self) -> Vec<OriginStats> {
        // The records first, then the pool's lock: the two locks are never held
        // together.
        let records = self.counters.origins.all();
        let gauges: Vec<_> = {
            let state = self.lock();
            records
                .iter()
                .map(|(origin, _)| {
                    let (idle, open, waiting, probe) =
                        state.origins.get(origin).map_or((0, 0, 0, None), |entry| {
                            let probe = entry.probe.as_ref().map(|probe| {
                                probe.deadline.saturating_duration_since(probe.since())
                            });
                            // The probe is idle too.
                            let idle = entry.idle.len() + usize::from(probe.is_some());
                            (idle, entry.open, entry.waiters.len(), probe)
                        });
                    let evidence = self.evidence(&state.learned, origin);
                    (idle, open, waiting, probe, evidence)
                })
                .collect()
        };
        let mut stats: Vec<OriginStats> = records
            .iter()
            .zip(gauges)
            .map(|((_, record), (idle, open, waiting, probe, evidence))| {
                let (idle_deadline, idle_deadline_source) =
                    allowed_idle(None, &evidence, &self.config);
                OriginStats {
                    origin: record.display.to_string(),
                    host: record.host.to_string(),
                    port: record.port,
                    idle,
                    active: open.saturating_sub(idle),
                    waiting,
                    connections_opened: record.opened.load(Ordering::Relaxed),
                    evictions: evictions(&record.evictions),
                    learned_idle_timeout: evidence.closed_after,
                    idle_deadline,
                    idle_deadline_source,
                    proven_idle: evidence.proven,
                    probe,
                    idle_closes: record.idle_closes(),
                    // The retry layer's, filled in by `Client::origin_stats`.
                    retry_budget_exhausted: 0,
                }
            })
            .collect();
        stats.sort_unstable_by(|a, b| a.origin.cmp(&b.origin));
        stats
    }
}
