//! One connection's life, in one place: its state ([`Polled`]: who polls hyper's
//! connection future), its operations (open, send, park, read a wake, move to a task
//! of its own, close) and its facts (requests carried, the server's hints, when its
//! idle period began).
//!
//! The states and their transitions:
//! - **In use**: the request that has the connection polls the future itself
//!   ([`Conn::send`]): the request's task writes the request and reads the response,
//!   one wake-up per response.
//! - **Parked**: back in the pool with its response read, the future is polled once
//!   more with the connection's [`IdleWaker`] ([`Conn::park`]). Whatever wakes it is
//!   read by polling it again ([`Conn::read_wake`], outside tokio's coop budget):
//!   `Pending` parks it again, `Ready` moves it to *ended*.
//! - **On a task of its own** ([`Conn::spawn_driver`]): from the start for a connection
//!   opened from a task ([`Conn::home`] says why), or once a response body outlives
//!   its request. The task tells the pool when the connection ends.
//! - **Ended**: with how it ended ([`End`]); `end.rs` tells who ended it.
//!
//! Dropping the `Conn` closes the connection (the client sends the FIN) and gives its
//! [`Slot`] back; its end is counted once under one eviction reason (see the waker's
//! `Drop`).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::header::HeaderMap;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::client::conn::TrySendError;
use tokio::time::Instant;

mod end;
mod poison;
mod waker;

pub(super) use end::End;

use super::stats::Counters;
use super::{deadline, Pool, Slot};
use crate::error::Error;
use crate::header;
use crate::io::SocketHandle;
use crate::origin::Origin;
pub(super) use waker::WokenConns;
use waker::{ConnFuture, IdleWaker, OwnTask};
pub(crate) use waker::{DriverHome, Started};

/// Who polls hyper's connection future (the half of a connection that writes requests
/// and reads responses): the state of a connection's life.
enum Polled {
    /// This [`Conn`] holds it: the request that has the connection polls it with its
    /// own waker while the connection is in use ([`Conn::send`]); parked in the pool
    /// while it is idle, it is polled with the connection's [`IdleWaker`], and a wake is
    /// read by polling it again ([`Conn::read_wake`]).
    Here(ConnFuture),
    /// A task of its own polls it ([`Conn::spawn_driver`]), which tells the pool when
    /// the connection ends.
    OwnTask,
    /// It ended while polled here, as told.
    Ended(End),
}

/// A freshly opened connection as the connector and handshake produce it.
pub(crate) struct Connected<B> {
    pub(crate) tx: SendRequest<B>,
    pub(crate) socket: Option<SocketHandle>,
    /// hyper's connection future, started by [`DriverHome::start`] (see [`Conn`] for
    /// who polls it).
    pub(crate) driver: Started,
}

/// What the connector returns for one connection.
type ConnectFuture<B> = Pin<Box<dyn Future<Output = Result<Connected<B>, Error>> + Send>>;
/// Opens a connection to an origin (given as a URI), performs the handshake and starts
/// hyper's connection future with the [`DriverHome`] given.
pub(crate) type ConnectFn<B> = Box<dyn Fn(Uri, DriverHome) -> ConnectFuture<B> + Send + Sync>;

/// The longest server `Keep-Alive: timeout` hint taken at its word; a longer one counts
/// as this long. A hint is used up to `max_idle_timeout` at most, so beyond any sane idle
/// timeout it changes nothing, and a server may send up to `u64::MAX` seconds.
pub(crate) const MAX_KEEP_ALIVE_HINT: Duration = Duration::from_secs(24 * 60 * 60);

/// A pooled connection: the request half of hyper's HTTP/1.1 connection, its facts,
/// and its slot in the origin's connection count.
pub(crate) struct Conn<B> {
    pub(crate) tx: SendRequest<B>,
    pub(crate) socket: Option<SocketHandle>,
    /// When the (jittered) `max_lifetime` runs out.
    pub(crate) expires: Option<Instant>,
    /// Requests dispatched on this connection so far.
    pub(crate) requests: u64,
    /// The latest `Keep-Alive: timeout` the server sent, at most [`MAX_KEEP_ALIVE_HINT`].
    pub(crate) hint_timeout: Option<Duration>,
    /// Requests the server will still accept, from `Keep-Alive: max`.
    pub(crate) server_remaining: Option<u64>,
    /// `Connection: close` was on the request or the response.
    close: bool,
    /// The last response was `101 Switching Protocols`: the IO is the caller's now.
    upgraded: bool,
    /// When the idle period began: when the last response head reached hyper (or the
    /// connection opened). A server starts its idle timer once it has written the
    /// response, which it has begun by then, so this is the earliest moment that timer
    /// can have started: counting from here closes the connection no later than the
    /// server would, however slowly the caller reads the body (see `deadline`).
    pub(super) idle_since: Instant,
    /// Who polls hyper's connection future: the connection's state.
    polled: Polled,
    /// The parked future's waker while idle, and whether its task died.
    watch: Arc<IdleWaker>,
    slot: Slot<B>,
}

