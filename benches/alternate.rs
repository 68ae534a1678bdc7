//! Requests per second of closefirst, hyper-util's legacy client and a raw keep-alive
//! client, measured in alternating rounds in one process, so that a change in the
//! machine's load moves every client's figures alike instead of whichever client
//! happened to be measured at the time.
//!
//! ```text
//! cargo bench --bench alternate                   # every case, 16 rounds
//! cargo bench --bench alternate -- concurrent     # cases whose name contains a filter
//! cargo bench --bench alternate -- =sequential    # one case, by its whole name
//! ROUNDS=30 SLICE_MS=300 cargo bench --bench alternate
//! NGINX=/usr/sbin/nginx cargo bench --bench alternate -- nginx
//! ROUNDS=8 cargo bench --bench alternate -- tls   # the two TLS cases
//! ```
//!
//! Cases: `sequential` (one GET at a time) and `concurrent_64` (64 GETs in flight, one
//! spawned task each, joined), against the in-process hyper server
//! (`support/server.rs`), and `nginx_sequential`, `nginx_concurrent_64` against a real
//! nginx that the bench starts and stops (`support/nginx.rs`; `nginx` from `PATH` or
//! the binary in `NGINX`; skipped with a note when there is none). These four make
//! their requests from a task spawned on the 2-worker runtime, the shape a proxy's
//! handler or an SDK call has; the same four prefixed `block_on_` make them from the
//! main thread through `Runtime::block_on`, a second view (the main thread is not a
//! worker, so what a client leaves to a task of its own crosses threads there). The
//! clients are the
//! ones `throughput.rs` measures (`support/subject.rs`): closefirst and hyper-util at
//! their defaults, the raw client, and closefirst with its pre-reuse peek turned off
//! (`closefirst_no_peek`, which tells what the peek costs); all send the same request,
//! read the body to the end and check its length.
//!
//! TLS cases: `tls_sequential` and `tls_concurrent_64`, from a spawned task, against the
//! in-process server behind a tokio-rustls acceptor (TLS 1.3 only, a self-signed
//! certificate made by `rcgen` at start; `support/tls.rs`). Two clients only, each with
//! a rustls client configuration of its own (so its own session cache) trusting that
//! certificate: closefirst with its `rustls` feature (`Builder::tls_config`) and
//! hyper-util's legacy client over hyper-rustls, both on an `https://` URI. The server
//! reads `ServerConnection::handshake_kind` after each handshake, and the case prints,
//! per client, the full and resumed handshakes it completed during the rounds and
//! during the warm-up.
//!
//! Per case, every client is created and warmed up first (its connections open), then
//! `ROUNDS` rounds (default 16) run. In each round every client runs for the same time
//! slice (`SLICE_MS`, default 500 ms), in an order that rotates by one each round, so
//! each client takes each place in the order equally often (with 4 clients and 16
//! rounds, 4 times each).
//! A slice counts the requests completed in whole batches (1 request, or 64 joined)
//! until its time is up; the rate is those requests over the slice's measured time.
//!
//! Why a fixed time slice rather than a fixed number of requests: every client is then
//! exposed to the machine for the same length of time per round, so a burst of load
//! lands in any client's slice with the same probability; with a fixed count the slower
//! client's slice would be longer and take more of the load. It also bounds the run's
//! length whatever the clients' speed (the default run takes about 2.5 minutes; the
//! TLS cases add about 40 s). Before each timed slice, one untimed batch touches the
//! client's connections, so that a long `SLICE_MS` (the other clients' slices are an
//! idle gap for this one's connections) measures warm connections, not closefirst's
//! idle timer of 4 s.
//!
//! Printed per case: every client's median, minimum and maximum requests per second
//! over the rounds; the ratio of the medians of closefirst to each other client;
//! the ratio computed per round (closefirst and the other client in the same round)
//! with its median and spread: the per-round ratio is the figure to quote, as both of
//! its terms saw nearly the same machine; and connections opened by closefirst (from
//! `Client::stats`) and, for the in-process server, accepted per client during the
//! rounds; for the TLS cases, the server's handshakes per client.

mod support;
// Only this bench has TLS cases: the other benches that share `support/` do not
// include the file.
#[path = "support/tls.rs"]
mod tls;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use support::nginx::Nginx;
use support::subject::{runtime, Subject, Target, CONCURRENCY, SUBJECTS};
use tls::{HandshakeTally, Handshakes, TestCert, TlsSubject, TLS_SUBJECTS};

