//! The keep-alive race end to end over HTTPS, like `tests/race.rs`: the origin closes
//! idle connections with a TLS `close_notify` alert and a FIN (as nginx does), and the
//! gaps put every reuse in the race window. `closefirst` loses no GET and runs nothing
//! twice; hyper-util's legacy client over hyper-rustls (the control that proves the
//! test can fail) loses requests.
#![cfg(feature = "rustls")]

// The test reads only part of what the example prints.
#[allow(dead_code)]
#[path = "../examples/race/schedule.rs"]
mod schedule;

use std::time::Duration;

use http::Method;

use schedule::{Outcome, Scenario, Which};

const REQUESTS: usize = 10;

fn scenario(closefirst_settings: Option<(Duration, Duration)>) -> Scenario {
    Scenario {
        requests: REQUESTS,
        gap_min: Duration::from_millis(270),
        gap_max: Duration::from_millis(270),
        one_way_delay: Duration::from_millis(30),
        origin_idle: Duration::from_millis(300),
        keep_alive_hint: false,
        seed: 1,
        closefirst_settings,
        tls: true,
    }
}

async fn run(which: Which, method: Method, scenario: Scenario) -> Outcome {
    schedule::run(which, method, &scenario, |_, _| {})
        .await
        .expect("the lab starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_closefirst_completes_every_get_where_hyper_util_loses_requests() {
    let (control, get, post) = tokio::join!(
        run(Which::HyperUtil, Method::GET, scenario(None)),
        run(Which::Closefirst, Method::GET, scenario(None)),
        // At its defaults a POST that meets the close is not resent: it may fail, but
        // it never runs twice.
        run(Which::Closefirst, Method::POST, scenario(None)),
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
