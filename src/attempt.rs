//! What the retry layer and the pool's dispatch share about one request's attempts:
//! the request-extension markers a resend carries down to the dispatch
//! ([`FreshConnection`], [`AttemptsMade`], [`NotResendable`]), why a failure was not resent
//! ([`Refusal`]), and [`RetryCounters`], which both add to and
//! [`PoolStats`](crate::PoolStats) reads. A leaf, so that `dispatch` needs nothing from
//! `retry` and `retry` nothing from `dispatch`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Progress;
use crate::info::{Refusals, Resends};

/// Marks a request the retry policy would not resend once it was written (a POST or
/// PATCH without an idempotency header or the `retry::Idempotent` extension under the
/// default policy, any request under `Policy::never()`): the pool gives it only a
/// connection idle below what the server was seen to allow (see
/// `pool::deadline::allowed_idle_unresendable`). Set by the retry future
/// (`SavedRequest::new`), from `retry::marked_idempotent`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NotResendable;

/// Resends by how far the failed attempt got, refusals by reason.
#[derive(Debug, Default)]
pub(crate) struct RetryCounters {
    resent_not_written: AtomicU64,
    resent_written_no_response: AtomicU64,
    refused: [AtomicU64; Refusal::COUNT],
}

impl RetryCounters {
    pub(crate) fn resent(&self, progress: Progress) {
        let counter = match progress {
            Progress::WrittenNoResponse => &self.resent_written_no_response,
            _ => &self.resent_not_written,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self, refusal: Refusal) {
        self.refused[refusal as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> (Resends, Refusals) {
        let r = |refusal: Refusal| self.refused[refusal as usize].load(Ordering::Relaxed);
        (
            Resends {
                not_written: self.resent_not_written.load(Ordering::Relaxed),
                written_no_response: self.resent_written_no_response.load(Ordering::Relaxed),
            },
            Refusals {
                not_idempotent: r(Refusal::NotIdempotent),
                body_too_large: r(Refusal::BodyTooLarge),
                budget_exhausted: r(Refusal::BudgetExhausted),
                response_started: r(Refusal::ResponseStarted),
                fresh_connection: r(Refusal::FreshConnection),
                attempts_exhausted: r(Refusal::AttemptsExhausted),
                body_failed: r(Refusal::BodyFailed),
            },
        )
    }
}

/// Why a failed request was not resent. The discriminants index the refusal counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    NotIdempotent,
    BodyTooLarge,
    BudgetExhausted,
    ResponseStarted,
    FreshConnection,
    AttemptsExhausted,
    BodyFailed,
}

impl Refusal {
    /// How many kinds there are, for the counter array.
    pub(crate) const COUNT: usize = 7;

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::NotIdempotent => "method not idempotent and the request not marked idempotent",
            Refusal::BodyTooLarge => "body larger than max_replay_body_bytes",
            Refusal::BudgetExhausted => "retry budget exhausted",
            Refusal::ResponseStarted => "response had started",
            Refusal::FreshConnection => "failed on a fresh connection",
            Refusal::AttemptsExhausted => "no attempts left",
            Refusal::BodyFailed => "the request's own body failed",
        }
    }
}

/// Marks a resent request so the pool opens a fresh connection for it rather than
/// taking another idle one, which may be just as stale.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FreshConnection;

/// How many attempts a request has already had, handed to the pool so that its own
/// resends of unsent requests count against the same [`Policy::attempts`](crate::retry::Policy::attempts).
/// Absent when there were none.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttemptsMade(pub(crate) u32);