const DEFAULT_ROUNDS: usize = 16;
/// More rounds than this is refused: it only makes the run longer than anyone waits.
const MAX_ROUNDS: usize = 1000;
const DEFAULT_SLICE: Duration = Duration::from_millis(500);
const MAX_SLICE: Duration = Duration::from_secs(60);
/// Untimed requests per client before the rounds, so every pool has its connections.
const WARM_UP: Duration = Duration::from_secs(1);
/// A batch that takes longer than this means the server or a client is stuck: the
/// bench stops with an error instead of waiting forever.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Which server a case measures against.
#[derive(Clone, Copy)]
enum Server {
    InProcess,
    Nginx,
    /// The in-process server behind a tokio-rustls acceptor (TLS 1.3, a self-signed
    /// certificate made at start): `support/tls.rs`.
    InProcessTls,
}

/// Where the requests are made from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// From a task spawned on the runtime: one task runs the whole slice, one batch
    /// after another, as a proxy's connection task runs its requests (and for 64 in
    /// flight it spawns one task per request). The shape users call the crate in, and
    /// the main rows.
    Spawned,
    /// From the main thread through `Runtime::block_on`: the second view. Here the
    /// caller's thread is not a worker, so whatever a client does on a task of its own
    /// crosses threads, while what it does inline in the caller does not.
    BlockOn,
}

struct Case {
    name: &'static str,
    server: Server,
    /// Requests in flight at once: 1, or a batch of this many joined.
    concurrency: usize,
    shape: Shape,
}

const fn case(name: &'static str, server: Server, concurrency: usize, shape: Shape) -> Case {
    Case {
        name,
        server,
        concurrency,
        shape,
    }
}

const CASES: [Case; 10] = [
    case("sequential", Server::InProcess, 1, Shape::Spawned),
    case(
        "concurrent_64",
        Server::InProcess,
        CONCURRENCY,
        Shape::Spawned,
    ),
    case("nginx_sequential", Server::Nginx, 1, Shape::Spawned),
    case(
        "nginx_concurrent_64",
        Server::Nginx,
        CONCURRENCY,
        Shape::Spawned,
    ),
    case("block_on_sequential", Server::InProcess, 1, Shape::BlockOn),
    case(
        "block_on_concurrent_64",
        Server::InProcess,
        CONCURRENCY,
        Shape::BlockOn,
    ),
    case(
        "block_on_nginx_sequential",
        Server::Nginx,
        1,
        Shape::BlockOn,
    ),
    case(
        "block_on_nginx_concurrent_64",
        Server::Nginx,
        CONCURRENCY,
        Shape::BlockOn,
    ),
    case("tls_sequential", Server::InProcessTls, 1, Shape::Spawned),
    case(
        "tls_concurrent_64",
        Server::InProcessTls,
        CONCURRENCY,
        Shape::Spawned,
    ),
];

/// The TLS server of a TLS case: its certificate (which the clients trust) and its
/// handshake counts.
struct TlsOrigin {
    cert: TestCert,
    handshakes: Handshakes,
}

/// A client of a case: one of `SUBJECTS` over plain HTTP, or of `TLS_SUBJECTS` over TLS.
#[derive(Clone)]
enum Client {
    Plain(Subject),
    Tls(TlsSubject),
}

struct Settings {
    rounds: usize,
    slice: Duration,
    filters: Vec<String>,
}

impl Settings {
    fn from_env() -> Result<Self, String> {
        let rounds = match std::env::var("ROUNDS") {
            Ok(v) => match v.trim().parse::<usize>() {
                Ok(n) if (1..=MAX_ROUNDS).contains(&n) => n,
                _ => {
                    return Err(format!(
                        "ROUNDS must be a number of rounds from 1 to {MAX_ROUNDS} (got {v:?})"
                    ))
                }
            },
            Err(_) => DEFAULT_ROUNDS,
        };
        let slice = match std::env::var("SLICE_MS") {
            Ok(v) => match v.trim().parse::<u64>() {
                Ok(ms) if ms >= 1 && u128::from(ms) <= MAX_SLICE.as_millis() => {
                    Duration::from_millis(ms)
                }
                _ => {
                    return Err(format!(
                        "SLICE_MS must be a slice in milliseconds from 1 to {} (got {v:?})",
                        MAX_SLICE.as_millis()
                    ))
                }
            },
            Err(_) => DEFAULT_SLICE,
        };
        // `cargo bench` passes `--bench` (and libtest's flags may follow): every argument
        // that is not a flag is a filter on the case names.
        let filters = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect();
        Ok(Self {
            rounds,
            slice,
            filters,
        })
    }

