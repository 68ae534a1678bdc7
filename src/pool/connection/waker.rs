//! The parts of a connection that outlive a poll: the [`IdleWaker`] a parked
//! connection's future is polled with, the list of connections woken while idle that
//! the reaper reads ([`WokenConns`]), and the task a connection's future moves to
//! ([`OwnTask`]).
//!
//! A parked idle connection must still notice a server's close at once, as a task
//! would: the pool learns the server's idle timeout from when that happens, and a
//! closed connection should not wait for its deadline. Whatever the socket does (a FIN,
//! a RST, stray bytes, a TLS record), and anything else that wakes the future (the
//! runtime shutting down, a poll refused for a spent coop budget), wakes the idle
//! waker, which notes the time, lists the connection and wakes the reaper. The reaper
//! (or a checkout that comes first) reads the wake by polling the future again; see
//! [`Conn::read_wake`](super::Conn::read_wake).
//!
//! The waker is also the connection's last owner: when it goes, the connection has
//! ended wherever its future was, and its lifetime (and, if no path named one, its
//! eviction reason) is recorded.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::Wake;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::origin::Origin;
use crate::pool::stats::{Counters, Evict};
use crate::pool::Pool;

/// hyper's connection future.
pub(crate) type ConnFuture = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// Idle connections whose parked future was woken, for the reaper to look at and close
/// (see the module docs). Shared by the pool and every connection's [`IdleWaker`].
pub(in crate::pool) struct WokenConns {
    conns: Mutex<Vec<(Arc<Origin>, u64)>>,
    reaper: Arc<Notify>,
    /// The pool, told by a connection's task when the connection ends. Kept here, once
    /// per pool, rather than in every task: a task's size is rounded up to a multiple
    /// of 128 bytes, and hyper's connection future plus one pointer is the most that
    /// fits in 768 (see [`DriverTask`]).
    pool: Weak<dyn ConnectionEnds>,
}

/// What a connection's task tells the pool (a [`Pool`] of any body type).
pub(in crate::pool) trait ConnectionEnds: Send + Sync {
    /// The connection `id` of `origin` ended on its task.
    fn connection_ended(&self, origin: &Origin, id: u64);
}

impl<B: Send + 'static> ConnectionEnds for Pool<B> {
    fn connection_ended(&self, origin: &Origin, id: u64) {
        Pool::connection_ended(self, origin, id);
    }
}

impl WokenConns {
    pub(in crate::pool) fn new(reaper: Arc<Notify>, pool: Weak<dyn ConnectionEnds>) -> WokenConns {
        WokenConns {
            conns: Mutex::new(Vec::new()),
            reaper,
            pool,
        }
    }