impl<B> Conn<B> {
    /// The connection's id, unique in the process (its watch keeps it).
    #[inline]
    pub(crate) fn id(&self) -> u64 {
        self.watch.id()
    }

    /// Whether the task running hyper's connection future was dropped unfinished,
    /// with its runtime.
    /// How hyper's connection future ended, if it did while polled here.
    pub(super) fn ended(&self) -> Option<End> {
        match self.polled {
            Polled::Ended(end) => Some(end),
            Polled::Here(_) | Polled::OwnTask => None,
        }
    }

    pub(crate) fn task_gone(&self) -> bool {
        self.watch.task_gone()
    }

    /// When the parked future's waker was woken while the connection was idle (the
    /// server did something, or the runtime shut down, or anything else that wakes
    /// it); see [`Conn::read_wake`].
    pub(super) fn woken_at(&self) -> Option<Instant> {
        if matches!(self.polled, Polled::Here(_)) {
            self.watch.woken_at()
        } else {
            None
        }
    }

    pub(super) fn new(
        tx: SendRequest<B>,
        socket: Option<SocketHandle>,
        expires: Option<Instant>,
        driver: Option<ConnFuture>,
        watch: Arc<IdleWaker>,
        slot: Slot<B>,
    ) -> Conn<B> {
        Conn {
            tx,
            socket,
            expires,
            polled: driver.map_or(Polled::OwnTask, Polled::Here),
            requests: 0,
            hint_timeout: None,
            server_remaining: None,
            close: false,
            upgraded: false,
            idle_since: Instant::now(),
            watch,
            slot,
        }
    }

    /// Sends `req` on the connection, driving it inline while hyper's connection
    /// future has no task of its own: the request's task then writes the request and
    /// reads the response itself, one wake-up per response instead of two.
    pub(crate) async fn send(
        &mut self,
        req: Request<B>,
    ) -> Result<Response<Incoming>, TrySendError<Request<B>>>
    where
        B: hyper::body::Body + 'static,
    {
        // From here on this request's task polls the future, and wakes itself.
        self.watch.in_use();
        // hyper queues the request here; the future only waits for the answer.
        let mut sent = std::pin::pin!(self.tx.try_send_request(req));
        poll_fn(|cx| {
            if let Poll::Ready(result) = sent.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
            // The connection future hands the response over as it reads it: look
            // again at once rather than after a wake-up of this same task.
            if self.poll_driver(cx) {
                return sent.as_mut().poll(cx);
            }
            Poll::Pending
        })
        .await
    }

    /// Parks the connection for the pool after its response was read to the end: the
    /// future is polled once more with the connection's [`IdleWaker`] as its waker, so
    /// that whatever the server does while the connection is idle wakes the pool.
    /// Returns whether the connection is still open.
    pub(crate) fn park(&mut self) -> bool {
        if !matches!(self.polled, Polled::Here(_)) {
            return !self.tx.is_closed();
        }
        self.poll_parked()
    }

    /// Reads a wake of the parked future: polls it again. `true` when the connection
    /// is still open (the wake was a TLS record the session consumed, a spent coop
    /// budget, or anything else that left the connection usable), `false` when it
    /// ended (see [`Conn::ended`]).
    pub(super) fn read_wake(&mut self) -> bool {
        if !matches!(self.polled, Polled::Here(_)) {
            return !self.tx.is_closed();
        }
        self.poll_parked()
    }

    /// Polls the parked future with the watch as its waker, outside tokio's
    /// cooperative budget: a poll refused for a spent budget returns `Pending` and
    /// wakes its own waker at once, which would read as news from the server.
    fn poll_parked(&mut self) -> bool {
        self.watch.parked();
        let waker = Waker::from(Arc::clone(&self.watch));
        let polled = match &mut self.polled {
            Polled::Here(driver) => {
                let mut unconstrained =
                    std::pin::pin!(tokio::task::unconstrained(poll_fn(|cx| driver
                        .as_mut()
                        .poll(cx))));
                unconstrained
                    .as_mut()
                    .poll(&mut Context::from_waker(&waker))
            }
            Polled::OwnTask | Polled::Ended(_) => return !self.tx.is_closed(),
        };
        match polled {
            Poll::Ready(result) => {
                self.driver_ended(result);
                false
            }
            Poll::Pending => true,
        }
    }

    /// hyper's connection future finished while it was polled here.
    fn driver_ended(&mut self, result: hyper::Result<()>) {
        if let Err(error) = &result {
            tracing::debug!(origin = %self.origin(), conn = self.id(), %error, "connection ended with an error");
        }
        // The connection is closed: hyper's `SendRequest` now says so.
        self.polled = Polled::Ended(End::of(&result));
    }

    /// Polls hyper's connection future if no task of its own runs it: this is how a
    /// request on the connection makes progress. Returns whether it did so.
    pub(crate) fn poll_driver(&mut self, cx: &mut Context<'_>) -> bool {
        let Polled::Here(driver) = &mut self.polled else {
            return false;
        };
        if let Poll::Ready(result) = driver.as_mut().poll(cx) {
            self.driver_ended(result);
        }
        true
    }

