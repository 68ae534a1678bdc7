//! [`Retry`]: the service a [`RetryLayer`](super::RetryLayer) wraps around another.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;

use super::{ReplayBody, ResponseFuture, Retrier};
use crate::body::Body;
use crate::error::Error;
use crate::info::{Refusals, Resends};

/// A service that resends failed requests as its [`Policy`](super::Policy) allows. See
/// [`RetryLayer`](super::RetryLayer).
#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    retrier: Arc<Retrier>,
}

impl<S> Retry<S> {
    pub(crate) fn new(inner: S, retrier: Arc<Retrier>) -> Self {
        Retry { inner, retrier }
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

impl<S, B> tower::Service<Request<B>> for Retry<S>
where
    S: tower::Service<Request<ReplayBody<B>>, Error = Error> + Clone,
    B: Body,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> ResponseFuture<S, B> {
        // The clone takes the readiness `poll_ready` established with it; `self` keeps
        // a fresh clone for the next call (tower's usual dance).
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        ResponseFuture::new(ready, Arc::clone(&self.retrier), req)
    }
}
