//! [`RetryCounters`]: resends and refusals, shared by the pool's dispatch (its own
//! resends of unsent requests) and the retry layer, read into
//! [`PoolStats`](crate::PoolStats).

use std::sync::atomic::{AtomicU64, Ordering};

use super::policy::Refusal;
use crate::error::Progress;
use crate::info::{Refusals, Resends};

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
