//! Per-origin idle lists, checkout and checkin, and FIFO waiting under
//! `max_connections_per_origin`.
//!
//! Every open (or opening) connection owns a [`Slot`]: dropping the slot, wherever
//! that happens, gives the origin's connection count back and lets the first waiter
//! open a connection in its place. So no path (an error, a cancelled request, a
//! dropped response body) can leak a slot or strand a waiter.
//!
//! A waiting checkout that is dropped (its `checkout_timeout` ran out, or the caller
//! dropped the request) leaves the queue at once, and hands on whatever was granted to
//! it in the meantime. A connection whose response body is still being read stays
//! reachable from the pool (see [`pending`]), so that a caller who sends the next
//! request as soon as the body ends gets the same connection.
//!
//! Locking rule: nothing that owns a connection is dropped while the pool's mutex is
//! held, because dropping a connection's slot takes the mutex. Code that removes
//! connections under the lock moves them out and drops them after unlocking. Nor is a
//! task spawned under the lock: on a runtime that is shutting down, `spawn` drops the
//! task's future at once, and with it what the future owns.

mod conn;
mod idle;
mod learn;
mod learn_map;
mod liveness;
mod pending;
#[cfg(test)]
mod tests;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::client::conn::http1::SendRequest;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::config::PoolConfig;
use crate::connect::SocketHandle;
use crate::error::{Error, Kind};
use crate::info::{Evictions, PoolStats};
use crate::origin::Origin;

pub(crate) use conn::Conn;
pub(crate) use idle::Evict;

/// A freshly opened connection as the connector and handshake produce it.
pub(crate) struct Connected<B> {
    pub(crate) tx: SendRequest<B>,
    pub(crate) socket: Option<SocketHandle>,
    /// hyper's connection future; the pool spawns it.
    pub(crate) driver: Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>,
}

type ConnectFuture<B> = Pin<Box<dyn Future<Output = Result<Connected<B>, Error>> + Send>>;
pub(crate) type ConnectFn<B> = Box<dyn Fn(Uri) -> ConnectFuture<B> + Send + Sync>;

pub(crate) struct Pool<B> {
    state: Mutex<State<B>>,
    config: PoolConfig,
    connect: ConnectFn<B>,
    counters: Counters,
    /// Wakes the reaper early: when an earlier deadline arrives, or the pool drops.
    reaper_wake: Arc<Notify>,
}

struct State<B> {
    origins: HashMap<Origin, OriginState<B>>,
    /// Every idle connection's deadline, so the reaper finds the earliest one without
    /// looking at every origin.
    deadlines: BTreeMap<(Instant, u64), Origin>,
    idle: usize,
    open: usize,
    reaper_running: bool,
    /// Tells a reaper task from the one started after it (see [`idle::reap`]).
    reaper_generation: u64,
    /// Learned server idle timeouts; outlives the origin's connections, bounded in
    /// number.
    learned: learn_map::LearnedOrigins,
    /// When the reaper next drops learned timeouts that have relaxed away.
    next_learned_prune: Option<Instant>,
    /// Names each waiter, so that a cancelled one can be found and removed.
    next_waiter: u64,
}

struct OriginState<B> {
    /// Least recently used at the front; checkout takes from the back.
    idle: VecDeque<Idle<B>>,
    /// Connections open or opening, idle ones included.
    open: usize,
    waiters: VecDeque<Waiter<B>>,
    /// Connections whose response is still being read, shared with their check-in
    /// task (see [`pending`]).
    pending: Vec<Arc<pending::Pending<B>>>,
}

impl<B> Default for OriginState<B> {
    fn default() -> Self {
        OriginState {
            idle: VecDeque::new(),
            open: 0,
            waiters: VecDeque::new(),
            pending: Vec::new(),
        }
    }
}

/// A checkout waiting under `max_connections_per_origin`, in FIFO order.
struct Waiter<B> {
    id: u64,
    tx: oneshot::Sender<Grant<B>>,
}

struct Idle<B> {
    conn: Conn<B>,
    since: Instant,
    deadline: Instant,
    /// Which bound set the deadline, reported when it passes.
    reason: Evict,
}

/// What a waiting checkout receives: a connection someone just finished with, or the
/// right to open a new one.
enum Grant<B> {
    Conn(Conn<B>),
    Permit(Slot<B>),
}

