//! [`Client`]: the pooled HTTP/1.1 client and its `tower::Service` implementation.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::HOST;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use tower::ServiceExt;

use crate::body::Body;
use crate::config::PoolConfig;
use crate::connect::Connection;
use crate::error::{BoxError, Error, Progress};
use crate::info::{ConnectionInfo, PoolStats};
use crate::origin::Origin;
use crate::pool::{Checkout, Conn, ConnectFn, Connected, Evict, Pool};
use crate::retry::{self, AttemptsMade, FreshConnection, Policy, ReplayBody, Retry, RetryCounters};

/// A pooled HTTP/1.1 client that closes idle connections before the server does.
///
/// Cheap to clone: clones share one pool. Use [`request`](Client::request), or the
/// client as a `tower::Service<http::Request<B>>` to compose it with other layers.
/// Requests need an absolute URI (`http://host:port/path`); the client adds the `Host`
/// header when it is missing. Failed requests are resent as the [retry
/// policy](crate::retry) allows ([`Builder::retry`](crate::Builder::retry); by default only what cannot be
/// executed twice).
///
/// The pool's background tasks (one per connection, one reaper) run on the tokio
/// runtime the requests are made on; they end when the last clone of the client is
/// dropped and its connections are closed.
pub struct Client<B> {
    pool: Arc<Pool<ReplayBody<B>>>,
    retry: Retry<PoolService<ReplayBody<B>>>,
    counters: Arc<RetryCounters>,
}

impl<B: Body> Client<B> {
    pub(crate) fn with_connector<C, IO>(
        config: PoolConfig,
        policy: Policy,
        connector: C,
    ) -> Client<B>
    where
        C: tower::Service<Uri, Response = IO> + Clone + Send + Sync + 'static,
        C::Future: Send + 'static,
        C::Error: Into<BoxError>,
        IO: hyper::rt::Read + hyper::rt::Write + Connection + Send + Unpin + 'static,
    {
        let connect: ConnectFn<ReplayBody<B>> = Box::new(move |uri: Uri| {
            let connector = connector.clone();
            Box::pin(async move {
                let io = connector
                    .oneshot(uri.clone())
                    .await
                    .map_err(|e| connect_error(e.into(), &uri))?;
                let socket = io.socket();
                let (tx, driver) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| Error::connect(origin_text(&uri), e))?;
                Ok(Connected {
                    tx,
                    socket,
                    // With upgrades, a `101 Switching Protocols` hands the IO to
                    // `hyper::upgrade::on(response)`; the connection never comes back to
                    // the pool, as its task ends.
                    driver: Box::pin(driver.with_upgrades()),
                })
            })
        });
        let pool = Pool::new(config, connect);
        let counters = Arc::new(RetryCounters::default());
        let service = PoolService {
            pool: Arc::clone(&pool),
            counters: Arc::clone(&counters),
        };
        Client {
            pool,
            retry: Retry::with_counters(service, policy, Arc::clone(&counters)),
            counters,
        }
    }

    /// Sends a request on a pooled connection (or a new one) and returns the response
    /// once its head has arrived. The connection goes back to the pool when the
    /// response body has been read to its end; drop the body unread and the connection
    /// is closed instead.
    ///
    /// The response carries a [`ConnectionInfo`] extension.
    pub fn request(&self, req: Request<B>) -> ResponseFuture {
        ResponseFuture {
            inner: self.retry.send(req),
        }
    }

    /// A snapshot of the pool's counters.
    pub fn stats(&self) -> PoolStats {
        let (resends, refusals) = self.counters.snapshot();
        PoolStats {
            resends,
            refusals,
            ..self.pool.stats()
        }
    }

    /// Not public API: checks a connection for `uri`'s origin out of the pool and
    /// returns it at once, so benchmarks can measure the pool without the network.
    #[doc(hidden)]
    pub async fn __checkout_and_return(&self, uri: &Uri) -> Result<bool, Error> {
        let origin = Origin::from_uri(uri)?;
        let checkout = self.pool.checkout(&origin, false).await?;
        let reused = checkout.reused;
        self.pool.checkin(checkout.conn, true);
        Ok(reused)
    }
}

