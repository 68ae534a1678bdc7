//! Per-origin counters: an [`OriginRecord`] of atomics for each origin the pool has
//! opened a connection to, in a map of its own (never under the pool's lock), bounded
//! at [`MAX_TRACKED_ORIGINS`] by dropping the origin that opened a connection least
//! recently.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::Evict;
use crate::info::{IdleCloses, MAX_TRACKED_ORIGINS};
use crate::origin::{self, Origin, OriginMap};

/// One origin's counters. Made once, when the pool first opens a connection to the
/// origin; every later count is an atomic add.
pub(in crate::pool) struct OriginRecord {
    /// `scheme://host[:port]`, formatted once.
    pub(super) display: Box<str>,
    pub(super) host: Box<str>,
    pub(super) port: u16,
    pub(super) opened: AtomicU64,
    pub(super) evictions: [AtomicU64; Evict::COUNT],
    pub(super) closed_by_client: AtomicU64,
    closed_by_server: AtomicU64,
    /// Nanoseconds; `u64::MAX` until the server closes one.
    shortest_server_close: AtomicU64,
    /// The parity violation has been logged for this origin.
    warned: AtomicBool,
    /// The value of [`OriginRecords::sequence`] when it last opened a connection.
    last_opened: AtomicU64,
}

impl OriginRecord {
    fn new(origin: &Origin, sequence: u64) -> OriginRecord {
        let (host, port) = match origin::host_and_port(&origin.to_uri()) {
            // An IPv6 literal dials with brackets; metrics and logs name it without.
            Ok((host, port)) => (
                host.trim_start_matches('[').trim_end_matches(']').into(),
                port,
            ),
            Err(_) => (origin.authority().into(), 0),
        };
        OriginRecord {
            display: origin.to_string().into(),
            host,
            port,
            opened: AtomicU64::new(0),
            evictions: Default::default(),
            closed_by_client: AtomicU64::new(0),
            closed_by_server: AtomicU64::new(0),
            shortest_server_close: AtomicU64::new(u64::MAX),
            warned: AtomicBool::new(false),
            last_opened: AtomicU64::new(sequence),
        }
    }

    /// Records a server close after `idle_for`; returns whether it is the first one
    /// to be logged for this origin.
    pub(super) fn server_closed(&self, idle_for: Duration) -> bool {
        self.closed_by_server.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(idle_for.as_nanos()).unwrap_or(u64::MAX - 1);
        self.shortest_server_close
            .fetch_min(nanos, Ordering::Relaxed);
        !self.warned.swap(true, Ordering::Relaxed)
    }

    pub(super) fn idle_closes(&self) -> IdleCloses {
        let shortest = self.shortest_server_close.load(Ordering::Relaxed);
        IdleCloses {
            by_client: self.closed_by_client.load(Ordering::Relaxed),
            by_server: self.closed_by_server.load(Ordering::Relaxed),
            shortest_server_close: (shortest != u64::MAX).then(|| Duration::from_nanos(shortest)),
        }
    }
}

/// Every tracked origin's [`OriginRecord`], at most [`MAX_TRACKED_ORIGINS`] of them.
#[derive(Default)]
pub(in crate::pool) struct OriginRecords {
    map: Mutex<OriginMap<Arc<OriginRecord>>>,
    /// Orders connection opens, to find the origin that opened one least recently.
    sequence: AtomicU64,
}

impl OriginRecords {
    fn lock(&self) -> MutexGuard<'_, OriginMap<Arc<OriginRecord>>> {
        // Each update under this lock is one insert or removal: a panic elsewhere
        // cannot leave it half-done.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn get(&self, origin: &Origin) -> Option<Arc<OriginRecord>> {
        self.lock().get(origin).cloned()
    }

    /// The record of `origin`, made if it has none; counts a connection opened.
    pub(super) fn opened(&self, origin: &Origin) {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let existing = self.get(origin);
        let record = match existing {
            Some(record) => record,
            None => {
                // Made outside the lock: formatting the names allocates.
                let made = Arc::new(OriginRecord::new(origin, sequence));
                let mut map = self.lock();
                if map.len() >= MAX_TRACKED_ORIGINS && !map.contains_key(origin) {
                    let oldest = map
                        .iter()
                        .min_by_key(|(_, record)| record.last_opened.load(Ordering::Relaxed))
                        .map(|(origin, _)| origin.clone());
                    if let Some(oldest) = oldest {
                        map.remove(&oldest);
                    }
                }
                Arc::clone(map.entry(origin.clone()).or_insert(made))
            }
        };
        record.last_opened.store(sequence, Ordering::Relaxed);
        record.opened.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn all(&self) -> Vec<(Origin, Arc<OriginRecord>)> {
        self.lock()
            .iter()
            .map(|(origin, record)| (origin.clone(), Arc::clone(record)))
            .collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(n: usize) -> Origin {
        let uri: http::Uri = format!("http://host{n}.test:8{n}/").parse().unwrap();
        Origin::from_uri(&uri).unwrap()
    }

    #[test]
    fn records_are_bounded_and_the_origin_opened_least_recently_goes() {
        let records = OriginRecords::default();
        for n in 0..MAX_TRACKED_ORIGINS {
            records.opened(&origin(n));
        }
        // Origin 0 opens again: origin 1 is now the one opened least recently.
        records.opened(&origin(0));
        records.opened(&origin(MAX_TRACKED_ORIGINS));
        assert_eq!(records.len(), MAX_TRACKED_ORIGINS);
        assert!(records.get(&origin(1)).is_none());
        let zero = records.get(&origin(0)).expect("kept");
        assert_eq!(zero.opened.load(Ordering::Relaxed), 2);
        assert!(records.get(&origin(MAX_TRACKED_ORIGINS)).is_some());
    }

    #[test]
    fn server_closes_keep_the_shortest_and_warn_once() {
        let records = OriginRecords::default();
        let ipv6: http::Uri = "http://[::1]:8080/".parse().unwrap();
        let ipv6 = Origin::from_uri(&ipv6).unwrap();
        records.opened(&ipv6);
        let record = records.get(&ipv6).unwrap();
        assert_eq!((&*record.host, record.port), ("::1", 8080));
        assert_eq!(record.idle_closes(), IdleCloses::default());
        assert!(record.server_closed(Duration::from_millis(300)));
        assert!(!record.server_closed(Duration::from_millis(200)));
        assert!(!record.server_closed(Duration::MAX));
        let closes = record.idle_closes();
        assert_eq!(closes.by_server, 3);
        assert_eq!(
            closes.shortest_server_close,
            Some(Duration::from_millis(200))
        );
    }
}
