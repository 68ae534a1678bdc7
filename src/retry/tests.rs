//! The resend decision and the policy's validation, tested without sockets.

use std::sync::Arc;

use http::Method;

use super::policy::{refusal, Attempted, Retrier};
use super::Policy;
use crate::attempt::{Refusal, RetryCounters};
use crate::error::{Error, Progress};

fn failed(progress: Progress, reused: bool) -> Error {
    Error::request(progress, reused, "connection reset")
}

fn attempted(method: &Method) -> Attempted<'_> {
    Attempted {
        method,
        marked_idempotent: false,
        body_replayable: true,
        body_failed: false,
        attempts: 1,
    }
}

#[test]
fn the_decision_table() {
    use Progress::{NotWritten, ResponseStarted, WrittenNoResponse};
    let (get, post) = (Method::GET, Method::POST);
    let idempotent = Policy::idempotent();
    let all = Policy::all_methods();
    // (policy, method, progress, reused, expected)
    let table: [(&Policy, &Method, Progress, bool, Option<Refusal>); 12] = [
        (&idempotent, &get, NotWritten, true, None),
        (&idempotent, &post, NotWritten, true, None),
        (&idempotent, &post, NotWritten, false, None),
        (&idempotent, &get, WrittenNoResponse, true, None),
        (
            &idempotent,
            &post,
            WrittenNoResponse,
            true,
            Some(Refusal::NotIdempotent),
        ),
        (
            &idempotent,
            &get,
            WrittenNoResponse,
            false,
            Some(Refusal::FreshConnection),
        ),
        (
            &idempotent,
            &post,
            WrittenNoResponse,
            false,
            Some(Refusal::FreshConnection),
        ),
        (
            &idempotent,
            &get,
            ResponseStarted,
            true,
            Some(Refusal::ResponseStarted),
        ),
        (&all, &post, WrittenNoResponse, true, None),
        (&all, &post, WrittenNoResponse, false, None),
        (
            &all,
            &get,
            ResponseStarted,
            true,
            Some(Refusal::ResponseStarted),
        ),
        (
            &all,
            &post,
            ResponseStarted,
            false,
            Some(Refusal::ResponseStarted),
        ),
    ];
    for (policy, method, progress, reused, expected) in table {
        let error = failed(progress, reused);
        assert_eq!(
            refusal(policy, &error, &attempted(method)),
            expected,
            "{method} {progress:?} reused={reused} under {policy:?}"
        );
    }
}

#[test]
fn an_idempotency_key_makes_any_method_resendable_after_a_write() {
    let post = Method::POST;
    let request = Attempted {
        marked_idempotent: true,
        ..attempted(&post)
    };
    let error = failed(Progress::WrittenNoResponse, true);
    assert_eq!(refusal(&Policy::idempotent(), &error, &request), None);
}

#[test]
fn a_failed_body_is_refused_whatever_the_policy() {
    let get = Method::GET;
    let body_error = Error::body(Progress::NotWritten, true, "read failed");
    for policy in [Policy::idempotent(), Policy::all_methods()] {
        assert_eq!(
            refusal(&policy, &body_error, &attempted(&get)),
            Some(Refusal::BodyFailed)
        );
        // A body that failed on an earlier attempt, even if this error is the server's.
        let request = Attempted {
            body_failed: true,
            ..attempted(&get)
        };
        let error = failed(Progress::NotWritten, true);
        assert_eq!(
            refusal(&policy, &error, &request),
            Some(Refusal::BodyFailed)
        );
    }
}

#[test]
fn attempts_then_body_size_are_checked_after_progress() {
    let get = Method::GET;
    let error = failed(Progress::NotWritten, true);
    let spent = Attempted {
        attempts: 2,
        ..attempted(&get)
    };
    assert_eq!(
        refusal(&Policy::idempotent(), &error, &spent),
        Some(Refusal::AttemptsExhausted)
    );
    assert_eq!(
        refusal(&Policy::idempotent().attempts(3), &error, &spent),
        None
    );
    let too_large = Attempted {
        body_replayable: false,
        ..attempted(&get)
    };
    assert_eq!(
        refusal(&Policy::idempotent(), &error, &too_large),
        Some(Refusal::BodyTooLarge)
    );
    // Progress comes first: a started response is refused as such, not for its size.
    let started = failed(Progress::ResponseStarted, true);
    assert_eq!(
        refusal(&Policy::idempotent(), &started, &too_large),
        Some(Refusal::ResponseStarted)
    );
}

