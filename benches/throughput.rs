//! Request throughput of closefirst against hyper-util's legacy client (the pool reqwest
//! uses) and a raw keep-alive client, in the same process, against the same server on
//! 127.0.0.1.
//!
//! ```text
//! cargo bench --bench throughput
//! # nginx from PATH, or another binary; without one the nginx groups are skipped:
//! apt-get install -y nginx
//! NGINX=/usr/sbin/nginx cargo bench --bench throughput -- nginx
//! ```
//!
//! Each group has `closefirst` and `hyper_util_legacy`, both clients at their defaults,
//! and `raw`: N persistent sockets, one write of a fixed `GET / HTTP/1.1` and reads
//! until the response's head and `Content-Length` body are in, no pool, no timers
//! (`benches/support/raw.rs`). It is the physical reference: what the server, the
//! runtime and the loopback allow. All three send the same request (`GET /`, one
//! `host` header), read the body to the end and check its length. The clients and the
//! in-process server are in `benches/support/` (`subject.rs`, `server.rs`), shared with
//! `benches/alternate.rs`, which measures the same cases in alternating rounds: prefer
//! its per-round ratios on a loaded machine.
//! - `sequential`: one GET at a time, its 13-byte body read to the end, so the
//!   keep-alive connection is reused (the server sees 1 or 2 connections in ~100,000
//!   requests: a checkout takes a connection whose body just ended even before its
//!   check-in task has run, except in the rare case where hyper's connection task on
//!   another worker has not yet marked it ready); `raw` uses one socket;
//! - `concurrent_64`: 64 GETs at once per iteration (64 spawned tasks joined with a
//!   `JoinSet`), reported as elements per second; `raw` uses 64 sockets, one per task.
//! - `nginx_sequential`, `nginx_concurrent_64`: the same against a real nginx that the
//!   bench starts (`benches/support/nginx.rs`: one worker, `keepalive_timeout 75s`,
//!   `return 200 "ok\n";`, files in a temporary directory) and stops at the end of the
//!   group. Skipped with a note on stderr when there is no `nginx` binary.
//!
//! Within a group criterion runs the entries one after another, each with its own
//! warm-up, in the order closefirst, hyper-util, raw. At the end of each group the bench
//! prints to stderr every client's median time per iteration over its 30 samples, with
//! the fastest and slowest, and closefirst's requests per second relative to each other
//! client (`closefirst does 0.93x the requests per second of raw`); compare ratios
//! within one run, the machine's load moves absolute figures.
//! The runtime is multi-threaded with 2 workers; the in-process server's connection
//! tasks share it, nginx runs in its own process. closefirst closes connections idle
//! for 4 s by default: the warm-up right before each measurement and the back-to-back
//! measured requests keep every gap far below that. After each benchmark against the
//! in-process server, the number of connections it accepted during that benchmark is
//! printed to stderr, so connection churn (not just reuse) is visible; closefirst's own
//! counts are printed for every server.

#![allow(missing_docs)] // criterion's macros generate undocumented functions

mod support;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use tokio::runtime::Runtime;

use support::nginx::Nginx;
use support::subject::{runtime, Subject, Target, CONCURRENCY, SUBJECTS};

const SAMPLE_SIZE: usize = 30;

fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sample_size(SAMPLE_SIZE)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
}

fn report_connections(group: &str, name: &str, subject: &Subject, target: &Target, before: usize) {
    if target.counts_connections() {
        eprintln!(
            "{group}/{name}: the server accepted {} connection(s) during this benchmark",
            target.accepted() - before
        );
    }
    match subject {
        Subject::Closefirst(client) => {
            let stats = client.stats();
            eprintln!(
                "{group}/{name}: closefirst opened {}, reused {}, evicted {:?}",
                stats.connections_opened, stats.reuses, stats.evictions
            );
        }
        Subject::Raw(client) => eprintln!("{group}/{name}: {} socket(s)", client.len()),
        Subject::HyperUtilLegacy(_) => {}
    }
}

/// The time per iteration of every sample criterion takes, kept so that each group can
/// print its ratios (criterion compares a benchmark only with its own previous run).
#[derive(Default)]
struct Timed(Mutex<Vec<Duration>>);

