//! The pool as a service: one attempt of a request, on one pooled connection.
//!
//! Where it sits: below the retry layer ([`crate::retry`]), which calls [`Dispatch::send`]
//! once per attempt, and above the pool ([`crate::pool`]). One attempt is: rewrite the
//! request for the wire (`Host`, origin-form target), check a connection out, send on
//! hyper, and on a failure tell how far the request got (`io::progress`). A request
//! that hyper hands back unsent is resent here, on a fresh connection, without copying
//! anything. [`InFlight`] closes (and counts) a connection whose request was abandoned.

use std::sync::Arc;
use std::time::Duration;

use http::header::HOST;
use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::attempt::{AttemptsMade, FreshConnection, NotResendable, RetryCounters};
use crate::body::{Body, ReplayBody};
use crate::error::{Error, Progress};
use crate::info::ConnectionInfo;
use crate::io::{self, SocketHandle};
use crate::origin::{self, Origin};
use crate::pool::{Checkout, Conn, Evict, Pool};

/// The pool and the counters its own resends go to; cheap to clone.
pub(crate) struct Dispatch<B> {
    pub(crate) pool: Arc<Pool<B>>,
    pub(crate) counters: Arc<RetryCounters>,
}

impl<B> Clone for Dispatch<B> {
    fn clone(&self) -> Self {
        Dispatch {
            pool: Arc::clone(&self.pool),
            counters: Arc::clone(&self.counters),
        }
    }
}

impl<B: Body> Dispatch<ReplayBody<B>> {
    /// Sends `req` on a pooled connection (resending it on a fresh one if hyper hands
    /// it back unsent) and returns the response head, or a classified error.
    /// `origin` is the request's, when the caller has parsed it already (the client does,
    /// once per request, for its retry budget too).
    pub(crate) async fn send(
        self,
        origin: Option<Origin>,
        mut req: Request<ReplayBody<B>>,
    ) -> Result<Response<Incoming>, Error> {
        let pool = &self.pool;
        if req.method() == Method::CONNECT {
            return Err(Error::unsupported(
                "CONNECT opens a tunnel, which a pooled connection cannot carry; \
                 use a connector of your own that opens the tunnel (see PoolLayer)",
            ));
        }
        let origin = match origin {
            Some(origin) => origin,
            None => Origin::from_uri(req.uri())?,
        };
        if !req.headers().contains_key(HOST) {
            req.headers_mut().insert(HOST, origin.host_header());
        }
        *req.uri_mut() = origin::origin_form(req.uri());
        let mut fresh = req.extensions_mut().remove::<FreshConnection>().is_some();
        let mut attempts = req
            .extensions_mut()
            .remove::<AttemptsMade>()
            .map_or(0, |a| a.0);
        let max_attempts = pool.config().max_attempts;
        let resendable = req.extensions_mut().remove::<NotResendable>().is_none();

        loop {
            attempts += 1;
            let Checkout {
                conn,
                reused,
                idle_for,
                proven,
            } = pool
                .checkout(&origin, fresh, resendable)
                .await
                .map_err(|e| e.with_attempts(attempts))?;
            // Asked after a failure: did the caller's own body fail? hyper consumed the
            // request, so keep a handle that reads nothing.
            let body = req.body().recording();
            let mut conn = InFlight::new(pool, conn);
            conn.begin_request(req.headers());
            let before = conn.socket.as_ref().map(SocketHandle::mark);
            let sent = conn.send(req).await;
            let mut conn = conn.answered();
            match sent {
                Ok(mut response) => {
                    if reused && idle_for > proven {
                        // The server kept the connection that long and answered on it.
                        pool.prove(&origin, idle_for);
                    }
                    conn.observe_response(response.status(), response.headers());
                    response.extensions_mut().insert(ConnectionInfo {
                        id: conn.id(),
                        reused,
                        idle_for,
                        requests: conn.requests,
                        remote_addr: conn.socket.as_ref().and_then(|s| s.remote_addr()),
                        local_addr: conn.socket.as_ref().and_then(|s| s.local_addr()),
                        attempts,
                        socket: conn.socket.as_ref().map(|s| s.socket_options()),
                        connection: Some(conn.poison_handle()),
                    });
                    conn.check_in_when_ready();
                    return Ok(response);
                }
                Err(mut error) => {
                    if let Some(unsent) = error.take_message() {
                        // hyper never started this request: the connection was closing
                        // under it, so the server closed it, and any other idle one may
                        // be just as stale. Resend on a fresh connection.
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
                            self.counters.resent(Progress::NotWritten);
                            tracing::debug!(
                                origin = %origin,
                                attempts,
                                "request came back unsent; sending it on a new connection"
                            );
                            req = unsent;
                            fresh = true;
                            continue;
                        }
                        // hyper's error is `Canceled`, caused by the connection's
                        // error; `Error::source` gives that cause.
                        return Err(Error::request(
                            Progress::NotWritten,
                            reused,
                            error.into_error(),
                        )
                        .with_attempts(attempts));
                    }
                    let attempt = FailedAttempt {
                        reused,
                        idle_for,
                        attempts,
                        body_failed: body.has_failed(),
                        before,
                    };
                    return Err(attempt.close(pool, &origin, conn, error.into_error()));
                }
            }
        }
    }
}