#[test]
fn errors_before_a_connection_are_neither_resent_nor_counted() {
    let counters = Arc::new(RetryCounters::default());
    let retrier = Retrier::new(Policy::idempotent(), Arc::clone(&counters));
    let get = Method::GET;
    let error = Error::connect("http://127.0.0.1:1", "connection refused");
    assert!(!retrier.should_resend(&error, &attempted(&get), None));
    let (resends, refusals) = counters.snapshot();
    assert_eq!(resends.not_written + resends.written_no_response, 0);
    assert_eq!(refusals.attempts_exhausted, 0);
}

#[test]
fn the_budget_is_drawn_last_and_counted_when_spent() {
    let counters = Arc::new(RetryCounters::default());
    // No floor and no deposits: the first withdrawal fails.
    let retrier = Retrier::new(Policy::idempotent().budget(0.0, 0), Arc::clone(&counters));
    let (get, post) = (Method::GET, Method::POST);
    let written = failed(Progress::WrittenNoResponse, true);
    let uri: http::Uri = "http://example.com/".parse().unwrap();
    let budget = retrier.deposit(&uri);
    let budget = budget.as_deref();
    assert!(budget.is_some());
    // Refused for its method: the budget is neither consulted nor counted.
    assert!(!retrier.should_resend(&written, &attempted(&post), budget));
    assert!(!retrier.should_resend(&written, &attempted(&get), budget));
    let (resends, refusals) = counters.snapshot();
    assert_eq!(refusals.not_idempotent, 1);
    assert_eq!(refusals.budget_exhausted, 1);
    assert_eq!(resends.written_no_response, 0);

    let origin = crate::origin::Origin::from_uri(&uri).unwrap();
    assert_eq!(retrier.budget_exhausted(&origin), 1);

    let unlimited = Retrier::new(Policy::idempotent().no_budget(), Arc::clone(&counters));
    assert!(unlimited.deposit(&uri).is_none());
    assert!(unlimited.should_resend(&written, &attempted(&get), None));
    // Nothing is ever resent under `never`: no budget is kept either.
    assert!(Retrier::new(Policy::never(), Arc::clone(&counters))
        .deposit(&uri)
        .is_none());
    assert_eq!(counters.snapshot().0.written_no_response, 1);
}

#[test]
fn validation_names_the_setting() {
    assert!(Policy::idempotent().validate().is_ok());
    assert!(Policy::never().validate().is_ok());
    let zero = Policy::idempotent().attempts(0).validate().unwrap_err();
    assert!(
        zero.is_config() && zero.to_string().contains("attempts"),
        "{zero}"
    );
    for ratio in [-0.1, 1000.5, f32::NAN] {
        let error = Policy::idempotent()
            .budget(ratio, 1)
            .validate()
            .unwrap_err();
        assert!(error.to_string().contains("ratio"), "{error}");
    }
    let floor = Policy::idempotent()
        .budget(0.2, u32::MAX)
        .validate()
        .unwrap_err();
    assert!(floor.to_string().contains("min_per_second"), "{floor}");
}

/// What the inner service saw on each call.
#[derive(Debug, PartialEq)]
struct Seen {
    attempts_made: Option<u32>,
    fresh: bool,
    body: bytes::Bytes,
}