/// One unit of an origin's connection count. See the module docs.
pub(crate) struct Slot<B> {
    pool: Weak<Pool<B>>,
    origin: Origin,
    armed: bool,
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

/// A connection handed out by [`Pool::checkout`].
pub(crate) struct Checkout<B> {
    pub(crate) conn: Conn<B>,
    pub(crate) reused: bool,
    pub(crate) idle_for: Duration,
}

#[derive(Default)]
struct Counters {
    opened: AtomicU64,
    reuses: AtomicU64,
    waiting: AtomicUsize,
    evictions: [AtomicU64; Evict::COUNT],
}

enum Step<'a, B: Send + 'static> {
    Reuse {
        conn: Conn<B>,
        since: Instant,
    },
    Connect(Slot<B>),
    /// A fresh connection at `max_connections_per_origin`: close this idle one and
    /// open the new one in its slot.
    Replace(Idle<B>),
    Wait(Waiting<'a, B>),
}

/// What a check-in returns to the pool.
enum Returned<'a, B> {
    Conn(Conn<B>),
    /// A connection in its check-in task's cell, if a checkout has not taken it.
    Pending(&'a pending::Pending<B>),
}

/// A connection the pool closes after releasing its lock.
struct Closing<B> {
    conn: Conn<B>,
    since: Instant,
    reason: Evict,
    detail: &'static str,
}

/// A checkout's place in the FIFO queue and the receiving end of its grant.
///
/// Dropping it before the grant arrives (the checkout timed out, or the caller dropped
/// the request) removes the waiter from the queue; a grant that raced with the
/// cancellation is not lost: a connection is checked in again, a permit passes to the
/// next waiter. Keeps the `waiting` gauge, however the wait ends.
struct Waiting<'a, B: Send + 'static> {
    pool: &'a Arc<Pool<B>>,
    origin: &'a Origin,
    id: u64,
    rx: oneshot::Receiver<Grant<B>>,
    finished: bool,
}

impl<'a, B: Send + 'static> Waiting<'a, B> {
    fn new(
        pool: &'a Arc<Pool<B>>,
        origin: &'a Origin,
        id: u64,
        rx: oneshot::Receiver<Grant<B>>,
    ) -> Self {
        pool.counters.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting {
            pool,
            origin,
            id,
            rx,
            finished: false,
        }
    }
}

impl<B: Send + 'static> Future for Waiting<'_, B> {
    type Output = Result<Grant<B>, oneshot::error::RecvError>;

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
            return;
        }
        // After `close`, every send fails and hands the grant back to the sender, which
        // offers it to the next waiter; a grant sent before is still in the channel.
        self.rx.close();
        let raced = self.rx.try_recv().ok();
        let removed = {
            let mut state = self.pool.lock();
            state.origins.get_mut(self.origin).and_then(|entry| {
                let position = entry.waiters.iter().position(|w| w.id == self.id)?;
                entry.waiters.remove(position)
            })
        };
        drop(removed);
        // Outside the lock: both paths below take it.
        match raced {
            Some(Grant::Conn(conn)) => self.pool.checkin(conn, true),
            // Dropping the slot passes it to the next waiter.
            Some(Grant::Permit(slot)) => drop(slot),
            None => {}
        }
    }
}

