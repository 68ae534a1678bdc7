//! The connection pool: per-origin idle lists, checkout and check-in.
//!
//! Where it sits: the client (under the retry layer) asks [`Pool::checkout`] for a
//! connection to an origin, sends one request on it, and hands it back through
//! [`Conn::check_in_when_ready`] once the response body has been read, which ends in
//! [`Pool::checkin`]. The pool imports only modules below it: config, error, info,
//! origin, the header parsing, and the socket handle and its peek from `io`.
//!
//! What the pool does, one operation per file (all `impl Pool`):
//! - [`checkout`]: how a request gets a connection, and the last look before reuse;
//! - [`checkin`]: how a connection comes back, and how one that ended is closed;
//! - [`evict`]: closing and counting a connection, and the reaper that closes idle
//!   connections at their deadlines;
//! - [`control`]: closing idle connections on the user's request, and when the last
//!   clone of the client goes;
//! - [`warm`]: opening connections ahead of traffic (`Client::preconnect`).
//!
//! One connection's life: [`connection`] (its states, who polls hyper's future, how a
//! wake is read; `connection/end.rs`, who ended it; `connection/waker.rs`, the idle
//! waker and a connection's own task).
//!
//! Plain data structures beside them:
//! - [`slots`]: an origin's connection count as [`Slot`]s and the FIFO queue of
//!   waiters, each with its place and deadline;
//! - [`total`]: the caps across origins, `max_connections_total` (requests waiting
//!   for room in arrival order across origins) and `max_idle_total`;
//! - [`idle`]: each origin's idle list and the pool-wide deadline index;
//! - [`deadline`]: when an idle connection must close, as pure functions;
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

mod checkin;
mod checkout;
mod connection;
mod control;
mod deadline;
mod evict;
mod idle;
mod learn;
mod pending;
mod slots;
mod stats;
#[cfg(test)]
mod tests;
mod total;
mod warm;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::PoolConfig;
use crate::origin::{Origin, OriginMap};

pub(crate) use connection::{Conn, ConnectFn, Connected, DriverHome};
pub(crate) use control::Owner;
pub(crate) use stats::Evict;

use idle::{Idle, IdleIndex};
use slots::{Slot, Waiter};
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
    /// Idle connections whose parked future was woken (see [`connection`]).
    woken: Arc<connection::WokenConns>,
}

/// Everything the pool's mutex guards.
struct State<B> {
    origins: OriginMap<OriginState<B>>,
    /// Every idle connection's deadline, and their count.
    idle: IdleIndex,
    /// Connections open or opening, idle ones included.
    open: usize,
    reaper_running: bool,
    /// When the running reaper wakes next, as it computed under the lock before going
    /// to sleep (`None`: only when notified). A check-in wakes it only for a deadline
    /// before this one, not on every check-in.
    reaper_wakes_at: Option<Instant>,
    /// Tells a reaper task from the one started after it (see [`evict`]).
    reaper_generation: u64,
    /// What is known of each server's idle timer; outlives the origin's connections,
    /// bounded in number.
    learned: learn::LearnedOrigins,
    /// Names each waiter, so that a cancelled one can be found and removed.
    next_waiter: u64,
    /// The last clone of the client has gone: connections coming back are closed (see
    /// [`Owner`]).
    closed: bool,
    /// Checkouts waiting for room under `max_connections_total` (their origin below its
    /// own limit), by waiter id: arrival order across origins (see [`total`]).
    starved: BTreeMap<u64, Arc<Origin>>,
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
    /// The origin's probe: an idle connection out of rotation, kept to learn how long
    /// the server keeps connections (see [`learn`]). Its deadline is in the index (it
    /// counts as idle), at the idle time it tests.
    probe: Option<Idle<B>>,
    /// The origin's [`learn::Evidence`], as in [`State::learned`] (updated with it
    /// under the lock): read on every checkout and check-in without hashing the origin
    /// again.
    evidence: learn::Evidence,
}

impl<B> OriginState<B> {
    fn new(origin: &Origin, evidence: learn::Evidence) -> Self {
        OriginState {
            origin: Arc::new(origin.clone()),
            idle: VecDeque::new(),
            open: 0,
            waiters: VecDeque::new(),
            pending: Vec::new(),
            probe: None,
            evidence,
        }
    }
}

/// A connection handed out by [`Pool::checkout`].
pub(crate) struct Checkout<B> {
    pub(crate) conn: Conn<B>,
    /// What was proven of the origin's timer at checkout: a reuse answered after a
    /// longer idle time proves more (see [`Pool::prove`]).
    pub(crate) proven: Duration,
    pub(crate) reused: bool,
    pub(crate) idle_for: Duration,
}

impl<B: Send + 'static> Pool<B> {
    pub(crate) fn new(config: PoolConfig, connect: ConnectFn<B>) -> Arc<Pool<B>> {
        let reaper_wake = Arc::new(Notify::new());
        Arc::new_cyclic(|pool: &Weak<Pool<B>>| Pool {
            state: Mutex::new(State {
                origins: OriginMap::default(),
                idle: IdleIndex::new(
                    config.max_idle_total.is_some() || config.max_connections_total.is_some(),
                ),
                open: 0,
                reaper_running: false,
                reaper_wakes_at: None,
                reaper_generation: 0,
                learned: learn::LearnedOrigins::new(),
                next_waiter: 0,
                closed: false,
                starved: BTreeMap::new(),
            }),
            config,
            connect,
            counters: Arc::default(),
            woken: Arc::new(connection::WokenConns::new(
                Arc::clone(&reaper_wake),
                pool.clone(),
            )),
            reaper_wake,
        })
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