#[tokio::test(start_paused = true)]
async fn the_future_resends_after_the_backoff_and_reports_the_furthest_progress() {
    use std::sync::Mutex;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    use super::{ReplayBody, ResponseFuture};
    use crate::attempt::{AttemptsMade, FreshConnection};

    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let mut calls = 0u32;
    let inner = tower::service_fn(move |req: http::Request<ReplayBody<Full<Bytes>>>| {
        calls += 1;
        let call = calls;
        let log = Arc::clone(&log);
        async move {
            // Read as the pool reads it: no marker means no attempt before.
            let attempts_made = Some(req.extensions().get::<AttemptsMade>().map_or(0, |a| a.0));
            let fresh = req.extensions().get::<FreshConnection>().is_some();
            let body = req
                .into_body()
                .collect()
                .await
                .expect("replayed")
                .to_bytes();
            log.lock().unwrap().push(Seen {
                attempts_made,
                fresh,
                body,
            });
            Err::<http::Response<()>, Error>(match call {
                // The keep-alive race: written on a reused connection, nothing back.
                1 => failed(Progress::WrittenNoResponse, true).with_attempts(1),
                // The resend fails sooner, before any connection.
                _ => Error::connect("http://example.com", "connection refused"),
            })
        }
    });
    let counters = Arc::new(RetryCounters::default());
    let policy = Policy::idempotent()
        .attempts(3)
        .backoff(Duration::from_secs(5));
    let retrier = Arc::new(Retrier::new(policy, Arc::clone(&counters)));
    let req = http::Request::put("http://example.com/thing")
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let started = tokio::time::Instant::now();
    let future = ResponseFuture::new(inner, retrier, req);
    let error = future.await.unwrap_err();

    assert!(started.elapsed() >= Duration::from_secs(5), "one backoff");
    assert_eq!(
        *seen.lock().unwrap(),
        [
            Seen {
                attempts_made: Some(0),
                fresh: false,
                body: Bytes::from_static(b"payload"),
            },
            Seen {
                attempts_made: Some(1),
                fresh: true,
                body: Bytes::from_static(b"payload"),
            },
        ]
    );
    assert!(error.is_connect(), "{error}");
    assert_eq!(error.request_progress(), Progress::WrittenNoResponse);
    assert_eq!(error.attempts(), 1);
    assert!(
        error.to_string().starts_with("PUT http://example.com"),
        "{error}"
    );
    assert_eq!(counters.snapshot().0.written_no_response, 1);
    // Nothing is boxed: the future is named, and can cross threads.
    fn assert_send<T: Send>(_: &T) {}
    let never = tower::service_fn(|_: http::Request<ReplayBody<Full<Bytes>>>| async {
        Ok::<_, Error>(http::Response::new(()))
    });
    let retrier = Arc::new(Retrier::new(Policy::never(), counters));
    let future: ResponseFuture<_, Full<Bytes>> = ResponseFuture::new(
        never,
        Arc::clone(&retrier),
        http::Request::new(Full::default()),
    );
    assert_send(&future);
    assert!(future.await.is_ok());
    // Unpin whenever the inner service's future is (as the boxed future was), so it can
    // still be polled through `&mut` (in `select!`, say).
    fn assert_unpin<T: Unpin>(_: &T) {}
    let ready = tower::service_fn(|_: http::Request<ReplayBody<Full<Bytes>>>| {
        std::future::ready(Ok::<_, Error>(http::Response::new(())))
    });
    let mut future: ResponseFuture<_, Full<Bytes>> =
        ResponseFuture::new(ready, retrier, http::Request::new(Full::default()));
    assert_unpin(&future);
    assert!((&mut future).await.is_ok());
}

#[test]
fn either_header_or_the_extension_marks_a_request() {
    use super::{marked_idempotent, Idempotent};
    let post = || http::Request::post("http://example.com/");
    let plain = post().body(()).unwrap();
    assert!(!marked_idempotent(plain.headers(), plain.extensions()));
    // Any value counts, an empty one too, as Go reads them.
    for name in ["Idempotency-Key", "x-idempotency-key", "X-IDEMPOTENCY-KEY"] {
        let req = post().header(name, "").body(()).unwrap();
        assert!(marked_idempotent(req.headers(), req.extensions()), "{name}");
    }
    let mut req = post().body(()).unwrap();
    req.extensions_mut().insert(Idempotent);
    assert!(marked_idempotent(req.headers(), req.extensions()));
    assert!(req.headers().is_empty(), "the marker is no header");
}

#[tokio::test]
async fn a_marked_request_may_ride_any_connection_unless_nothing_is_resent() {
    use std::sync::Mutex;

    use bytes::Bytes;
    use http_body_util::Full;

    use super::{Idempotent, ResponseFuture};
    use crate::attempt::NotResendable;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let inner = tower::service_fn(move |req: http::Request<super::ReplayBody<Full<Bytes>>>| {
        log.lock()
            .unwrap()
            .push(req.extensions().get::<NotResendable>().is_some());
        std::future::ready(Ok::<_, Error>(http::Response::new(())))
    });
    let requests = || {
        let post = || http::Request::post("http://example.com/");
        let mut marked = post().body(Full::default()).unwrap();
        marked.extensions_mut().insert(Idempotent);
        [
            post().body(Full::default()).unwrap(),
            post()
                .header("idempotency-key", "k")
                .body(Full::default())
                .unwrap(),
            post()
                .header("x-idempotency-key", "k")
                .body(Full::default())
                .unwrap(),
            marked,
        ]
    };
    for (policy, expected) in [
        (Policy::idempotent(), [true, false, false, false]),
        (Policy::never(), [true; 4]),
    ] {
        let retrier = Arc::new(Retrier::new(policy, Arc::default()));
        for req in requests() {
            ResponseFuture::new(inner.clone(), Arc::clone(&retrier), req)
                .await
                .unwrap();
        }
        let not_resendable = std::mem::take(&mut *seen.lock().unwrap());
        assert_eq!(not_resendable, expected, "{:?}", retrier.policy());
    }
}
