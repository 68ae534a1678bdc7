//! [`RetryLayer`] and the [`Retry`] service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::ServiceExt;

use super::{
    Attempted, FreshConnection, Policy, ReplayBody, Retrier, RetryCounters, IDEMPOTENCY_KEY,
};
use crate::body::Body;
use crate::error::{Error, Progress};
use crate::info::{Refusals, Resends};
use crate::origin;

/// How many attempts a request has already had, handed to the pool so that its own
/// resends of unsent requests count against the same [`Policy::attempts`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttemptsMade(pub(crate) u32);

/// Applies a retry [`Policy`] to a service: a `tower::Layer`.
///
/// The inner service takes requests whose body is a [`ReplayBody`] and fails with
/// [`closefirst::Error`](crate::Error), whose [`request_progress`](Error::request_progress)
/// drives the decision: for example a [`Client<ReplayBody<B>>`](crate::Client) built
/// with [`Policy::never`], inside a stack of your own.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use closefirst::retry::{Policy, ReplayBody, RetryLayer};
///
/// let inner: closefirst::Client<ReplayBody<Full<Bytes>>> = closefirst::Client::builder()
///     .retry(Policy::never())
///     .build()?;
/// let client = tower::ServiceBuilder::new()
///     .layer(RetryLayer::new(Policy::idempotent())?)
///     .service(inner);
/// # let _ = client;
/// # Ok::<(), closefirst::Error>(())
/// ```
#[derive(Clone)]
pub struct RetryLayer {
    retrier: Arc<Retrier>,
}

impl RetryLayer {
    /// A layer applying `policy`; refuses an invalid policy (zero attempts, a budget
    /// ratio out of range) with an error naming the setting.
    pub fn new(policy: Policy) -> Result<Self, Error> {
        policy.validate()?;
        Ok(RetryLayer {
            retrier: Arc::new(Retrier::new(policy, Arc::default())),
        })
    }
}

impl<S> tower::Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            retrier: Arc::clone(&self.retrier),
        }
    }
}

impl fmt::Debug for RetryLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("policy", self.retrier.policy())
            .finish()
    }
}

/// A service that resends failed requests as its [`Policy`] allows. See [`RetryLayer`].
#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    retrier: Arc<Retrier>,
}

impl<S> Retry<S> {
    pub(crate) fn with_counters(inner: S, policy: Policy, counters: Arc<RetryCounters>) -> Self {
        Retry {
            inner,
            retrier: Arc::new(Retrier::new(policy, counters)),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the wrapper.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Resends made so far, and refusals, by this layer's policy (shared by clones).
    pub fn stats(&self) -> (Resends, Refusals) {
        self.retrier.counters.snapshot()
    }
}

impl<S: fmt::Debug> fmt::Debug for Retry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("policy", self.retrier.policy())
            .finish()
    }
}

impl<S> Retry<S> {
    pub(crate) fn send<B, T>(&self, req: Request<B>) -> ResponseFuture<T>
    where
        S: tower::Service<Request<ReplayBody<B>>, Response = Response<T>, Error = Error>
            + Clone
            + Send
            + 'static,
        S::Future: Send,
        B: Body,
        T: 'static,
    {
        ResponseFuture {
            inner: Box::pin(retry(self.inner.clone(), Arc::clone(&self.retrier), req)),
        }
    }
}

impl<S, B, T> tower::Service<Request<B>> for Retry<S>
where
    S: tower::Service<Request<ReplayBody<B>>, Response = Response<T>, Error = Error>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Body,
    T: 'static,
{
    type Response = Response<T>;
    type Error = Error;
    type Future = ResponseFuture<T>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> ResponseFuture<T> {
        // The clone takes the readiness `poll_ready` established with it; `self` keeps
        // a fresh clone for the next call (tower's usual dance).
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        ResponseFuture {
            inner: Box::pin(retry(ready, Arc::clone(&self.retrier), req)),
        }
    }
}

