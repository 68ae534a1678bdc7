//! Full against resumed TLS handshakes when idle gaps outlast the idle timeout: each
//! client makes its requests one at a time with a pause before each, first pauses
//! longer than the idle timeout (every request needs a new connection, so a handshake:
//! resumed when the client kept the server's session ticket, full otherwise), then
//! pauses shorter than it as the control (the connection is reused, no handshake).
//!
//! ```text
//! cargo bench --bench tls_resumption
//! REQUESTS=20 GAP_MS=2000 IDLE_TIMEOUT_MS=1000 CONTROL_GAP_MS=100 cargo bench --bench tls_resumption
//! NGINX=/usr/sbin/nginx cargo bench --bench tls_resumption
//! ```
//!
//! Servers, on 127.0.0.1, TLS 1.3 only, one self-signed certificate made by `rcgen` at
//! start: the in-process server behind a tokio-rustls acceptor (`support/tls.rs`,
//! rustls's default server session cache, two tickets per handshake), which reads
//! `ServerConnection::handshake_kind` after each handshake and counts the TCP
//! connections it accepts; then nginx when one is installed (`nginx` from `PATH` or the
//! binary in `NGINX`; skipped with a note otherwise), with its default session tickets,
//! logging `$connection $connection_requests $request_uri $ssl_session_reused` per
//! request, from which the bench counts its connections and their handshakes by kind.
//! Both servers close a connection idle for the server keep-alive, `IDLE_TIMEOUT_MS`
//! plus closefirst's default margin (a quarter of it, at most 1 s): the parity the
//! crate's docs ask for, and a timer closefirst's default learning finds, so that it
//! keeps its idle timeout instead of proving a longer one.
//!
//! Clients, each with a rustls client configuration of its own (so its own session
//! cache) trusting that certificate only, and made anew for each server (rustls keys
//! its cache by server name, and both servers are `127.0.0.1`):
//! - `closefirst`: `Builder::tls_config` and every default but `idle_timeout`;
//! - `hyper_util_legacy`: hyper-util's legacy client over hyper-rustls, with
//!   `pool_idle_timeout` at the same value and a tokio pool timer;
//! - `closefirst_no_resumption`: `closefirst` with the configuration's resumption
//!   turned off, the reference for what a full handshake costs after a gap.
//!
//! The requests run from a task spawned on the 2-worker runtime, one client after the
//! other. Per client: one opening request (a full handshake, the cache is empty), then
//! `REQUESTS` (default 10) each after `GAP_MS` (default 1500), then `REQUESTS` each
//! after `CONTROL_GAP_MS` (default 250); `IDLE_TIMEOUT_MS` defaults to 1000. With the
//! defaults a server takes about 52 s (three clients), the whole run under 2 minutes.
//! Printed per client and series: the requests, connections opened (closefirst's
//! `PoolStats::connections_opened`, and the server's count), full and resumed
//! handshakes the server completed, and the latency of the requests (median and max),
//! each measured from the request to the end of its body, so it holds the connect and
//! the handshake when there was one; for closefirst also why its connections were
//! closed (`PoolStats::evictions`: at its own idle or learned timeout, the client
//! first, or found closed by the server) and its probes (the first idle connection of
//! an origin is kept, out of rotation, past the idle timeout until the server closes
//! it or about twice the idle time has passed; a close seen that way is what closefirst
//! learns).

// This harness uses a part of the shared support code.
#[allow(dead_code)]
mod support;
#[allow(dead_code)]
#[path = "support/tls.rs"]
mod tls;

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use support::nginx::{self, Nginx, TlsPem};
use support::server::Accepted;
use tls::{HandshakeTally, Handshakes, TestCert};

const CLIENTS: [&str; 3] = [
    "closefirst",
    "hyper_util_legacy",
    "closefirst_no_resumption",
];
/// The two series after the opening request, as they appear in request paths.
const PAST_IDLE: &str = "past_idle";
const WITHIN_IDLE: &str = "within_idle";
/// More requests or a longer pause than this is refused: the run must stay bounded.
const MAX_REQUESTS: usize = 1000;
const MAX_PAUSE: Duration = Duration::from_secs(60);
/// A request that takes longer than this means something is stuck.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

type LegacyTlsClient =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

struct Settings {
    requests: usize,
    gap: Duration,
    control_gap: Duration,
    idle_timeout: Duration,
    /// When the servers close an idle connection: `idle_timeout` plus closefirst's
    /// default margin.
    server_idle: Duration,
}

