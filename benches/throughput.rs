//! Request throughput of closefirst against hyper-util's legacy client (the pool reqwest
//! uses), in the same process, against the same in-process hyper server on 127.0.0.1.
//!
//! ```text
//! cargo bench --bench throughput
//! ```
//!
//! Groups, each with `closefirst` and `hyper_util_legacy`, both clients at their
//! defaults:
//! - `sequential`: one GET at a time, its 13-byte body read to the end, so the
//!   keep-alive connection is reused (the server sees 1 or 2 connections in ~100,000
//!   requests: a checkout takes a connection whose body just ended even before its
//!   check-in task has run, except in the rare case where hyper's connection task on
//!   another worker has not yet marked it ready);
//! - `concurrent_64`: 64 GETs at once per iteration (64 spawned tasks joined with a
//!   `JoinSet`), reported as elements per second. A third entry,
//!   `closefirst_max_idle_64`, is closefirst with `max_idle_per_origin(64)` (every
//!   other option at its default); with the default (no idle cap) the
//!   two closefirst entries should match, and both open 64 connections.
//!
//! The runtime is multi-threaded with 2 workers; the server's connection tasks share it.
//! closefirst closes connections idle for 4 s by default: the warm-up right before each
//! measurement and the back-to-back measured requests keep every gap far below that.
//! After each benchmark, the number of connections the server accepted during it is
//! printed to stderr, so connection churn (not just reuse) is visible.

#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

const BODY: &[u8] = b"hello, world\n";
const CONCURRENCY: usize = 64;

type LegacyClient = hyper_util::client::legacy::Client<HttpConnector, Empty<Bytes>>;

/// Connections the server has accepted so far.
#[derive(Clone, Default)]
struct Accepted(Arc<AtomicUsize>);

impl Accepted {
    fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

async fn start_server(accepted: Accepted) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accepted.0.fetch_add(1, Ordering::Relaxed);
            // closefirst sets TCP_NODELAY by default, hyper-util's HttpConnector does
            // not; the server sets it on its side so Nagle's delay never decides a
            // comparison.
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(BODY))))
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The client under test.
#[derive(Clone)]
enum Subject {
    Closefirst(closefirst::Client<Empty<Bytes>>),
    HyperUtilLegacy(LegacyClient),
}

impl Subject {
    /// Both clients at their defaults.
    fn defaults() -> Vec<(&'static str, Subject)> {
        let closefirst = closefirst::Client::builder()
            .build()
            .expect("the defaults are valid");
        let legacy = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build_http::<Empty<Bytes>>();
        vec![
            ("closefirst", Subject::Closefirst(closefirst)),
            ("hyper_util_legacy", Subject::HyperUtilLegacy(legacy)),
        ]
    }

    /// closefirst with room for `CONCURRENCY` idle connections (every other option at
    /// its default, the idle timeout included). By default it keeps 32 idle
    /// connections per origin where hyper-util keeps any number, so 64 concurrent
    /// requests make it close and reopen 32 connections per iteration.
    fn closefirst_max_idle() -> (&'static str, Subject) {
        let client = closefirst::Client::builder()
            .max_idle_per_origin(CONCURRENCY)
            .build()
            .expect("valid settings");
        ("closefirst_max_idle_64", Subject::Closefirst(client))
    }

    /// One GET with its body read to the end; returns the body's length.
    async fn get(&self, uri: &Uri) -> usize {
        let req = Request::get(uri.clone()).body(Empty::new()).unwrap();
        let resp: http::Response<Incoming> = match self {
            Subject::Closefirst(client) => client.request(req).await.unwrap(),
            Subject::HyperUtilLegacy(client) => client.request(req).await.unwrap(),
        };
        assert!(resp.status().is_success());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), BODY.len());
        body.len()
    }

    async fn get_concurrently(&self, uri: &Uri, n: usize) -> usize {
        let mut set = JoinSet::new();
        for _ in 0..n {
            let subject = self.clone();
            let uri = uri.clone();
            set.spawn(async move { subject.get(&uri).await });
        }
        let mut total = 0;
        while let Some(len) = set.join_next().await {
            total += len.expect("request task did not panic");
        }
        total
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
}

fn report_connections(
    group: &str,
    name: &str,
    subject: &Subject,
    accepted: &Accepted,
    before: usize,
) {
    eprintln!(
        "{group}/{name}: the server accepted {} connection(s) during this benchmark",
        accepted.get() - before
    );
    if let Subject::Closefirst(client) = subject {
        let stats = client.stats();
        eprintln!(
            "{group}/{name}: closefirst opened {}, reused {}, evicted {:?}",
            stats.connections_opened, stats.reuses, stats.evictions
        );
    }
}

fn sequential(c: &mut Criterion) {
    let rt = runtime();
    let accepted = Accepted::default();
    let addr = rt.block_on(start_server(accepted.clone()));
    let uri: Uri = format!("http://{addr}/").parse().unwrap();
    let mut group = c.benchmark_group("sequential");
    configure(&mut group);
    for (name, subject) in Subject::defaults() {
        let before = accepted.get();
        // Warm right before measuring: the connection is open and idle for microseconds.
        rt.block_on(async {
            for _ in 0..100 {
                subject.get(&uri).await;
            }
        });
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| subject.get(&uri));
        });
        report_connections("sequential", name, &subject, &accepted, before);
    }
    group.finish();
}

fn concurrent(c: &mut Criterion) {
    let rt = runtime();
    let accepted = Accepted::default();
    let addr = rt.block_on(start_server(accepted.clone()));
    let uri: Uri = format!("http://{addr}/").parse().unwrap();
    let mut group = c.benchmark_group("concurrent_64");
    configure(&mut group);
    group.throughput(Throughput::Elements(CONCURRENCY as u64));
    let mut subjects = Subject::defaults();
    subjects.push(Subject::closefirst_max_idle());
    for (name, subject) in subjects {
        let before = accepted.get();
        rt.block_on(async {
            for _ in 0..20 {
                subject.get_concurrently(&uri, CONCURRENCY).await;
            }
        });
        group.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| subject.get_concurrently(&uri, CONCURRENCY));
        });
        report_connections("concurrent_64", name, &subject, &accepted, before);
    }
    group.finish();
}

criterion_group!(benches, sequential, concurrent);
criterion_main!(benches);
