//! Checkout: how a request gets a connection. The most recently idled one whose
//! deadline has not passed, after the last look before reuse (a wake of its parked
//! future read, the peek); one whose response has just been read to its end; a new one;
//! or, at `max_connections_per_origin`, a place in the FIFO queue of waiters, which it
//! keeps with its deadline until it is served or gives up.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::idle::Idle;
use super::slots::{Slot, Turn, Waiting};
use super::stats::Closing;
use super::{deadline, pending, Checkout, Conn, Evict, OriginState, Pool, State};
use crate::error::{Error, Kind};
use crate::io::{Liveness, SocketHandle};
use crate::origin::Origin;

/// The longest [`Pool::look_again`] waits for a connection to read bytes that reached
/// its socket just before it was to be reused, before it is given up.
const LOOK_AGAIN: Duration = Duration::from_millis(5);
/// In how many pauses.
const LOOK_AGAIN_PAUSES: u32 = 5;

/// Why the last look before reuse ([`Pool::hand_out`]) refused a connection.
pub(super) enum Refused<B> {
    /// Counted and closed: its slot, for a connection opened in its place.
    Closed(Slot<B>),
    /// Bytes its future could not read yet: see [`Pool::look_again`]. Boxed: a rare
    /// path, which should not make every refusal as large as a connection.
    Unread(Box<Idle<B>>),
}

impl<B> Refused<B> {
    /// The slot of the refused connection, closed if it was not already (an `Unread`
    /// one only comes from a first look, which every caller looks at again).
    fn into_slot(self) -> Slot<B> {
        match self {
            Refused::Closed(slot) => slot,
            Refused::Unread(idle) => idle.conn.into_slot(),
        }
    }
}

/// How a checkout proceeds, as decided under the lock.
enum Step<'a, B: Send + 'static> {
    Reuse(Idle<B>),
    Connect(Slot<B>),
    /// A fresh connection at `max_connections_per_origin`: close this idle one and
    /// open the new one in its slot.
    Replace(Idle<B>),
    Wait(Waiting<'a, B>),
}

impl<B: Send + 'static> Pool<B> {
    /// A connection for `origin`: the most recently idled one that is still good, one
    /// whose response has just been read to its end (see [`pending`]), a new one, or
    /// (at `max_connections_per_origin`) the first one freed, in FIFO order.
    ///
    /// `fresh` skips the idle list: a resend after a stale-connection failure goes on a
    /// new connection, as the other idle ones may be just as stale. At
    /// `max_connections_per_origin` it closes the least recently used idle connection
    /// and opens the new one in its place; with none idle, it waits its turn and opens
    /// the new connection in the slot of the first one freed.
    ///
    /// A waiter keeps its place and its deadline (`checkout_timeout`, counted from when
    /// the checkout began): a connection granted to it that fails the look before
    /// reuse is closed, and the waiter opens a new one in its slot.
    ///
    /// A request that may not be be resent (`!resendable`: a POST without
    /// `Idempotency-Key`) takes only a connection idle below what the server was seen
    /// to allow (`deadline::allowed_idle_unresendable`); otherwise it is treated as
    /// `fresh`.
    pub(crate) async fn checkout(
        self: &Arc<Self>,
        origin: &Origin,
        fresh: bool,
        resendable: bool,
    ) -> Result<Checkout<B>, Error> {
        // When the checkout began: its first step's time, read under the lock (one clock
        // read per step, the same `now` for the step's decisions and what follows them).
        let mut began = None;
        loop {
            let mut closing = Vec::new();
            let mut proven = Duration::ZERO;
            let (step, now) = self.next_step(origin, fresh, resendable, &mut closing, &mut proven);
            let began = *began.get_or_insert(now);
            self.close_all(origin, closing, now);
            match step {
                Step::Reuse(idle) => {
                    let idle_for = now.saturating_duration_since(idle.since());
                    let looked = match self.hand_out(origin, idle, now, true) {
                        Err(Refused::Unread(idle)) => self.look_again(origin, idle).await,
                        looked => looked,
                    };
                    // On failure the slot drops here, and the next idle one is tried.
                    if let Ok(conn) = looked {
                        return Ok(Checkout {
                            conn,
                            reused: true,
                            idle_for,
                            proven,
                        });
                    }
                }
                Step::Connect(slot) => return self.connect(origin, slot).await,
                Step::Replace(idle) => {
                    let idle_for = now.saturating_duration_since(idle.since());
                    let slot = self.retire(origin, idle.conn, Evict::ConnectionLimit, idle_for, "");
                    return self.connect(origin, slot).await;
                }
                Step::Wait(waiting) => match waiting.granted(self.wait_until(began)).await? {
                    Some(Turn::Conn(idle)) => {
                        let now = Instant::now();
                        let idle_for = now.saturating_duration_since(idle.since());
                        if fresh
                            || (!resendable && idle_for >= self.unresendable_limit(origin, &idle))
                        {
                            // A resend asked for a new connection, not a reused one; or
                            // this one was idle too long for a request that may not be
                            // resent.
                            let slot = self.retire(
                                origin,
                                idle.conn,
                                Evict::ConnectionLimit,
                                idle_for,
                                "",
                            );
                            return self.connect(origin, slot).await;
                        }
                        let looked = match self.hand_out(origin, idle, now, true) {
                            Err(Refused::Unread(idle)) => self.look_again(origin, idle).await,
                            looked => looked,
                        };
                        return match looked {
                            Ok(conn) => Ok(Checkout {
                                conn,
                                reused: true,
                                idle_for,
                                proven,
                            }),
                            // Its turn stays its turn: a new connection in the slot.
                            Err(refused) => self.connect(origin, refused.into_slot()).await,
                        };
                    }
                    Some(Turn::Slot(slot)) => return self.connect(origin, slot).await,
                    // Senders are only dropped with the pool, which `self` keeps
                    // alive; should that ever change, waiting again is still right.
                    None => {}
                },
            }
        }
    }

