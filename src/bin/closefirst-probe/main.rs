//! `closefirst-probe`: measures how long servers keep an idle keep-alive connection
//! open, checks `server keep-alive >= front idle timeout + margin`, and exits non-zero
//! when that fails, so that a deploy can be gated on it.
//!
//! ```text
//! closefirst-probe [--front-idle 4s] [--margin 1s] [--max-wait 5m] [--get] [--json]
//!                  [--ca-file ca.pem] URI...
//! cargo run --bin closefirst-probe -- --front-idle 4s http://10.0.0.7:8000/health
//! ```
//!
//! - `URI...`: one or more `http://host[:port]/path`, or `https://…` when built with
//!   the `rustls` feature (`cargo install closefirst --features rustls`); they are
//!   probed at the same time, one connection each.
//! - `--front-idle D`: the idle timeout of the client in front of the servers (a
//!   proxy's upstream idle timeout, this crate's `idle_timeout`). Without it, nothing
//!   is checked and the probe only reports.
//! - `--margin D`: safety margin (default 1s).
//! - `--max-wait D`: how long to hold each idle connection waiting for the server to
//!   close it (default 5m).
//! - `--get`: send `GET` instead of `HEAD`.
//! - `--json`: print one JSON object on stdout instead of the text report.
//! - `--ca-file PATH` (feature `rustls`): trust the CA certificates in this PEM file,
//!   and only them, for `https` (a private CA, a test certificate). Without it, the
//!   platform's trust roots are used (`SSL_CERT_FILE` and `SSL_CERT_DIR` replace them).
//!
//! Durations need a unit: `90s`, `1500ms`, `1m30s`. Every value in the JSON output
//! is in milliseconds (`*_ms`).
//!
//! Exit status: 0 when every URI passes (or, without `--front-idle`, was measured);
//! 1 when parity fails for at least one URI; 2 on bad arguments; 3 when parity could not
//! be decided for some URI (the probe failed, or the server stayed open for all of
//! `--max-wait` but `--max-wait` is shorter than front idle + margin) and none fails.
//!
//! A binary target rather than an example: it needs nothing the library does not
//! already depend on, `cargo install closefirst` puts it on a deploy host, and the
//! integration tests run this very program (`CARGO_BIN_EXE_closefirst-probe`).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use closefirst::keepalive::{parse_duration, probe, ProbeOptions, ProbeReport};

mod json;
mod text;

const USAGE: &str = "usage: closefirst-probe [--front-idle 4s] [--margin 1s] [--max-wait 5m] \
                     [--get] [--json] [--ca-file ca.pem] <http://host[:port]/path>...";

const EXIT_PARITY_FAILS: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNDECIDED: u8 = 3;

struct Args {
    uris: Vec<http::Uri>,
    options: ProbeOptions,
    front_idle: Option<Duration>,
    margin: Duration,
    max_wait: Duration,
    json: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut uris = Vec::new();
    let mut options = ProbeOptions::new();
    let mut front_idle = None;
    let mut margin = Duration::from_secs(1);
    let mut max_wait = Duration::from_secs(300);
    let mut json = false;
    while let Some(arg) = args.next() {
        let mut duration_for = |flag: &str| -> Result<Duration, String> {
            let value = args
                .next()
                .ok_or_else(|| format!("{flag} needs a duration, such as 4s"))?;
            parse_duration(&value).map_err(|e| format!("{flag}: {e}"))
        };
        match arg.as_str() {
            "--front-idle" => front_idle = Some(duration_for("--front-idle")?),
            "--margin" => margin = duration_for("--margin")?,
            "--max-wait" => max_wait = duration_for("--max-wait")?,
            "--get" => options = options.method(http::Method::GET),
            "--json" => json = true,
            "--ca-file" => {
                let path = args
                    .next()
                    .ok_or("--ca-file needs the path of a PEM file")?;
                options = trust_only(options, &path)?;
            }
            flag if flag.starts_with("--") => return Err(format!("unknown option `{flag}`")),
            _ => {
                let parsed = arg
                    .parse::<http::Uri>()
                    .map_err(|e| format!("`{arg}` is not a URI: {e}"))?;
                uris.push(parsed);
            }
        }
    }
    if uris.is_empty() {
        return Err("missing the URI to probe".to_owned());
    }
    let options = options
        .front_idle(front_idle)
        .margin(margin)
        .max_wait(max_wait);
    Ok(Args {
        uris,
        options,
        front_idle,
        margin,
        max_wait,
        json,
    })
}

