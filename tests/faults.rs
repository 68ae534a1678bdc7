//! Fault behaviour as a tested feature: each scenario of the fault table, for GET,
//! POST and POST with an `Idempotency-Key`, against the test server, counting the
//! server's handler calls per request id and checking that no fd is left open.
//!
//! Expected outcomes ("executions" are server handler calls for the request id):
//!
//! | scenario | GET | POST | POST + Idempotency-Key |
//! |---|---|---|---|
//! | RST / FIN / `408` + close while idle | Ok, 1, fresh connection | same | same |
//! | read, then FIN or RST without answer, reused connection | Ok, 2 | Err `WrittenNoResponse`, stale, 1 | Ok, 2 |
//! | read, then FIN or RST without answer, fresh connection | Err `WrittenNoResponse`, 1 | same | same |
//! | partial head, garbage status, 1 MiB of headers, two `Content-Length`s | Err `ResponseStarted`, 1 | same | same |
//! | whole head, half the body, close | `200`, the body fails, 1 | same | same |
//! | connection refused | Err connect, `NotWritten`, 0 | same | same |
//! | read, RST, no answer (reused), and the resend's connect is refused | Err `WrittenNoResponse`, 1, 2 attempts | Err `WrittenNoResponse`, 1 | as GET |
//! | the request body fails | (PUT) Err body, 0 | Err body, 0 | same |
//! | early `413` before a 1 MiB body | see [`early_413_before_a_large_body_is_read`] | same | same |

mod support;

#[path = "support/contract.rs"]
mod contract;
#[path = "support/faults.rs"]
mod harness;

use std::time::Duration;

use http::{Method, Request, StatusCode};

use closefirst::{Client, Error, Progress};
use harness::{
    call, default_client, eventually, isolated, origin, request, simple, warm, Flavor, Kind,
    TestBody, CALL_LIMIT, KINDS, PATIENCE,
};
use support::{CloseMode, Fault, ServerConfig, TestServer};

/// The server's idle timeout in the idle-close scenarios.
const SERVER_IDLE: Duration = Duration::from_millis(100);
/// How long the client's thread is blocked past the server's idle close: many times
/// `SERVER_IDLE`, so the close has surely happened (and it is asserted).
const BLOCKED: Duration = Duration::from_millis(800);

fn with_fault(id: &str, fault: Fault) -> ServerConfig {
    ServerConfig {
        faults: [(id.to_owned(), fault)].into_iter().collect(),
        ..ServerConfig::default()
    }
}

/// Asserts a request error's basics: progress, attempts, and the `Display` naming the
/// method and origin.
fn assert_request_error(
    err: &Error,
    progress: Progress,
    attempts: u32,
    kind: Kind,
    server: &TestServer,
    case: &str,
) {
    assert_eq!(err.request_progress(), progress, "{case}: {err:?}");
    assert!(!err.is_connect(), "{case}: {err:?}");
    contract::assert_attempts(err, attempts, case);
    contract::assert_names_request(err, kind.method().as_str(), &origin(server), case);
}

// ---------------------------------------------------------------------------------
// The server closes an idle connection: the client must notice before reusing it.
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum IdleClose {
    /// RST; the client's runtime runs, so its connection task sees the reset.
    RstNoticed,
    /// RST while the client's thread is blocked: only the look before reuse sees it.
    RstBlocked,
    /// FIN while the client's thread is blocked.
    FinBlocked,
    /// A stray `408` and FIN while the client's thread is blocked.
    Stray408Blocked,
}