    /// Decides, under the lock, how a checkout proceeds. Connections found unusable on
    /// the way go to `closing`, to be closed after the lock is released.
    fn next_step<'a>(
        self: &'a Arc<Self>,
        origin: &'a Origin,
        fresh: bool,
        resendable: bool,
        closing: &mut Vec<Closing<B>>,
        proven: &mut Duration,
    ) -> (Step<'a, B>, Instant) {
        let mut guard = self.lock();
        let State {
            origins,
            idle,
            open,
            learned,
            next_waiter,
            starved,
            ..
        } = &mut *guard;
        let now = Instant::now();
        let entry = match origins.get_mut(origin) {
            Some(entry) => entry,
            None => origins
                .entry(origin.clone())
                .or_insert_with(|| OriginState::new(origin, learned.evidence(origin))),
        };
        let evidence = self.evidence_of(entry);
        *proven = evidence.proven;
        if !fresh {
            while let Some(candidate) = entry.idle.pop_back() {
                idle.remove(&candidate);
                // The reaper may not have run yet: never hand out an expired one. Nor one
                // idle longer than what is known now allows: a close seen since its
                // check-in (a server that shortened its timer) shortens every deadline.
                let (allowed, source) =
                    deadline::allowed_idle(candidate.conn.hint_timeout, &evidence, &self.config);
                let expired = now >= candidate.deadline;
                if expired || now.saturating_duration_since(candidate.since()) >= allowed {
                    closing.push(Closing {
                        reason: if expired {
                            candidate.reason
                        } else {
                            deadline::source_reason(source)
                        },
                        since: candidate.since(),
                        conn: candidate.conn,
                        detail: "",
                    });
                } else if candidate.conn.tx.is_closed() {
                    // A task dropped with its runtime is no news about the server.
                    let reason = if candidate.conn.task_gone() {
                        Evict::TaskGone
                    } else {
                        Evict::ClosedByServer
                    };
                    closing.push(Closing {
                        since: candidate.since(),
                        conn: candidate.conn,
                        reason,
                        detail: "connection task ended",
                    });
                } else if !resendable
                    && now.saturating_duration_since(candidate.since())
                        >= deadline::allowed_idle_unresendable(
                            candidate.conn.hint_timeout,
                            &evidence,
                            &self.config,
                        )
                {
                    // Idle too long for a request that may not be resent; the older ones
                    // have been idle longer. It stays for requests that may be.
                    idle.insert(&candidate, &entry.origin);
                    entry.idle.push_back(candidate);
                    break;
                } else {
                    return (Step::Reuse(candidate), now);
                }
            }
            // A waiter comes first: the connection is checked in to it in a moment.
            if entry.waiters.is_empty() && !entry.pending.is_empty() {
                let unresendable = (!resendable)
                    .then(|| deadline::allowed_idle_unresendable(None, &evidence, &self.config));
                let ready = pending::take_ready_pending(
                    entry,
                    &self.config,
                    now,
                    &evidence,
                    unresendable,
                    closing,
                );
                if let Some(idle) = ready {
                    return (Step::Reuse(idle), now);
                }
            }
        }
        let at_max = self
            .config
            .max_connections_per_origin
            .is_some_and(|max| entry.open >= max);
        if !at_max {
            let room = self
                .config
                .max_connections_total
                .is_none_or(|max| *open < max && starved.is_empty());
            if room {
                entry.open += 1;
                *open += 1;
                return (
                    Step::Connect(Slot::new(Arc::downgrade(self), Arc::clone(&entry.origin))),
                    now,
                );
            }
            // At `max_connections_total`: wait for room, in arrival order across origins.
            let shared = Arc::clone(&entry.origin);
            let mut waiting = Waiting::enqueue(self, origin, &mut entry.waiters, next_waiter);
            self.wait_for_room(&mut guard, &shared, &mut waiting, closing);
            return (Step::Wait(waiting), now);
        }
        if fresh || !resendable {
            if let Some(lru) = entry.idle.pop_front() {
                idle.remove(&lru);
                return (Step::Replace(lru), now);
            }
        }
        let waiting = Waiting::enqueue(self, origin, &mut entry.waiters, next_waiter);
        (Step::Wait(waiting), now)
    }

    /// Opens a connection to `origin` in `slot`; its hyper connection future starts
    /// parked in the [`Conn`].
    pub(super) async fn connect(
        self: &Arc<Self>,
        origin: &Origin,
        slot: Slot<B>,
    ) -> Result<Checkout<B>, Error> {
        let home = Conn::<B>::home(
            Arc::clone(slot.origin()),
            Arc::downgrade(&self.woken),
            Arc::downgrade(&self.counters),
        );
        let connecting = (self.connect)(origin.to_uri(), home);
        let connected = match self.config.connect_timeout {
            Some(limit) => tokio::time::timeout(limit, connecting)
                .await
                .map_err(|_| Error::new(Kind::ConnectTimeout(limit)))?,
            None => connecting.await,
        };
        // On error `slot` drops here, and a waiter (if any) may try in our place.
        let connected = connected?;
        self.record_opened(origin);
        let conn = Conn::opened(connected, slot, self.config.max_lifetime);
        let remote_addr = conn.socket.as_ref().and_then(SocketHandle::remote_addr);
        tracing::debug!(origin = %origin, conn = conn.id(), remote = ?remote_addr, "opened connection");
        Ok(Checkout {
            conn,
            proven: Duration::ZERO,
            reused: false,
            idle_for: Duration::ZERO,
        })
    }
}

