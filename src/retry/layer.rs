//! [`RetryLayer`]: a retry [`Policy`] as a `tower::Layer`.

use std::fmt;
use std::sync::Arc;

use super::{Policy, Retrier, Retry};
use crate::error::Error;

/// Applies a retry [`Policy`] to a service: a `tower::Layer`.
///
/// The inner service takes requests whose body is a [`ReplayBody`](super::ReplayBody)
/// and fails with [`closefirst::Error`](crate::Error), whose
/// [`request_progress`](Error::request_progress) drives the decision: for example a
/// [`Client<ReplayBody<B>>`](crate::Client) built with [`Policy::never`], inside a
/// stack of your own.
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
        // The check itself belongs to the policy, shared with `Builder::retry`.
        policy.validate()?;
        Ok(RetryLayer {
            retrier: Arc::new(Retrier::new(policy, Arc::default())),
        })
    }
}

impl<S> tower::Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry::new(inner, Arc::clone(&self.retrier))
    }
}

impl fmt::Debug for RetryLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("policy", self.retrier.policy())
            .finish()
    }
}