/// The pool as a service: one request, on one pooled connection, with the pool's own
/// resend of a request hyper hands back unsent.
pub(crate) struct PoolService<B> {
    pool: Arc<Pool<B>>,
    counters: Arc<RetryCounters>,
}

impl<B> Clone for PoolService<B> {
    fn clone(&self) -> Self {
        PoolService {
            pool: Arc::clone(&self.pool),
            counters: Arc::clone(&self.counters),
        }
    }
}

impl<B: Body> tower::Service<Request<ReplayBody<B>>> for PoolService<ReplayBody<B>> {
    type Response = Response<Incoming>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReplayBody<B>>) -> Self::Future {
        Box::pin(send(self.clone(), req))
    }
}

async fn send<B: Body>(
    service: PoolService<ReplayBody<B>>,
    mut req: Request<ReplayBody<B>>,
) -> Result<Response<Incoming>, Error> {
    let pool = &service.pool;
    if req.method() == Method::CONNECT {
        return Err(Error::unsupported(
            "CONNECT opens a tunnel, which a pooled connection cannot carry; \
             use a connector of your own that opens the tunnel (see PoolLayer)",
        ));
    }
    let origin = Origin::from_uri(req.uri())?;
    if !req.headers().contains_key(HOST) {
        req.headers_mut().insert(HOST, origin.host_header());
    }
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
    let mut fresh = req.extensions_mut().remove::<FreshConnection>().is_some();
    let mut attempts = req
        .extensions_mut()
        .remove::<AttemptsMade>()
        .map_or(0, |a| a.0);
    let max_attempts = pool.config().max_attempts;

    loop {
        attempts += 1;
        let Checkout {
            conn,
            reused,
            idle_for,
        } = pool
            .checkout(&origin, fresh)
            .await
            .map_err(|e| e.with_attempts(attempts))?;
        // Asked after a failure: did the caller's own body fail? hyper consumed the
        // request, so keep a handle that reads nothing.
        let body = req.body().observer();
        let mut conn = InFlight::new(pool, conn);
        conn.begin_request(req.headers());
        let before = conn
            .socket
            .as_ref()
            .map(|s| (s.bytes_written(), s.bytes_read()));
        let sent = conn.tx.try_send_request(req).await;
        let mut conn = conn.landed();
        match sent {
            Ok(mut response) => {
                conn.observe_response(response.headers());
                response.extensions_mut().insert(ConnectionInfo {
                    id: conn.id,
                    reused,
                    idle_for,
                    requests: conn.requests,
                    remote_addr: conn.socket.as_ref().and_then(|s| s.remote_addr()),
                    attempts,
                    socket: conn.socket.as_ref().map(|s| s.socket_options()),
                });
                conn.check_in_when_ready();
                return Ok(response);
            }
            Err(mut error) => {
                if let Some(unsent) = error.take_message() {
                    // hyper never started this request: the connection was closing
                    // under it, so the server closed it, and any other idle one may be
                    // just as stale. Resend on a fresh connection.
                    if reused {
                        pool.observe_server_close(&origin, idle_for);
                    }
                    pool.evict(
                        &origin,
                        conn,
                        Evict::ClosedByServer,
                        idle_for,
                        "closed before the request was written",
                    );
                    if attempts < max_attempts {
                        service.counters.resent(Progress::NotWritten);
                        tracing::debug!(
                            origin = %origin,
                            attempts,
                            "request came back unsent; sending it on a new connection"
                        );
                        req = unsent;
                        fresh = true;
                        continue;
                    }
                    return Err(
                        Error::request(Progress::NotWritten, reused, error.into_error())
                            .with_attempts(attempts),
                    );
                }
                let progress = match (before, &conn.socket) {
                    (Some((written, read)), Some(socket)) => {
                        if socket.bytes_read() > read {
                            Progress::ResponseStarted
                        } else if socket.bytes_written() > written {
                            Progress::WrittenNoResponse
                        } else {
                            Progress::NotWritten
                        }
                    }
                    // Without a socket handle nobody can tell: assume the worst.
                    _ => Progress::ResponseStarted,
                };
                let error = error.into_error();
                if body.has_failed() {
                    // The caller's body broke, not the connection: nothing to learn
                    // about the server, and nothing that may be sent again.
                    return Err(Error::body(progress, reused, error).with_attempts(attempts));
                }
                if error.is_user() {
                    return Err(Error::unsupported("hyper refused to send the request")
                        .with_source(error)
                        .with_attempts(attempts));
                }
                if reused && progress != Progress::ResponseStarted {
                    // The server closed this connection after about `idle_for` idle.
                    pool.observe_server_close(&origin, idle_for);
                }
                return Err(Error::request(progress, reused, error).with_attempts(attempts));
            }
        }
    }
}