impl<B> Pool<B> {
    /// Until when a checkout that began at `began` may wait, and the limit, for its
    /// error.
    fn wait_until(&self, began: Instant) -> Option<(Instant, Duration)> {
        self.config
            .checkout_timeout
            .map(|limit| (deadline::deadline_after(began, limit), limit))
    }

    /// How long `idle` may have been idle for a request that may not be resent.
    fn unresendable_limit(&self, origin: &Origin, idle: &Idle<B>) -> Duration {
        let evidence = self.evidence(&self.lock().learned, origin);
        deadline::allowed_idle_unresendable(idle.conn.hint_timeout, &evidence, &self.config)
    }

    /// [`hand_out`](Pool::hand_out) again, once the runtime has run: a record that
    /// arrived just before the first look (a TLS session ticket right after the
    /// handshake of a connection opened by `preconnect`, a key update) reaches the
    /// connection's future once the runtime has polled its IO driver, which a yield lets
    /// it do, and, for a connection on a task of its own, once that task has run, which
    /// may take a moment on another worker: a few short pauses, [`LOOK_AGAIN`] at most.
    /// Only on that rare path: the common one has no await.
    async fn look_again(&self, origin: &Origin, idle: Box<Idle<B>>) -> Result<Conn<B>, Refused<B>> {
        tokio::task::yield_now().await;
        let mut idle = *idle;
        let mut pauses = 0;
        loop {
            let last = pauses == LOOK_AGAIN_PAUSES;
            match self.hand_out(origin, idle, Instant::now(), !last) {
                Err(Refused::Unread(again)) => idle = *again,
                looked => return looked,
            }
            pauses += 1;
            tokio::time::sleep(LOOK_AGAIN / LOOK_AGAIN_PAUSES).await;
        }
    }