    fn selects(&self, case: &Case) -> bool {
        // `=name` picks one case by its whole name; any other filter, every case whose
        // name contains it.
        self.filters.is_empty()
            || self.filters.iter().any(|f| match f.strip_prefix('=') {
                Some(exact) => case.name == exact,
                None => case.name.contains(f.as_str()),
            })
    }
}

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("alternate: {e}");
            return ExitCode::from(2);
        }
    };
    let cases: Vec<&Case> = CASES.iter().filter(|c| settings.selects(c)).collect();
    if cases.is_empty() {
        let names: Vec<_> = CASES.iter().map(|c| c.name).collect();
        eprintln!(
            "alternate: no case matches {:?}; the cases are {}",
            settings.filters,
            names.join(", ")
        );
        return ExitCode::from(2);
    }
    println!(
        "alternate: {} round(s) of {} ms per client, order rotating each round; {} CPU(s), load average {}",
        settings.rounds,
        settings.slice.as_millis(),
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average()
    );
    let started = Instant::now();
    let mut nginx = None;
    for case in cases {
        let mut tls_origin = None;
        let target = match case.server {
            Server::InProcess | Server::InProcessTls => None,
            Server::Nginx => {
                if nginx.is_none() {
                    match Nginx::start(&support::nginx::Config::default()) {
                        Ok(Some(n)) => {
                            println!("nginx: {} on {}", n.version(), n.addr());
                            nginx = Some(n);
                        }
                        Ok(None) => {
                            println!("\n== {}: skipped, no nginx binary (install nginx or set NGINX=/path)", case.name);
                            continue;
                        }
                        Err(e) => {
                            eprintln!("alternate: nginx is installed but did not start: {e}");
                            return ExitCode::FAILURE;
                        }
                    }
                }
                nginx
                    .as_ref()
                    .map(|n| Target::new(n.addr(), support::nginx::BODY_LEN, None))
            }
        };
        // One runtime per case: its clients and their connections end with it, before
        // the next case (and before nginx stops).
        let rt = runtime();
        let target = match (target, case.server) {
            (Some(target), _) => target,
            (None, Server::InProcessTls) => {
                let cert = TestCert::new();
                let accepted = support::server::Accepted::default();
                let handshakes = Handshakes::default();
                let addr = rt.block_on(tls::start(
                    &cert,
                    accepted.clone(),
                    handshakes.clone(),
                    None,
                ));
                tls_origin = Some(TlsOrigin { cert, handshakes });
                Target::new(addr, support::server::BODY.len(), Some(accepted))
            }
            (None, _) => Target::in_process(&rt),
        };
        if let Err(e) = run_case(&rt, case, &target, tls_origin.as_ref(), &settings) {
            eprintln!("alternate: {}: {e}", case.name);
            return ExitCode::FAILURE;
        }
    }
    drop(nginx);
    println!(
        "\nalternate: done in {:.0} s; load average {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    ExitCode::SUCCESS
}

/// One client of a case, with what was measured of it.
struct Measured {
    name: &'static str,
    subject: Client,
    /// Requests per second, one per round.
    rates: Vec<f64>,
    /// Connections the in-process server accepted during this client's slices.
    accepted_in_rounds: usize,
    /// TLS handshakes the server completed during this client's warm-up (TLS cases).
    handshakes_in_warm_up: HandshakeTally,
    /// TLS handshakes the server completed during this client's slices (TLS cases).
    handshakes_in_rounds: HandshakeTally,
}

