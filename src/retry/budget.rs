//! The retry budget, one per origin: a failing upstream spends its own resends, never
//! those that requests to healthy origins need.
//!
//! Each origin (scheme and authority of the request URI, as the pool groups
//! connections) has a `tower` [`TpsBudget`]: every request deposits into its origin's,
//! every resend withdraws from it. Requests whose URI names no origin (a relative URI
//! through a standalone [`RetryLayer`](super::RetryLayer)) share one budget. At most
//! [`MAX_BUDGET_ORIGINS`] budgets are kept; when a new origin would pass that, the
//! quarter whose origins sent a request least recently are forgotten (a budget
//! forgotten starts afresh if its origin comes back).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use http::Uri;
use tower::retry::budget::{Budget, TpsBudget};

use crate::origin::{Origin, OriginMap};

/// How long deposits into a budget count.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// The most origins whose budgets are kept, as many as the pool tracks
/// ([`MAX_TRACKED_ORIGINS`](crate::MAX_TRACKED_ORIGINS)).
pub(crate) const MAX_BUDGET_ORIGINS: usize = crate::info::MAX_TRACKED_ORIGINS;

/// One origin's budget, and the figures shown for it.
pub(crate) struct OriginBudget {
    budget: TpsBudget,
    /// `scheme://host[:port]`, for the log line of a refusal.
    name: Box<str>,
    /// The value of [`Budgets::sequence`] when a request to the origin last started.
    last_used: AtomicU64,
    /// Resends refused because this budget was spent.
    exhausted: AtomicU64,
}

impl OriginBudget {
    fn new(ratio: f32, min_per_second: u32, name: &str, sequence: u64) -> OriginBudget {
        OriginBudget {
            budget: TpsBudget::new(BUDGET_WINDOW, min_per_second, ratio),
            name: name.into(),
            last_used: AtomicU64::new(sequence),
            exhausted: AtomicU64::new(0),
        }
    }

