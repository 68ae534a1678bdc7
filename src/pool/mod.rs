//! Per-origin idle lists, checkout and checkin, and FIFO waiting under
//! `max_connections_per_origin`.
//!
//! Every open (or opening) connection owns a [`Slot`]: dropping the slot, wherever
//! that happens, gives the origin's connection count back and lets the first waiter
//! open a connection in its place. So no path (an error, a cancelled request, a
//! dropped response body) can leak a slot or strand a waiter.
//!
//! Locking rule: nothing that owns a connection is dropped while the pool's mutex is
//! held, because dropping a connection's slot takes the mutex. Code that removes
//! connections under the lock moves them out and drops them after unlocking.

mod conn;
mod idle;
mod learn;
mod liveness;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use http::Uri;
use hyper::client::conn::http1::SendRequest;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::builder::PoolConfig;
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
    /// Learned server idle timeouts; outlives the origin's connections.
    learned: HashMap<Origin, learn::Learned>,
}

struct OriginState<B> {
    /// Least recently used at the front; checkout takes from the back.
    idle: VecDeque<Idle<B>>,
    /// Connections open or opening, idle ones included.
    open: usize,
    waiters: VecDeque<oneshot::Sender<Grant<B>>>,
}

impl<B> Default for OriginState<B> {
    fn default() -> Self {
        OriginState {
            idle: VecDeque::new(),
            open: 0,
            waiters: VecDeque::new(),
        }
    }
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

enum Step<B> {
    Reuse(Idle<B>),
    Connect(Slot<B>),
    Wait(oneshot::Receiver<Grant<B>>),
}

/// Decrements the waiting gauge however the wait ends (granted, timed out, cancelled).
struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
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
                learned: HashMap::new(),
            }),
            config,
            connect,
            counters: Counters::default(),
            reaper_wake: Arc::new(Notify::new()),
        })
    }

    /// A connection for `origin`: the most recently idled one that is still good, a
    /// new one, or (at `max_connections_per_origin`) the first one freed, in FIFO order.
    ///
    /// `fresh` skips the idle list: a resend after a stale-connection failure goes on a
    /// new connection, as the other idle ones may be just as stale. (At
    /// `max_connections_per_origin` it still takes the first connection freed, which
    /// has just finished a response.)
    pub(crate) async fn checkout(
        self: &Arc<Self>,
        origin: &Origin,
        fresh: bool,
    ) -> Result<Checkout<B>, Error> {
        loop {
            let mut expired = Vec::new();
            let mut observed_close = false;
            let step = {
                let mut guard = self.lock();
                let state = &mut *guard;
                let now = Instant::now();
                let entry = match state.origins.get_mut(origin) {
                    Some(entry) => entry,
                    None => state.origins.entry(origin.clone()).or_default(),
                };
                let mut found = None;
                while let Some(idle) = if fresh { None } else { entry.idle.pop_back() } {
                    state.deadlines.remove(&(idle.deadline, idle.conn.id));
                    state.idle -= 1;
                    // The reaper may not have run yet: never hand out an expired one.
                    if now >= idle.deadline {
                        let reason = idle.reason;
                        expired.push((idle, reason, ""));
                    } else if idle.conn.tx.is_closed() {
                        expired.push((idle, Evict::ClosedByServer, "connection task ended"));
                        observed_close = true;
                    } else {
                        found = Some(idle);
                        break;
                    }
                }
                match found {
                    Some(idle) => Step::Reuse(idle),
                    None if self
                        .config
                        .max_connections_per_origin
                        .map_or(true, |max| entry.open < max) =>
                    {
                        entry.open += 1;
                        state.open += 1;
                        Step::Connect(Slot {
                            pool: Arc::downgrade(self),
                            origin: origin.clone(),
                            armed: true,
                        })
                    }
                    None => {
                        let (tx, rx) = oneshot::channel();
                        entry.waiters.push_back(tx);
                        Step::Wait(rx)
                    }
                }
            };
            let now = Instant::now();
            for (idle, reason, detail) in expired {
                let idle_for = now.saturating_duration_since(idle.since);
                if observed_close && reason == Evict::ClosedByServer {
                    self.observe_server_close(origin, idle_for);
                }
                self.evict(origin, idle.conn, reason, idle_for, detail);
            }
            match step {
                Step::Reuse(idle) => {
                    let idle_for = now.saturating_duration_since(idle.since);
                    if let Some(conn) = self.hand_out(origin, idle.conn, idle_for) {
                        return Ok(Checkout {
                            conn,
                            reused: true,
                            idle_for,
                        });
                    }
                }
                Step::Connect(slot) => return self.connect(origin, slot).await,
                Step::Wait(rx) => {
                    self.counters.waiting.fetch_add(1, Ordering::Relaxed);
                    let waiting = WaitingGuard(&self.counters.waiting);
                    let grant = match self.config.checkout_timeout {
                        Some(limit) => tokio::time::timeout(limit, rx)
                            .await
                            .map_err(|_| Error::new(Kind::CheckoutTimeout(limit)))?,
                        None => rx.await,
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
        let origin = conn.origin().clone();
        let now = Instant::now();
        if !reusable {
            if conn.close_requested() {
                self.evict(&origin, conn, Evict::ConnectionClose, Duration::ZERO, "");
            }
            return;
        }
        let mut conn = conn;
        let mut displaced = None;
        {
            let mut guard = self.lock();
            let state = &mut *guard;
            let learned = learned_for(state, &origin, now, &self.config);
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
                match waiter.send(Grant::Conn(conn)) {
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
                    tokio::spawn(idle::reap(
                        Arc::downgrade(self),
                        Arc::clone(&self.reaper_wake),
                    ));
                } else if state.deadlines.keys().next() == Some(&key) {
                    // The reaper sleeps until a later deadline; this one comes first.
                    self.reaper_wake.notify_one();
                }
            }
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

    /// Drops every idle connection whose deadline has passed; returns the next
    /// deadline, if any.
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
            state.deadlines.keys().next().map(|&(deadline, _)| deadline)
        };
        for (origin, idle) in expired {
            let idle_for = now.saturating_duration_since(idle.since);
            self.evict(&origin, idle.conn, idle.reason, idle_for, "");
        }
        next
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
        let changed = {
            let mut state = self.lock();
            match state.learned.get_mut(origin) {
                Some(learned) => learned
                    .observe(idle_for, now)
                    .then(|| learned.effective(now, Duration::MAX)),
                None => {
                    state
                        .learned
                        .insert(origin.clone(), learn::Learned::new(idle_for, now));
                    Some(Some(idle_for))
                }
            }
        };
        if let Some(Some(value)) = changed {
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
        // Dropping the last `SendRequest` makes hyper close the socket: the client
        // sends the FIN.
        drop(conn);
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
            match waiter.send(Grant::Permit(slot)) {
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
            let learned = state
                .learned
                .iter()
                .filter_map(|(origin, learned)| {
                    let value = learned.effective(now, self.config.idle_timeout)?;
                    Some((origin.to_string(), value))
                })
                .collect();
            (state.idle, state.open, learned)
        };
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
                idle_list_full: e(Evict::IdleListFull),
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
fn learned_for<B>(
    state: &mut State<B>,
    origin: &Origin,
    now: Instant,
    config: &PoolConfig,
) -> Option<Duration> {
    if !config.learn_idle_timeout || state.learned.is_empty() {
        return None;
    }
    let effective = state
        .learned
        .get(origin)?
        .effective(now, config.idle_timeout);
    if effective.is_none() {
        state.learned.remove(origin);
    }
    effective
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