impl Timed {
    /// Runs `iteration` `iters` times and returns the elapsed time, as criterion's
    /// `iter` would, recording the time per iteration.
    async fn run<F, Fut>(&self, iters: u64, mut iteration: F) -> Duration
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        let start = Instant::now();
        for _ in 0..iters {
            iteration().await;
        }
        let elapsed = start.elapsed();
        let per_iteration = elapsed / u32::try_from(iters.max(1)).unwrap_or(u32::MAX);
        self.0
            .lock()
            .expect("no panic while recording")
            .push(per_iteration);
        elapsed
    }

    /// Median, fastest and slowest time per iteration over the measured samples: the
    /// last `SAMPLE_SIZE` runs (criterion's warm-up runs come first).
    fn median(&self) -> Spread {
        let all = self.0.lock().expect("no panic while recording");
        let mut samples = all[all.len().saturating_sub(SAMPLE_SIZE)..].to_vec();
        samples.sort();
        Spread {
            median: samples.get(samples.len() / 2).copied().unwrap_or_default(),
            min: samples.first().copied().unwrap_or_default(),
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

#[derive(Clone, Copy)]
struct Spread {
    median: Duration,
    min: Duration,
    max: Duration,
}

/// Prints each client's median time per iteration with its spread, and closefirst's
/// throughput relative to each other client (above 1.0: closefirst serves more requests
/// per second).
fn report_ratios(group: &str, medians: &[(&str, Spread)]) {
    for (name, spread) in medians {
        eprintln!(
            "{group}/{name}: median {:?} per iteration (fastest {:?}, slowest {:?}, {} samples)",
            spread.median, spread.min, spread.max, SAMPLE_SIZE
        );
    }
    let Some((_, ours)) = medians.iter().find(|(name, _)| *name == "closefirst") else {
        return;
    };
    for (name, other) in medians.iter().filter(|(name, _)| *name != "closefirst") {
        let ratio = other.median.as_secs_f64() / ours.median.as_secs_f64().max(f64::MIN_POSITIVE);
        eprintln!("{group}: closefirst does {ratio:.2}x the requests per second of {name} (median time {name}/closefirst)");
    }
}

/// One GET at a time.
fn sequential_group(c: &mut Criterion, rt: &Runtime, group_name: &str, target: &Arc<Target>) {
    let mut group = c.benchmark_group(group_name);
    configure(&mut group);
    let mut medians = Vec::new();
    for name in SUBJECTS {
        let before = target.accepted();
        let subject = rt.block_on(Subject::new(name, target, 1));
        // Warm right before measuring: the connection is open and idle for microseconds.
        rt.block_on(async {
            for _ in 0..100 {
                subject.get(target, 0).await;
            }
        });
        let timed = Timed::default();
        group.bench_function(name, |b| {
            b.to_async(rt).iter_custom(|iters| {
                timed.run(iters, || async {
                    subject.get(target, 0).await;
                })
            });
        });
        report_connections(group_name, name, &subject, target, before);
        medians.push((name, timed.median()));
    }
    group.finish();
    report_ratios(group_name, &medians);
}

/// `CONCURRENCY` GETs at once per iteration.
fn concurrent_group(c: &mut Criterion, rt: &Runtime, group_name: &str, target: &Arc<Target>) {
    let mut group = c.benchmark_group(group_name);
    configure(&mut group);
    group.throughput(Throughput::Elements(CONCURRENCY as u64));
    let mut medians = Vec::new();
    for name in SUBJECTS {
        let before = target.accepted();
        let subject = rt.block_on(Subject::new(name, target, CONCURRENCY));
        rt.block_on(async {
            for _ in 0..20 {
                subject.get_concurrently(target, CONCURRENCY).await;
            }
        });
        let timed = Timed::default();
        group.bench_function(name, |b| {
            b.to_async(rt).iter_custom(|iters| {
                timed.run(iters, || async {
                    subject.get_concurrently(target, CONCURRENCY).await;
                })
            });
        });
        report_connections(group_name, name, &subject, target, before);
        medians.push((name, timed.median()));
    }
    group.finish();
    report_ratios(group_name, &medians);
}

fn sequential(c: &mut Criterion) {
    let rt = runtime();
    let target = Target::in_process(&rt);
    sequential_group(c, &rt, "sequential", &target);
}

fn concurrent(c: &mut Criterion) {
    let rt = runtime();
    let target = Target::in_process(&rt);
    concurrent_group(c, &rt, "concurrent_64", &target);
}

fn against_nginx(c: &mut Criterion) {
    let nginx = match Nginx::start(&support::nginx::Config::default()) {
        Ok(Some(nginx)) => nginx,
        Ok(None) => {
            eprintln!("nginx_*: skipped, no nginx binary (install nginx or set NGINX=/path)");
            return;
        }
        Err(e) => panic!("nginx is installed but did not start: {e}"),
    };
    eprintln!("nginx_*: {} on {}", nginx.version(), nginx.addr());
    let rt = runtime();
    let target = Target::new(nginx.addr(), support::nginx::BODY_LEN, None);
    sequential_group(c, &rt, "nginx_sequential", &target);
    concurrent_group(c, &rt, "nginx_concurrent_64", &target);
    // Clients and their connections go before nginx stops.
    drop(rt);
    drop(nginx);
}

criterion_group!(benches, sequential, concurrent, against_nginx);
criterion_main!(benches);
