//! Connections opened against a real nginx at its default keep-alive (75 s, no
//! `Keep-Alive` header) by GETs a few seconds apart: closefirst at its defaults and
//! hyper-util's legacy client.
//!
//! ```text
//! cargo bench --bench nginx_keepalive                     # 16 GETs, 5 s apart (about 75 s)
//! GETS=4 GAP_MS=1500 cargo bench --bench nginx_keepalive  # a quick check
//! NGINX=/usr/sbin/nginx cargo bench --bench nginx_keepalive
//! ```
//!
//! What it measures: the bench starts nginx (`support/nginx.rs`; `nginx` from `PATH` or
//! the binary in `NGINX`; skipped with a note, exit status 0, when there is none) with
//! `keepalive_timeout 75s` and an access log of `$connection $connection_requests
//! $request_uri`. Two clients, each from a task of its own on a 2-worker runtime and
//! at the same time (they share nginx, not a connection), send `GETS` GETs (default
//! 16, at most 1000), each `GAP_MS` after the previous answer was read (default 5000,
//! at most 600000): closefirst (`closefirst::Client::builder().build()`, idle timeout
//! 4 s, learning on) and hyper-util's legacy client (90 s idle), whose `HttpConnector`
//! is wrapped in a `tower::service_fn` that counts the connections it opens. Each
//! client's paths start with its name, so nginx's log tells their connections apart.
//!
//! Printed per client: GETs, failed GETs, GETs nginx logged more than once, the
//! connections nginx logged requests on (distinct `$connection`), and the connections
//! the client opened by its own count (closefirst's `stats().connections_opened`, the
//! counting connector for hyper-util); then closefirst's evictions and learned idle
//! timeouts, and issue 19's target (closefirst opens at most 3 connections for the
//! default 16 GETs 5 s apart; with 4 s idle it opens one per GET).
//!
//! The run fails (exit status 1) when a closefirst GET fails or is logged twice, or
//! nginx does not start; hyper-util's failures are reported only (with a gap near
//! 75 s it may reuse a connection nginx is closing). Bad settings exit with status 2.

#[path = "support/nginx.rs"]
mod nginx;

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;

use nginx::Nginx;

const DEFAULT_GETS: usize = 16;
const MAX_GETS: usize = 1000;
const DEFAULT_GAP: Duration = Duration::from_secs(5);
const MAX_GAP: Duration = Duration::from_secs(600);
/// nginx's default `keepalive_timeout`.
const KEEPALIVE: Duration = Duration::from_secs(75);
/// Issue 19's target for closefirst with the default 16 GETs.
const TARGET_CONNECTIONS: u64 = 3;
/// A GET with no answer by then counts as failed, so the run always ends.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// nginx writes a request's log line once the response is sent: time for the last one
/// to land before the log is read.
const LOG_SETTLE: Duration = Duration::from_millis(500);
/// Failures printed per client, with their error; the rest are only counted.
const ERRORS_SHOWN: usize = 5;

type BoxError = Box<dyn StdError + Send + Sync>;

const CLOSEFIRST: &str = "closefirst";
const LEGACY: &str = "hyper_util_legacy";

struct Settings {
    gets: usize,
    gap: Duration,
}

impl Settings {
    fn from_env() -> Result<Self, String> {
        let gets = match std::env::var("GETS") {
            Ok(v) => match v.trim().parse::<usize>() {
                Ok(n) if (1..=MAX_GETS).contains(&n) => n,
                _ => {
                    return Err(format!(
                        "GETS must be a number of GETs from 1 to {MAX_GETS} (got {v:?})"
                    ))
                }
            },
            Err(_) => DEFAULT_GETS,
        };
        let gap = match std::env::var("GAP_MS") {
            Ok(v) => match v.trim().parse::<u64>() {
                Ok(ms) if u128::from(ms) <= MAX_GAP.as_millis() => Duration::from_millis(ms),
                _ => {
                    return Err(format!(
                        "GAP_MS must be a gap in milliseconds from 0 to {} (got {v:?})",
                        MAX_GAP.as_millis()
                    ))
                }
            },
            Err(_) => DEFAULT_GAP,
        };
        Ok(Self { gets, gap })
    }
}

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("nginx_keepalive: {e}");
            return ExitCode::from(2);
        }
    };
    let log = std::env::temp_dir().join(format!(
        "closefirst-bench-nginx-keepalive-{}.log",
        std::process::id()
    ));
    let config = nginx::Config {
        keepalive_timeout: KEEPALIVE,
        access_log: Some(log.clone()),
        tls: None,
    };
    let server = match Nginx::start(&config) {
        Ok(Some(n)) => n,
        Ok(None) => {
            println!(
                "nginx_keepalive: skipped, no nginx binary (install nginx or set NGINX=/path)"
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("nginx_keepalive: nginx is installed but did not start: {e}");
            let _ = std::fs::remove_file(&log);
            return ExitCode::FAILURE;
        }
    };
    println!(
        "nginx_keepalive: {} on {}, keepalive_timeout {} s (no Keep-Alive header); {} GET(s) per client, {} ms apart, both clients at the same time",
        server.version(),
        server.addr(),
        KEEPALIVE.as_secs(),
        settings.gets,
        settings.gap.as_millis()
    );

    let code = run(&settings, server.addr(), &log);
    drop(server);
    let _ = std::fs::remove_file(&log);
    code
}