    /// Marks the connection's end as counted; `false` if it already was.
    pub(super) fn mark_counted(&self) -> bool {
        self.watch.mark_counted()
    }

    pub(crate) fn origin(&self) -> &Origin {
        self.slot.origin()
    }

    /// The pool's shared copy of [`origin`](Conn::origin).
    pub(super) fn shared_origin(&self) -> &Arc<Origin> {
        self.slot.origin()
    }

    pub(crate) fn close_requested(&self) -> bool {
        self.close
    }

    pub(super) fn upgraded(&self) -> bool {
        self.upgraded
    }

    /// Called as a request is dispatched on this connection.
    pub(crate) fn begin_request(&mut self, request_headers: &HeaderMap) {
        self.requests += 1;
        self.server_remaining = self.server_remaining.map(|n| n.saturating_sub(1));
        self.close |= header::connection_has(request_headers, "close");
    }

    /// Reads what the response head says about the connection's future; the idle
    /// period starts now (see [`Conn::idle_since`]).
    pub(crate) fn observe_response(&mut self, status: http::StatusCode, headers: &HeaderMap) {
        self.idle_since = Instant::now();
        self.upgraded |= status == http::StatusCode::SWITCHING_PROTOCOLS;
        self.close |= header::connection_has(headers, "close");
        match header::from_headers(headers) {
            Ok(Some(hint)) => {
                if let Some(timeout) = hint.timeout {
                    self.hint_timeout = Some(timeout.min(MAX_KEEP_ALIVE_HINT));
                }
                if hint.max.is_some() {
                    self.server_remaining = hint.max;
                }
            }
            Ok(None) => {}
            Err(error) => tracing::debug!(
                origin = %self.origin(),
                conn = self.id(),
                %error,
                "ignoring the response's Keep-Alive header"
            ),
        }
    }

    fn pool(&self) -> Option<Arc<Pool<B>>> {
        self.slot.pool()
    }

    /// Closes the connection (dropping the last `SendRequest` makes hyper close the
    /// socket) but keeps its place in the origin's connection count, for a connection
    /// opened in its place.
    pub(super) fn into_slot(self) -> Slot<B> {
        self.slot
    }
}

impl<B: Send + 'static> Conn<B> {
    /// Who will poll the future of a connection about to open, decided once, here.
    /// Opened from a task (a proxy's handler, an SDK call spawned on the runtime), it
    /// gets a task of its own, as hyper-util's connections do: measured from spawned
    /// tasks, polling it inline from the request's task was no faster and at times half
    /// as fast, as the work hopped between the runtime's workers (README,
    /// Performance). Opened from outside any task (`block_on`), where the caller's
    /// thread is not a worker, it is polled inline by the request that has it and
    /// parked in the pool while idle, which saves a cross-thread hop per response.
    pub(super) fn home(
        origin: Arc<Origin>,
        woken: Weak<WokenConns>,
        counters: Weak<Counters>,
    ) -> DriverHome {
        DriverHome::new(
            next_connection_id(),
            origin,
            woken,
            counters,
            tokio::task::try_id().is_some(),
        )
    }

    /// A connection just opened in `slot`, its future started as
    /// [`home`](Conn::home) decided.
    pub(super) fn opened(
        connected: Connected<B>,
        slot: Slot<B>,
        max_lifetime: Option<Duration>,
    ) -> Conn<B> {
        let Connected { tx, socket, driver } = connected;
        let Started { watch, driver } = driver;
        let id = watch.id();
        let expires = max_lifetime.map(|lifetime| {
            deadline::deadline_after(Instant::now(), deadline::jittered_lifetime(lifetime, id))
        });
        Conn::new(tx, socket, expires, driver, watch, slot)
    }

    /// Moves hyper's connection future to a task of its own, if it is not on one yet:
    /// from now on that task reads what the server sends, and tells the pool when the
    /// connection ends.
    pub(crate) fn spawn_driver(&mut self) {
        if let Some(spawn) = self.take_driver() {
            spawn.spawn();
        }
    }

    fn take_driver(&mut self) -> Option<OwnTask> {
        let driver = match std::mem::replace(&mut self.polled, Polled::OwnTask) {
            Polled::Here(driver) => driver,
            other => {
                self.polled = other;
                return None;
            }
        };
        Some(OwnTask {
            driver,
            watch: Arc::clone(&self.watch),
        })
    }

    /// Hands the connection back to the pool once hyper can take the next request on
    /// it, which for HTTP/1.1 is when the response body has been read to its end.
    pub(crate) fn check_in_when_ready(self) {
        if let Some(pool) = self.pool() {
            pool.check_in_when_ready(self);
        }
    }
}

impl<B: Send + 'static> Pool<B> {}

impl<B> Pool<B> {}

fn next_connection_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
pub(super) mod tests;
