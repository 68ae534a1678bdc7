//! The `closefirst-probe` binary as a deploy gate: its exit status and its `--json`
//! output, run as a process against lab origins with known idle timeouts, over `http`
//! and over `https` (a lab origin with a throwaway CA).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
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

    // Port 1 on loopback refuses: a probe that cannot connect decides nothing.
    let output = probe(&["--json", "--front-idle", "4s", "http://127.0.0.1:1/"]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    let report = json(&output);
    assert_eq!(report["verdict"], "undecided");
    let error = report["results"][0]["error"].as_str().expect("an error");
    assert!(error.contains("127.0.0.1:1"), "{error}");

    for bad in [
        &["--front-idle", "4", "http://a/"][..],
        &[],
        &["--frobnicate"],
    ] {
        let output = probe(bad);
        assert_eq!(output.status.code(), Some(2), "{bad:?}: {}", text(&output));
    }
}

/// A throwaway self-signed certificate for `localhost` and `127.0.0.1`: the file its
/// PEM is written to (named after `name`, so tests running at once do not share one),
/// and the server configuration that presents it.
fn tls_cert(name: &str) -> (PathBuf, rustls::ServerConfig) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("rcgen makes a certificate for valid names");
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.pem"));
    std::fs::write(&path, cert.pem()).expect("the target's temporary directory is writable");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)
    .expect("rcgen's key matches its certificate");
    (path, server)
}

fn tls_origin(idle_timeout: Duration, server: rustls::ServerConfig) -> Origin {
    Origin::builder(OriginConfig {
        idle_timeout,
        ..OriginConfig::default()
    })
    .tls(server)
    .start_on_thread()
    .expect("the origin listens")
}

#[test]
fn over_https_with_a_ca_file_the_gate_passes_and_fails_as_over_http() {
    let (ca_file, server) = tls_cert("probe-gate-ca-file");
    let ca_file = ca_file.to_str().expect("a UTF-8 temporary path");
    // 1.5 s against 300 ms + 100 ms passes; 300 ms against 4 s + 1 s fails.
    let long = tls_origin(Duration::from_millis(1_500), server.clone());
    let short = tls_origin(Duration::from_millis(300), server);
    assert!(long.url("/").starts_with("https://"));
    let output = probe(&[
        "--json",
        "--ca-file",
        ca_file,
        "--front-idle",
        "300ms",
        "--margin",
        "100ms",
        &long.url("/"),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let report = json(&output);
    assert_eq!(report["results"][0]["verdict"], "pass");
    assert_eq!(report["results"][0]["status"], 200);
    // The server's close over TLS (close_notify, then FIN) is what the probe timed.
    let measured = report["results"][0]["measured_idle_close_ms"]
        .as_u64()
        .expect("measured");
    assert!((1_000..=3_000).contains(&measured), "{measured}");

    let output = probe(&["--ca-file", ca_file, "--front-idle", "4s", &short.url("/")]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("FAILS: backend keep-alive"),
        "{}",
        text(&output)
    );
}

#[test]
fn over_https_without_a_ca_file_the_platform_roots_decide() {
    let (ca_file, server) = tls_cert("probe-gate-platform");
    let (other_ca, _) = tls_cert("probe-gate-platform-other");
    let server = tls_origin(Duration::from_millis(1_500), server);
    // rustls-native-certs reads the platform's roots from SSL_CERT_FILE when it is set.
    let with_roots = |roots: &PathBuf| {
        Command::new(env!("CARGO_BIN_EXE_closefirst-probe"))
            .env("SSL_CERT_FILE", roots)
            .env_remove("SSL_CERT_DIR")
            .args(["--json", "--max-wait", "10s", "--front-idle", "300ms"])
            .args(["--margin", "100ms", &server.url("/")])
            .output()
            .expect("the probe binary runs")
    };
    let output = with_roots(&ca_file);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));

    // Roots that do not hold the server's CA: a refused certificate decides nothing.
    let output = with_roots(&other_ca);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    let report = json(&output);
    let error = report["results"][0]["error"].as_str().expect("an error");
    assert!(error.contains("certificate"), "{error}");
}

#[test]
fn an_unusable_ca_file_is_a_bad_argument() {
    let empty = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("probe-gate-empty.pem");
    std::fs::write(&empty, "no PEM here\n").expect("the target's temporary directory is writable");
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("probe-gate-missing.pem");
    let _ = std::fs::remove_file(&missing);
    for (path, says) in [(&empty, "no certificate in it"), (&missing, "I/O error")] {
        let path = path.to_str().expect("a UTF-8 temporary path");
        let output = probe(&["--ca-file", path, "https://127.0.0.1:1/"]);
        assert_eq!(output.status.code(), Some(2), "{}", text(&output));
        assert!(text(&output).contains(says), "{}", text(&output));
    }
    let output = probe(&["https://127.0.0.1:1/", "--ca-file"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
}
