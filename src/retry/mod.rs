//! Resending what is safe to resend.
//!
//! When a request fails because its connection went away, the client looks at how far
//! it got ([`Progress`](crate::Progress)) and resends it if, and only if, that cannot execute it twice:
//!
//! | how far it got | resent by the default policy ([`Policy::idempotent`]) |
//! | --- | --- |
//! | [`NotWritten`](crate::Progress::NotWritten): no byte reached the socket | always, any method (the pool does this itself, without copying anything: hyper hands the request back) |
//! | [`WrittenNoResponse`](crate::Progress::WrittenNoResponse) on a **reused** connection | once, on a fresh connection, if the method is idempotent (GET, HEAD, PUT, DELETE, OPTIONS, TRACE) or the request has an `Idempotency-Key` header |
//! | `WrittenNoResponse` on a **fresh** connection | never: that is not the keep-alive race but a server failing |
//! | [`ResponseStarted`](crate::Progress::ResponseStarted) | never |
//! | the caller's own body failed ([`Error::is_body`](crate::Error::is_body)) | never, whatever the policy: a replay would send it truncated |
//!
//! POST and PATCH without an `Idempotency-Key` are never resent unless you say so with
//! [`Policy::all_methods`]. Resends go out at once (no backoff unless configured), on a
//! new connection, and draw on a retry budget so a failing origin is not hammered:
//! by default resends may add at most 20 % to the request rate, with a floor of 10 per
//! second. When the budget is spent, the original error reaches the caller.
//!
//! Resending needs the body again: [`ReplayBody`] keeps what was sent, up to
//! [`Policy::max_replay_body_bytes`] (64 KiB by default); a larger body is not resent.
//!
//! [`Builder::retry`](crate::Builder::retry) sets the client's policy;
//! [`RetryLayer`] is the same logic as a `tower::Layer` for a stack of your own.
//!
//! Where it sits: the [`Client`](crate::Client) hands each request to this module
//! first; every attempt goes down to the pool's dispatch (checkout, send on hyper,
//! classify a failure), and each failure comes back up here for the decision. Inside:
//! `policy` (the settings and the pure resend decision), `layer`, `service` and
//! `future` ([`RetryLayer`], [`Retry`], [`ResponseFuture`], in tower's shape). What it
//! shares with the dispatch below lives in leaves both import: [`ReplayBody`] (the body
//! every attempt sends) in `body`, and in `attempt` the markers a resend carries, the
//! refusal reasons and the counters [`PoolStats`](crate::PoolStats) reports.
//!
//! ```
//! use std::time::Duration;
//! use closefirst::retry::Policy;
//!
//! // Every method, twice at most, 200 ms apart. Only if every handler is idempotent!
//! let policy = Policy::all_methods().attempts(2).backoff(Duration::from_millis(200));
//! # let _ = policy;
//! ```

mod future;
mod layer;
mod policy;
mod service;
#[cfg(test)]
mod tests;

use http::HeaderName;

pub use crate::body::ReplayBody;
pub use future::ResponseFuture;
pub use layer::RetryLayer;
pub use policy::Policy;
pub(crate) use policy::Retrier;
pub use service::Retry;

/// The header that marks a request as safe to resend whatever its method
/// (`Idempotency-Key`, as used by payment and cloud APIs).
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Default [`Policy::max_replay_body_bytes`]: 64 KiB.
pub const DEFAULT_MAX_REPLAY_BODY_BYTES: usize = 64 * 1024;