/// What one client saw.
struct Sent {
    /// Each GET's error, if it failed.
    errors: Vec<Option<String>>,
    /// Connections opened, by the client's own count.
    opened: u64,
    /// closefirst's evictions and learned idle timeout, as printed.
    details: Option<String>,
}

impl Sent {
    fn failed(&self) -> usize {
        self.errors.iter().filter(|e| e.is_some()).count()
    }
}

fn run(settings: &Settings, addr: SocketAddr, log: &std::path::Path) -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the machine can start a 2-worker runtime");
    let (gets, gap) = (settings.gets, settings.gap);

    let (ours, legacy) = rt.block_on(async {
        let legacy = tokio::spawn(async move {
            let connects = Arc::new(AtomicU64::new(0));
            let client = legacy_client(Arc::clone(&connects));
            let errors = run_gets(LEGACY, addr, gets, gap, |req| {
                let client = client.clone();
                async move { client.request(req).await.map_err(|e| chain(&e)) }
            })
            .await;
            Sent {
                errors,
                opened: connects.load(Ordering::SeqCst),
                details: None,
            }
        });
        let ours = tokio::spawn(async move {
            let client: closefirst::Client<Empty<Bytes>> = closefirst::Client::builder()
                .build()
                .expect("the defaults are valid");
            let errors = run_gets(CLOSEFIRST, addr, gets, gap, |req| {
                let client = client.clone();
                async move { client.request(req).await.map_err(|e| chain(&e)) }
            })
            .await;
            let stats = client.stats();
            Sent {
                errors,
                opened: stats.connections_opened,
                details: Some(closefirst_details(&stats)),
            }
        });
        let ours = ours.await.expect("the closefirst task does not panic");
        let legacy = legacy.await.expect("the hyper-util task does not panic");
        tokio::time::sleep(LOG_SETTLE).await;
        (ours, legacy)
    });
    // Every client has been dropped with its task: their connections are closed.
    drop(rt);

    let logged = match Logged::read(log) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "nginx_keepalive: cannot read nginx's access log {}: {e}",
                log.display()
            );
            return ExitCode::FAILURE;
        }
    };

    println!(
        "\nclient               GETs   failed   logged twice   connections (nginx log)   connections (client's count)"
    );
    for (name, sent) in [(CLOSEFIRST, &ours), (LEGACY, &legacy)] {
        println!(
            "{name:<18} {:>6} {:>8} {:>14} {:>25} {:>30}",
            sent.errors.len(),
            sent.failed(),
            logged.twice(name),
            logged.connections(name),
            sent.opened
        );
    }
    println!();
    for (name, sent) in [(CLOSEFIRST, &ours), (LEGACY, &legacy)] {
        for (n, e) in sent
            .errors
            .iter()
            .enumerate()
            .filter_map(|(n, e)| e.as_ref().map(|e| (n, e)))
            .take(ERRORS_SHOWN)
        {
            println!("{name}: GET {n}: {e}");
        }
        let answered = sent.errors.len() - sent.failed();
        if logged.requests(name) < answered {
            println!(
                "{name}: nginx logged {} request(s) for {answered} answered",
                logged.requests(name)
            );
        }
        if let Some(details) = &sent.details {
            println!("{name}: {details}");
        }
    }
    let verdict = if gets == DEFAULT_GETS && gap == DEFAULT_GAP {
        if ours.opened <= TARGET_CONNECTIONS {
            "met"
        } else {
            "not met"
        }
    } else {
        "stated for the default 16 GETs 5 s apart"
    };
    println!(
        "closefirst: {} connection(s) opened for {gets} GET(s) (issue 19 target ≤ {TARGET_CONNECTIONS}: {verdict})",
        ours.opened
    );

    let twice = logged.twice(CLOSEFIRST);
    if ours.failed() > 0 || twice > 0 {
        eprintln!(
            "nginx_keepalive: hard check failed for closefirst: {} failed, {twice} logged more than once",
            ours.failed()
        );
        return ExitCode::FAILURE;
    }
    println!("nginx_keepalive: hard checks passed (closefirst: no failed GET, none logged twice)");
    ExitCode::SUCCESS
}

