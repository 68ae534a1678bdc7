//! A measurement, not a test: runs the fault scenarios against closefirst's default
//! client and against hyper-util's legacy client (also with defaults), and prints a
//! markdown table of what the caller sees and how often the server executed the
//! request. Ignored by default; run it with
//!
//! ```text
//! cargo test --test faults_table -- --ignored --nocapture
//! ```
//!
//! The assertions about closefirst's behaviour are in `tests/faults.rs`; this only
//! reports, so that the README's fault table can be regenerated.

mod support;

#[path = "support/faults.rs"]
mod harness;

use std::error::Error as StdError;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use harness::{eventually, request, simple, Kind, TestBody, CALL_LIMIT};
use support::{CloseMode, Fault, ServerConfig, TestServer};

type Legacy = hyper_util::client::legacy::Client<HttpConnector, TestBody>;

/// The client under measurement.
enum Subject {
    Closefirst(closefirst::Client<TestBody>),
    Legacy(Legacy),
}

impl Subject {
    fn new(closefirst: bool) -> Subject {
        if closefirst {
            Subject::Closefirst(harness::default_client())
        } else {
            Subject::Legacy(
                hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http(),
            )
        }
    }

    /// Sends `req`, reads the body, and describes what the caller saw.
    async fn send(&self, req: Request<TestBody>, limit: Duration) -> String {
        let outcome = tokio::time::timeout(limit, async {
            match self {
                Subject::Closefirst(client) => match client.request(req).await {
                    Ok(resp) => {
                        let attempts = resp
                            .extensions()
                            .get::<closefirst::ConnectionInfo>()
                            .map_or(0, |i| i.attempts);
                        let status = resp.status();
                        let body = body_outcome(resp.into_body().collect().await);
                        format!("{} ({attempts} attempts){body}", status.as_u16())
                    }
                    Err(err) => {
                        let mut flags = Vec::new();
                        if err.is_connect() {
                            flags.push("connect");
                        }
                        if err.is_stale_connection() {
                            flags.push("stale");
                        }
                        format!(
                            "Err {:?}{}{}: {}",
                            err.request_progress(),
                            if flags.is_empty() { "" } else { ", " },
                            flags.join(", "),
                            innermost(&err)
                        )
                    }
                },
                Subject::Legacy(client) => match client.request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let body = body_outcome(resp.into_body().collect().await);
                        format!("{}{body}", status.as_u16())
                    }
                    Err(err) => {
                        let connect = if err.is_connect() { " (connect)" } else { "" };
                        format!("Err{connect}: {}", innermost(&err))
                    }
                },
            }
        })
        .await;
        outcome.unwrap_or_else(|_| format!("no answer within {} ms", limit.as_millis()))
    }
}

fn body_outcome<T>(body: Result<T, hyper::Error>) -> String {
    match body {
        Ok(_) => String::new(),
        Err(err) => format!(", body Err: {}", innermost(&err)),
    }
}