fn idle_close_case(how: IdleClose, kind: Kind) {
    let flavor = match how {
        IdleClose::RstNoticed => Flavor::Multi,
        _ => Flavor::Current,
    };
    isolated(flavor, || async move {
        let case = format!("{how:?}/{kind:?}");
        let server = TestServer::start(ServerConfig {
            idle_close: Some(SERVER_IDLE),
            close_mode: match how {
                IdleClose::RstNoticed | IdleClose::RstBlocked => CloseMode::Rst,
                _ => CloseMode::Fin,
            },
            stray_bytes_on_idle_close: matches!(how, IdleClose::Stray408Blocked),
            ..ServerConfig::default()
        });
        let client = default_client();
        warm(&client, &server).await;
        match how {
            IdleClose::RstNoticed => {
                eventually("the server's idle close", || {
                    server.server_closed_idle() == 1
                })
                .await;
                eventually("the pool to drop the reset connection", || {
                    client.stats().idle == 0
                })
                .await;
            }
            _ => {
                // Blocks every client task: hyper's connection task cannot see the close.
                std::thread::sleep(BLOCKED);
                assert_eq!(server.server_closed_idle(), 1, "{case}: server closed");
                assert_eq!(server.closes_done(), 1, "{case}: server closed");
            }
        }

        let answer = call(&client, simple(&server, kind, "after-idle"))
            .await
            .unwrap_or_else(|e| panic!("{case}: {e:?}"));
        assert_eq!(answer.status, StatusCode::OK, "{case}");
        assert!(!answer.info.reused, "{case}: went on a fresh connection");
        assert_eq!(
            answer.info.attempts, 1,
            "{case}: the stale one was never written to"
        );
        assert_eq!(server.calls_for("after-idle"), 1, "{case}");
        assert_eq!(server.connections_accepted(), 2, "{case}");
        let stats = client.stats();
        assert!(stats.evictions.closed_by_server >= 1, "{case}: {stats:?}");
    });
}

#[test]
fn rst_while_idle() {
    for kind in KINDS {
        idle_close_case(IdleClose::RstNoticed, kind);
    }
}

#[test]
fn rst_while_idle_with_the_client_thread_blocked() {
    for kind in KINDS {
        idle_close_case(IdleClose::RstBlocked, kind);
    }
}

#[test]
fn fin_while_idle_with_the_client_thread_blocked() {
    for kind in KINDS {
        idle_close_case(IdleClose::FinBlocked, kind);
    }
}

#[test]
fn stray_408_then_close_while_idle() {
    for kind in KINDS {
        idle_close_case(IdleClose::Stray408Blocked, kind);
    }
}

// ---------------------------------------------------------------------------------
// The server reads the request and closes without answering.
// ---------------------------------------------------------------------------------

fn no_answer_case(fault: Fault, reused: bool, kind: Kind) {
    isolated(Flavor::Multi, || async move {
        let case = format!("{fault:?}/reused={reused}/{kind:?}");
        let id = "no-answer";
        let server = TestServer::start(with_fault(id, fault));
        let client = default_client();
        if reused {
            warm(&client, &server).await;
        }
        let result = call(&client, simple(&server, kind, id)).await;
        let stats = client.stats();
        if reused && kind.resendable() {
            let answer = result.unwrap_or_else(|e| panic!("{case}: {e:?}"));
            assert_eq!(answer.status, StatusCode::OK, "{case}");
            assert_eq!(answer.info.attempts, 2, "{case}");
            assert!(
                !answer.info.reused,
                "{case}: the resend went on a fresh connection"
            );
            assert_eq!(server.calls_for(id), 2, "{case}: once per attempt");
            assert_eq!(stats.resends.written_no_response, 1, "{case}");
        } else {
            let err = result.expect_err(&case);
            assert_eq!(
                server.calls_for(id),
                1,
                "{case}: executed once, never twice"
            );
            assert_request_error(&err, Progress::WrittenNoResponse, 1, kind, &server, &case);
            assert_eq!(err.is_reused_connection(), reused, "{case}");
            assert_eq!(err.is_stale_connection(), reused, "{case}: {err:?}");
            assert_eq!(stats.resends.written_no_response, 0, "{case}");
        }
        assert_eq!(stats.resends.not_written, 0, "{case}");
    });
}

#[test]
fn read_then_fin_without_answer_on_a_reused_connection() {
    for kind in KINDS {
        no_answer_case(Fault::FinWithoutAnswer, true, kind);
    }
}

#[test]
fn read_then_rst_without_answer_on_a_reused_connection() {
    for kind in KINDS {
        no_answer_case(Fault::RstWithoutAnswer, true, kind);
    }
}

#[test]
fn read_then_fin_without_answer_on_a_fresh_connection() {
    for kind in KINDS {
        no_answer_case(Fault::FinWithoutAnswer, false, kind);
    }
}

#[test]
fn read_then_rst_without_answer_on_a_fresh_connection() {
    for kind in KINDS {
        no_answer_case(Fault::RstWithoutAnswer, false, kind);
    }
}

