//! The keep-alive race end to end, through the lab's latency relay: `closefirst`
//! completes every GET and executes nothing twice on a schedule where hyper-util's
//! legacy client (the control that proves the test can fail) loses requests.
//!
//! The schedule puts every idle gap in the middle of the race window: the origin's
//! timer (300 ms) fires 30 ms before the client would see its FIN, and a request
//! written between 240 ms and 300 ms after a response meets a RST; the gaps are 270 ms.
//!
//! With the `rustls` feature the same race runs over HTTPS: the origin closes idle
//! connections with a TLS `close_notify` alert and a FIN (as nginx does), and the
//! control is hyper-util's legacy client over hyper-rustls.

// The test reads only part of what the example prints.
#[allow(dead_code)]
#[path = "../examples/race/schedule.rs"]
mod schedule;

use std::time::Duration;

use http::Method;

use schedule::{Outcome, Scenario, Which};

const REQUESTS: usize = 10;

fn scenario(tls: bool, closefirst_settings: Option<(Duration, Duration)>) -> Scenario {
    Scenario {
        requests: REQUESTS,
        gap_min: Duration::from_millis(270),
        gap_max: Duration::from_millis(270),
        one_way_delay: Duration::from_millis(30),
        origin_idle: Duration::from_millis(300),
        keep_alive_hint: false,
        seed: 1,
        closefirst_settings,
        tls,
    }
}

async fn run(which: Which, method: Method, scenario: Scenario) -> Outcome {
    schedule::run(which, method, &scenario, |_, _| {})
        .await
        .expect("the lab starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closefirst_completes_every_get_where_hyper_util_loses_requests() {
    let (control, defaults, tuned_post) = tokio::join!(
        run(Which::HyperUtil, Method::GET, scenario(false, None)),
        run(Which::Closefirst, Method::GET, scenario(false, None)),
        // Tuned to the scaled-down timeline, closefirst closes first and even POST,
        // which is never resent, loses nothing.
        run(
            Which::Closefirst,
            Method::POST,
            scenario(
                false,
                Some((Duration::from_millis(150), Duration::from_millis(50)))
            )
        ),
    );

    // The control: every gap is in the race window, so nearly every reuse fails and
    // the origin never saw those requests.
    assert!(control.failures >= REQUESTS / 2, "{control:?}");
    assert_eq!(control.never_executed, control.failures, "{control:?}");

    // closefirst at its defaults: stale-connection failures are resent on a new
    // connection, so every GET completes, each executed exactly once.
    assert_eq!(defaults.failures, 0, "{defaults:?}");
    assert_eq!(defaults.never_executed, 0, "{defaults:?}");
    assert_eq!(defaults.duplicate_executions, 0, "{defaults:?}");

    assert_eq!(tuned_post.failures, 0, "{tuned_post:?}");
    assert_eq!(tuned_post.duplicate_executions, 0, "{tuned_post:?}");
    assert_eq!(
        tuned_post.connections_opened, REQUESTS,
        "closed first every time"
    );
}

#[cfg(feature = "rustls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_closefirst_completes_every_get_where_hyper_util_loses_requests() {
    let (control, get, post) = tokio::join!(
        run(Which::HyperUtil, Method::GET, scenario(true, None)),
        run(Which::Closefirst, Method::GET, scenario(true, None)),
        // At its defaults a POST that meets the close is not resent: it may fail, but
        // it never runs twice.
        run(Which::Closefirst, Method::POST, scenario(true, None)),
    );

    // The control: nearly every reuse meets the close, and those requests never ran.
    assert!(control.failures >= REQUESTS / 2, "{control:?}");
    assert_eq!(control.never_executed, control.failures, "{control:?}");

    // A close_notify in the race window is no response: every GET is resent on a new
    // connection and completes, each executed exactly once.
    assert_eq!(get.failures, 0, "{get:?}");
    assert_eq!(get.never_executed, 0, "{get:?}");
    assert_eq!(get.duplicate_executions, 0, "{get:?}");

    assert_eq!(post.duplicate_executions, 0, "{post:?}");
    assert_eq!(
        post.never_executed, post.failures,
        "a failed POST never ran: {post:?}"
    );
}