async fn retry<S, B, T>(
    inner: S,
    retrier: Arc<Retrier>,
    req: Request<B>,
) -> Result<Response<T>, Error>
where
    S: tower::Service<Request<ReplayBody<B>>, Response = Response<T>, Error = Error>,
    B: Body,
{
    let method = req.method().clone();
    let uri = req.uri().clone();
    let outcome = attempt_all(inner, &retrier, req).await;
    // However the request failed, the caller learns which request it was.
    outcome.map_err(|error| error.with_request(&method, || origin::describe(&uri)))
}

async fn attempt_all<S, B, T>(
    mut inner: S,
    retrier: &Retrier,
    req: Request<B>,
) -> Result<Response<T>, Error>
where
    S: tower::Service<Request<ReplayBody<B>>, Response = Response<T>, Error = Error>,
    B: Body,
{
    retrier.deposit();
    let policy = retrier.policy();
    let (mut parts, body) = req.into_parts();
    let has_idempotency_key = parts.headers.contains_key(IDEMPOTENCY_KEY);
    // An outer retry layer may already have made attempts for this request.
    let mut attempts = parts.extensions.remove::<AttemptsMade>().map_or(0, |a| a.0);
    // With one attempt allowed nothing is kept. Otherwise the head is copied and the
    // body recorded: a request hyper hands back unsent is resent by the pool without
    // them, but one whose first write failed (a RST already waiting on the socket) was
    // consumed by hyper, and is still safe to resend whatever its method.
    if policy.attempts <= 1 {
        let method = parts.method.clone();
        let mut req = Request::from_parts(parts, ReplayBody::passthrough(body));
        req.extensions_mut().insert(AttemptsMade(attempts));
        inner.ready().await?;
        let result = inner.call(req).await;
        if let Err(error) = &result {
            // Counts and logs the refusal; with no copy kept, it cannot say yes.
            let attempted = Attempted {
                method: &method,
                has_idempotency_key,
                body_replayable: false,
                body_failed: false,
                attempts: error.attempts().max(attempts + 1),
            };
            retrier.should_resend(error, &attempted);
        }
        return result;
    }

    let mut body = ReplayBody::new(body, policy.max_replay_bytes());
    // The furthest any attempt got: a later attempt that fails sooner (a resend whose
    // connect fails) must not make the request look as if it never reached the server.
    let mut furthest = Progress::NotWritten;
    loop {
        let spare = body.try_clone();
        let mut req = Request::new(body);
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = parts.uri.clone();
        *req.version_mut() = parts.version;
        *req.headers_mut() = parts.headers.clone();
        *req.extensions_mut() = parts.extensions.clone();
        req.extensions_mut().insert(AttemptsMade(attempts));
        if attempts > 0 {
            req.extensions_mut().insert(FreshConnection);
        }
        inner.ready().await?;
        let error = match inner.call(req).await {
            Ok(response) => return Ok(response),
            Err(error) => error,
        };
        // A failure on a connection is one more attempt, even from an inner service
        // that does not count them; one before any connection (a refused request)
        // counts as whatever the inner service says.
        attempts = if error.is_request_error() || error.is_body() {
            error.attempts().max(attempts + 1)
        } else {
            error.attempts().max(attempts)
        };
        furthest = furthest.furthest(error.request_progress());
        let error = error
            .with_progress_at_least(furthest)
            .with_attempts(attempts);
        let attempted = Attempted {
            method: &parts.method,
            has_idempotency_key,
            body_replayable: spare.as_ref().is_some_and(ReplayBody::is_replayable),
            body_failed: spare.as_ref().is_some_and(ReplayBody::has_failed),
            attempts,
        };
        // `spare` is only `None` when the body was already past the cap, which the
        // decision sees as `body_replayable == false` and refuses.
        match spare {
            Some(spare) if retrier.should_resend(&error, &attempted) => body = spare,
            _ => return Err(error),
        }
        if !policy.backoff.is_zero() {
            tokio::time::sleep(policy.backoff).await;
        }
    }
}

/// The future returned by [`Retry`] (and inside [`Client`](crate::Client)'s future).
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<T> {
    inner: Pin<Box<dyn Future<Output = Result<Response<T>, Error>> + Send>>,
}

impl<T> Future for ResponseFuture<T> {
    type Output = Result<Response<T>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<T> fmt::Debug for ResponseFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
