//! Resending what is safe to resend.
//!
//! When a request fails because its connection went away, the client looks at how far
//! it got ([`Progress`](crate::Progress)) and resends it if, and only if, that cannot execute it twice:
//!
//! | how far it got | resent by the default policy ([`Policy::idempotent`]) |
//! | --- | --- |
//! | [`NotWritten`](crate::Progress::NotWritten): no byte reached the socket | always, any method (the pool does this itself, without copying anything: hyper hands the request back) |
//! | [`WrittenNoResponse`](crate::Progress::WrittenNoResponse) on a **reused** connection | once, on a fresh connection, if the method is idempotent (GET, HEAD, PUT, DELETE, OPTIONS, TRACE) or the request is [marked as safe to resend](#marking-a-request-as-safe-to-resend) |
//! | `WrittenNoResponse` on a **fresh** connection | never: that is not the keep-alive race but a server failing |
//! | [`ResponseStarted`](crate::Progress::ResponseStarted) | never |
//! | the caller's own body failed ([`Error::is_body`](crate::Error::is_body)) | never, whatever the policy: a replay would send it truncated |
//!
//! POST and PATCH that are not marked are never resent unless you say so with
//! [`Policy::all_methods`]. Resends go out at once (no backoff unless configured), on a
//! new connection, and draw on a retry budget so a failing origin is not hammered:
//! by default resends may add at most 20 % to the request rate, with a floor of 10 per
//! second. When the budget is spent, the original error reaches the caller.
//!
//! The budget is kept **per origin** (scheme, host and port of the request URI): each
//! request deposits into its origin's budget and each resend withdraws from it, so one
//! failing upstream spends its own resends, never those that requests to the healthy
//! ones need. [`PoolStats`](crate::PoolStats) counts resends and refusals for the whole
//! client, and [`OriginStats::retry_budget_exhausted`](crate::OriginStats::retry_budget_exhausted)
//! the refusals of each origin whose budget was spent. Budgets are kept for at most
//! [`MAX_TRACKED_ORIGINS`](crate::MAX_TRACKED_ORIGINS) origins: past that, the quarter
//! whose origins sent a request least recently are forgotten (their budgets start
//! afresh if they come back). A [`RetryLayer`] of your own
//! keeps per-origin budgets the same way (requests whose URI names no origin share one).
//!
//! # Marking a request as safe to resend
//!
//! A request whose method is not idempotent is resent after it was written (on a reused
//! connection, with no response byte back) only if it says that running it twice does
//! no harm, in any of three ways, as Go's `net/http` reads them:
//!
//! - an [`Idempotency-Key`](IDEMPOTENCY_KEY) header (payment and cloud APIs);
//! - an [`X-Idempotency-Key`](X_IDEMPOTENCY_KEY) header, its older spelling;
//! - the [`Idempotent`] request extension, which sends no header at all: for a server
//!   that deduplicates by other means, or a handler you know to be idempotent.
//!
//! Any value counts, an empty one too. Such a request is also treated as resendable by
//! the pool: it may ride any idle connection within its deadline, where a request that
//! may not be resent rides only one the server was seen to keep that long.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use closefirst::retry::Idempotent;
//!
//! let mut req = http::Request::post("http://127.0.0.1:8080/counter")
//!     .body(Full::new(Bytes::from_static(b"set=3")))?;
//! // "set" is idempotent though the method is not: resend it after a stale connection.
//! req.extensions_mut().insert(Idempotent);
//! # Ok::<(), http::Error>(())
//! ```
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
//! `policy` (the settings and the pure resend decision), `budget` (the retry budgets,
//! one per origin, bounded), `layer`, `service` and
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

mod budget;
mod future;
mod layer;
mod policy;
mod service;
#[cfg(test)]
mod tests;

use http::{Extensions, HeaderMap, HeaderName};

pub use crate::body::ReplayBody;
pub use future::ResponseFuture;
pub use layer::RetryLayer;
pub use policy::Policy;
pub(crate) use policy::Retrier;
pub use service::Retry;

/// The header that marks a request as safe to resend whatever its method
/// (`Idempotency-Key`, as used by payment and cloud APIs). See
/// [marking a request](self#marking-a-request-as-safe-to-resend).
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// `X-Idempotency-Key`, the older spelling of [`IDEMPOTENCY_KEY`]: it marks a request
/// as safe to resend in the same way.
pub const X_IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("x-idempotency-key");

/// A request extension that marks a request as safe to resend whatever its method,
/// without sending any header: insert it with
/// `req.extensions_mut().insert(closefirst::retry::Idempotent)`.
///
/// Extensions never reach the wire: the server sees the request as it was. The retry
/// policy resends a request so marked as it would one with an [`IDEMPOTENCY_KEY`]
/// header, and the pool lets it ride any idle connection within its deadline. See
/// [marking a request](self#marking-a-request-as-safe-to-resend).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Idempotent;

/// Whether a request is marked as safe to resend whatever its method: an
/// [`IDEMPOTENCY_KEY`] or [`X_IDEMPOTENCY_KEY`] header (any value), or the
/// [`Idempotent`] extension.
pub(crate) fn marked_idempotent(headers: &HeaderMap, extensions: &Extensions) -> bool {
    headers.contains_key(IDEMPOTENCY_KEY)
        || headers.contains_key(X_IDEMPOTENCY_KEY)
        || extensions.get::<Idempotent>().is_some()
}

/// Default [`Policy::max_replay_body_bytes`]: 64 KiB.
pub const DEFAULT_MAX_REPLAY_BODY_BYTES: usize = 64 * 1024;
