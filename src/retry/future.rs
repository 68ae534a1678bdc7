//! [`ResponseFuture`]: one request through the retry layer, every attempt included.
//!
//! A state machine in tower's shape: wait for the inner service, call it, and on a
//! failure ask the policy; a resend waits out the backoff (if any) and starts over.
//! What is kept of the request between attempts lives in [`SavedRequest`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::request::Parts;
use http::{Method, Request, Uri};
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::budget::OriginBudget;
use super::policy::{is_idempotent, Attempted};
use super::{marked_idempotent, Retrier};
use crate::attempt::{AttemptsMade, FreshConnection, NotResendable};
use crate::body::{Body, Recording, ReplayBody};
use crate::error::{Error, Progress};
use crate::origin;

pin_project! {
    /// The future returned by [`Retry`](super::Retry) (and inside
    /// [`Client`](crate::Client)'s future): the response of the first attempt that
    /// succeeds, or the error of the last one, naming the request.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<S, B>
    where
        S: tower::Service<Request<ReplayBody<B>>>,
    {
        inner: S,
        retrier: Arc<Retrier>,
        request: SavedRequest<B>,
        #[pin]
        state: State<S::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // Not polled yet: the request has not deposited into its origin's budget.
        Start,
        // Waiting for the inner service, then calling it with the next attempt.
        Ready,
        // An attempt is in flight.
        Called {
            #[pin]
            future: F,
        },
        // A resend waits out the policy's backoff. The timer is boxed (on this path
        // only, and only with a backoff configured) so that the future is `Unpin`
        // whenever the inner service's future is, as it was before it had a name.
        Backoff {
            sleep: Pin<Box<Sleep>>,
        },
        // The output was returned.
        Done,
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: tower::Service<Request<ReplayBody<B>>, Error = Error>,
    B: Body,
{
    pub(crate) fn new(inner: S, retrier: Arc<Retrier>, req: Request<B>) -> Self {
        let request = SavedRequest::new(req, &retrier);
        ResponseFuture {
            inner,
            retrier,
            request,
            state: State::Start,
        }
    }

    /// [`new`](Self::new) for a request that has deposited into its origin's budget
    /// already ([`Retrier::deposit_to`], for a caller that has parsed the origin).
    pub(crate) fn with_budget(
        inner: S,
        retrier: Arc<Retrier>,
        req: Request<B>,
        budget: Option<Arc<OriginBudget>>,
    ) -> Self {
        let mut request = SavedRequest::new(req, &retrier);
        request.budget = budget;
        ResponseFuture {
            inner,
            retrier,
            request,
            state: State::Ready,
        }
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: tower::Service<Request<ReplayBody<B>>, Error = Error>,
    B: Body,
{
    type Output = Result<S::Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Start => {
                    this.request.budget = this.retrier.deposit(this.request.uri());
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    if let Err(error) = ready!(this.inner.poll_ready(cx)) {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(this.request.name(error)));
                    }
                    let req = this.request.next_attempt();
                    let future = this.inner.call(req);
                    this.state.set(State::Called { future });
                }
                StateProj::Called { future } => {
                    let error = match ready!(future.poll(cx)) {
                        Ok(response) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                        Err(error) => error,
                    };
                    match this.request.after_failure(error, this.retrier) {
                        Ok(()) => {
                            let backoff = this.retrier.policy().backoff_delay();
                            if backoff.is_zero() {
                                this.state.set(State::Ready);
                            } else {
                                let sleep = Box::pin(tokio::time::sleep(backoff));
                                this.state.set(State::Backoff { sleep });
                            }
                        }
                        Err(error) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(this.request.name(error)));
                        }
                    }
                }
                StateProj::Backoff { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Ready);
                }
                StateProj::Done => panic!("retry::ResponseFuture polled after completion"),
            }
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: tower::Service<Request<ReplayBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.request.attempts)
            .finish_non_exhaustive()
    }
}

/// What is kept of a request between its attempts.
struct SavedRequest<B> {
    /// An idempotency header or the `Idempotent` extension, on a request whose method
    /// is not idempotent (on one that is, a mark changes nothing and is not looked for).
    marked_idempotent: bool,
    /// The budget of the request's origin, once it has deposited into it; `None`
    /// before, and when the policy keeps none.
    budget: Option<Arc<OriginBudget>>,
    /// Attempts made so far, including those of an outer retry layer.
    attempts: u32,
    mode: Mode<B>,
}

enum Mode<B> {
    /// One attempt allowed: nothing is recorded; the request waits here for its only
    /// call, and its method and URI are kept to name it in its error.
    Once {
        request: Option<Request<ReplayBody<B>>>,
        method: Method,
        uri: Uri,
    },
    /// The head is copied and the body recorded for every attempt; the head also
    /// names the request in its error. A request hyper
    /// hands back unsent is resent by the pool without them, but one whose first write
    /// failed (a RST already waiting on the socket) was consumed by hyper, and is
    /// still safe to resend whatever its method.
    Replay {
        head: Parts,
        /// The body the next attempt sends.
        body: Option<ReplayBody<B>>,
        /// A handle on the body of the attempt in flight, to make the next attempt's copy.
        spare: Option<Recording<B>>,
        /// The furthest any attempt got: a later attempt that fails sooner (a resend
        /// whose connect fails) must not make the request look as if it never reached
        /// the server.
        furthest: Progress,
    },
}