impl Settings {
    fn from_env() -> Result<Self, String> {
        let requests = match std::env::var("REQUESTS") {
            Ok(v) => match v.trim().parse::<usize>() {
                Ok(n) if (1..=MAX_REQUESTS).contains(&n) => n,
                _ => {
                    return Err(format!(
                        "REQUESTS must be a number of requests from 1 to {MAX_REQUESTS} (got {v:?})"
                    ))
                }
            },
            Err(_) => 10,
        };
        let idle_timeout = millis("IDLE_TIMEOUT_MS", 1000)?;
        let gap = millis("GAP_MS", 1500)?;
        let control_gap = millis("CONTROL_GAP_MS", 250)?;
        let margin = (idle_timeout / 4).min(Duration::from_secs(1));
        let server_idle = idle_timeout + margin;
        if gap <= server_idle {
            return Err(format!(
                "GAP_MS ({} ms) must be longer than the servers' keep-alive, IDLE_TIMEOUT_MS plus \
                 a quarter of it up to 1 s ({} ms), so that every request after it needs a new connection",
                gap.as_millis(),
                server_idle.as_millis()
            ));
        }
        if control_gap >= idle_timeout {
            return Err(format!(
                "CONTROL_GAP_MS ({} ms) must be shorter than IDLE_TIMEOUT_MS ({} ms)",
                control_gap.as_millis(),
                idle_timeout.as_millis()
            ));
        }
        Ok(Self {
            requests,
            gap,
            control_gap,
            idle_timeout,
            server_idle,
        })
    }
}

/// A duration in milliseconds from the environment variable `name`, 1 ms to
/// `MAX_PAUSE`, or `default` when it is not set.
fn millis(name: &str, default: u64) -> Result<Duration, String> {
    match std::env::var(name) {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(ms) if ms >= 1 && u128::from(ms) <= MAX_PAUSE.as_millis() => {
                Ok(Duration::from_millis(ms))
            }
            _ => Err(format!(
                "{name} must be a duration in milliseconds from 1 to {} (got {v:?})",
                MAX_PAUSE.as_millis()
            )),
        },
        Err(_) => Ok(Duration::from_millis(default)),
    }
}

/// What one series of one client came to.
#[derive(Default)]
struct Series {
    name: &'static str,
    requests: usize,
    latencies: Vec<Duration>,
    /// closefirst's `connections_opened` during the series.
    opened_by_client: Option<u64>,
    /// Connections the server accepted (the in-process server) or saw a first request
    /// on (nginx), and their handshakes.
    accepted: usize,
    handshakes: HandshakeTally,
}

/// The in-process server's counters, read around each series.
#[derive(Clone)]
struct Counters {
    accepted: Accepted,
    handshakes: Handshakes,
}

enum Subject {
    Closefirst(closefirst::Client<Empty<Bytes>>),
    HyperUtilLegacy(LegacyTlsClient),
}

impl Subject {
    fn new(name: &str, cert: &TestCert, idle_timeout: Duration) -> Result<Subject, String> {
        let mut config = cert.client_config();
        Ok(match name {
            "closefirst" | "closefirst_no_resumption" => {
                if name == "closefirst_no_resumption" {
                    config.resumption = rustls::client::Resumption::disabled();
                }
                Subject::Closefirst(
                    closefirst::Client::builder()
                        .idle_timeout(idle_timeout)
                        .tls_config(config)
                        .build()
                        .map_err(|e| format!("closefirst refused IDLE_TIMEOUT_MS: {e}"))?,
                )
            }
            "hyper_util_legacy" => {
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(config)
                    .https_only()
                    .enable_http1()
                    .build();
                Subject::HyperUtilLegacy(
                    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                        .pool_idle_timeout(idle_timeout)
                        .pool_timer(TokioTimer::new())
                        .build(https),
                )
            }
            _ => unreachable!("CLIENTS lists every name"),
        })
    }

    fn stats(&self) -> Option<closefirst::PoolStats> {
        match self {
            Subject::Closefirst(client) => Some(client.stats()),
            Subject::HyperUtilLegacy(_) => None,
        }
    }

    fn opened(&self) -> Option<u64> {
        self.stats().map(|s| s.connections_opened)
    }