/// The deepest cause's text: what actually went wrong.
fn innermost(err: &(dyn StdError + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// How a scenario prepares the connection before the measured request.
#[derive(Clone, Copy, Debug)]
enum Setup {
    /// No earlier request: a fresh connection.
    Fresh,
    /// One earlier request; its connection is idle.
    Reused,
    /// One earlier request, then the client thread sleeps past the server's idle close.
    ReusedBlocked,
    /// One earlier request, then wait (running) until the server's idle close.
    ReusedAfterClose,
}

struct Scenario {
    name: &'static str,
    setup: Setup,
    config: fn(&str) -> ServerConfig,
    body: fn(Kind) -> Option<TestBody>,
    kinds: &'static [Kind],
    refused: bool,
    limit: Duration,
}

fn fault(id: &str, fault: Fault) -> ServerConfig {
    ServerConfig {
        faults: [(id.to_owned(), fault)].into_iter().collect(),
        ..ServerConfig::default()
    }
}

fn idle_close(mode: CloseMode, stray: bool) -> ServerConfig {
    ServerConfig {
        idle_close: Some(Duration::from_millis(100)),
        close_mode: mode,
        stray_bytes_on_idle_close: stray,
        ..ServerConfig::default()
    }
}

const KINDS: &[Kind] = &[Kind::Get, Kind::Post, Kind::PostKeyed];
const BODY_KINDS: &[Kind] = &[Kind::Put, Kind::Post];

fn scenarios() -> Vec<Scenario> {
    let s = |name, setup, config: fn(&str) -> ServerConfig| Scenario {
        name,
        setup,
        config,
        body: |_| None,
        kinds: KINDS,
        refused: false,
        limit: CALL_LIMIT,
    };
    vec![
        s("RST while idle", Setup::ReusedAfterClose, |_| {
            idle_close(CloseMode::Rst, false)
        }),
        s(
            "RST while idle, client thread blocked",
            Setup::ReusedBlocked,
            |_| idle_close(CloseMode::Rst, false),
        ),
        s(
            "FIN while idle, client thread blocked",
            Setup::ReusedBlocked,
            |_| idle_close(CloseMode::Fin, false),
        ),
        s(
            "`408` + FIN while idle, client thread blocked",
            Setup::ReusedBlocked,
            |_| idle_close(CloseMode::Fin, true),
        ),
        s(
            "request read, FIN, no answer (reused)",
            Setup::Reused,
            |id| fault(id, Fault::FinWithoutAnswer),
        ),
        s(
            "request read, RST, no answer (reused)",
            Setup::Reused,
            |id| fault(id, Fault::RstWithoutAnswer),
        ),
        s("request read, FIN, no answer (fresh)", Setup::Fresh, |id| {
            fault(id, Fault::FinWithoutAnswer)
        }),
        s("request read, RST, no answer (fresh)", Setup::Fresh, |id| {
            fault(id, Fault::RstWithoutAnswer)
        }),
        s("status line + partial headers, FIN", Setup::Reused, |id| {
            fault(id, Fault::PartialHeadThenClose)
        }),
        s("whole head + half the body, FIN", Setup::Reused, |id| {
            fault(id, Fault::HalfBodyThenClose)
        }),
        s("`HTTP/1.1 2xx nonsense`", Setup::Reused, |id| {
            fault(id, Fault::GarbageStatusLine)
        }),
        s("`FOO` instead of a status line", Setup::Reused, |id| {
            fault(id, Fault::NotHttp)
        }),
        s("1 MiB of headers", Setup::Reused, |id| {
            fault(id, Fault::HugeHeaders)
        }),
        s("two different `Content-Length`s", Setup::Reused, |id| {
            fault(id, Fault::ConflictingContentLength)
        }),
        s(
            "`Keep-Alive: timeout=18446744073709551615`",
            Setup::Reused,
            |_| ServerConfig {
                keep_alive_header: Some("timeout=18446744073709551615".into()),
                ..ServerConfig::default()
            },
        ),
        Scenario {
            body: |_| Some(TestBody::bytes(vec![b'x'; 1 << 20])),
            ..s("early `413` before a 1 MiB body", Setup::Reused, |id| {
                fault(id, Fault::EarlyReject)
            })
        },
        Scenario {
            refused: true,
            ..s("connection refused", Setup::Fresh, |_| {
                ServerConfig::default()
            })
        },
        Scenario {
            limit: Duration::from_millis(300),
            ..s("black hole, caller timeout 300 ms", Setup::Reused, |id| {
                fault(id, Fault::BlackHole)
            })
        },
        Scenario {
            body: |_| Some(TestBody::fails_at_once()),
            kinds: BODY_KINDS,
            ..s("request body fails at once (reused)", Setup::Reused, |_| {
                ServerConfig::default()
            })
        },
        Scenario {
            body: |_| Some(TestBody::fails_after_first_bytes()),
            kinds: BODY_KINDS,
            ..s(
                "request body fails after `ab` (reused)",
                Setup::Reused,
                |_| ServerConfig::default(),
            )
        },
        Scenario {
            body: |_| Some(TestBody::fails_after_first_bytes()),
            kinds: BODY_KINDS,
            ..s(
                "request body fails after `ab` (fresh)",
                Setup::Fresh,
                |_| ServerConfig::default(),
            )
        },
    ]
}

/// Runs one scenario for one kind and client; returns the caller's view and the
/// executions (and, for damaged bodies, what the server stored).
fn measure(scenario: &Scenario, kind: Kind, closefirst: bool) -> String {
    let blocked = matches!(scenario.setup, Setup::ReusedBlocked);
    let runtime = if blocked {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()
    .expect("runtime");
    runtime.block_on(async {
        let id = "measured";
        let server = TestServer::start((scenario.config)(id));
        let subject = Subject::new(closefirst);
        let refused_addr = scenario.refused.then(|| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr")
        });
        if !matches!(scenario.setup, Setup::Fresh) {
            let warm = subject
                .send(simple(&server, Kind::Get, "warm-up"), CALL_LIMIT)
                .await;
            // Let the connection go back to the pool (both clients check in on a task).
            tokio::time::sleep(Duration::from_millis(20)).await;
            if !warm.starts_with("200") {
                return format!("warm-up failed: {warm}");
            }
        }
        match scenario.setup {
            Setup::ReusedBlocked => std::thread::sleep(Duration::from_millis(800)),
            Setup::ReusedAfterClose => {
                eventually("the idle close", || server.server_closed_idle() == 1).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => {}
        }
        let mut req = match (scenario.body)(kind) {
            Some(body) => request(&server, kind, id, body),
            None => simple(&server, kind, id),
        };
        if let Some(addr) = refused_addr {
            *req.uri_mut() = format!("http://{addr}/").parse().expect("uri");
        }
        let seen = subject.send(req, scenario.limit).await;
        // A resend may still be on its way when a caller gave up.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut line = format!("{seen}; exec {}", server.calls_for(id));
        // Bodies the server took as complete that the caller never sent whole.
        let damaged: Vec<String> = server
            .bodies_for(id)
            .into_iter()
            .filter(|(bytes, complete)| {
                *complete
                    && !bytes.is_empty()
                    && bytes.as_slice() != b"payload"
                    && bytes.len() != 1 << 20
            })
            .map(|(bytes, _)| format!("{:?}", Bytes::from(bytes)))
            .collect();
        let empty_damaged = scenario.kinds == BODY_KINDS
            && server
                .bodies_for(id)
                .iter()
                .any(|(bytes, complete)| *complete && bytes.is_empty());
        if empty_damaged {
            line.push_str(", server ran it with an empty body");
        }
        if !damaged.is_empty() {
            line.push_str(&format!(
                ", server ran it with body {}",
                damaged.join(" and ")
            ));
        }
        line
    })
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn print_the_fault_table() {
    let mut out = String::from(
        "| scenario | method | closefirst: caller sees; executions | hyper-util legacy: caller sees; executions |\n|---|---|---|---|\n",
    );
    for scenario in scenarios() {
        for &kind in scenario.kinds {
            let ours = measure(&scenario, kind, true);
            let theirs = measure(&scenario, kind, false);
            let method = match kind {
                Kind::Get => "GET",
                Kind::Post => "POST",
                Kind::PostKeyed => "POST + key",
                Kind::Put => "PUT",
            };
            let row = format!("| {} | {method} | {ours} | {theirs} |\n", scenario.name);
            eprint!("{row}");
            out.push_str(&row);
        }
    }
    println!("\n{out}");
}
