//! One connection: how it is opened, what the pool learns about it from the
//! requests and responses it carries, and the end of its hyper connection future.
//!
//! The connector (`ConnectFn`, made by the client from a tower connector) yields a
//! [`Connected`]; [`Pool::connect`] wraps the request half in a [`Conn`], which owns
//! the connection's [`Slot`] and, parked, hyper's connection future (who polls it, and
//! when it moves to a task of its own, is told in [`driver`](super::driver)). Dropping the
//! `Conn` closes the connection (the client sends the FIN) and gives the slot back.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::header::HeaderMap;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::client::conn::TrySendError;
use tokio::time::Instant;

use super::driver::{Driver, Spawn, Watch};
use super::{deadline, Checkout, Evict, Pool, Slot};
use crate::error::{Error, Kind};
use crate::header;
use crate::io::SocketHandle;
use crate::origin::Origin;

/// How hyper's connection future ended, as far as it tells: with what the pool reads
/// from the socket (see `liveness`), who ended the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DriverEnd {
    /// It read the end of the stream (a FIN, or a `close_notify` over TLS).
    Clean,
    /// An IO error from the socket: a RST, most often.
    Io,
    /// The IO error tokio gives every socket of a runtime that is shutting down.
    RuntimeGone,
    /// Anything else: bytes it could not take as a response, a protocol error.
    Protocol,
}

impl DriverEnd {
    fn of(result: &hyper::Result<()>) -> DriverEnd {
        match result {
            Ok(()) => DriverEnd::Clean,
            Err(error) => {
                let mut source = std::error::Error::source(error);
                while let Some(cause) = source {
                    if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                        // tokio fails the IO of a runtime being shut down with an
                        // `Other` error; a peer's close or reset has a kind of its own.
                        return if io.kind() == std::io::ErrorKind::Other {
                            DriverEnd::RuntimeGone
                        } else {
                            DriverEnd::Io
                        };
                    }
                    source = cause.source();
                }
                DriverEnd::Protocol
            }
        }
    }
}

/// A freshly opened connection as the connector and handshake produce it.
pub(crate) struct Connected<B> {
    pub(crate) tx: SendRequest<B>,
    pub(crate) socket: Option<SocketHandle>,
    /// hyper's connection future (see [`Conn`] for who polls it).
    pub(crate) driver: Driver,
}

/// What the connector returns for one connection.
type ConnectFuture<B> = Pin<Box<dyn Future<Output = Result<Connected<B>, Error>> + Send>>;
/// Opens a connection to an origin (given as a URI) and performs the handshake.
pub(crate) type ConnectFn<B> = Box<dyn Fn(Uri) -> ConnectFuture<B> + Send + Sync>;

/// The longest server `Keep-Alive: timeout` hint taken at its word; a longer one counts
/// as this long. A hint only ever shortens `idle_timeout`, so beyond any sane idle
/// timeout it changes nothing, and a server may send up to `u64::MAX` seconds.
pub(crate) const MAX_KEEP_ALIVE_HINT: Duration = Duration::from_secs(24 * 60 * 60);

/// A pooled connection: the request half of hyper's HTTP/1.1 connection, its facts,
/// and its slot in the origin's connection count.
pub(crate) struct Conn<B> {
    pub(crate) tx: SendRequest<B>,
    pub(crate) id: u64,
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
    /// How hyper's connection future ended, once it has while parked here.
    pub(super) ended: Option<DriverEnd>,
    /// hyper's connection future while it is parked here (see [`driver`](super::driver)):
    /// `None` once it runs on a task of its own, or once it ended.
    driver: Option<Driver>,
    /// The parked future's waker while idle, and whether its task died.
    watch: Arc<Watch>,
    slot: Slot<B>,
}

impl<B> Conn<B> {
    /// Whether the task running hyper's connection future was dropped unfinished,
    /// with its runtime.
    pub(crate) fn task_gone(&self) -> bool {
        self.watch.task_gone()
    }

    /// When the parked future's waker was woken while the connection was idle (the
    /// server did something, or the runtime shut down, or anything else that wakes
    /// it); see [`driver`](super::driver).
    pub(super) fn woken_at(&self) -> Option<Instant> {
        if self.driver.is_some() {
            self.watch.woken_at()
        } else {
            None
        }
    }

