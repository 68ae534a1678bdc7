//! [`Policy`] (what the user configures) and the resend decision it drives.
//!
//! The decision is a pure function of the failed attempt's error and of what the
//! request looked like ([`refusal`]); [`Retrier`] adds what is shared between requests:
//! the retry budgets (one per origin, in `budget`), the counters and the log line.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Uri};

use super::budget::{Budgets, OriginBudget};
use super::DEFAULT_MAX_REPLAY_BODY_BYTES;
use crate::attempt::{Refusal, RetryCounters};
use crate::config::DEFAULT_ATTEMPTS;
use crate::error::{Error, Progress};
use crate::info::OriginStats;
use crate::origin::Origin;

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

impl Policy {
    /// The default: a request that met a stale reused connection before any response
    /// byte is resent once if its method is idempotent or it is marked as safe to
    /// resend (an `Idempotency-Key` or `X-Idempotency-Key` header, or the
    /// [`Idempotent`](super::Idempotent) extension); one that was never written is
    /// resent whatever its method.
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

    /// The retry budget, kept for each origin (scheme, host and port) on its own:
    /// resends to an origin may add at most `ratio` (0.0 to 1000.0) to the rate of
    /// requests to it, with a floor of `min_per_second` resends per second, so that a
    /// failing origin spends its own budget and never the one requests to the others
    /// need. Defaults to 0.2 and 10.
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

    /// Whether a request with `method` (marked as safe to resend if `marked`, see
    /// [`marked_idempotent`](super::marked_idempotent)) would be resent after it was
    /// written on a reused connection and no response came back: what the pool asks to
    /// decide which connections such a request may ride.
    pub(crate) fn resends_written(&self, method: &Method, marked: bool) -> bool {
        self.attempts > 1 && (self.methods == Methods::All || is_idempotent(method) || marked)
    }

    pub(crate) fn backoff_delay(&self) -> Duration {
        self.backoff
    }
}

/// What the request looked like, for the decision.
pub(crate) struct Attempted<'a> {
    pub(crate) method: &'a Method,
    /// An idempotency header or the [`Idempotent`](super::Idempotent) extension.
    pub(crate) marked_idempotent: bool,
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
            if !all && !is_idempotent(request.method) && !request.marked_idempotent {
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
pub(super) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// A policy in force: the settings, the budgets and the counters, shared by clones.
pub(crate) struct Retrier {
    policy: Policy,
    /// `None` with [`Policy::no_budget`], and when nothing is ever resent.
    budgets: Option<Budgets>,
    pub(crate) counters: Arc<RetryCounters>,
}

impl Retrier {
    pub(crate) fn new(policy: Policy, counters: Arc<RetryCounters>) -> Retrier {
        let budgets = policy
            .budget
            .filter(|_| policy.attempts > 1)
            .map(|(ratio, min)| Budgets::new(ratio, min));
        Retrier {
            policy,
            budgets,
            counters,
        }
    }

    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Called once per request, before its first attempt: deposits into the budget of
    /// the origin of `uri`, and returns that budget for [`should_resend`](Self::should_resend).
    pub(crate) fn deposit(&self, uri: &Uri) -> Option<Arc<OriginBudget>> {
        self.budgets.as_ref().map(|budgets| budgets.deposit(uri))
    }

    /// [`deposit`](Self::deposit) for a request whose origin is known (`None`: its URI
    /// names none).
    pub(crate) fn deposit_to(&self, origin: Option<&Origin>) -> Option<Arc<OriginBudget>> {
        self.budgets
            .as_ref()
            .map(|budgets| budgets.deposit_to(origin))
    }

    /// Resends to `origin` refused because its budget was spent, while its budget is
    /// kept; zero otherwise.
    pub(crate) fn budget_exhausted(&self, origin: &Origin) -> u64 {
        self.budgets
            .as_ref()
            .and_then(|budgets| budgets.exhausted(origin))
            .unwrap_or(0)
    }

    /// Sets [`OriginStats::retry_budget_exhausted`] in the pool's snapshot.
    pub(crate) fn fill_origin_stats(&self, stats: &mut [OriginStats]) {
        if self.budgets.is_none() {
            return;
        }
        for entry in stats {
            // The snapshot names the origin as `Origin`'s `Display` does, which parses
            // back to the same origin.
            let origin = entry
                .origin
                .parse::<Uri>()
                .ok()
                .and_then(|uri| Origin::from_uri(&uri).ok());
            if let Some(origin) = origin {
                entry.retry_budget_exhausted = self.budget_exhausted(&origin);
            }
        }
    }

    /// Whether a request that failed with `error` is sent again. Counts and logs the
    /// decision; a `true` has already drawn on `budget`, the one [`deposit`](Self::deposit)
    /// returned for the request.
    pub(crate) fn should_resend(
        &self,
        error: &Error,
        request: &Attempted<'_>,
        budget: Option<&OriginBudget>,
    ) -> bool {
        // Errors that never reached a connection (connect, timeouts, bad URIs) are not
        // this policy's business and are not counted as refusals.
        if !error.is_request_error() && !error.is_body() {
            return false;
        }
        let progress = error.request_progress();
        let refused = refusal(&self.policy, error, request).or_else(|| {
            // The budget is drawn on last, so that a refused request never spends it.
            let spent = budget.is_some_and(|budget| !budget.withdraw());
            spent.then_some(Refusal::BudgetExhausted)
        });
        match refused {
            Some(refusal) => {
                self.counters.refused(refusal);
                tracing::debug!(
                    method = %request.method,
                    origin = budget.map(OriginBudget::name),
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
                    origin = budget.map(OriginBudget::name),
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
