//! An in-memory `metrics` recorder for `tests/metrics.rs`: it keeps every counter,
//! gauge and histogram under its name and labels, and what `describe_*` said of each
//! name, for the test to read back.
//!
//! It exists instead of metrics-util's `DebuggingRecorder` because cargo compiles every
//! dev-dependency for any example or test: metrics-util (rand, crossbeam, indexmap,
//! ordered-float and more, 21 crates in all) was in the cold build of
//! `cargo run --example race`, for the sake of this one test.
//!
//! Counters and gauges use the `metrics` crate's own `AtomicU64` handles, so `absolute`,
//! `increment` and `set` behave as they do under any atomic-backed recorder.

#![allow(unreachable_pub)]

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use metrics::atomics::AtomicU64;
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// The three kinds of metric, as registered.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric's value when read.
#[derive(Debug)]
pub enum Value {
    Counter(u64),
    Gauge(f64),
    /// Every sample, in the order recorded.
    Histogram(Vec<f64>),
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        lock(&self.0).push(value);
    }
}

/// Install with `metrics::set_default_local_recorder(&recorder)`.
#[derive(Default)]
pub struct TestRecorder {
    /// A counter's value, or a gauge's `f64` bits (as `metrics::atomics` stores them).
    atomics: Mutex<HashMap<(Kind, Key), Arc<AtomicU64>>>,
    histograms: Mutex<HashMap<Key, Arc<Samples>>>,
    units: Mutex<HashMap<(Kind, String), Option<Unit>>>,
}

// A panic in another test thread must not hide this test's own values.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `key` is `name` with exactly `labels`, in any order.
fn is(key: &Key, name: &str, labels: &[(&str, &str)]) -> bool {
    let mut wanted: Vec<(&str, &str)> = labels.to_vec();
    let mut have: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
    wanted.sort();
    have.sort();
    key.name() == name && have == wanted
}

impl TestRecorder {
    fn describe(&self, kind: Kind, name: KeyName, unit: Option<Unit>) {
        lock(&self.units).insert((kind, name.as_str().to_owned()), unit);
    }

    fn atomic(&self, kind: Kind, key: &Key) -> Arc<AtomicU64> {
        Arc::clone(lock(&self.atomics).entry((kind, key.clone())).or_default())
    }

    /// The value of the `kind` metric named `name` with exactly `labels`, in any order.
    pub fn value(&self, kind: Kind, name: &str, labels: &[(&str, &str)]) -> Option<Value> {
        if kind == Kind::Histogram {
            let histograms = lock(&self.histograms);
            let (_, samples) = histograms.iter().find(|(key, _)| is(key, name, labels))?;
            return Some(Value::Histogram(lock(&samples.0).clone()));
        }
        let atomics = lock(&self.atomics);
        let (_, atomic) = atomics
            .iter()
            .find(|((k, key), _)| *k == kind && is(key, name, labels))?;
        let n = atomic.load(Ordering::Acquire);
        Some(match kind {
            Kind::Counter => Value::Counter(n),
            _ => Value::Gauge(f64::from_bits(n)),
        })
    }

    /// The unit given to `describe_*` for a registered metric named `name`; `None` if
    /// none was registered, or it was not described, or described without a unit.
    pub fn unit(&self, name: &str) -> Option<Unit> {
        let atomic = lock(&self.atomics)
            .keys()
            .find(|(_, key)| key.name() == name)
            .map(|k| k.0);
        let histogram = lock(&self.histograms).keys().any(|key| key.name() == name);
        let kind = atomic.or(histogram.then_some(Kind::Histogram))?;
        *lock(&self.units).get(&(kind, name.to_owned()))?
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, name: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(Kind::Counter, name, unit);
    }

    fn describe_gauge(&self, name: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(Kind::Gauge, name, unit);
    }

    fn describe_histogram(&self, name: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(Kind::Histogram, name, unit);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.atomic(Kind::Counter, key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.atomic(Kind::Gauge, key))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::clone(
            lock(&self.histograms).entry(key.clone()).or_default(),
        ))
    }
}
