//! The retry budget, one per origin: a failing upstream spends its own resends, never
//! those that requests to healthy origins need.
//!
//! Each origin (scheme and authority of the request URI, as the pool groups
//! connections) has a `tower` [`TpsBudget`]: every request deposits into its origin's,
//! every resend withdraws from it. Requests whose URI names no origin (a relative URI
//! through a standalone [`RetryLayer`](super::RetryLayer)) share one budget. At most
//! [`MAX_BUDGET_ORIGINS`] budgets are kept; a new origin beyond that replaces the one
//! that sent a request least recently, whose budget starts afresh if it comes back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use http::Uri;
use tower::retry::budget::{Budget, TpsBudget};

use crate::origin::Origin;

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
    /// `None`: the requests whose URI names no origin.
    map: RwLock<HashMap<Option<Origin>, Arc<OriginBudget>>>,
    /// Orders requests, to find the origin that sent one least recently.
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
            sequence: AtomicU64::new(0),
        }
    }

    /// A request to `uri` is starting: deposits into its origin's budget and returns
    /// that budget, for the request to withdraw from if it fails.
    pub(crate) fn deposit(&self, uri: &Uri) -> Arc<OriginBudget> {
        let budget = self.for_key(Origin::from_uri(uri).ok());
        budget.budget.deposit();
        budget
    }

    fn for_key(&self, key: Option<Origin>) -> Arc<OriginBudget> {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        // Each update under the lock is one insertion or removal: a panic elsewhere
        // cannot leave the map half-done.
        let found = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        let budget = match found {
            Some(budget) => budget,
            None => {
                // Made outside the lock: naming the origin allocates.
                let made = Arc::new(OriginBudget {
                    budget: TpsBudget::new(BUDGET_WINDOW, self.min_per_second, self.ratio),
                    name: key
                        .as_ref()
                        .map_or_else(|| "(no origin)".into(), |o| o.to_string().into()),
                    last_used: AtomicU64::new(sequence),
                    exhausted: AtomicU64::new(0),
                });
                let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
                if map.len() >= MAX_BUDGET_ORIGINS && !map.contains_key(&key) {
                    let oldest = map
                        .iter()
                        .min_by_key(|(_, budget)| budget.last_used.load(Ordering::Relaxed))
                        .map(|(key, _)| key.clone());
                    if let Some(oldest) = oldest {
                        map.remove(&oldest);
                    }
                }
                Arc::clone(map.entry(key).or_insert(made))
            }
        };
        budget.last_used.fetch_max(sequence, Ordering::Relaxed);
        budget
    }

    /// Resends to `origin` refused because its budget was spent, while its budget is
    /// kept; `None` when it is not.
    pub(crate) fn exhausted(&self, origin: &Origin) -> Option<u64> {
        let key = Some(origin.clone());
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
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
        assert_eq!(budgets.len(), MAX_BUDGET_ORIGINS);
        let origin = |n| Origin::from_uri(&uri(n)).unwrap();
        assert_eq!(budgets.exhausted(&origin(1)), None, "forgotten");
        assert_eq!(budgets.exhausted(&origin(0)), Some(1), "kept, still spent");
        assert!(!budgets.deposit(&uri(0)).withdraw());
        assert_eq!(budgets.exhausted(&origin(MAX_BUDGET_ORIGINS)), Some(0));
    }
}