#[test]
fn a_resend_that_cannot_connect_reports_the_furthest_progress() {
    for kind in KINDS {
        isolated(Flavor::Multi, || async move {
            let case = format!("{kind:?}");
            let id = "then-refused";
            // The first attempt is executed and reset; the resend finds nobody listening.
            let server = TestServer::start(with_fault(id, Fault::RstWithoutAnswerThenRefuse));
            let client = default_client();
            warm(&client, &server).await;
            let err = call(&client, simple(&server, kind, id))
                .await
                .expect_err(&case);
            assert_eq!(server.calls_for(id), 1, "{case}");
            let attempts = if kind.resendable() { 2 } else { 1 };
            // Not `NotWritten`: the server did execute it.
            assert_eq!(
                err.request_progress(),
                Progress::WrittenNoResponse,
                "{case}: {err:?}"
            );
            contract::assert_attempts(&err, attempts, &case);
            contract::assert_names_request(&err, kind.method().as_str(), &origin(&server), &case);
        });
    }
}

// ---------------------------------------------------------------------------------
// Response bytes arrive, but not a usable response: never resent.
// ---------------------------------------------------------------------------------

fn response_started_case(fault: Fault, kind: Kind) {
    isolated(Flavor::Multi, || async move {
        let case = format!("{fault:?}/{kind:?}");
        let id = "bad-response";
        let server = TestServer::start(with_fault(id, fault));
        let client = default_client();
        // On a reused connection, where a resend would be tempting.
        warm(&client, &server).await;
        let err = call(&client, simple(&server, kind, id))
            .await
            .expect_err(&case);
        assert_eq!(
            server.calls_for(id),
            1,
            "{case}: executed once, never resent"
        );
        assert_eq!(server.seen_for(id), 1, "{case}: never resent");
        assert_request_error(&err, Progress::ResponseStarted, 1, kind, &server, &case);
        assert!(!err.is_stale_connection(), "{case}: {err:?}");
        let stats = client.stats();
        assert_eq!(
            stats.resends.written_no_response + stats.resends.not_written,
            0,
            "{case}"
        );
    });
}

#[test]
fn status_line_and_partial_headers_then_close() {
    for kind in KINDS {
        response_started_case(Fault::PartialHeadThenClose, kind);
    }
}

#[test]
fn garbage_status_line() {
    for kind in KINDS {
        response_started_case(Fault::GarbageStatusLine, kind);
        response_started_case(Fault::NotHttp, kind);
    }
}

#[test]
fn one_mebibyte_of_headers() {
    for kind in KINDS {
        response_started_case(Fault::HugeHeaders, kind);
    }
}

#[test]
fn conflicting_content_lengths() {
    for kind in KINDS {
        response_started_case(Fault::ConflictingContentLength, kind);
    }
}

#[test]
fn whole_head_and_half_the_body_then_close() {
    for kind in KINDS {
        isolated(Flavor::Multi, || async move {
            let case = format!("{kind:?}");
            let id = "half-body";
            let server = TestServer::start(with_fault(id, Fault::HalfBodyThenClose));
            let client = default_client();
            warm(&client, &server).await;
            let answer = call(&client, simple(&server, kind, id))
                .await
                .unwrap_or_else(|e| panic!("{case}: the head arrived whole: {e:?}"));
            assert_eq!(answer.status, StatusCode::OK, "{case}");
            assert_eq!(answer.info.attempts, 1, "{case}");
            answer.body.expect_err("the body ends early");
            assert_eq!(server.calls_for(id), 1, "{case}: never resent");
            assert_eq!(server.seen_for(id), 1, "{case}: never resent");
            eventually("the broken connection to be dropped", || {
                let stats = client.stats();
                stats.active == 0 && stats.idle == 0
            })
            .await;
        });
    }
}

// ---------------------------------------------------------------------------------
// Nothing to talk to.
// ---------------------------------------------------------------------------------

#[test]
fn connection_refused() {
    for kind in KINDS {
        isolated(Flavor::Multi, || async move {
            let case = format!("{kind:?}");
            // A port that was just free: nobody listens there now.
            let addr = {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                listener.local_addr().expect("local_addr")
            };
            let client = default_client();
            let mut req = Request::builder()
                .method(kind.method())
                .uri(format!("http://{addr}/"));
            if kind == Kind::PostKeyed {
                req = req.header("idempotency-key", "k");
            }
            let req = req.body(TestBody::bytes("payload")).expect("valid request");
            let err = call(&client, req).await.expect_err(&case);
            assert!(err.is_connect(), "{case}: {err:?}");
            assert_eq!(err.request_progress(), Progress::NotWritten, "{case}");
            assert!(!err.is_stale_connection(), "{case}");
            contract::assert_attempts(&err, 1, &case);
            assert!(
                err.to_string().contains(&addr.to_string()),
                "{case}: `{err}` names the origin"
            );
            let origin = format!("http://{addr}");
            contract::assert_names_request(&err, kind.method().as_str(), &origin, &case);
            assert_eq!(client.stats().active, 0, "{case}");
        });
    }
}