/// closefirst's evictions (non-zero reasons) and learned idle timeout.
fn closefirst_details(stats: &closefirst::PoolStats) -> String {
    let evictions: Vec<String> = stats
        .evictions
        .iter()
        .filter(|&(_, n)| n > 0)
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    let learned: Vec<String> = stats
        .learned_idle_timeouts
        .values()
        .map(|d| format!("{} ms", d.as_millis()))
        .collect();
    format!(
        "evictions: {}; learned idle timeout: {}",
        if evictions.is_empty() {
            "none".to_owned()
        } else {
            evictions.join(", ")
        },
        if learned.is_empty() {
            "none".to_owned()
        } else {
            learned.join(", ")
        }
    )
}

/// hyper-util's legacy client at its defaults, over an `HttpConnector` that counts the
/// connections it opens.
fn legacy_client(
    connects: Arc<AtomicU64>,
) -> hyper_util::client::legacy::Client<
    impl hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
    Empty<Bytes>,
> {
    let http = HttpConnector::new();
    let connector = tower::service_fn(move |uri: Uri| {
        let http = http.clone();
        let connects = Arc::clone(&connects);
        Box::pin(async move {
            let io = http.oneshot(uri).await.map_err(BoxError::from)?;
            connects.fetch_add(1, Ordering::SeqCst);
            Ok::<_, BoxError>(io)
        })
    });
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector)
}

/// `gets` GETs of `/{name}/{n}`, one at a time, each `gap` after the previous answer
/// was read; returns each GET's error, if any.
async fn run_gets<F, Fut>(
    name: &str,
    addr: SocketAddr,
    gets: usize,
    gap: Duration,
    send: F,
) -> Vec<Option<String>>
where
    F: Fn(Request<Empty<Bytes>>) -> Fut,
    Fut: Future<Output = Result<Response<Incoming>, String>>,
{
    let mut errors = Vec::with_capacity(gets);
    for n in 0..gets {
        if n > 0 {
            tokio::time::sleep(gap).await;
        }
        let req = Request::get(format!("http://{addr}/{name}/{n}"))
            .body(Empty::new())
            .expect("a socket address and an ASCII path make a valid request");
        let exchange = async {
            let resp = send(req).await?;
            read_to_end(resp).await
        };
        errors.push(
            match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
                Ok(result) => result.err(),
                Err(_) => Some(format!("no answer in {} s", REQUEST_TIMEOUT.as_secs())),
            },
        );
    }
    errors
}

async fn read_to_end(resp: Response<Incoming>) -> Result<(), String> {
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the body: {}", chain(&e)))?
        .to_bytes();
    if status != http::StatusCode::OK {
        return Err(format!("status {status}"));
    }
    if body.len() != nginx::BODY_LEN {
        return Err(format!(
            "a body of {} bytes instead of {}",
            body.len(),
            nginx::BODY_LEN
        ));
    }
    Ok(())
}

/// An error and its causes, `: `-separated (closefirst's `Display` prints one level).
fn chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// nginx's access log, per client (the first segment of the path).
#[derive(Default)]
struct Logged {
    /// Per client, the `$connection` serials its requests came on.
    connections: BTreeMap<String, BTreeSet<u64>>,
    /// Per path, the times it was logged.
    paths: BTreeMap<String, usize>,
}

impl Logged {
    fn read(path: &std::path::Path) -> std::io::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            // No request reached nginx's log phase: an empty log.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut logged = Logged::default();
        for line in text.lines() {
            let mut fields = line.split(' ');
            let (Some(connection), Some(_requests), Some(uri)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let Ok(connection) = connection.parse::<u64>() else {
                continue;
            };
            let client = uri
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or_default();
            logged
                .connections
                .entry(client.to_owned())
                .or_default()
                .insert(connection);
            *logged.paths.entry(uri.to_owned()).or_default() += 1;
        }
        Ok(logged)
    }

    fn connections(&self, client: &str) -> usize {
        self.connections.get(client).map_or(0, BTreeSet::len)
    }

    fn requests(&self, client: &str) -> usize {
        let prefix = format!("/{client}/");
        self.paths
            .iter()
            .filter(|(p, _)| p.starts_with(&prefix))
            .map(|(_, n)| n)
            .sum()
    }

    fn twice(&self, client: &str) -> usize {
        let prefix = format!("/{client}/");
        self.paths
            .iter()
            .filter(|(p, &n)| p.starts_with(&prefix) && n > 1)
            .count()
    }
}