    pub(super) fn new(
        tx: SendRequest<B>,
        id: u64,
        socket: Option<SocketHandle>,
        expires: Option<Instant>,
        driver: Option<Driver>,
        watch: Arc<Watch>,
        slot: Slot<B>,
    ) -> Conn<B> {
        Conn {
            tx,
            id,
            socket,
            expires,
            driver,
            requests: 0,
            hint_timeout: None,
            server_remaining: None,
            close: false,
            upgraded: false,
            idle_since: Instant::now(),
            ended: None,
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
    /// future is polled once more with the connection's [`Watch`] as its waker, so
    /// that whatever the server does while the connection is idle wakes the pool.
    /// Returns whether the connection is still open.
    pub(crate) fn park(&mut self) -> bool {
        if self.driver.is_none() {
            return !self.tx.is_closed();
        }
        self.poll_parked()
    }

    /// Reads a wake of the parked future: polls it again. `true` when the connection
    /// is still open (the wake was a TLS record the session consumed, a spent coop
    /// budget, or anything else that left the connection usable), `false` when it
    /// ended (see [`Conn::ended`]).
    pub(super) fn read_wake(&mut self) -> bool {
        if self.driver.is_none() {
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
        let polled = match self.driver.as_mut() {
            Some(driver) => {
                let mut unconstrained =
                    std::pin::pin!(tokio::task::unconstrained(poll_fn(|cx| driver
                        .as_mut()
                        .poll(cx))));
                unconstrained
                    .as_mut()
                    .poll(&mut Context::from_waker(&waker))
            }
            None => return !self.tx.is_closed(),
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
            tracing::debug!(origin = %self.origin(), conn = self.id, %error, "connection ended with an error");
        }
        self.ended = Some(DriverEnd::of(&result));
        // The connection is closed: hyper's `SendRequest` now says so.
        self.driver = None;
    }

    /// Polls hyper's connection future if no task of its own runs it: this is how a
    /// request on the connection makes progress. Returns whether it did so.
    pub(crate) fn poll_driver(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(driver) = self.driver.as_mut() else {
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
                conn = self.id,
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
    /// Moves hyper's connection future to a task of its own, if it is not on one yet:
    /// from now on that task reads what the server sends, and tells the pool when the
    /// connection ends.
    pub(crate) fn spawn_driver(&mut self) {
        if let Some(spawn) = self.take_driver() {
            spawn.spawn();
        }
    }

    fn take_driver(&mut self) -> Option<Spawn<B>> {
        let driver = self.driver.take()?;
        Some(Spawn {
            driver,
            pool: self.slot.pool().map(|pool| Arc::downgrade(&pool)),
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

impl<B: Send + 'static> Pool<B> {
    /// Opens a connection to `origin` in `slot`; its hyper connection future starts
    /// parked in the [`Conn`].
    pub(super) async fn connect(
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
        self.record_opened(origin);
        let watch = Arc::new(Watch::new(
            id,
            Arc::clone(slot.origin()),
            Arc::downgrade(&self.woken),
            Arc::downgrade(&self.counters),
        ));
        let remote_addr = socket.as_ref().and_then(SocketHandle::remote_addr);
        tracing::debug!(origin = %origin, conn = id, remote = ?remote_addr, "opened connection");
        let now = Instant::now();
        let expires = self
            .config
            .max_lifetime
            .map(|l| deadline::deadline_after(now, deadline::jittered_lifetime(l, id)));
        let mut conn = Conn::new(tx, id, socket, expires, Some(driver), watch, slot);
        if tokio::task::try_id().is_some() {
            // Opened from a task (a proxy's handler, an SDK call spawned on the runtime):
            // the connection gets a task of its own, as hyper-util's do. Measured from
            // spawned tasks, polling it inline from the request's task was no faster and
            // at times half as fast, as the work hopped between the runtime's workers
            // (README, Performance). From outside any task (`block_on`), where the
            // caller's thread is not a worker, inline saves a cross-thread hop per
            // response, and stays.
            conn.spawn_driver();
        }
        Ok(Checkout {
            conn,
            reused: false,
            idle_for: Duration::ZERO,
        })
    }
}

impl<B> Pool<B> {
    /// The task running connection `id`'s future saw it end. If the connection was idle,
    /// the server closed it.
    pub(super) fn connection_ended(&self, origin: &Origin, id: u64) {
        // Out of the lock before the connection is closed: its slot takes the lock.
        let idle = self.lock().take_idle(origin, id);
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
}

fn next_connection_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
pub(super) mod tests;
