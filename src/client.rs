//! [`Client`]: the pooled HTTP/1.1 client and its `tower::Service` implementation.
//!
//! The top of the flow: it assembles the connector into the pool's connect function,
//! and sends each request through the [retry](crate::retry) future, whose attempts go
//! to the pool's dispatch (`dispatch.rs`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use tower::ServiceExt;

use crate::attempt::RetryCounters;
use crate::body::{Body, ReplayBody};
use crate::config::PoolConfig;
use crate::connect::Connection;
use crate::dispatch::Dispatch;
use crate::error::{BoxError, Error};
use crate::info::PoolStats;
use crate::origin::{self, Origin};
use crate::pool::{ConnectFn, Connected, DriverHome, Owner, Pool};
use crate::retry::{self, Policy, Retrier};

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
///
/// Dropping the last clone closes every idle connection at once (the client sends the
/// FIN), as [`close_idle`](Client::close_idle) does; a request still in flight
/// finishes, and its connection is closed when its response ends.
pub struct Client<B> {
    dispatch: Dispatch<ReplayBody<B>>,
    retrier: Arc<Retrier>,
    /// Shared by the clones, not by requests in flight: see [`Owner`].
    owner: Arc<Owner<ReplayBody<B>>>,
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
        let connect: ConnectFn<ReplayBody<B>> = Box::new(move |uri: Uri, home: DriverHome| {
            let connector = connector.clone();
            Box::pin(async move {
                let io = connector
                    .oneshot(uri.clone())
                    .await
                    .map_err(|e| connect_error(e.into(), &uri))?;
                let socket = io.socket();
                let (tx, driver) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| Error::connect(origin::describe(&uri), e))?;
                Ok(Connected {
                    tx,
                    socket,
                    // With upgrades, a `101 Switching Protocols` hands the IO to
                    // `hyper::upgrade::on(response)`; the connection never comes back to
                    // the pool, as its task ends.
                    // Started here, where its type is known: on a task of its own it
                    // is not boxed.
                    driver: home.start(driver.with_upgrades()),
                })
            })
        });
        // The pool's own resends and the retry layer's decisions count in one place.
        let counters = Arc::new(RetryCounters::default());
        let pool = Pool::new(config, connect);
        Client {
            owner: Arc::new(Owner::new(Arc::clone(&pool))),
            dispatch: Dispatch {
                pool,
                counters: Arc::clone(&counters),
            },
            retrier: Arc::new(Retrier::new(policy, counters)),
        }
    }

    /// Sends a request on a pooled connection (or a new one) and returns the response
    /// once its head has arrived. The connection goes back to the pool when the
    /// response body has been read to its end; drop the body unread and the connection
    /// is closed instead.
    ///
    /// The response carries a [`ConnectionInfo`](crate::ConnectionInfo) extension.
    pub fn request(&self, req: Request<B>) -> ResponseFuture {
        let dispatch = self.dispatch.clone();
        // The origin is parsed once: for the retry budget and for every attempt. A URI
        // that names none is left to the first attempt, which reports why.
        let origin = Origin::from_uri(req.uri()).ok();
        let budget = self.retrier.deposit_to(origin.as_ref());
        // Each attempt is one `send` on a clone of the dispatch. The retry future is
        // generic over it, so the box below is the request's only boxed future: it
        // keeps `B` (and the unnameable `send` future) out of the public future's type.
        let attempt = tower::service_fn(move |req| dispatch.clone().send(origin.clone(), req));
        ResponseFuture {
            inner: Box::pin(retry::ResponseFuture::with_budget(
                attempt,
                Arc::clone(&self.retrier),
                req,
                budget,
            )),
        }
    }

    /// A snapshot of the pool's counters.
    pub fn stats(&self) -> PoolStats {
        let (resends, refusals) = self.dispatch.counters.snapshot();
        PoolStats {
            resends,
            refusals,
            ..self.dispatch.pool.stats()
        }
    }

    /// A snapshot per origin the pool has opened connections to (at most
    /// [`MAX_TRACKED_ORIGINS`](crate::MAX_TRACKED_ORIGINS)), sorted by origin: its
    /// connections, evictions, learned idle timeout, and who closed idle connections
    /// first, and the resends its retry budget refused. See
    /// [`OriginStats`](crate::OriginStats).
    pub fn origin_stats(&self) -> Vec<crate::OriginStats> {
        let mut stats = self.dispatch.pool.origin_stats();
        self.retrier.fill_origin_stats(&mut stats);
        stats
    }

    /// Closes every idle connection now, to every origin: the client sends the FIN.
    /// Returns how many it closed, each counted under
    /// [`Evictions::closed_by_user`](crate::Evictions::closed_by_user).
    ///
    /// Connections carrying a request, or whose response body is still being read, are
    /// not affected: they go back to the pool as usual when their response ends. An
    /// origin's probe (see [`Builder::learn_idle_timeout`](crate::Builder::learn_idle_timeout))
    /// is idle too and is closed with the others; nothing is learned from it. Later
    /// requests open new connections. Use it before a deploy that drains the servers,
    /// when the addresses behind a name changed, or to free sockets in a quiet period.
    pub fn close_idle(&self) -> usize {
        self.dispatch.pool.close_idle(None)
    }

    /// Opens connections to the origin of `uri` (its scheme, host and port) ahead of
    /// traffic, TLS handshakes included, until it has `n` open (idle or in use; at most
    /// 1024, a larger `n` counts as 1024), and puts them in the pool idle. Resolves
    /// once they are open, with how many it opened: 0 when the origin already has `n`.
    ///
    /// Warm connections obey every rule idle connections do: their idle time counts
    /// from when the connect began (the server's idle timer starts at its accept), so
    /// they close before the server would close them, by the same deadline, probe and
    /// look before reuse. They come only where a request would get a connection at
    /// once: below `max_connections_per_origin` and `max_connections_total` (never while
    /// a request waits for room), and where `max_idle_per_origin` and `max_idle_total`
    /// let them stay idle; no other connection is closed for them. At most 8 connects
    /// run at once; after one fails no more are started. A connect that fails is logged
    /// (`warn`) and counted in [`PoolStats::preconnects`](crate::PoolStats::preconnects),
    /// and is not an error, neither here nor for a later request. Dropping the future
    /// stops it; connections already open stay in the pool.
    ///
    /// A response on a warm connection says `reused` in its
    /// [`ConnectionInfo`](crate::ConnectionInfo) (it was idle, and may meet the server's
    /// close like any pooled connection), with `requests == 1`.
    ///
    /// Why a call and not a standing minimum: the pool closes idle connections before
    /// the server does, so a minimum of warm connections per origin would reconnect
    /// every few seconds, forever, for origins that may no longer get traffic. Call it
    /// when traffic is about to come: at start-up, after a deploy of the upstream, when
    /// a new upstream is added, or ahead of a known burst.
    ///
    /// Fails only when `uri` names no origin, with an error for which
    /// [`is_invalid_uri`](Error::is_invalid_uri) is true.
    pub async fn preconnect(&self, uri: &Uri, n: usize) -> Result<usize, Error> {
        let origin = Origin::from_uri(uri)?;
        Ok(self.dispatch.pool.preconnect(&origin, n).await)
    }

    /// Closes every idle connection to the origin of `uri` (its scheme, host and port;
    /// the path is ignored) now, as [`close_idle`](Client::close_idle) does for all of
    /// them. Returns how many it closed. Fails with an error for which
    /// [`is_invalid_uri`](Error::is_invalid_uri) is true if `uri` names no origin (no
    /// scheme or host, or a scheme other than `http` and `https`).
    pub fn close_idle_origin(&self, uri: &Uri) -> Result<usize, Error> {
        let origin = Origin::from_uri(uri)?;
        Ok(self.dispatch.pool.close_idle(Some(&origin)))
    }
}

/// A connector's error as the client reports it: the built-in connector already
/// returns a classified [`Error`]; anything else is a connect error with its cause.
fn connect_error(error: BoxError, uri: &Uri) -> Error {
    match error.downcast::<Error>() {
        Ok(error) => *error,
        Err(other) => Error::connect(origin::describe(uri), other),
    }
}

impl<B> Clone for Client<B> {
    fn clone(&self) -> Self {
        Client {
            dispatch: self.dispatch.clone(),
            retrier: Arc::clone(&self.retrier),
            owner: Arc::clone(&self.owner),
        }
    }
}

impl<B> fmt::Debug for Client<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("config", self.dispatch.pool.config())
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
    inner: Pin<Box<dyn Future<Output = Result<Response<Incoming>, Error>> + Send>>,
}

impl Future for ResponseFuture {
    type Output = Result<Response<Incoming>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
