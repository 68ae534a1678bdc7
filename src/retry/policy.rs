//! [`Policy`] (what the user configures) and the resend decision it drives.
//!
//! The decision is a pure function of the failed attempt's error and of what the
//! request looked like ([`refusal`]); [`Retrier`] adds what is shared between requests:
//! the retry budget, the counters and the log line.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use tower::retry::budget::{Budget, TpsBudget};

use super::DEFAULT_MAX_REPLAY_BODY_BYTES;
use crate::attempt::{Refusal, RetryCounters};
use crate::config::DEFAULT_ATTEMPTS;
use crate::error::{Error, Progress};

/// Which failed requests are sent again, how often, and how fast.
///
/// See the [module docs](super) for the rules. Build one from [`Policy::idempotent`]
/// (the default), [`Policy::all_methods`] or [`Policy::never`], then adjust it.
#[derive(Clone, Debug)]
pub struct Policy {
    methods: Methods,
    attempts: u32,
    backoff: Duration,
    max_replay_body_bytes: usize,
    budget: Option<(f32, u32)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Methods {
    Idempotent,
    All,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::idempotent()
    }
}

/// Budget defaults: resends may add 20 % to the request rate, at least 10 per second.
const DEFAULT_BUDGET: (f32, u32) = (0.2, 10);
/// The largest budget floor accepted (tower's budget refuses larger ones).
const MAX_BUDGET_FLOOR: u32 = 1_000_000;
/// How long deposits into the budget count.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);

impl Policy {
    /// The default: a request that met a stale reused connection before any response
    /// byte is resent once if its method is idempotent or it has an `Idempotency-Key`;
    /// one that was never written is resent whatever its method.
    pub fn idempotent() -> Self {
        Policy {
            methods: Methods::Idempotent,
            attempts: DEFAULT_ATTEMPTS,
            backoff: Duration::ZERO,
            max_replay_body_bytes: DEFAULT_MAX_REPLAY_BODY_BYTES,
            budget: Some(DEFAULT_BUDGET),
        }
    }

    /// Resends requests of **every** method, POST and PATCH included, when they failed
    /// before a response byte came back.
    ///
    /// **Only use this when every handler behind the client is idempotent.** A request
    /// that was written may have been executed by the server even though no response
    /// came back: resending a payment, an order, or an increment can execute it twice.
    /// The policy is honoured as given: it also resends failures on fresh connections.
    pub fn all_methods() -> Self {
        Policy {
            methods: Methods::All,
            ..Policy::idempotent()
        }
    }

    /// Sends every request once: nothing is resent, not even a request that hyper
    /// handed back unsent.
    pub fn never() -> Self {
        Policy {
            attempts: 1,
            ..Policy::idempotent()
        }
    }

    /// How many attempts a request may make in all, the first included. At least 1.
    /// Defaults to 2 (one resend). An attempt counts once a connection is asked for on
    /// the request's behalf, as [`Error::attempts`](crate::Error::attempts) counts.
    #[must_use]
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// How long to wait before each resend. Defaults to zero: the stale-connection race
    /// is over by the time the error arrives, and the resend goes on a new connection.
    /// A backoff beyond about 30 years is capped there by the timer: `Duration::MAX`
    /// means the resend effectively never happens.
    #[must_use]
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// The largest request body kept for a resend; a request whose body is larger is
    /// not resent. Defaults to 64 KiB.
    #[must_use]
    pub fn max_replay_body_bytes(mut self, bytes: usize) -> Self {
        self.max_replay_body_bytes = bytes;
        self
    }

    /// The retry budget: resends may add at most `ratio` (0.0 to 1000.0) to the request
    /// rate, with a floor of `min_per_second` resends per second. Defaults to 0.2 and 10.
    #[must_use]
    pub fn budget(mut self, ratio: f32, min_per_second: u32) -> Self {
        self.budget = Some((ratio, min_per_second));
        self
    }

    /// No retry budget: every resend the policy allows happens. Not recommended.
    #[must_use]
    pub fn no_budget(mut self) -> Self {
        self.budget = None;
        self
    }