/// A connection carrying a request whose response has not arrived. If the request
/// future is dropped now (a caller's timeout, a client that went away), the request
/// is abandoned half-way and the connection cannot be reused: it is counted and logged
/// as it closes, rather than vanishing silently.
struct InFlight<'a, B: Send + 'static> {
    pool: &'a Arc<Pool<B>>,
    conn: Option<Conn<B>>,
}

impl<'a, B: Send + 'static> InFlight<'a, B> {
    fn new(pool: &'a Arc<Pool<B>>, conn: Conn<B>) -> Self {
        InFlight {
            pool,
            conn: Some(conn),
        }
    }

    /// The request came back (a response or an error): the connection is the caller's.
    fn landed(mut self) -> Conn<B> {
        self.conn
            .take()
            .expect("the connection is only taken by landed(), which consumes the guard")
    }
}

impl<B: Send + 'static> std::ops::Deref for InFlight<'_, B> {
    type Target = Conn<B>;

    fn deref(&self) -> &Conn<B> {
        self.conn.as_ref().expect("present until landed()")
    }
}

impl<B: Send + 'static> std::ops::DerefMut for InFlight<'_, B> {
    fn deref_mut(&mut self) -> &mut Conn<B> {
        self.conn.as_mut().expect("present until landed()")
    }
}

impl<B: Send + 'static> Drop for InFlight<'_, B> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let origin = conn.origin().clone();
            self.pool.evict(
                &origin,
                conn,
                Evict::Cancelled,
                Duration::ZERO,
                "request future dropped before its response arrived",
            );
        }
    }
}

fn origin_text(uri: &Uri) -> String {
    match (uri.scheme(), uri.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
        _ => uri.to_string(),
    }
}

/// A connector's error as the client reports it: the built-in connector already
/// returns a classified [`Error`]; anything else is a connect error with its cause.
fn connect_error(error: BoxError, uri: &Uri) -> Error {
    match error.downcast::<Error>() {
        Ok(error) => *error,
        Err(other) => Error::connect(origin_text(uri), other),
    }
}

impl<B> Clone for Client<B> {
    fn clone(&self) -> Self {
        Client {
            pool: Arc::clone(&self.pool),
            retry: self.retry.clone(),
            counters: Arc::clone(&self.counters),
        }
    }
}

impl<B> fmt::Debug for Client<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("config", self.pool.config())
            .finish_non_exhaustive()
    }
}

impl<B: Body> tower::Service<Request<B>> for Client<B> {
    type Response = Response<Incoming>;
    type Error = Error;
    type Future = ResponseFuture;

    /// Always ready: waiting for a connection happens inside the returned future, so
    /// that one busy origin does not hold up requests to others.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> ResponseFuture {
        self.request(req)
    }
}

/// The future returned by [`Client::request`] and `Client::call`.
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture {
    inner: retry::ResponseFuture<Incoming>,
}

impl Future for ResponseFuture {
    type Output = Result<Response<Incoming>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
