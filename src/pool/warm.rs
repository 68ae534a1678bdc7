//! Warm connections: [`Pool::preconnect`] opens connections to an origin (TLS
//! included) before traffic needs them, as Envoy's preconnect and OkHttp's pool do,
//! and puts them in the pool idle.
//!
//! A warm connection is an idle connection like any other from the moment it is
//! checked in: the same deadline (counted from when its connect began, not from when
//! the handshake ended: the server's idle timer starts at its accept, which comes
//! after), the reaper, the look before reuse, kernel keepalive, the probe. It takes a
//! slot only where a request would get one at once: below `max_connections_per_origin`,
//! below `max_connections_total` with no request waiting for room, and where
//! `max_idle_per_origin` and `max_idle_total` leave room for it to stay idle; it never
//! closes another connection nor waits. A connect that fails is logged at `warn` and
//! counted (`PoolStats::preconnects`), never returned to a request.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use tokio::time::Instant;

use super::slots::Slot;
use super::{OriginState, Pool, State};
use crate::origin::Origin;

/// The most connections one [`Pool::preconnect`] call aims for; more counts as this
/// many, so that a stray argument cannot open sockets without bound.
pub(crate) const MAX_PRECONNECT: usize = 1024;

/// How many connects one call runs at once: warming a pool should not look like a
/// flood of handshakes to the server.
const CONCURRENT_CONNECTS: usize = 8;

/// A connect in progress; its output says whether it succeeded.
type Warming<'a> = Pin<Box<dyn Future<Output = bool> + Send + 'a>>;

impl<B: Send + 'static> Pool<B> {
    /// Opens connections to `origin` until it has `n` (at most [`MAX_PRECONNECT`]) open,
    /// idle or in use, as far as the limits allow (see the module docs); returns how many
    /// it opened. Stops opening more after a connect fails.
    pub(crate) async fn preconnect(self: &Arc<Self>, origin: &Origin, n: usize) -> usize {
        let target = n.min(MAX_PRECONNECT);
        let mut started = 0;
        let mut opened = 0;
        let mut failed = false;
        let mut connecting: Vec<Warming<'_>> = Vec::new();
        loop {
            while !failed && started < target && connecting.len() < CONCURRENT_CONNECTS {
                let Some(slot) = self.warm_slot(origin, target, connecting.len()) else {
                    break;
                };
                started += 1;
                connecting.push(Box::pin(self.warm_one(origin, slot)));
            }
            if connecting.is_empty() {
                return opened;
            }
            let ok = poll_fn(|cx| {
                for i in 0..connecting.len() {
                    if let Poll::Ready(ok) = connecting[i].as_mut().poll(cx) {
                        drop(connecting.swap_remove(i));
                        return Poll::Ready(ok);
                    }
                }
                Poll::Pending
            })
            .await;
            if ok {
                opened += 1;
            } else {
                failed = true;
            }
        }
    }

    /// Opens one connection in `slot` and checks it in idle; whether it opened.
    async fn warm_one(self: &Arc<Self>, origin: &Origin, slot: Slot<B>) -> bool {
        let began = Instant::now();
        let mut conn = match self.connect(origin, slot).await {
            Ok(checkout) => checkout.conn,
            Err(error) => {
                self.counters
                    .preconnect_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(origin = %origin, %error, "preconnect failed");
                return false;
            }
        };
        // The server's idle timer started at its accept, after the connect began.
        conn.idle_since = began;
        // hyper takes a first request once its connection future has run: run it here
        // if no task of its own does.
        let ready = poll_fn(|cx| {
            if let Poll::Ready(result) = conn.tx.poll_ready(cx) {
                return Poll::Ready(result.is_ok());
            }
            if conn.poll_driver(cx) {
                if let Poll::Ready(result) = conn.tx.poll_ready(cx) {
                    return Poll::Ready(result.is_ok());
                }
            }
            Poll::Pending
        })
        .await;
        self.counters.preconnected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(origin = %origin, conn = conn.id(), "preconnected");
        if ready {
            self.check_in_when_ready(conn);
        } else {
            // Closed under the handshake: counted under who closed it.
            self.checkin(conn, false);
        }
        true
    }

    /// A slot for one more warm connection to `origin`, counted, if it has fewer than
    /// `target` open and every limit leaves room (see the module docs), with
    /// `warming` connects of this call still on their way to the idle list.
    fn warm_slot(
        self: &Arc<Self>,
        origin: &Origin,
        target: usize,
        warming: usize,
    ) -> Option<Slot<B>> {
        let mut guard = self.lock();
        let State {
            origins,
            idle,
            open,
            learned,
            starved,
            closed,
            ..
        } = &mut *guard;
        if *closed {
            return None;
        }
        let config = &self.config;
        let room = config.max_connections_total.is_none_or(|max| *open < max)
            && starved.is_empty()
            && config
                .max_idle_total
                .is_none_or(|max| idle.len() + warming < max);
        if !room {
            return None;
        }
        let evidence = self.evidence(learned, origin);
        let entry = origins
            .entry(origin.clone())
            .or_insert_with(|| OriginState::new(origin, evidence));
        let fits = entry.open < target
            && entry.waiters.is_empty()
            && config
                .max_connections_per_origin
                .is_none_or(|max| entry.open < max)
            // Idle ones and those being opened: all of them will be idle.
            && entry.idle.len() + warming < config.max_idle_per_origin;
        if !fits {
            if entry.open == 0 && entry.waiters.is_empty() {
                // Made just now, for nothing.
                origins.remove(origin);
            }
            return None;
        }
        entry.open += 1;
        *open += 1;
        Some(Slot::new(Arc::downgrade(self), Arc::clone(&entry.origin)))
    }
}