fn run_case(
    rt: &Runtime,
    case: &Case,
    target: &Arc<Target>,
    tls_origin: Option<&TlsOrigin>,
    settings: &Settings,
) -> Result<(), String> {
    println!(
        "\n== {}: {}, {}, on {} ({}), {} round(s) of {} ms per client; load average {}",
        case.name,
        if case.concurrency == 1 {
            "one GET at a time".to_owned()
        } else {
            format!("{} GETs in flight", case.concurrency)
        },
        match case.shape {
            Shape::Spawned => "from a spawned task",
            Shape::BlockOn => "from the main thread (block_on)",
        },
        target.addr,
        match case.server {
            Server::InProcess => "in-process hyper server",
            Server::Nginx => "nginx",
            Server::InProcessTls => "in-process hyper server over TLS 1.3, tokio-rustls",
        },
        settings.rounds,
        settings.slice.as_millis(),
        load_average()
    );
    let names: &[&'static str] = match tls_origin {
        Some(_) => &TLS_SUBJECTS,
        None => &SUBJECTS,
    };
    let handshakes = || tls_origin.map(|o| o.handshakes.get()).unwrap_or_default();
    let mut clients = Vec::with_capacity(names.len());
    for &name in names {
        let handshakes_before = handshakes();
        let subject = match tls_origin {
            Some(origin) => Client::Tls(TlsSubject::new(name, &origin.cert, target.addr)),
            None => Client::Plain(rt.block_on(Subject::new(name, target, case.concurrency))),
        };
        timed(rt, case, &subject, target, WARM_UP)?;
        clients.push(Measured {
            name,
            subject,
            rates: Vec::with_capacity(settings.rounds),
            accepted_in_rounds: 0,
            handshakes_in_warm_up: handshakes().since(handshakes_before),
            handshakes_in_rounds: HandshakeTally::default(),
        });
    }
    let opened_in_warm_up = closefirst_stats(&clients).map(|s| s.connections_opened);

    for round in 0..settings.rounds {
        let mut line = format!("round {:>2}:", round + 1);
        for k in 0..clients.len() {
            let n = clients.len();
            let client = &mut clients[(round + k) % n];
            let before = target.accepted();
            let handshakes_before = handshakes();
            let (requests, elapsed) = timed(rt, case, &client.subject, target, settings.slice)?;
            client.accepted_in_rounds += target.accepted().saturating_sub(before);
            client
                .handshakes_in_rounds
                .add(handshakes().since(handshakes_before));
            let rate = requests as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
            client.rates.push(rate);
            line.push_str(&format!(" {}={:.0}", client.name, rate));
        }
        let cf = clients[0].rates[round];
        let hu = clients[1].rates[round];
        line.push_str(&format!(
            "  closefirst/hyper_util_legacy={:.2}",
            cf / hu.max(f64::MIN_POSITIVE)
        ));
        println!("{line}");
    }

    report(
        case,
        target,
        tls_origin.is_some(),
        &clients,
        opened_in_warm_up,
    );
    Ok(())
}

fn closefirst_stats(clients: &[Measured]) -> Option<closefirst::PoolStats> {
    clients.iter().find_map(|c| match &c.subject {
        Client::Plain(Subject::Closefirst(client)) => Some(client.stats()),
        Client::Tls(subject) => subject.closefirst().map(|client| client.stats()),
        _ => None,
    })
}

/// One slice of `length` for `subject`, from where `case.shape` says; before it, one
/// untimed batch reopens whatever the client closed while the others ran. Returns the
/// requests completed and the time they took.
fn timed(
    rt: &Runtime,
    case: &Case,
    subject: &Client,
    target: &Arc<Target>,
    length: Duration,
) -> Result<(u64, Duration), String> {
    let concurrency = case.concurrency;
    let slice = {
        let subject = subject.clone();
        let target = Arc::clone(target);
        async move {
            batch(&subject, &target, concurrency).await?;
            run_for(&subject, &target, concurrency, length).await
        }
    };
    match case.shape {
        Shape::BlockOn => rt.block_on(slice),
        Shape::Spawned => rt
            .block_on(rt.spawn(slice))
            .map_err(|e| format!("the slice's task failed: {e}"))?,
    }
}

/// One batch: one GET, or `concurrency` GETs joined. Returns the requests completed.
async fn batch(subject: &Client, target: &Arc<Target>, concurrency: usize) -> Result<u64, String> {
    let work = async {
        match subject {
            Client::Plain(subject) if concurrency == 1 => {
                subject.get(target, 0).await;
            }
            Client::Plain(subject) => {
                subject.get_concurrently(target, concurrency).await;
            }
            Client::Tls(subject) if concurrency == 1 => {
                subject.get().await;
            }
            Client::Tls(subject) => {
                subject.get_concurrently(concurrency).await;
            }
        }
    };
    tokio::time::timeout(BATCH_TIMEOUT, work)
        .await
        .map_err(|_| format!("a batch took more than {} s", BATCH_TIMEOUT.as_secs()))?;
    Ok(concurrency as u64)
}