/// An attempt that failed once hyper had taken the request: what is known of it, for
/// [`close`](FailedAttempt::close). Out of line and marked cold, as all failure
/// handling is here: the request path stays short in the instruction cache.
struct FailedAttempt {
    reused: bool,
    idle_for: Duration,
    attempts: u32,
    /// The caller's request body failed.
    body_failed: bool,
    /// The socket's byte counts before the request was sent.
    before: Option<io::Mark>,
}

impl FailedAttempt {
    /// Classifies the failure by how far the request got, closes the connection under
    /// the reason that says who ended it (learning from a server's close), and returns
    /// the error.
    #[cold]
    #[inline(never)]
    fn close<B: Send + 'static>(
        self,
        pool: &Arc<Pool<B>>,
        origin: &Origin,
        conn: Conn<B>,
        error: hyper::Error,
    ) -> Error {
        let FailedAttempt {
            reused,
            idle_for,
            attempts,
            body_failed,
            before,
        } = self;
        let progress = io::progress(before, conn.socket.as_ref().map(SocketHandle::mark));
        if body_failed {
            // The caller's body broke, not the connection: nothing to learn about the
            // server, and nothing that may be sent again.
            pool.evict(
                origin,
                conn,
                Evict::RequestFailed,
                Duration::ZERO,
                "the request body failed",
            );
            return Error::body(progress, reused, error).with_attempts(attempts);
        }
        // hyper counts "dispatch task gone" (its connection future dropped with its
        // runtime) as a user error too; that one is classified by the bytes that reached
        // the wire, like any connection failure.
        if error.is_user() && progress == Progress::NotWritten && !conn.task_gone() {
            pool.evict(
                origin,
                conn,
                Evict::RequestFailed,
                Duration::ZERO,
                "hyper refused the request",
            );
            return Error::unsupported("hyper refused to send the request")
                .with_source(error)
                .with_attempts(attempts);
        }
        let reason = if conn.task_gone() {
            Evict::TaskGone
        } else if reused && progress != Progress::ResponseStarted {
            // The server closed this connection after about `idle_for` idle.
            pool.observe_server_close(origin, idle_for);
            Evict::ClosedByServer
        } else {
            Evict::RequestFailed
        };
        pool.evict(origin, conn, reason, idle_for, "the request failed on it");
        Error::request(progress, reused, error).with_attempts(attempts)
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
    fn answered(mut self) -> Conn<B> {
        self.conn
            .take()
            .expect("the connection is only taken by answered(), which consumes the guard")
    }
}

impl<B: Send + 'static> std::ops::Deref for InFlight<'_, B> {
    type Target = Conn<B>;

    fn deref(&self) -> &Conn<B> {
        self.conn.as_ref().expect("present until answered()")
    }
}

impl<B: Send + 'static> std::ops::DerefMut for InFlight<'_, B> {
    fn deref_mut(&mut self) -> &mut Conn<B> {
        self.conn.as_mut().expect("present until answered()")
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
