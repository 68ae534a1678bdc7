//! One connection: how it is opened, what the pool learns about it from the
//! requests and responses it carries, and the end of its hyper connection task.
//!
//! The connector (`ConnectFn`, made by the client from a tower connector) yields a
//! [`Connected`]; [`Pool::connect`] spawns hyper's connection task and wraps the
//! request half in a [`Conn`], which owns the connection's [`Slot`]. Dropping the
//! `Conn` closes the connection (the client sends the FIN) and gives the slot back.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderMap;
use http::Uri;
use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

use super::{deadline, Checkout, Evict, Pool, Slot};
use crate::error::{Error, Kind};
use crate::header;
use crate::io::SocketHandle;
use crate::origin::Origin;

/// A freshly opened connection as the connector and handshake produce it.
pub(crate) struct Connected<B> {
    pub(crate) tx: SendRequest<B>,
    pub(crate) socket: Option<SocketHandle>,
    /// hyper's connection future; the pool spawns it.
    pub(crate) driver: Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>,
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
    /// Set when hyper's connection task was dropped unfinished (its runtime shut
    /// down): the connection then reads as closed, but the server did nothing.
    task_gone: Arc<AtomicBool>,
    slot: Slot<B>,
}

/// Marks a connection's task as gone if it is dropped before hyper's connection future
/// finished: the only way that happens is its runtime shutting down.
struct TaskGone(Option<Arc<AtomicBool>>);

impl TaskGone {
    /// The connection future ran to its end: nothing to mark.
    fn finished(mut self) {
        self.0 = None;
    }
}

impl Drop for TaskGone {
    fn drop(&mut self) {
        if let Some(flag) = self.0.take() {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

impl<B> Conn<B> {
    /// Whether hyper's connection task was dropped unfinished, with its runtime.
    pub(crate) fn task_gone(&self) -> bool {
        self.task_gone.load(Ordering::Relaxed)
    }

    pub(super) fn new(
        tx: SendRequest<B>,
        id: u64,
        socket: Option<SocketHandle>,
        expires: Option<Instant>,
        task_gone: Arc<AtomicBool>,
        slot: Slot<B>,
    ) -> Conn<B> {
        Conn {
            tx,
            id,
            socket,
            expires,
            requests: 0,
            hint_timeout: None,
            server_remaining: None,
            close: false,
            task_gone,
            slot,
        }
    }

    pub(crate) fn origin(&self) -> &Origin {
        self.slot.origin()
    }

    pub(crate) fn close_requested(&self) -> bool {
        self.close
    }

    /// Called as a request is dispatched on this connection.
    pub(crate) fn begin_request(&mut self, request_headers: &HeaderMap) {
        self.requests += 1;
        self.server_remaining = self.server_remaining.map(|n| n.saturating_sub(1));
        self.close |= header::connection_has(request_headers, "close");
    }

    /// Reads what the response head says about the connection's future.
    pub(crate) fn observe_response(&mut self, headers: &HeaderMap) {
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
    /// Hands the connection back to the pool once hyper can take the next request on
    /// it, which for HTTP/1.1 is when the response body has been read to its end.
    pub(crate) fn check_in_when_ready(self) {
        if let Some(pool) = self.pool() {
            pool.check_in_when_ready(self);
        }
    }
}

impl<B: Send + 'static> Pool<B> {
    /// Opens a connection to `origin` in `slot`, and spawns its hyper connection task.
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
        let pool = Arc::downgrade(self);
        let task_origin = origin.clone();
        let task_gone = Arc::new(AtomicBool::new(false));
        let unfinished = TaskGone(Some(Arc::clone(&task_gone)));
        let opened_at = Instant::now();
        tokio::spawn(async move {
            if let Err(error) = driver.await {
                tracing::debug!(origin = %task_origin, conn = id, %error, "connection ended with an error");
            }
            unfinished.finished();
            if let Some(pool) = pool.upgrade() {
                pool.record_connection_closed(&task_origin, opened_at);
                pool.connection_ended(&task_origin, id);
            }
        });
        self.record_opened(origin);
        let remote_addr = socket.as_ref().and_then(SocketHandle::remote_addr);
        tracing::debug!(origin = %origin, conn = id, remote = ?remote_addr, "opened connection");
        let now = Instant::now();
        let expires = self
            .config
            .max_lifetime
            .map(|l| deadline::deadline_after(now, deadline::jittered_lifetime(l, id)));
        Ok(Checkout {
            conn: Conn::new(tx, id, socket, expires, task_gone, slot),
            reused: false,
            idle_for: Duration::ZERO,
        })
    }
}

impl<B> Pool<B> {
    /// hyper's connection task for connection `id` ended. If the connection was idle,
    /// the server closed it.
    fn connection_ended(&self, origin: &Origin, id: u64) {
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
pub(super) mod tests {
    use super::*;

    /// A connection for tests of the pool's bookkeeping: its peer is gone and its slot
    /// belongs to no pool, so it is never used for a request.
    pub(in crate::pool) async fn test_conn(
        expires: Option<Instant>,
    ) -> Conn<http_body_util::Empty<bytes::Bytes>> {
        let (io, _peer) = tokio::io::duplex(64);
        let (tx, _driver) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .expect("an HTTP/1 handshake only sets up state, it does no IO");
        let origin = Origin::from_uri(&"http://example.test/".parse().expect("a valid URI"))
            .expect("an http URI with a host is an origin");
        Conn::new(tx, 1, None, expires, Arc::default(), Slot::detached(origin))
    }

    #[tokio::test]
    async fn a_huge_keep_alive_hint_is_capped() {
        let mut conn = test_conn(None).await;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::KEEP_ALIVE,
            "timeout=18446744073709551615".parse().unwrap(),
        );
        conn.observe_response(&headers);
        assert_eq!(conn.hint_timeout, Some(MAX_KEEP_ALIVE_HINT));
        headers.insert(header::KEEP_ALIVE, "timeout=86399".parse().unwrap());
        conn.observe_response(&headers);
        assert_eq!(conn.hint_timeout, Some(Duration::from_secs(86_399)));
        // A malformed hint leaves the last good one in place.
        headers.insert(
            header::KEEP_ALIVE,
            "timeout=99999999999999999999".parse().unwrap(),
        );
        conn.observe_response(&headers);
        assert_eq!(conn.hint_timeout, Some(Duration::from_secs(86_399)));
    }
}