#[test]
fn a_black_hole_under_a_caller_timeout() {
    for kind in KINDS {
        isolated(Flavor::Multi, || async move {
            let case = format!("{kind:?}");
            let id = "black-hole";
            let server = TestServer::start(with_fault(id, Fault::BlackHole));
            let client = default_client();
            warm(&client, &server).await;
            let caller_limit = Duration::from_millis(300);
            let started = std::time::Instant::now();
            let outcome =
                tokio::time::timeout(caller_limit, client.request(simple(&server, kind, id))).await;
            assert!(outcome.is_err(), "{case}: the caller's timeout fired");
            assert!(started.elapsed() < CALL_LIMIT, "{case}: bounded");
            eventually("the server to read the request", || {
                server.calls_for(id) == 1
            })
            .await;
            eventually("the dropped request's connection to be released", || {
                let stats = client.stats();
                stats.active == 0 && stats.waiting == 0
            })
            .await;
            let stats = client.stats();
            assert_eq!(stats.idle, 0, "{case}: the connection was not pooled");
            assert_eq!(stats.evictions.cancelled, 1, "{case}: {stats:?}");
            // The client still works.
            let answer = call(&client, simple(&server, kind, "after-black-hole"))
                .await
                .unwrap_or_else(|e| panic!("{case}: {e:?}"));
            assert_eq!(answer.status, StatusCode::OK, "{case}");
            assert_eq!(server.calls_for(id), 1, "{case}: never resent");
        });
    }
}

// ---------------------------------------------------------------------------------
// The server closes after every N requests.
// ---------------------------------------------------------------------------------

fn close_after_case(announce: bool, kind: Kind) {
    isolated(Flavor::Multi, || async move {
        const EVERY: usize = 3;
        const REQUESTS: usize = 9;
        let case = format!("announce={announce}/{kind:?}");
        let server = TestServer::start(ServerConfig {
            close_after_requests: Some(EVERY),
            announce_close_after_requests: announce,
            ..ServerConfig::default()
        });
        let client = default_client();
        for i in 0..REQUESTS {
            let id = format!("r{i}");
            let answer = call(&client, simple(&server, kind, &id))
                .await
                .unwrap_or_else(|e| panic!("{case}/{id}: {e:?}"));
            assert_eq!(answer.status, StatusCode::OK, "{case}/{id}");
            answer.body.expect("the body is complete");
            assert_eq!(answer.info.attempts, 1, "{case}/{id}");
            assert_eq!(server.calls_for(&id), 1, "{case}/{id}");
            // Wait for the server's close to be done, not for the race with it: that
            // race is `tests/race.rs`'s subject.
            let closes = (i + 1) / EVERY;
            eventually("the server's close", || server.closes_done() == closes).await;
            eventually("the connection to be checked in", || {
                client.stats().active == 0
            })
            .await;
        }
        assert_eq!(server.connections_accepted(), REQUESTS / EVERY, "{case}");
        assert_eq!(
            server.requests_per_connection(),
            vec![EVERY; REQUESTS / EVERY]
        );
        let stats = client.stats();
        if announce {
            assert_eq!(
                stats.evictions.connection_close,
                (REQUESTS / EVERY) as u64,
                "{case}: {stats:?}"
            );
        }
    });
}

#[test]
fn server_closes_after_every_n_requests_with_connection_close() {
    for kind in KINDS {
        close_after_case(true, kind);
    }
}

#[test]
fn server_closes_after_every_n_requests_without_connection_close() {
    for kind in KINDS {
        close_after_case(false, kind);
    }
}

// ---------------------------------------------------------------------------------
// Keep-Alive hints a server may send: none may panic or stop the client.
// ---------------------------------------------------------------------------------