    /// Draws one resend; a refusal is counted.
    pub(crate) fn withdraw(&self) -> bool {
        let granted = self.budget.withdraw();
        if !granted {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
        }
        granted
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

/// Every origin's budget, at most [`MAX_BUDGET_ORIGINS`] of them.
pub(crate) struct Budgets {
    ratio: f32,
    min_per_second: u32,
    map: RwLock<OriginMap<Arc<OriginBudget>>>,
    /// The requests whose URI names no origin.
    unnamed: Arc<OriginBudget>,
    /// Orders requests, to find the origins that sent one least recently.
    sequence: AtomicU64,
}

impl Budgets {
    /// Budgets of `ratio` and `min_per_second`, as validated by
    /// [`Policy::validate`](super::Policy): `TpsBudget::new` asserts on what it refuses.
    pub(crate) fn new(ratio: f32, min_per_second: u32) -> Budgets {
        Budgets {
            ratio,
            min_per_second,
            map: RwLock::default(),
            unnamed: Arc::new(OriginBudget::new(ratio, min_per_second, "(no origin)", 0)),
            sequence: AtomicU64::new(0),
        }
    }

    /// A request to `uri` is starting: deposits into its origin's budget and returns
    /// that budget, for the request to withdraw from if it fails.
    pub(crate) fn deposit(&self, uri: &Uri) -> Arc<OriginBudget> {
        self.deposit_to(Origin::from_uri(uri).ok().as_ref())
    }

    /// [`deposit`](Self::deposit) for a request whose origin is known (`None`: its
    /// URI names none).
    pub(crate) fn deposit_to(&self, origin: Option<&Origin>) -> Arc<OriginBudget> {
        let budget = match origin {
            Some(origin) => self.for_origin(origin),
            None => Arc::clone(&self.unnamed),
        };
        budget.budget.deposit();
        budget
    }

    fn for_origin(&self, origin: &Origin) -> Arc<OriginBudget> {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        // Each update under the lock is one insertion or a set of removals: a panic
        // elsewhere cannot leave the map half-done.
        let found = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(origin)
            .cloned();
        let budget = match found {
            Some(budget) => budget,
            None => {
                // Made outside the lock: naming the origin allocates.
                let made = Arc::new(OriginBudget::new(
                    self.ratio,
                    self.min_per_second,
                    &origin.to_string(),
                    sequence,
                ));
                let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
                if map.len() >= MAX_BUDGET_ORIGINS && !map.contains_key(origin) {
                    forget_least_recent(&mut map);
                }
                Arc::clone(map.entry(origin.clone()).or_insert(made))
            }
        };
        budget.last_used.fetch_max(sequence, Ordering::Relaxed);
        budget
    }

    /// Resends to `origin` refused because its budget was spent, while its budget is
    /// kept; `None` when it is not.
    pub(crate) fn exhausted(&self, origin: &Origin) -> Option<u64> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(origin)
            .map(|budget| budget.exhausted.load(Ordering::Relaxed))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Forgets the quarter of the budgets whose origins sent a request least recently: one
/// pass over the map per [`MAX_BUDGET_ORIGINS`] / 4 new origins, so that a client
/// that sends each request to a new origin does not scan the map on every request.
fn forget_least_recent(map: &mut OriginMap<Arc<OriginBudget>>) {
    let mut last_used: Vec<u64> = map
        .values()
        .map(|budget| budget.last_used.load(Ordering::Relaxed))
        .collect();
    let quarter = (last_used.len() / 4).max(1);
    let (_, &mut cutoff, _) = last_used.select_nth_unstable(quarter - 1);
    map.retain(|_, budget| budget.last_used.load(Ordering::Relaxed) > cutoff);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(n: usize) -> Uri {
        format!("http://host{n}.test:8{n}/path").parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn each_origin_spends_its_own_budget() {
        // No share of traffic, a floor of 1 per second over the 10 s window: 10 each.
        let budgets = Budgets::new(0.0, 1);
        let failing = budgets.deposit(&uri(1));
        for n in 0..10 {
            assert!(failing.withdraw(), "resend {n}");
        }
        assert!(!failing.withdraw(), "spent");
        let healthy = budgets.deposit(&uri(2));
        assert!(healthy.withdraw(), "another origin's budget is untouched");
        // The same origin spelled differently is the same budget.
        let same = budgets.deposit(&"http://HOST1.test:81/other".parse().unwrap());
        assert!(!same.withdraw());
        assert_eq!(
            budgets.exhausted(&Origin::from_uri(&uri(1)).unwrap()),
            Some(2)
        );
        assert_eq!(
            budgets.exhausted(&Origin::from_uri(&uri(2)).unwrap()),
            Some(0)
        );
        // Spent resends count for the window, then the floor is back.
        tokio::time::advance(BUDGET_WINDOW + Duration::from_secs(1)).await;
        assert!(failing.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn uris_without_an_origin_share_one_budget() {
        let budgets = Budgets::new(0.0, 1);
        let relative = budgets.deposit(&"/a".parse().unwrap());
        for _ in 0..10 {
            assert!(relative.withdraw());
        }
        let other = budgets.deposit(&"/b".parse().unwrap());
        assert!(!other.withdraw());
        assert_eq!(other.name(), "(no origin)");
        assert!(budgets.deposit(&uri(1)).withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn budgets_are_bounded_and_the_origin_used_least_recently_goes() {
        let budgets = Budgets::new(0.0, 1);
        for n in 0..MAX_BUDGET_ORIGINS {
            budgets.deposit(&uri(n));
        }
        // Origin 0 spends its budget and is used again: origin 1 is now the one used
        // least recently.
        let zero = budgets.deposit(&uri(0));
        while zero.withdraw() {}
        budgets.deposit(&uri(MAX_BUDGET_ORIGINS));
        // A quarter went, to make room for the next quarter's newcomers at once.
        assert_eq!(
            budgets.len(),
            MAX_BUDGET_ORIGINS - MAX_BUDGET_ORIGINS / 4 + 1
        );
        let origin = |n| Origin::from_uri(&uri(n)).unwrap();
        assert_eq!(budgets.exhausted(&origin(1)), None, "forgotten");
        assert_eq!(budgets.exhausted(&origin(0)), Some(1), "kept, still spent");
        assert!(!budgets.deposit(&uri(0)).withdraw());
        assert_eq!(budgets.exhausted(&origin(MAX_BUDGET_ORIGINS)), Some(0));
    }
}