impl<B: Body> SavedRequest<B> {
    fn new(req: Request<B>, retrier: &Retrier) -> Self {
        let policy = retrier.policy();
        let (mut head, body) = req.into_parts();
        // A mark matters only where the method is not idempotent already: a GET skips
        // the two header lookups (each hashes a custom header name).
        let marked =
            !is_idempotent(&head.method) && marked_idempotent(&head.headers, &head.extensions);
        // An outer retry layer may already have made attempts for this request.
        let attempts = head.extensions.remove::<AttemptsMade>().map_or(0, |a| a.0);
        if !policy.resends_written(&head.method, marked) {
            // The pool then gives it only a connection proven to be kept that long.
            head.extensions.insert(NotResendable);
        }
        let mode = if policy.get_attempts() <= 1 {
            let method = head.method.clone();
            let uri = head.uri.clone();
            let mut req = Request::from_parts(head, ReplayBody::passthrough(body));
            mark_attempts_made(&mut req, attempts);
            Mode::Once {
                request: Some(req),
                method,
                uri,
            }
        } else {
            Mode::Replay {
                head,
                body: Some(ReplayBody::new(body, policy.max_replay_bytes())),
                spare: None,
                furthest: Progress::NotWritten,
            }
        };
        SavedRequest {
            marked_idempotent: marked,
            budget: None,
            attempts,
            mode,
        }
    }

    /// The request for the next call to the inner service.
    fn next_attempt(&mut self) -> Request<ReplayBody<B>> {
        match &mut self.mode {
            Mode::Once { request, .. } => request
                .take()
                .expect("a single attempt is made once: Ready is not entered again"),
            Mode::Replay {
                head, body, spare, ..
            } => {
                let body = body
                    .take()
                    .expect("Ready is entered with a body: first from new(), then from a resend");
                *spare = Some(body.recording());
                let mut req = Request::new(body);
                *req.method_mut() = head.method.clone();
                *req.uri_mut() = head.uri.clone();
                *req.version_mut() = head.version;
                *req.headers_mut() = head.headers.clone();
                *req.extensions_mut() = head.extensions.clone();
                if self.attempts > 0 {
                    mark_attempts_made(&mut req, self.attempts);
                    req.extensions_mut().insert(FreshConnection);
                }
                req
            }
        }
    }

    /// After a failed attempt: `Ok` when the policy resends the request (the next
    /// attempt's body is ready), or the error to return. Out of line and cold, as is
    /// [`name`](Self::name): the request path stays short in the instruction cache.
    #[cold]
    #[inline(never)]
    fn after_failure(&mut self, error: Error, retrier: &Retrier) -> Result<(), Error> {
        let attempts = self.attempts;
        let (head, body, spare, furthest) = match &mut self.mode {
            Mode::Replay {
                head,
                body,
                spare,
                furthest,
            } => (head, body, spare, furthest),
            Mode::Once { method, .. } => {
                // Counts and logs the refusal; with no copy kept, it cannot say yes.
                let attempted = Attempted {
                    method,
                    marked_idempotent: self.marked_idempotent,
                    body_replayable: false,
                    body_failed: false,
                    attempts: error.attempts().max(attempts.saturating_add(1)),
                };
                retrier.should_resend(&error, &attempted, self.budget.as_deref());
                return Err(error);
            }
        };
        // A failure on a connection is one more attempt, even from an inner service
        // that does not count them; one before any connection (a refused request)
        // counts as whatever the inner service says.
        self.attempts = if error.is_request_error() || error.is_body() {
            error.attempts().max(attempts.saturating_add(1))
        } else {
            error.attempts().max(attempts)
        };
        *furthest = furthest.furthest(error.request_progress());
        let error = error
            .with_progress_at_least(*furthest)
            .with_attempts(self.attempts);
        let spare = spare.take();
        let attempted = Attempted {
            method: &head.method,
            marked_idempotent: self.marked_idempotent,
            body_replayable: spare.as_ref().is_some_and(Recording::is_replayable),
            body_failed: spare.as_ref().is_some_and(Recording::has_failed),
            attempts: self.attempts,
        };
        // The decision comes first, as it counts and logs a refusal. A body past its cap
        // (or failed) has no copy to make, and the decision has seen that
        // (`body_replayable == false`) and refused.
        if !retrier.should_resend(&error, &attempted, self.budget.as_deref()) {
            return Err(error);
        }
        match spare.and_then(|spare| spare.replay()) {
            Some(copy) => {
                *body = Some(copy);
                Ok(())
            }
            None => Err(error),
        }
    }

    /// The caller's URI: attempts rewrite only their copies.
    fn uri(&self) -> &Uri {
        match &self.mode {
            Mode::Once { uri, .. } => uri,
            Mode::Replay { head, .. } => &head.uri,
        }
    }

    /// However the request failed, the caller learns which request it was.
    #[cold]
    #[inline(never)]
    fn name(&self, error: Error) -> Error {
        let method = match &self.mode {
            Mode::Once { method, .. } => method,
            Mode::Replay { head, .. } => &head.method,
        };
        error.with_request(method, || origin::describe(self.uri()))
    }
}

/// Tells the inner service how many attempts came before this one. None is told by
/// leaving the marker out (readers take a missing one as 0): the first insert into a
/// request's extensions allocates their map, and almost every request is a first
/// attempt.
fn mark_attempts_made<T>(req: &mut Request<T>, attempts: u32) {
    if attempts > 0 {
        req.extensions_mut().insert(AttemptsMade(attempts));
    }
}