/// `(Keep-Alive value, whether the connection may be reused)`.
const KEEP_ALIVE_VALUES: [(&str, bool); 7] = [
    ("timeout=abc", true),
    ("timeout=-1", true),
    ("timeout=99999999999999999999", true),
    ("timeout=18446744073709551615", true),
    ("abc", true),
    (
        "timeout=18446744073709551615, max=18446744073709551615",
        true,
    ),
    ("timeout=0", false),
];

#[test]
fn malformed_keep_alive_values() {
    for (value, reusable) in KEEP_ALIVE_VALUES {
        for kind in KINDS {
            isolated(Flavor::Multi, || async move {
                let case = format!("Keep-Alive: {value}/{kind:?}");
                let server = TestServer::start(ServerConfig {
                    keep_alive_header: Some(value.to_owned()),
                    ..ServerConfig::default()
                });
                let client = default_client();
                let first = call(&client, simple(&server, kind, "first"))
                    .await
                    .unwrap_or_else(|e| panic!("{case}: {e:?}"));
                first.body.expect("the body is complete");
                eventually("the check-in", || client.stats().active == 0).await;
                assert_eq!(client.stats().idle, usize::from(reusable), "{case}");
                let second = call(&client, simple(&server, kind, "second"))
                    .await
                    .unwrap_or_else(|e| panic!("{case}: the next request works: {e:?}"));
                assert_eq!(second.status, StatusCode::OK, "{case}");
                second.body.expect("the body is complete");
                assert_eq!(second.info.reused, reusable, "{case}");
                assert_eq!(
                    server.connections_accepted(),
                    if reusable { 1 } else { 2 },
                    "{case}"
                );
                assert_eq!(server.calls_for("first"), 1, "{case}");
                assert_eq!(server.calls_for("second"), 1, "{case}");
            });
        }
    }
}

// ---------------------------------------------------------------------------------
// The server answers before it has read the request body.
// ---------------------------------------------------------------------------------

/// The server answers `413` with `Connection: close` after the request head, never
/// reads the 1 MiB body, and closes (lingering, as real servers do, so its close is
/// a FIN and not a RST that could destroy the answer). hyper hands the caller the
/// `413` response (measured with hyper 1.x): not an error, not resent, no handler
/// call.
#[test]
fn early_413_before_a_large_body_is_read() {
    for kind in KINDS {
        isolated(Flavor::Multi, || async move {
            let case = format!("{kind:?}");
            let id = "too-large";
            let server = TestServer::start(with_fault(id, Fault::EarlyReject));
            let client = default_client();
            warm(&client, &server).await;
            let body = TestBody::bytes(vec![b'x'; 1 << 20]);
            let result = call(&client, request(&server, kind, id, body)).await;
            // Handler calls need the whole body; the 413 came after the head.
            assert_eq!(server.calls_for(id), 0, "{case}");
            assert_eq!(server.seen_for(id), 1, "{case}: never resent");
            assert!(
                server.bodies_for(id).iter().all(|(_, complete)| !complete),
                "{case}"
            );
            let answer = result.unwrap_or_else(|e| panic!("{case}: the 413 is lost: {e:?}"));
            assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{case}");
            assert_eq!(answer.info.attempts, 1, "{case}");
            answer.body.expect("the 413's empty body is complete");
        });
    }
}

// ---------------------------------------------------------------------------------
// The caller's own request body fails.
// ---------------------------------------------------------------------------------