    /// One GET with its body read to the end; returns how long it took.
    async fn get(&self, uri: Uri) -> Result<Duration, String> {
        let start = Instant::now();
        let req = Request::get(uri.clone())
            .body(Empty::new())
            .expect("a GET with a parsed URI is a valid request");
        let work = async {
            let resp: http::Response<Incoming> = match self {
                Subject::Closefirst(client) => {
                    client.request(req).await.map_err(|e| e.to_string())?
                }
                Subject::HyperUtilLegacy(client) => {
                    client.request(req).await.map_err(|e| e.to_string())?
                }
            };
            if !resp.status().is_success() {
                return Err(format!("the server answered {}", resp.status()));
            }
            resp.into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?;
            Ok(())
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
            Ok(Ok(())) => Ok(start.elapsed()),
            Ok(Err(e)) => Err(format!("GET {uri}: {e}")),
            Err(_) => Err(format!(
                "GET {uri} took more than {} s",
                REQUEST_TIMEOUT.as_secs()
            )),
        }
    }
}

/// The opening request and the two series of client `name`, from a spawned task, and
/// closefirst's pool stats at the end.
async fn run_client(
    name: &'static str,
    subject: Subject,
    base: String,
    counters: Option<Counters>,
    requests: usize,
    gaps: [Duration; 2],
) -> Result<(Vec<Series>, Option<closefirst::PoolStats>), String> {
    let plan = [
        ("opening", 1, Duration::ZERO),
        (PAST_IDLE, requests, gaps[0]),
        (WITHIN_IDLE, requests, gaps[1]),
    ];
    let mut done = Vec::with_capacity(plan.len());
    for (series, n, gap) in plan {
        let opened_before = subject.opened();
        let server_before = counters
            .as_ref()
            .map(|c| (c.accepted.get(), c.handshakes.get()));
        let mut latencies = Vec::with_capacity(n);
        for i in 0..n {
            tokio::time::sleep(gap).await;
            let uri = format!("{base}/{name}/{series}/{i}")
                .parse()
                .expect("a socket address and a plain path make a valid URI");
            latencies.push(subject.get(uri).await?);
        }
        let mut result = Series {
            name: series,
            requests: n,
            latencies,
            opened_by_client: subject
                .opened()
                .zip(opened_before)
                .map(|(after, before)| after.saturating_sub(before)),
            ..Series::default()
        };
        if let (Some(c), Some((accepted, handshakes))) = (&counters, server_before) {
            result.accepted = c.accepted.get().saturating_sub(accepted);
            result.handshakes = c.handshakes.get().since(handshakes);
        }
        done.push(result);
    }
    Ok((done, subject.stats()))
}

