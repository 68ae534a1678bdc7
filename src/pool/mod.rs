//! The connection pool: per-origin idle lists, checkout and check-in.
//!
//! Where it sits: the client (under the retry layer) asks [`Pool::checkout`] for a
//! connection to an origin, sends one request on it, and hands it back through
//! [`Conn::check_in_when_ready`] once the response body has been read, which ends in
//! [`Pool::checkin`]. The pool imports only modules below it: config, error, info,
//! origin, the header parsing, and the socket handle and its peek from `connect` and
//! `io`.
//!
//! This module is the facade: the [`Pool`] and its lock-protected [`State`], the
//! checkout and check-in paths. One concern per file below it:
//! - [`slots`]: an origin's connection count as [`Slot`]s, the FIFO queue of waiting
//!   checkouts, and what happens when a waiter is cancelled;
//! - [`conn`]: one connection, how it is opened, and the end of its task;
//! - [`driver`]: who polls hyper's connection future: the request's own task while
//!   the connection is in use, a task of its own once the server has news for an idle
//!   connection or a body outlives its request;
//! - [`idle`]: each origin's idle list and the pool-wide deadline index;
//! - [`deadline`]: when an idle connection must close, as pure functions;
//! - [`reaper`]: the task that closes idle connections at their deadlines;
//! - [`liveness`]: the peek at a socket before reuse;
//! - [`pending`]: connections whose response body is still being read;
//! - [`learn`]: the servers' idle timeouts learned from the closes observed;
//! - [`stats`]: counters, eviction reasons and the `PoolStats` snapshot.
//!
//! Locking rule: nothing that owns a connection is dropped while the pool's mutex is
//! held, because dropping a connection's slot takes the mutex. Code that removes
//! connections under the lock moves them out and drops them after unlocking. Nor is a
//! task spawned under the lock: on a runtime that is shutting down, `spawn` drops the
//! task's future at once, and with it what the future owns. A pending connection's
//! cell is locked only after the pool's lock, never before (see [`pending`]).

mod conn;
mod deadline;
mod driver;
mod idle;
mod learn;
mod liveness;
mod pending;
mod reaper;
mod slots;
mod stats;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::PoolConfig;
use crate::error::Error;
use crate::origin::Origin;

pub(crate) use conn::{Conn, ConnectFn, Connected};
pub(crate) use stats::Evict;

use idle::{Idle, IdleIndex};
use pending::Returned;
use slots::{Grant, Slot, Waiter, Waiting};
use stats::Closing;

/// One client's connections, shared by its clones. See the module docs.
pub(crate) struct Pool<B> {
    state: Mutex<State<B>>,
    config: PoolConfig,
    connect: ConnectFn<B>,
    counters: Arc<stats::Counters>,
    /// Wakes the reaper early: when an earlier deadline arrives, an idle connection's
    /// parked future is woken, or the pool drops.
    reaper_wake: Arc<Notify>,
    /// Idle connections whose parked future was woken (see [`driver`]).
    woken: Arc<driver::Woken>,
}

/// Everything the pool's mutex guards.
struct State<B> {
    origins: HashMap<Origin, OriginState<B>>,
    /// Every idle connection's deadline, and their count.
    idle: IdleIndex,
    /// Connections open or opening, idle ones included.
    open: usize,
    reaper_running: bool,
    /// When the running reaper wakes next, as it computed under the lock before going
    /// to sleep (`None`: only when notified). A check-in wakes it only for a deadline
    /// before this one, not on every check-in.
    reaper_wakes_at: Option<Instant>,
    /// Tells a reaper task from the one started after it (see [`reaper`]).
    reaper_generation: u64,
    /// Learned server idle timeouts; outlives the origin's connections, bounded in
    /// number.
    learned: learn::LearnedOrigins,
    /// When the reaper next drops learned timeouts that have relaxed away.
    next_learned_prune: Option<Instant>,
    /// Names each waiter, so that a cancelled one can be found and removed.
    next_waiter: u64,
}

/// One origin's connections and waiters.
struct OriginState<B> {
    /// The origin, shared by every slot, waker and deadline entry of its connections
    /// (see [`Slot`]).
    origin: Arc<Origin>,
    /// Least recently used at the front; checkout takes from the back.
    idle: VecDeque<Idle<B>>,
    /// Connections open or opening, idle ones included.
    open: usize,
    waiters: VecDeque<Waiter<B>>,
    /// Connections whose response is still being read, shared with their check-in
    /// task (see [`pending`]).
    pending: Vec<Arc<pending::Pending<B>>>,
}