fn next_connection_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl<B: Send + 'static> Pool<B> {
    pub(crate) fn new(config: PoolConfig, connect: ConnectFn<B>) -> Arc<Pool<B>> {
        Arc::new(Pool {
            state: Mutex::new(State {
                origins: HashMap::new(),
                deadlines: BTreeMap::new(),
                idle: 0,
                open: 0,
                reaper_running: false,
                reaper_generation: 0,
                learned: learn_map::LearnedOrigins::new(),
                next_learned_prune: None,
                next_waiter: 0,
            }),
            config,
            connect,
            counters: Counters::default(),
            reaper_wake: Arc::new(Notify::new()),
        })
    }

    /// A connection for `origin`: the most recently idled one that is still good, one
    /// whose response has just been read to its end (see [`pending`]), a new one, or
    /// (at `max_connections_per_origin`) the first one freed, in FIFO order.
    ///
    /// `fresh` skips the idle list: a resend after a stale-connection failure goes on a
    /// new connection, as the other idle ones may be just as stale. At
    /// `max_connections_per_origin` it closes the least recently used idle connection
    /// and opens the new one in its place; with none idle, it takes the first
    /// connection freed, which has just finished a response.
    pub(crate) async fn checkout(
        self: &Arc<Self>,
        origin: &Origin,
        fresh: bool,
    ) -> Result<Checkout<B>, Error> {
        loop {
            let mut closing = Vec::new();
            let step = self.next_step(origin, fresh, &mut closing);
            let now = Instant::now();
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
            match step {
                Step::Reuse { conn, since } => {
                    let idle_for = now.saturating_duration_since(since);
                    if let Some(conn) = self.hand_out(origin, conn, idle_for) {
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
                    self.count_eviction(origin, &idle.conn, Evict::ConnectionLimit, idle_for, "");
                    return self.connect(origin, idle.conn.into_slot()).await;
                }
                Step::Wait(mut waiting) => {
                    let grant = match self.config.checkout_timeout {
                        Some(limit) => tokio::time::timeout(limit, &mut waiting)
                            .await
                            .map_err(|_| Error::new(Kind::CheckoutTimeout(limit)))?,
                        None => (&mut waiting).await,
                    };
                    drop(waiting);
                    match grant {
                        Ok(Grant::Conn(conn)) => {
                            if let Some(conn) = self.hand_out(origin, conn, Duration::ZERO) {
                                return Ok(Checkout {
                                    conn,
                                    reused: true,
                                    idle_for: Duration::ZERO,
                                });
                            }
                        }
                        Ok(Grant::Permit(slot)) => return self.connect(origin, slot).await,
                        // Senders are only dropped with the pool, which `self` keeps
                        // alive; should that ever change, waiting again is still right.
                        Err(_) => {}
                    }
                }
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
            deadlines,
            idle,
            open,
            learned,
            next_waiter,
            ..
        } = &mut *guard;
        let now = Instant::now();
        let entry = match origins.get_mut(origin) {
            Some(entry) => entry,
            None => origins.entry(origin.clone()).or_default(),
        };
        if !fresh {
            while let Some(candidate) = entry.idle.pop_back() {
                deadlines.remove(&(candidate.deadline, candidate.conn.id));
                *idle -= 1;
                // The reaper may not have run yet: never hand out an expired one.
                if now >= candidate.deadline {
                    closing.push(Closing {
                        reason: candidate.reason,
                        conn: candidate.conn,
                        since: candidate.since,
                        detail: "",
                    });
                } else if candidate.conn.tx.is_closed() {
                    closing.push(Closing {
                        conn: candidate.conn,
                        since: candidate.since,
                        reason: Evict::ClosedByServer,
                        detail: "connection task ended",
                    });
                } else {
                    return Step::Reuse {
                        conn: candidate.conn,
                        since: candidate.since,
                    };
                }
            }
            // A waiter comes first: the connection is checked in to it in a moment.
            if entry.waiters.is_empty() && !entry.pending.is_empty() {
                let learned = learned_for(learned, origin, now, &self.config);
                if let Some(conn) = take_ready_pending(entry, &self.config, now, learned, closing) {
                    return Step::Reuse { conn, since: now };
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
            return Step::Connect(Slot {
                pool: Arc::downgrade(self),
                origin: origin.clone(),
                armed: true,
            });
        }
        if fresh {
            if let Some(lru) = entry.idle.pop_front() {
                deadlines.remove(&(lru.deadline, lru.conn.id));
                *idle -= 1;
                return Step::Replace(lru);
            }
        }
        let (tx, rx) = oneshot::channel();
        let id = *next_waiter;
        *next_waiter = id.wrapping_add(1);
        entry.waiters.push_back(Waiter { id, tx });
        Step::Wait(Waiting::new(self, origin, id, rx))
    }

    async fn connect(
        self: &Arc<Self>,
        origin: &Origin,
        slot: Slot<B>,
    ) -> Result<Checkout<B>, Error> {
        let connecting = (self.connect)(origin.to_uri());
        let connected = match self.config.connect_timeout {
            Some(limit) => tokio::time::timeout(limit, connecting)
                .await
                .map_err(|_| Error::new(Kind::ConnectTimeout(limit)))?,
            None => connecting.await,
        };
        // On error `slot` drops here, and a waiter (if any) may try in our place.
        let Connected { tx, socket, driver } = connected?;
        let id = next_connection_id();
        let pool = Arc::downgrade(self);
        let task_origin = origin.clone();
        tokio::spawn(async move {
            if let Err(error) = driver.await {
                tracing::debug!(origin = %task_origin, conn = id, %error, "connection ended with an error");
            }
            if let Some(pool) = pool.upgrade() {
                pool.connection_ended(&task_origin, id);
            }
        });
        self.counters.opened.fetch_add(1, Ordering::Relaxed);
        let remote_addr = socket.as_ref().and_then(SocketHandle::remote_addr);
        tracing::debug!(origin = %origin, conn = id, remote = ?remote_addr, "opened connection");
        let now = Instant::now();
        let expires = self
            .config
            .max_lifetime
            .map(|l| idle::deadline_after(now, idle::jittered_lifetime(l, id)));
        Ok(Checkout {
            conn: Conn::new(tx, id, socket, expires, slot),
            reused: false,
            idle_for: Duration::ZERO,
        })
    }

    /// Takes back a connection whose response has been read to the end
    /// (`reusable`), or that hyper closed (`!reusable`).
    pub(crate) fn checkin(self: &Arc<Self>, conn: Conn<B>, reusable: bool) {
        self.checkin_inner(Returned::Conn(conn), reusable);
    }

    /// [`checkin`](Pool::checkin) from a connection's check-in task: the connection is
    /// moved out of its cell under the pool's lock, unless a checkout took it.
    fn checkin_pending(self: &Arc<Self>, pending: &pending::Pending<B>, reusable: bool) {
        self.checkin_inner(Returned::Pending(pending), reusable);
    }

    fn checkin_inner(self: &Arc<Self>, returned: Returned<'_, B>, reusable: bool) {
        let now = Instant::now();
        let mut guard = self.lock();
        let mut conn = match returned {
            Returned::Conn(conn) => conn,
            Returned::Pending(pending) => {
                let Some(conn) = pending.take() else {
                    return;
                };
                if let Some(entry) = guard.origins.get_mut(conn.origin()) {
                    remove_pending(entry, pending.id);
                }
                conn
            }
        };
        let origin = conn.origin().clone();
        if !reusable {
            drop(guard);
            if conn.close_requested() {
                self.evict(&origin, conn, Evict::ConnectionClose, Duration::ZERO, "");
            }
            return;
        }
        let mut displaced = None;
        let mut start_reaper = None;
        {
            let state = &mut *guard;
            let learned = learned_for(&mut state.learned, &origin, now, &self.config);
            if let Some(reason) = idle::retire_reason(&conn, &self.config, now, learned) {
                drop(guard);
                self.evict(&origin, conn, reason, Duration::ZERO, "");
                return;
            }
            let (deadline, reason) = idle::deadline(&conn, &self.config, now, learned);
            let entry = state
                .origins
                .get_mut(&origin)
                .expect("an origin entry lives as long as one of its slots");
            while let Some(waiter) = entry.waiters.pop_front() {
                match waiter.tx.send(Grant::Conn(conn)) {
                    Ok(()) => return,
                    Err(Grant::Conn(returned)) => conn = returned,
                    Err(Grant::Permit(_)) => unreachable!("a Conn grant comes back as sent"),
                }
            }
            if self.config.max_idle_per_origin == 0 {
                displaced = Some(Idle {
                    conn,
                    since: now,
                    deadline,
                    reason,
                });
            } else {
                if entry.idle.len() >= self.config.max_idle_per_origin {
                    let lru = entry
                        .idle
                        .pop_front()
                        .expect("the idle list is at its maximum, which is at least 1");
                    state.deadlines.remove(&(lru.deadline, lru.conn.id));
                    state.idle -= 1;
                    displaced = Some(lru);
                }
                let key = (deadline, conn.id);
                entry.idle.push_back(Idle {
                    conn,
                    since: now,
                    deadline,
                    reason,
                });
                state.idle += 1;
                state.deadlines.insert(key, origin.clone());
                if !state.reaper_running {
                    state.reaper_running = true;
                    state.reaper_generation = state.reaper_generation.wrapping_add(1);
                    start_reaper = Some(state.reaper_generation);
                } else if state.deadlines.keys().next() == Some(&key) {
                    // The reaper sleeps until a later deadline; this one comes first.
                    self.reaper_wake.notify_one();
                }
            }
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

    /// Starts reaper `generation` on the current runtime. Never under the lock: on a
    /// runtime that is shutting down, `spawn` drops the task at once, and its guard
    /// takes the lock to record that the reaper ended.
    fn start_reaper(self: &Arc<Self>, generation: u64) {
        let reaper = idle::reap(
            Arc::downgrade(self),
            Arc::clone(&self.reaper_wake),
            generation,
        );
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(reaper)),
            // A check-in outside any runtime (a drop in plain code): dropping the
            // reaper marks the pool as having none, so the next check-in on a runtime
            // starts one; checkout refuses expired connections meanwhile.
            Err(_) => drop(reaper),
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

    /// The last look before a pooled connection is reused. `None` when it was found
    /// closed (and has been evicted).
    fn hand_out(&self, origin: &Origin, conn: Conn<B>, idle_for: Duration) -> Option<Conn<B>> {
        if self.config.check_before_reuse {
            if let Err(liveness) = liveness::check(&conn) {
                self.observe_server_close(origin, idle_for);
                self.evict(
                    origin,
                    conn,
                    Evict::ClosedByServer,
                    idle_for,
                    liveness.describe(),
                );
                return None;
            }
        }
        self.counters.reuses.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            origin = %origin,
            conn = conn.id,
            idle_ms = idle_for.as_millis() as u64,
            "reusing pooled connection"
        );
        Some(conn)
    }

    /// Drops every idle connection whose deadline has passed, and now and then the
    /// learned timeouts that have relaxed away; returns when to run again, if ever.
    pub(crate) fn evict_expired(&self, now: Instant) -> Option<Instant> {
        let mut expired = Vec::new();
        let next = {
            let mut guard = self.lock();
            let state = &mut *guard;
            while let Some((&(deadline, id), _)) = state.deadlines.first_key_value() {
                if deadline > now {
                    break;
                }
                let origin = state
                    .deadlines
                    .remove(&(deadline, id))
                    .expect("the key was just read");
                if let Some(idle) = take_idle(state, &origin, id) {
                    expired.push((origin, idle));
                }
            }
            if state.next_learned_prune.is_some_and(|at| now >= at) {
                state.learned.prune(now, self.config.idle_timeout);
                state.next_learned_prune = if state.learned.is_empty() {
                    None
                } else {
                    now.checked_add(learn_map::PRUNE_INTERVAL)
                };
            }
            let next_deadline = state.deadlines.keys().next().map(|&(deadline, _)| deadline);
            match (next_deadline, state.next_learned_prune) {
                (Some(deadline), Some(prune)) => Some(deadline.min(prune)),
                (deadline, prune) => deadline.or(prune),
            }
        };
        for (origin, idle) in expired {
            let idle_for = now.saturating_duration_since(idle.since);
            self.evict(&origin, idle.conn, idle.reason, idle_for, "");
        }
        next
    }

    /// Reaper `generation` ended (or never started): the next check-in starts another,
    /// unless a newer one runs already.
    fn reaper_ended(&self, generation: u64) {
        let mut state = self.lock();
        if state.reaper_generation == generation {
            state.reaper_running = false;
        }
    }

    /// A check-in task gave up connection `id` of `origin` (not ready after all, or
    /// its runtime shut down): it is no longer pending.
    fn forget_pending(&self, origin: &Origin, id: u64) {
        let mut state = self.lock();
        if let Some(entry) = state.origins.get_mut(origin) {
            remove_pending(entry, id);
        }
    }

    /// hyper's connection task for connection `id` ended. If the connection was idle,
    /// the server closed it.
    fn connection_ended(&self, origin: &Origin, id: u64) {
        let idle = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let idle = take_idle(state, origin, id);
            if let Some(idle) = &idle {
                state.deadlines.remove(&(idle.deadline, id));
            }
            idle
        };
        if let Some(idle) = idle {
            let idle_for = Instant::now().saturating_duration_since(idle.since);
            self.observe_server_close(origin, idle_for);
            self.evict(
                origin,
                idle.conn,
                Evict::ClosedByServer,
                idle_for,
                "closed while idle",
            );
        }
    }

    /// The server closed a connection of `origin` that had been idle for `idle_for`
    /// (or a request met one that was closing): an observation of its idle timer.
    pub(crate) fn observe_server_close(&self, origin: &Origin, idle_for: Duration) {
        if !self.config.learn_idle_timeout {
            return;
        }
        if idle_for < self.config.keep_alive_margin {
            // Sooner than the margin: nothing the pool could act on, and more likely a
            // crash, a restart or a deliberate reset than an idle timer.
            tracing::debug!(
                origin = %origin,
                observed_ms = idle_for.as_millis() as u64,
                "not learning from a close shorter than keep_alive_margin"
            );
            return;
        }
        let now = Instant::now();
        let (changed, wake_reaper) = {
            let mut state = self.lock();
            let changed = state.learned.observe(origin, idle_for, now);
            // A reaper asleep with no deadline must still come back to prune.
            let schedule = state.next_learned_prune.is_none();
            if schedule {
                state.next_learned_prune = now.checked_add(learn_map::PRUNE_INTERVAL);
            }
            (changed, schedule && state.reaper_running)
        };
        if wake_reaper {
            self.reaper_wake.notify_one();
        }
        if let Some(value) = changed {
            tracing::info!(
                origin = %origin,
                learned_ms = value.as_millis() as u64,
                observed_ms = idle_for.as_millis() as u64,
                "learned the server's idle timeout"
            );
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

    fn count_eviction(
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
            let slot = Slot {
                pool: weak.clone(),
                origin: origin.clone(),
                armed: true,
            };
            match waiter.tx.send(Grant::Permit(slot)) {
                Ok(()) => return,
                Err(Grant::Permit(mut slot)) => slot.armed = false,
                Err(Grant::Conn(_)) => unreachable!("a Permit grant comes back as sent"),
            }
        }
        origin_state.open -= 1;
        state.open -= 1;
        if origin_state.open == 0 {
            entry.remove();
        }
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let now = Instant::now();
        let (idle, open, learned) = {
            let state = self.lock();
            let learned = state.learned.snapshot(now, self.config.idle_timeout);
            (state.idle, state.open, learned)
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
                learned_timeout: e(Evict::LearnedTimeout),
                cancelled: e(Evict::Cancelled),
            },
            learned_idle_timeouts: learned,
            ..PoolStats::default()
        }
    }
}

/// The learned idle timeout in force for `origin`, if any; forgets one that has
/// relaxed up to the idle timeout.
fn learned_for(
    learned: &mut learn_map::LearnedOrigins,
    origin: &Origin,
    now: Instant,
    config: &PoolConfig,
) -> Option<Duration> {
    if !config.learn_idle_timeout || learned.is_empty() {
        return None;
    }
    learned.effective(origin, now, config.idle_timeout)
}

/// A connection of `entry` whose response has been read to its end, taken from its
/// check-in task, if one passes the checks a check-in makes. Ones that fail go to
/// `closing`.
fn take_ready_pending<B>(
    entry: &mut OriginState<B>,
    config: &PoolConfig,
    now: Instant,
    learned: Option<Duration>,
    closing: &mut Vec<Closing<B>>,
) -> Option<Conn<B>> {
    // The most recent first: the likeliest to have just finished.
    let mut i = entry.pending.len();
    while i > 0 {
        i -= 1;
        let Some(conn) = entry.pending[i].take_if_ready() else {
            continue;
        };
        entry.pending.swap_remove(i);
        let retire = idle::retire_reason(&conn, config, now, learned).or_else(|| {
            let (deadline, reason) = idle::deadline(&conn, config, now, learned);
            (deadline <= now).then_some(reason)
        });
        match retire {
            Some(reason) => closing.push(Closing {
                conn,
                since: now,
                reason,
                detail: "",
            }),
            None => return Some(conn),
        }
    }
    None
}

fn remove_pending<B>(entry: &mut OriginState<B>, id: u64) {
    if let Some(position) = entry.pending.iter().position(|pending| pending.id == id) {
        entry.pending.swap_remove(position);
    }
}

/// Removes idle connection `id` of `origin` from its idle list (not from the deadline
/// index: callers do that, as they know its key).
fn take_idle<B>(state: &mut State<B>, origin: &Origin, id: u64) -> Option<Idle<B>> {
    let entry = state.origins.get_mut(origin)?;
    let position = entry.idle.iter().position(|idle| idle.conn.id == id)?;
    let idle = entry.idle.remove(position)?;
    state.idle -= 1;
    Some(idle)
}

impl<B> Drop for Pool<B> {
    fn drop(&mut self) {
        // Let a reaper that sleeps with no deadline see that the pool is gone.
        self.reaper_wake.notify_one();
    }
}
