//! The `closefirst-probe` binary as a deploy gate: its exit status and its `--json`
//! output, run as a process against lab origins with known idle timeouts.

use std::process::{Command, Output};
use std::time::Duration;

use closefirst::lab::{Origin, OriginConfig};
use serde_json::Value;

fn origin(idle_timeout: Duration, keep_alive_header: Option<&str>) -> Origin {
    let mut builder = Origin::builder(OriginConfig {
        idle_timeout,
        ..OriginConfig::default()
    });
    if let Some(value) = keep_alive_header {
        builder = builder.keep_alive_header(value);
    }
    builder.start_on_thread().expect("the origin listens")
}

/// Runs the probe; `--max-wait` bounds how long it can hold a connection.
fn probe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_closefirst-probe"))
        .args(["--max-wait", "10s"])
        .args(args)
        .output()
        .expect("the probe binary runs")
}

fn json(output: &Output) -> Value {
    let stdout = String::from_utf8(output.stdout.clone()).expect("UTF-8 output");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn exits_zero_when_the_server_keeps_connections_longer_than_front_idle_plus_margin() {
    // 1.5 s against 300 ms + 100 ms: a slow machine cannot blur the verdict.
    let server = origin(Duration::from_millis(1_500), None);
    let output = probe(&[
        "--front-idle",
        "300ms",
        "--margin",
        "100ms",
        &server.url("/"),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("ok, the client closes first"),
        "{}",
        text(&output)
    );
}

#[test]
fn exits_one_when_parity_fails() {
    let server = origin(Duration::from_millis(300), None);
    let output = probe(&["--front-idle", "4s", &server.url("/")]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("FAILS: backend keep-alive"),
        "{}",
        text(&output)
    );
}

#[test]
fn several_uris_in_one_run_with_json_output() {
    let long = origin(Duration::from_millis(2_500), None);
    let short = origin(Duration::from_millis(200), None);
    let output = probe(&[
        "--json",
        "--front-idle",
        "1s",
        "--margin",
        "200ms",
        &long.url("/a"),
        &short.url("/b?c=d"),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let report = json(&output);
    assert_eq!(report["verdict"], "fail");
    assert_eq!(report["front_idle_ms"], 1_000);
    assert_eq!(report["margin_ms"], 200);
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["uri"], long.url("/a"));
    assert_eq!(results[0]["verdict"], "pass");
    assert_eq!(results[0]["error"], Value::Null);
    assert_eq!(results[0]["status"], 200);
    let measured = results[0]["measured_idle_close_ms"]
        .as_u64()
        .expect("measured");
    assert!((2_000..=4_000).contains(&measured), "{measured}");
    assert_eq!(results[1]["verdict"], "fail");
    let measured = results[1]["measured_idle_close_ms"]
        .as_u64()
        .expect("measured");
    assert!((100..=1_000).contains(&measured), "{measured}");
    let message = results[1]["parity_message"].as_str().expect("a message");
    assert!(
        message.contains("raise the backend keep-alive to at least 1200 ms"),
        "{message}"
    );
}

#[test]
fn a_hint_that_disagrees_with_the_measured_close_is_reported() {
    // Advertises 5 s, closes after 300 ms: a client trusting the hint races.
    let early = origin(Duration::from_millis(300), Some("timeout=5"));
    // Advertises 1 s, closes well after, as Node.js does (a second or more later).
    let late = origin(Duration::from_millis(2_500), Some("timeout=1"));
    // Keeps its word.
    let honest = origin(Duration::from_secs(1), Some("timeout=1"));
    let output = probe(&["--json", &early.url("/"), &late.url("/"), &honest.url("/")]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "no --front-idle: a report only"
    );
    let report = json(&output);
    let results = report["results"].as_array().expect("results");
    assert_eq!(results[0]["hint_mismatch"]["closes"], "earlier");
    assert_eq!(results[0]["hint_mismatch"]["hint_ms"], 5_000);
    assert_eq!(
        results[0]["backend_keep_alive_ms"],
        results[0]["measured_idle_close_ms"]
    );
    assert_eq!(results[1]["hint_mismatch"]["closes"], "later");
    assert_eq!(results[1]["hint_mismatch"]["hint_ms"], 1_000);
    assert_eq!(results[1]["backend_keep_alive_ms"], 1_000);
    assert_eq!(results[2]["hint_mismatch"], Value::Null);

    let output = probe(&[&late.url("/")]);
    assert!(
        text(&output).contains("advertises timeout 1000 ms but closed only after"),
        "{}",
        text(&output)
    );
}

#[test]
fn an_undecidable_or_failed_probe_exits_three_and_bad_arguments_two() {
    // Open for all of --max-wait, which is shorter than front idle + margin; its
    // malformed hint has what JSON must escape.
    let raw_hint = r#"timeout=x, note="a\"b""#;
    let server = origin(Duration::MAX, Some(raw_hint));
    let output = Command::new(env!("CARGO_BIN_EXE_closefirst-probe"))
        .args([
            "--json",
            "--max-wait",
            "200ms",
            "--front-idle",
            "4s",
            &server.url("/"),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    let report = json(&output);
    assert_eq!(report["results"][0]["still_open_after_max_wait"], true);
    assert_eq!(report["results"][0]["keep_alive_header"], raw_hint);
    assert!(report["results"][0]["keep_alive_error"].is_string());

    let output = probe(&["--json", "--front-idle", "4s", "https://127.0.0.1:1/"]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    let report = json(&output);
    assert_eq!(report["verdict"], "undecided");
    let error = report["results"][0]["error"].as_str().expect("an error");
    assert!(error.contains("no TLS client for `https`"), "{error}");

    for bad in [
        &["--front-idle", "4", "http://a/"][..],
        &[],
        &["--frobnicate"],
    ] {
        let output = probe(bad);
        assert_eq!(output.status.code(), Some(2), "{bad:?}: {}", text(&output));
    }
}