impl<B> OriginState<B> {
    fn new(origin: &Origin) -> Self {
        OriginState {
            origin: Arc::new(origin.clone()),
            idle: VecDeque::new(),
            open: 0,
            waiters: VecDeque::new(),
            pending: Vec::new(),
        }
    }
}

/// A connection handed out by [`Pool::checkout`].
pub(crate) struct Checkout<B> {
    pub(crate) conn: Conn<B>,
    pub(crate) reused: bool,
    pub(crate) idle_for: Duration,
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
    pub(crate) fn new(config: PoolConfig, connect: ConnectFn<B>) -> Arc<Pool<B>> {
        let reaper_wake = Arc::new(Notify::new());
        Arc::new(Pool {
            state: Mutex::new(State {
                origins: HashMap::new(),
                idle: IdleIndex::default(),
                open: 0,
                reaper_running: false,
                reaper_wakes_at: None,
                reaper_generation: 0,
                learned: learn::LearnedOrigins::new(),
                next_learned_prune: None,
                next_waiter: 0,
            }),
            config,
            connect,
            counters: Arc::default(),
            woken: Arc::new(driver::Woken::new(Arc::clone(&reaper_wake))),
            reaper_wake,
        })
    }

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
    pub(crate) async fn checkout(
        self: &Arc<Self>,
        origin: &Origin,
        fresh: bool,
    ) -> Result<Checkout<B>, Error> {
        let wait_until = self
            .config
            .checkout_timeout
            .map(|limit| (deadline::deadline_after(Instant::now(), limit), limit));
        loop {
            let mut closing = Vec::new();
            let step = self.next_step(origin, fresh, &mut closing);
            let now = Instant::now();
            self.close_all(origin, closing, now);
            match step {
                Step::Reuse(idle) => {
                    let idle_for = now.saturating_duration_since(idle.since);
                    // On failure the slot drops here, and the next idle one is tried.
                    if let Ok(conn) = self.hand_out(origin, idle, now) {
                        return Ok(Checkout {
                            conn,
                            reused: true,
                            idle_for,
                        });
                    }
                }
                Step::Connect(slot) => return self.connect(origin, slot).await,
                Step::Replace(idle) => {
                    let idle_for = now.saturating_duration_since(idle.since);
                    let slot = self.retire(origin, idle.conn, Evict::ConnectionLimit, idle_for, "");
                    return self.connect(origin, slot).await;
                }
                Step::Wait(waiting) => match waiting.granted(wait_until).await? {
                    Some(Grant::Conn(idle)) => {
                        let now = Instant::now();
                        let idle_for = now.saturating_duration_since(idle.since);
                        if fresh {
                            // A resend asked for a new connection, not a reused one.
                            let slot = self.retire(
                                origin,
                                idle.conn,
                                Evict::ConnectionLimit,
                                idle_for,
                                "",
                            );
                            return self.connect(origin, slot).await;
                        }
                        return match self.hand_out(origin, idle, now) {
                            Ok(conn) => Ok(Checkout {
                                conn,
                                reused: true,
                                idle_for,
                            }),
                            // Its turn stays its turn: a new connection in the slot.
                            Err(slot) => self.connect(origin, slot).await,
                        };
                    }
                    Some(Grant::Permit(slot)) => return self.connect(origin, slot).await,
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
        closing: &mut Vec<Closing<B>>,
    ) -> Step<'a, B> {
        let mut guard = self.lock();
        let State {
            origins,
            idle,
            open,
            learned,
            next_waiter,
            ..
        } = &mut *guard;
        let now = Instant::now();
        let entry = match origins.get_mut(origin) {
            Some(entry) => entry,
            None => origins
                .entry(origin.clone())
                .or_insert_with(|| OriginState::new(origin)),
        };
        if !fresh {
            while let Some(candidate) = entry.idle.pop_back() {
                idle.remove(&candidate);
                // The reaper may not have run yet: never hand out an expired one.
                if now >= candidate.deadline {
                    closing.push(Closing {
                        reason: candidate.reason,
                        conn: candidate.conn,
                        since: candidate.since,
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
                        conn: candidate.conn,
                        since: candidate.since,
                        reason,
                        detail: "connection task ended",
                    });
                } else {
                    return Step::Reuse(candidate);
                }
            }
            // A waiter comes first: the connection is checked in to it in a moment.
            if entry.waiters.is_empty() && !entry.pending.is_empty() {
                let learned = learn::learned_for(learned, origin, now, &self.config);
                let ready = pending::take_ready_pending(entry, &self.config, now, learned, closing);
                if let Some(idle) = ready {
                    return Step::Reuse(idle);
                }
            }
        }
        let at_max = self
            .config
            .max_connections_per_origin
            .is_some_and(|max| entry.open >= max);
        if !at_max {
            entry.open += 1;
            *open += 1;
            return Step::Connect(Slot::new(Arc::downgrade(self), Arc::clone(&entry.origin)));
        }
        if fresh {
            if let Some(lru) = entry.idle.pop_front() {
                idle.remove(&lru);
                return Step::Replace(lru);
            }
        }
        Step::Wait(Waiting::enqueue(
            self,
            origin,
            &mut entry.waiters,
            next_waiter,
        ))
    }

    /// Takes back a connection whose response has been read to the end
    /// (`reusable`), or that hyper closed (`!reusable`).
    pub(crate) fn checkin(self: &Arc<Self>, conn: Conn<B>, reusable: bool) {
        self.checkin_inner(Returned::Conn(conn), reusable);
    }

    fn checkin_inner(self: &Arc<Self>, returned: Returned<'_, B>, reusable: bool) {
        let now = Instant::now();
        let mut guard = self.lock();
        let conn = match returned {
            Returned::Conn(conn) => conn,
            Returned::Pending(pending) => {
                let Some(conn) = pending.take() else {
                    return;
                };
                if let Some(entry) = guard.origins.get_mut(conn.origin()) {
                    pending::remove_pending(entry, pending.id);
                }
                conn
            }
        };
        let origin = Arc::clone(conn.shared_origin());
        let since = conn.idle_since;
        if !reusable {
            drop(guard);
            self.close_unusable(&origin, conn, now);
            return;
        }
        let state = &mut *guard;
        let learned = learn::learned_for(&mut state.learned, &origin, now, &self.config);
        // Counted from when the response head arrived, not from now: the caller may
        // have taken its time reading the body, while the server's timer ran.
        let (deadline, reason) = deadline::deadline(&conn, &self.config, since, learned);
        let retire = deadline::retire_reason(&conn, &self.config, now, learned)
            .or((deadline <= now).then_some(reason));
        if let Some(reason) = retire {
            drop(guard);
            let idle_for = now.saturating_duration_since(since);
            self.evict(&origin, conn, reason, idle_for, "");
            return;
        }
        let entry = state
            .origins
            .get_mut(&*origin)
            .expect("an origin entry lives as long as one of its slots");
        let mut idle = Idle {
            conn,
            since,
            deadline,
            reason,
        };
        // Only when someone waits: a round trip through `grant_conn` copies the
        // connection twice, on every check-in.
        if !entry.waiters.is_empty() {
            match slots::grant_conn(&mut entry.waiters, idle) {
                Some(not_taken) => idle = not_taken,
                None => return,
            }
        }
        let mut displaced = None;
        let mut start_reaper = None;
        if self.config.max_idle_per_origin == 0 {
            displaced = Some(idle);
        } else {
            if entry.idle.len() >= self.config.max_idle_per_origin {
                displaced = entry.idle.pop_front();
                if let Some(lru) = &displaced {
                    state.idle.remove(lru);
                }
            }
            let key = idle.key();
            entry.idle.push_back(idle);
            state.idle.insert(key, &origin);
            start_reaper = self.reaper_for_new_deadline(state, key);
        }
        // Before closing the displaced connection: its slot takes the lock.
        drop(guard);
        if let Some(generation) = start_reaper {
            self.start_reaper(generation);
        }
        if let Some(idle) = displaced {
            let idle_for = now.saturating_duration_since(idle.since);
            self.evict(&origin, idle.conn, Evict::IdleListFull, idle_for, "");
        }
    }
}

impl<B> Pool<B> {
    fn lock(&self) -> MutexGuard<'_, State<B>> {
        // No code panics while holding the lock, but if some day one does, the
        // counts are still better than a cascade of panics in every request.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn config(&self) -> &PoolConfig {
        &self.config
    }
}

impl<B> Drop for Pool<B> {
    fn drop(&mut self) {
        // Let a reaper that sleeps with no deadline see that the pool is gone.
        self.reaper_wake.notify_one();
    }
}