/// Connections opened and their handshakes by client and series, from nginx's access
/// log (`$connection $connection_requests $request_uri $ssl_session_reused`): a line
/// with `$connection_requests` 1 is a new connection's first request, after its
/// handshake. (A connection that carried no request is not in the log: the clients
/// here open one only for a request.)
fn count_from_log(log: &Path, client: &str, series: &mut Series) -> Result<(), String> {
    let text = std::fs::read_to_string(log)
        .map_err(|e| format!("reading nginx's access log {}: {e}", log.display()))?;
    let prefix = format!("/{client}/{}/", series.name);
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let [_connection, requests, uri, reused] = fields[..] else {
            continue;
        };
        if uri.starts_with(&prefix) && requests == "1" {
            series.accepted += 1;
            match reused {
                "r" => series.handshakes.resumed += 1,
                _ => series.handshakes.full += 1,
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tls_resumption: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "tls_resumption: {} request(s) after gaps of {} ms, then {} after gaps of {} ms; client \
         idle timeout {} ms, servers close idle connections after {} ms; {} CPU(s), load average {}",
        settings.requests,
        settings.gap.as_millis(),
        settings.requests,
        settings.control_gap.as_millis(),
        settings.idle_timeout.as_millis(),
        settings.server_idle.as_millis(),
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average()
    );
    let started = Instant::now();
    let cert = TestCert::new();
    let result = in_process(&cert, &settings).and_then(|()| with_nginx(&cert, &settings));
    if let Err(e) = result {
        eprintln!("tls_resumption: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "\ntls_resumption: done in {:.0} s; load average {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    ExitCode::SUCCESS
}

fn in_process(cert: &TestCert, settings: &Settings) -> Result<(), String> {
    // One runtime per server: its clients and connections end with it.
    let rt = support::subject::runtime();
    let counters = Counters {
        accepted: Accepted::default(),
        handshakes: Handshakes::default(),
    };
    let addr = rt.block_on(tls::start(
        cert,
        counters.accepted.clone(),
        counters.handshakes.clone(),
        Some(settings.server_idle),
    ));
    println!("\n== in-process hyper server behind tokio-rustls (TLS 1.3) on {addr}");
    for name in CLIENTS {
        let (series, stats) = run(
            &rt,
            name,
            cert,
            &format!("https://{addr}"),
            Some(&counters),
            settings,
        )?;
        print_client(name, &series, stats.as_ref());
    }
    Ok(())
}

fn with_nginx(cert: &TestCert, settings: &Settings) -> Result<(), String> {
    let log = std::env::temp_dir().join(format!(
        "closefirst-bench-tls-resumption-{}.log",
        std::process::id()
    ));
    let (cert_pem, key_pem) = cert.pem();
    let config = nginx::Config {
        keepalive_timeout: settings.server_idle,
        access_log: Some(log.clone()),
        tls: Some(TlsPem {
            cert: cert_pem.to_owned(),
            key: key_pem.to_owned(),
        }),
    };
    let server = match Nginx::start(&config) {
        Ok(Some(n)) => n,
        Ok(None) => {
            println!("\n== nginx: skipped, no nginx binary (install nginx or set NGINX=/path)");
            return Ok(());
        }
        Err(e) => {
            let _ = std::fs::remove_file(&log);
            return Err(format!("nginx is installed but did not start: {e}"));
        }
    };
    println!(
        "\n== {} on {} (TLS 1.3, session tickets; counts from its access log)",
        server.version(),
        server.addr()
    );
    let outcome = (|| {
        let rt = support::subject::runtime();
        for name in CLIENTS {
            let base = format!("https://{}", server.addr());
            let (mut series, stats) = run(&rt, name, cert, &base, None, settings)?;
            for s in &mut series {
                count_from_log(&log, name, s)?;
            }
            print_client(name, &series, stats.as_ref());
        }
        Ok(())
    })();
    drop(server);
    let _ = std::fs::remove_file(&log);
    outcome
}

/// Client `name`'s series against the server at `base`, from a task spawned on `rt`.
fn run(
    rt: &tokio::runtime::Runtime,
    name: &'static str,
    cert: &TestCert,
    base: &str,
    counters: Option<&Counters>,
    settings: &Settings,
) -> Result<(Vec<Series>, Option<closefirst::PoolStats>), String> {
    let subject = Subject::new(name, cert, settings.idle_timeout)?;
    let task = run_client(
        name,
        subject,
        base.to_owned(),
        counters.cloned(),
        settings.requests,
        [settings.gap, settings.control_gap],
    );
    rt.block_on(rt.spawn(task))
        .map_err(|e| format!("{name}'s task failed: {e}"))?
}

/// The client's table, and for closefirst how its connections ended: closed at its
/// idle timeout (the client first) or found closed by the server, and its probes.
fn print_client(name: &str, series: &[Series], stats: Option<&closefirst::PoolStats>) {
    println!(
        "{name:<25} {:<12} {:>8} {:>14} {:>6} {:>8} {:>12} {:>10}",
        "series", "requests", "opened cl/srv", "full", "resumed", "median ms", "max ms"
    );
    for s in series {
        let client = s
            .opened_by_client
            .map_or_else(|| "-".to_owned(), |n| n.to_string());
        let mut sorted = s.latencies.clone();
        sorted.sort();
        let n = sorted.len();
        let median = match n {
            0 => Duration::ZERO,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
        };
        let max = sorted.last().copied().unwrap_or_default();
        let failed = match s.handshakes.failed {
            0 => String::new(),
            n => format!("  ({n} failed handshake(s))"),
        };
        println!(
            "{name:<25} {:<12} {:>8} {:>14} {:>6} {:>8} {:>12.2} {:>10.2}{failed}",
            s.name,
            s.requests,
            format!("{client}/{}", s.accepted),
            s.handshakes.full,
            s.handshakes.resumed,
            median.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
        );
    }
    if let Some(stats) = stats {
        let evicted: Vec<String> = stats
            .evictions
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(why, n)| format!("{why} {n}"))
            .collect();
        let p = &stats.probes;
        println!(
            "{name:<25} evicted: {}; probes started {}, proven {}, closed by the server {}",
            if evicted.is_empty() {
                "none".to_owned()
            } else {
                evicted.join(", ")
            },
            p.started,
            p.proven,
            p.closed_by_server
        );
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}