    /// The last look before a pooled connection is reused: its deadline, a wake of its
    /// parked future, the peek. On failure the connection has been counted and closed,
    /// and its slot is returned, for a connection opened in its place; or, with
    /// `may_look_again`, bytes the connection could not read yet leave it for
    /// [`look_again`](Pool::look_again).
    pub(super) fn hand_out(
        &self,
        origin: &Origin,
        idle: Idle<B>,
        now: Instant,
        may_look_again: bool,
    ) -> Result<Conn<B>, Refused<B>> {
        let since = idle.since();
        let Idle {
            mut conn,
            deadline,
            reason,
        } = idle;
        let idle_for = now.saturating_duration_since(since);
        if now >= deadline {
            // A connection granted to a waiter whose deadline passed on the way.
            return Err(Refused::Closed(
                self.retire(origin, conn, reason, idle_for, ""),
            ));
        }
        if conn.poisoned() {
            // Marked since its check-in; the reaper has not got to it yet.
            let slot = self.retire(origin, conn, Evict::Poisoned, idle_for, "");
            return Err(Refused::Closed(slot));
        }
        if conn.woken_at().is_some() && !conn.read_wake() {
            // The reaper has not got to it yet.
            return Err(Refused::Closed(
                self.retire_ended(origin, conn, since, false),
            ));
        }
        if self.config.check_before_reuse {
            let mut found = conn.peek();
            if found == Some(Liveness::UnexpectedBytes) {
                // Over TLS, a record the session will consume; read it through.
                if !conn.read_wake() {
                    return Err(Refused::Closed(
                        self.retire_ended(origin, conn, since, false),
                    ));
                }
                found = conn.peek();
                if found == Some(Liveness::UnexpectedBytes) {
                    if may_look_again {
                        return Err(Refused::Unread(Box::new(Idle {
                            conn,
                            deadline,
                            reason,
                        })));
                    }
                    // Not readable to the future even then: never written to, but not
                    // learned from either, as it may not be a close at all.
                    return Err(Refused::Closed(self.retire(
                        origin,
                        conn,
                        Evict::ClosedByServer,
                        idle_for,
                        "unread bytes on an idle connection",
                    )));
                }
            }
            if let Some(found @ (Liveness::Closed | Liveness::Error(_))) = found {
                self.observe_server_close(origin, idle_for);
                return Err(Refused::Closed(self.retire(
                    origin,
                    conn,
                    Evict::ClosedByServer,
                    idle_for,
                    found.describe(),
                )));
            }
        }
        self.counters.reuses.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            origin = %origin,
            conn = conn.id(),
            idle_ms = idle_for.as_millis() as u64,
            "reusing pooled connection"
        );
        Ok(conn)
    }
}