    /// The connections woken since the last call.
    pub(in crate::pool) fn take(&self) -> Vec<(Arc<Origin>, u64)> {
        std::mem::take(&mut *self.conns.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// [`IdleWaker::woken_at`] of a watch not woken since its connection was parked.
const NOT_WOKEN: u64 = 0;

/// One connection's waker while its future is parked and idle, and the flag a task
/// sets if it is dropped before the future finished. One allocation per connection,
/// shared with that task if the future moves to one.
pub(in crate::pool) struct IdleWaker {
    id: u64,
    origin: Arc<Origin>,
    /// A request has the connection and polls the future itself: wake-ups that still
    /// reach this waker (registered at the last check-in) are stale.
    in_use: AtomicBool,
    /// Set when the future's task was dropped unfinished (its runtime shut down): the
    /// connection then reads as closed, but the server did nothing.
    task_gone: AtomicBool,
    /// The caller marked the connection not reusable ([`ConnectionInfo::poison`](crate::ConnectionInfo::poison)).
    poisoned: AtomicBool,
    /// The connection's end has been counted under an eviction reason
    /// ([`Pool::count_eviction`](crate::pool::Pool::count_eviction)). One that was not is
    /// counted when the watch goes, so that every connection the pool opened ends
    /// under exactly one reason.
    counted: AtomicBool,
    /// When the watch was woken while the connection was idle and parked.
    ///
    /// Nanoseconds after `opened_at`, plus one; 0 while not woken. An atomic rather
    /// than a `Mutex<Option<Instant>>`: 8 bytes in every connection instead of 24.
    woken_at: AtomicU64,
    woken: Weak<WokenConns>,
    /// The last owner of the watch goes when the connection has ended, wherever its
    /// future was (parked, or on a task): that is when its lifetime is recorded.
    opened_at: Instant,
    counters: Weak<Counters>,
}

impl IdleWaker {
    pub(in crate::pool) fn new(
        id: u64,
        origin: Arc<Origin>,
        woken: Weak<WokenConns>,
        counters: Weak<Counters>,
    ) -> IdleWaker {
        IdleWaker {
            id,
            origin,
            in_use: AtomicBool::new(true),
            task_gone: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            counted: AtomicBool::new(false),
            woken_at: AtomicU64::new(NOT_WOKEN),
            woken,
            opened_at: Instant::now(),
            counters,
        }
    }

    /// The connection's id.
    pub(in crate::pool) fn id(&self) -> u64 {
        self.id
    }

    /// A request takes the connection: from now on its task polls the future.
    pub(in crate::pool) fn in_use(&self) {
        self.in_use.store(true, Ordering::Release);
    }

    /// The connection goes back to the pool, parked, with this watch as the waker.
    pub(in crate::pool) fn parked(&self) {
        self.woken_at.store(NOT_WOKEN, Ordering::Relaxed);
        self.in_use.store(false, Ordering::Release);
    }

    /// When the watch was woken since the connection was parked, if it was.
    pub(in crate::pool) fn woken_at(&self) -> Option<Instant> {
        match self.woken_at.load(Ordering::Acquire) {
            NOT_WOKEN => None,
            stamp => Some(
                self.opened_at
                    .checked_add(Duration::from_nanos(stamp - 1))
                    .unwrap_or(self.opened_at),
            ),
        }
    }

    pub(in crate::pool) fn task_gone(&self) -> bool {
        self.task_gone.load(Ordering::Relaxed)
    }

    /// Whether the caller marked the connection not reusable.
    pub(in crate::pool) fn poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Marks the connection not reusable, and lists it for the reaper, which closes it
    /// if it is idle; one in use is closed as it comes back (see `deadline::retire_reason`),
    /// and checkout refuses one the reaper has not got to.
    pub(in crate::pool) fn poison(&self) {
        if self.poisoned.swap(true, Ordering::AcqRel) {
            return;
        }
        self.list_for_reaper();
    }

    /// Marks the connection's end as counted; `false` if it already was.
    pub(in crate::pool) fn mark_counted(&self) -> bool {
        !self.counted.swap(true, Ordering::Relaxed)
    }
}

impl Drop for IdleWaker {
    fn drop(&mut self) {
        if let Some(counters) = self.counters.upgrade() {
            if !*self.counted.get_mut() {
                // Every path that closes a connection names its reason; this is the net
                // under them, so that `connections_opened` always equals the open
                // connections plus the evictions.
                let reason = if *self.task_gone.get_mut() {
                    Evict::TaskGone
                } else {
                    Evict::RequestFailed
                };
                tracing::debug!(origin = %self.origin, conn = self.id, reason = reason.as_str(), "connection ended");
                counters.count_eviction(&self.origin, reason, Duration::ZERO);
            }
            counters.record_connection_closed(&self.origin, self.opened_at);
        }
    }
}

impl Wake for IdleWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.in_use.load(Ordering::Acquire) {
            return;
        }
        // Runs wherever the runtime's IO driver runs: only a note, a push and a
        // notification; the reaper does the rest on a task.
        // The first wake counts: a later one is the same close, noticed again.
        let since_open = Instant::now().saturating_duration_since(self.opened_at);
        let stamp = u64::try_from(since_open.as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let _ =
            self.woken_at
                .compare_exchange(NOT_WOKEN, stamp, Ordering::AcqRel, Ordering::Relaxed);
        self.list_for_reaper();
    }
}

impl IdleWaker {
    /// hyper's connection future ended on its task: the pool, if it is still there,
    /// takes the connection out of its idle list and learns from the close.
    fn ended_on_task(&self) {
        let Some(woken) = self.woken.upgrade() else {
            return;
        };
        if let Some(pool) = woken.pool.upgrade() {
            pool.connection_ended(&self.origin, self.id);
        }
    }

    /// Lists the connection for the reaper to look at, and wakes it.
    fn list_for_reaper(&self) {
        if let Some(woken) = self.woken.upgrade() {
            woken
                .conns
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((Arc::clone(&self.origin), self.id));
            woken.reaper.notify_one();
        }
    }
}

/// A connection's future on its way to a task of its own; spawned outside the pool's
/// lock (see the locking rule in [`pool`](super)).
pub(in crate::pool) struct OwnTask {
    pub(in crate::pool) driver: ConnFuture,
    /// The connection's watch: its origin and id, and the flag to set if the task is
    /// dropped unfinished.
    pub(in crate::pool) watch: Arc<IdleWaker>,
}

impl OwnTask {
    pub(in crate::pool) fn spawn(self) {
        spawn_driver(self.driver, self.watch);
    }
}

/// Runs hyper's connection future `driver` on a task of its own, which tells the pool
/// when the connection ends. Generic, so that a future spawned as the connection opens
/// lives in its task unboxed, as hyper-util's do: one allocation, not two.
fn spawn_driver<F>(driver: F, watch: Arc<IdleWaker>)
where
    F: Future<Output = hyper::Result<()>> + Send + 'static,
{
    tokio::spawn(DriverTask {
        driver,
        watch: TaskGone(Some(watch)),
    });
}

pin_project_lite::pin_project! {
    /// The task of [`spawn_driver`]. A hand-written future rather than an `async`
    /// block, which would keep room for the driver twice (as captured, and as
    /// awaited): about 650 bytes more per connection. Beside the driver it holds one
    /// pointer: tokio rounds a task up to a multiple of 128 bytes, and hyper's
    /// HTTP/1.1 connection future (656 bytes) plus one pointer fills 768 exactly, where
    /// three pointers made it 896 (`benches/memory.rs`).
    struct DriverTask<F> {
        #[pin]
        driver: F,
        // The connection's watch, until the driver finishes: dropped before that, the
        // task marks the connection's task as gone.
        watch: TaskGone,
    }
}

impl<F> Future for DriverTask<F>
where
    F: Future<Output = hyper::Result<()>>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let this = self.project();
        let result = std::task::ready!(this.driver.poll(cx));
        if let Some(watch) = this.watch.finished() {
            if let Err(error) = result {
                tracing::debug!(origin = %watch.origin, conn = watch.id, %error, "connection ended with an error");
            }
            watch.ended_on_task();
        }
        std::task::Poll::Ready(())
    }
}