    /// The one place a policy is checked; the builder and
    /// [`RetryLayer::new`](super::RetryLayer::new) both call it.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.attempts == 0 {
            return Err(Error::config(
                "retry attempts must be at least 1 (got 0 attempts); use Policy::never() to send each request once",
            ));
        }
        if let Some((ratio, min_per_second)) = self.budget {
            if !(0.0..=1000.0).contains(&ratio) {
                return Err(Error::config(format!(
                    "retry budget ratio must be between 0.0 and 1000.0 (got {ratio})"
                )));
            }
            if min_per_second > MAX_BUDGET_FLOOR {
                return Err(Error::config(format!(
                    "retry budget min_per_second must be at most {MAX_BUDGET_FLOOR} resends per second (got {min_per_second})"
                )));
            }
        }
        Ok(())
    }

    /// The configured number of attempts.
    pub fn get_attempts(&self) -> u32 {
        self.attempts
    }

    pub(crate) fn max_replay_bytes(&self) -> usize {
        self.max_replay_body_bytes
    }

    /// Whether a request with `method` (and an `Idempotency-Key` if `has_key`) would be
    /// resent after it was written on a reused connection and no response came back:
    /// what the pool asks to decide which connections such a request may ride.
    pub(crate) fn resends_written(&self, method: &Method, has_key: bool) -> bool {
        self.attempts > 1 && (self.methods == Methods::All || is_idempotent(method) || has_key)
    }

    pub(crate) fn backoff_delay(&self) -> Duration {
        self.backoff
    }
}

/// What the request looked like, for the decision.
pub(crate) struct Attempted<'a> {
    pub(crate) method: &'a Method,
    pub(crate) has_idempotency_key: bool,
    pub(crate) body_replayable: bool,
    /// The caller's body yielded an error on some attempt: it can never be sent whole.
    pub(crate) body_failed: bool,
    /// Attempts made so far, this one included.
    pub(crate) attempts: u32,
}

/// Why a request that failed on a connection with `error` may not be sent again under
/// `policy`, if it may not; the budget is not consulted. Pure: no counter, no clock.
pub(crate) fn refusal(policy: &Policy, error: &Error, request: &Attempted<'_>) -> Option<Refusal> {
    // First, whatever the policy: a body that failed cannot be sent whole again, and
    // a truncated resend would be executed as if complete.
    if error.is_body() || request.body_failed {
        return Some(Refusal::BodyFailed);
    }
    let all = policy.methods == Methods::All;
    match error.request_progress() {
        Progress::ResponseStarted => return Some(Refusal::ResponseStarted),
        Progress::NotWritten => {}
        Progress::WrittenNoResponse => {
            if !all && !error.is_reused_connection() {
                return Some(Refusal::FreshConnection);
            }
            if !all && !is_idempotent(request.method) && !request.has_idempotency_key {
                return Some(Refusal::NotIdempotent);
            }
        }
    }
    if request.attempts >= policy.attempts {
        return Some(Refusal::AttemptsExhausted);
    }
    if !request.body_replayable {
        return Some(Refusal::BodyTooLarge);
    }
    None
}

/// RFC 9110 §9.2.2 idempotent methods.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// A policy in force: the settings, the budget and the counters, shared by clones.
pub(crate) struct Retrier {
    policy: Policy,
    budget: Option<TpsBudget>,
    pub(crate) counters: Arc<RetryCounters>,
}

impl Retrier {
    pub(crate) fn new(policy: Policy, counters: Arc<RetryCounters>) -> Retrier {
        let budget = policy
            .budget
            .map(|(ratio, min)| TpsBudget::new(BUDGET_WINDOW, min, ratio));
        Retrier {
            policy,
            budget,
            counters,
        }
    }

    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Called once per request, before its first attempt.
    pub(crate) fn deposit(&self) {
        if let Some(budget) = &self.budget {
            budget.deposit();
        }
    }

    /// Whether a request that failed with `error` is sent again. Counts and logs the
    /// decision; a `true` has already drawn on the budget.
    pub(crate) fn should_resend(&self, error: &Error, request: &Attempted<'_>) -> bool {
        // Errors that never reached a connection (connect, timeouts, bad URIs) are not
        // this policy's business and are not counted as refusals.
        if !error.is_request_error() && !error.is_body() {
            return false;
        }
        let progress = error.request_progress();
        let refused = refusal(&self.policy, error, request).or_else(|| {
            // The budget is drawn on last, so that a refused request never spends it.
            let spent = self
                .budget
                .as_ref()
                .is_some_and(|budget| !budget.withdraw());
            spent.then_some(Refusal::BudgetExhausted)
        });
        match refused {
            Some(refusal) => {
                self.counters.refused(refusal);
                tracing::debug!(
                    method = %request.method,
                    ?progress,
                    reused = error.is_reused_connection(),
                    attempts = request.attempts,
                    reason = refusal.as_str(),
                    "not resending the failed request"
                );
                false
            }
            None => {
                self.counters.resent(progress);
                tracing::debug!(
                    method = %request.method,
                    ?progress,
                    reused = error.is_reused_connection(),
                    attempts = request.attempts,
                    "resending the failed request on a new connection"
                );
                true
            }
        }
    }
}