/// Whole batches until `length` has passed; returns the requests completed and the time
/// they took (at least `length`, at most one batch more).
async fn run_for(
    subject: &Client,
    target: &Arc<Target>,
    concurrency: usize,
    length: Duration,
) -> Result<(u64, Duration), String> {
    let start = Instant::now();
    let mut requests = 0u64;
    loop {
        requests = requests.saturating_add(batch(subject, target, concurrency).await?);
        let elapsed = start.elapsed();
        if elapsed >= length {
            return Ok((requests, elapsed));
        }
    }
}

/// Median, minimum and maximum of a non-empty set of figures.
#[derive(Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Self {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = match n {
            0 => 0.0,
            _ if n % 2 == 1 => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
        Self {
            median,
            min: v.first().copied().unwrap_or_default(),
            max: v.last().copied().unwrap_or_default(),
        }
    }
}

fn report(
    case: &Case,
    target: &Target,
    tls: bool,
    clients: &[Measured],
    opened_in_warm_up: Option<u64>,
) {
    let name = case.name;
    println!("{name}: client             median req/s     min req/s     max req/s");
    let spreads: Vec<Spread> = clients.iter().map(|c| Spread::of(&c.rates)).collect();
    for (client, s) in clients.iter().zip(&spreads) {
        println!(
            "{name}: {:<18} {:>12.0} {:>13.0} {:>13.0}",
            client.name, s.median, s.min, s.max
        );
    }
    let ours = &clients[0];
    for (other, spread) in clients.iter().zip(&spreads).skip(1) {
        let of_medians = spreads[0].median / spread.median.max(f64::MIN_POSITIVE);
        let per_round: Vec<f64> = ours
            .rates
            .iter()
            .zip(&other.rates)
            .map(|(a, b)| a / b.max(f64::MIN_POSITIVE))
            .collect();
        let r = Spread::of(&per_round);
        println!(
            "{name}: closefirst/{}: per-round ratio median {:.2}x (min {:.2}x, max {:.2}x); ratio of medians {:.2}x",
            other.name, r.median, r.min, r.max, of_medians
        );
    }
    if let Some(stats) = closefirst_stats(clients) {
        let warm = opened_in_warm_up.unwrap_or(0);
        println!(
            "{name}: closefirst opened {} connection(s) ({} in warm-up, {} in the rounds), reused {}, evicted {}",
            stats.connections_opened,
            warm,
            stats.connections_opened.saturating_sub(warm),
            stats.reuses,
            evictions(&stats.evictions)
        );
    }
    if target.counts_connections() {
        let counts: Vec<String> = clients
            .iter()
            .map(|c| format!("{} {}", c.name, c.accepted_in_rounds))
            .collect();
        println!(
            "{name}: the server accepted during the rounds: {}",
            counts.join(", ")
        );
    }
    if tls {
        let counts: Vec<String> = clients
            .iter()
            .map(|c| {
                format!(
                    "{} {} in the rounds ({} in warm-up)",
                    c.name,
                    handshakes(c.handshakes_in_rounds),
                    handshakes(c.handshakes_in_warm_up)
                )
            })
            .collect();
        println!(
            "{name}: TLS handshakes the server completed: {}",
            counts.join("; ")
        );
    }
    for client in clients {
        if let Client::Plain(Subject::Raw(raw)) = &client.subject {
            println!("{name}: raw used {} socket(s)", raw.len());
        }
    }
}

/// Full and resumed TLS handshakes, and failed ones when there are any.
fn handshakes(h: HandshakeTally) -> String {
    let failed = match h.failed {
        0 => String::new(),
        n => format!(", {n} failed"),
    };
    format!("{} full, {} resumed{failed}", h.full, h.resumed)
}

/// The eviction counts that are not zero, or `none`.
fn evictions(e: &closefirst::Evictions) -> String {
    let nonzero: Vec<String> = e
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("{what} {n}"))
        .collect();
    if nonzero.is_empty() {
        "none".to_owned()
    } else {
        nonzero.join(", ")
    }
}

/// The 1, 5 and 15 minute load averages, where the system tells them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}