/// `options` trusting only the CA certificates of the PEM file at `path` for `https`.
#[cfg(feature = "rustls")]
fn trust_only(options: ProbeOptions, path: &str) -> Result<ProbeOptions, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let unusable = |why: String| format!("--ca-file {path}: {why}");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| unusable(e.to_string()))? {
        let cert = cert.map_err(|e| unusable(e.to_string()))?;
        roots.add(cert).map_err(|e| unusable(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(unusable(
            "no certificate in it (a PEM `BEGIN CERTIFICATE` section)".to_owned(),
        ));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("the TLS provider refused its own defaults: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(options.tls_config(config))
}

#[cfg(not(feature = "rustls"))]
fn trust_only(_: ProbeOptions, _: &str) -> Result<ProbeOptions, String> {
    Err(
        "--ca-file needs `https`, which this build lacks: build the probe with the \
         `rustls` feature (cargo install closefirst --features rustls)"
            .to_owned(),
    )
}

/// One URI's parity, as the exit status counts it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Parity holds, or nothing was asked (no `--front-idle`) and the probe worked.
    Pass,
    Fail,
    /// The probe failed, or what it found cannot decide parity.
    Undecided,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Undecided => "undecided",
        }
    }
}

fn verdict(
    result: &Result<ProbeReport, closefirst::Error>,
    front_idle: Option<Duration>,
) -> Verdict {
    match (result, front_idle) {
        (Err(_), _) => Verdict::Undecided,
        (Ok(_), None) => Verdict::Pass,
        (Ok(report), Some(_)) => match &report.parity {
            Some(Ok(())) => Verdict::Pass,
            Some(Err(_)) => Verdict::Fail,
            None => Verdict::Undecided,
        },
    }
}

fn exit_status(verdicts: &[Verdict]) -> ExitCode {
    if verdicts.contains(&Verdict::Fail) {
        ExitCode::from(EXIT_PARITY_FAILS)
    } else if verdicts.contains(&Verdict::Undecided) {
        ExitCode::from(EXIT_UNDECIDED)
    } else {
        ExitCode::SUCCESS
    }
}

/// The error and its causes on one line.
fn error_chain(error: &closefirst::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

async fn run(args: Args) -> ExitCode {
    if !args.json {
        println!(
            "probing {} URI(s) (each holds one idle connection for up to {}) ...",
            args.uris.len(),
            text::ms(args.max_wait)
        );
    }
    // At the same time: each probe may hold its connection for all of --max-wait.
    let mut probes = tokio::task::JoinSet::new();
    for (index, uri) in args.uris.iter().enumerate() {
        let (uri, options) = (uri.clone(), args.options.clone());
        probes.spawn(async move { (index, probe(&uri, options).await) });
    }
    let mut results: Vec<Option<Result<ProbeReport, closefirst::Error>>> =
        args.uris.iter().map(|_| None).collect();
    while let Some(joined) = probes.join_next().await {
        match joined {
            Ok((index, result)) => results[index] = Some(result),
            Err(e) => {
                eprintln!("error: a probe task failed: {e}");
                return ExitCode::from(EXIT_UNDECIDED);
            }
        }
    }
    let outcomes: Vec<_> = args
        .uris
        .iter()
        .zip(results)
        .filter_map(|(uri, result)| Some((uri.to_string(), result?)))
        .collect();
    if args.json {
        json::print_json(&args, &outcomes);
    } else {
        text::print_text(&args, &outcomes);
    }
    let verdicts: Vec<_> = outcomes
        .iter()
        .map(|(_, result)| verdict(result, args.front_idle))
        .collect();
    exit_status(&verdicts)
}

fn main() -> ExitCode {
    if std::env::args().any(|arg| arg == "--help" || arg == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::from(EXIT_UNDECIDED);
        }
    };
    runtime.block_on(run(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let args = |list: &[&str]| parse_args(list.iter().map(|s| s.to_string()));
        assert!(args(&[]).is_err());
        assert!(args(&["--front-idle"]).is_err());
        assert!(
            args(&["--front-idle", "4", "http://a/"]).is_err(),
            "no unit"
        );
        assert!(args(&["--nope", "http://a/"]).is_err());
        let parsed = args(&["http://a/", "--json", "--front-idle", "4s", "http://b/"]).unwrap();
        assert_eq!(parsed.uris.len(), 2);
        assert!(parsed.json);
        assert_eq!(parsed.front_idle, Some(Duration::from_secs(4)));
    }
}