/// What a connection about to open needs to start hyper's connection future: its id,
/// its watch's parts, and who will poll it. The connect function
/// ([`ConnectFn`](super::ConnectFn)) receives it, because only there is the future's
/// concrete type known: [`DriverHome::start`] spawns it unboxed.
pub(crate) struct DriverHome {
    id: u64,
    origin: Arc<Origin>,
    woken: Weak<WokenConns>,
    counters: Weak<Counters>,
    /// Whether the future gets a task of its own (see `Conn::home`), or is polled
    /// here.
    own_task: bool,
}

impl DriverHome {
    pub(in crate::pool) fn new(
        id: u64,
        origin: Arc<Origin>,
        woken: Weak<WokenConns>,
        counters: Weak<Counters>,
        own_task: bool,
    ) -> DriverHome {
        DriverHome {
            id,
            origin,
            woken,
            counters,
            own_task,
        }
    }

    /// Starts hyper's connection future once the handshake is done: on a task of its
    /// own, or boxed, to be polled by the request that has the connection.
    pub(crate) fn start<F>(self, driver: F) -> Started
    where
        F: Future<Output = hyper::Result<()>> + Send + 'static,
    {
        let watch = Arc::new(IdleWaker::new(
            self.id,
            self.origin,
            self.woken,
            self.counters,
        ));
        let driver: Option<ConnFuture> = if self.own_task {
            spawn_driver(driver, Arc::clone(&watch));
            None
        } else {
            Some(Box::pin(driver))
        };
        Started { watch, driver }
    }
}

/// hyper's connection future, started ([`DriverHome::start`]), and the connection's
/// watch.
pub(crate) struct Started {
    pub(in crate::pool) watch: Arc<IdleWaker>,
    /// The future, when it is polled here; `None` when it runs on a task of its own.
    pub(in crate::pool) driver: Option<ConnFuture>,
}

/// Marks a connection's task as gone if it is dropped before hyper's connection future
/// finished: the only way that happens is its runtime shutting down.
struct TaskGone(Option<Arc<IdleWaker>>);

impl TaskGone {
    /// The connection future ran to its end: nothing to mark; the watch, the first time.
    fn finished(&mut self) -> Option<Arc<IdleWaker>> {
        self.0.take()
    }
}

impl Drop for TaskGone {
    fn drop(&mut self) {
        if let Some(watch) = self.0.take() {
            watch.task_gone.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's task holds hyper's connection future and one pointer, no more:
    /// tokio rounds a task up to a multiple of 128 bytes, and with hyper's HTTP/1.1
    /// connection future (656 bytes today) one more field would cost 128 bytes per
    /// connection (see `DriverTask`).
    #[test]
    fn a_connections_task_adds_one_pointer_to_hypers_future() {
        type Body = crate::body::ReplayBody<http_body_util::Empty<bytes::Bytes>>;
        type Driver = hyper::client::conn::http1::Connection<crate::connect::BuiltinIo, Body>;
        assert_eq!(
            std::mem::size_of::<DriverTask<Driver>>(),
            std::mem::size_of::<Driver>() + std::mem::size_of::<usize>()
        );
    }
}