fn body_fails_case(kind: Kind, reused: bool, after_first_bytes: bool) {
    isolated(Flavor::Multi, || async move {
        let case = format!("{kind:?}/reused={reused}/after_first_bytes={after_first_bytes}");
        let id = "bad-body";
        let server = TestServer::start(ServerConfig::default());
        let client = default_client();
        if reused {
            warm(&client, &server).await;
        }
        let body = if after_first_bytes {
            TestBody::fails_after_first_bytes()
        } else {
            TestBody::fails_at_once()
        };
        let err = call(&client, request(&server, kind, id, body))
            .await
            .expect_err(&case);
        contract::assert_body_error(&err, &case);
        contract::assert_attempts(&err, 1, &case);
        assert!(!err.is_stale_connection(), "{case}: {err:?}");
        assert!(
            err.to_string().contains("request body failed"),
            "{case}: says what failed: {err}"
        );
        // The source chain leads to the body's own error (through hyper's).
        let mut cause = std::error::Error::source(&err);
        let mut found = false;
        while let Some(c) = cause {
            found |= c.to_string() == "the test body failed on purpose";
            cause = c.source();
        }
        assert!(found, "{case}: the body's error is in the chain: {err:?}");
        // Give a (wrong) resend every chance to reach the server before counting.
        eventually("the failed connection to be released", || {
            client.stats().active == 0
        })
        .await;
        assert_eq!(
            server.calls_for(id),
            0,
            "{case}: a damaged body was executed"
        );
        assert!(server.seen_for(id) <= 1, "{case}: resent");
        let bodies = server.bodies_for(id);
        assert!(
            bodies.iter().all(|(_, complete)| !complete),
            "{case}: the server got a complete body: {bodies:?}"
        );
        let stats = client.stats();
        assert_eq!(
            stats.resends.written_no_response + stats.resends.not_written,
            0,
            "{case}"
        );
        assert_eq!(stats.refusals.body_failed, 1, "{case}: {stats:?}");
        assert!(
            stats.learned_idle_timeouts.is_empty(),
            "{case}: a body failure taught the pool an idle timeout: {stats:?}"
        );
        // The client still works.
        let answer = call(&client, simple(&server, Kind::Get, "after-bad-body"))
            .await
            .unwrap_or_else(|e| panic!("{case}: {e:?}"));
        assert_eq!(answer.status, StatusCode::OK, "{case}");
    });
}

#[test]
fn a_request_body_that_fails_before_its_first_bytes() {
    for kind in [Kind::Put, Kind::Post, Kind::PostKeyed] {
        for reused in [true, false] {
            body_fails_case(kind, reused, false);
        }
    }
}

#[test]
fn a_request_body_that_fails_after_its_first_bytes() {
    for kind in [Kind::Put, Kind::Post, Kind::PostKeyed] {
        for reused in [true, false] {
            body_fails_case(kind, reused, true);
        }
    }
}

// ---------------------------------------------------------------------------------
// Upgrades and CONNECT.
// ---------------------------------------------------------------------------------

#[test]
fn switching_protocols_hands_the_connection_to_the_caller() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    isolated(Flavor::Multi, || async {
        let id = "upgrade";
        let server = TestServer::start(with_fault(id, Fault::SwitchProtocols));
        let client = default_client();
        warm(&client, &server).await;
        let req = Request::get(server.url("/"))
            .header("x-request-id", id)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(TestBody::empty())
            .expect("valid request");
        let resp = tokio::time::timeout(CALL_LIMIT, client.request(req))
            .await
            .expect("bounded")
            .expect("the 101 reaches the caller");
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        let upgraded = tokio::time::timeout(CALL_LIMIT, hyper::upgrade::on(resp))
            .await
            .expect("bounded")
            .expect("the upgraded connection");
        let mut io = hyper_util::rt::TokioIo::new(upgraded);
        tokio::time::timeout(CALL_LIMIT, async {
            io.write_all(b"ping").await.expect("write upgraded");
            let mut echoed = [0u8; 4];
            io.read_exact(&mut echoed).await.expect("read upgraded");
            assert_eq!(&echoed, b"ping");
        })
        .await
        .expect("bounded");
        drop(io);
        eventually("the upgraded connection to leave the pool", || {
            client.stats().active == 0
        })
        .await;
        assert_eq!(
            client.stats().idle,
            0,
            "an upgraded connection is never pooled"
        );
        let answer = call(&client, simple(&server, Kind::Get, "after-upgrade"))
            .await
            .expect("the client still works");
        assert!(!answer.info.reused);
        assert_eq!(server.connections_accepted(), 2);
    });
}

#[test]
fn connect_is_refused_before_anything_is_sent() {
    isolated(Flavor::Multi, || async {
        let server = TestServer::start(ServerConfig::default());
        let client: Client<TestBody> = default_client();
        for uri in [server.addr().to_string(), server.url("/")] {
            let req = Request::builder()
                .method(Method::CONNECT)
                .uri(&uri)
                .body(TestBody::empty())
                .expect("valid request");
            let err = tokio::time::timeout(PATIENCE, client.request(req))
                .await
                .expect("bounded")
                .expect_err("CONNECT is not supported");
            contract::assert_unsupported(&err, &uri);
            assert_eq!(err.request_progress(), Progress::NotWritten, "{uri}");
            contract::assert_attempts(&err, 0, &uri);
            assert!(err.to_string().contains("tunnel"), "says why: {err}");
        }
        assert_eq!(server.connections_accepted(), 0, "nothing was sent");
    });
}
