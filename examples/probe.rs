//! Measures how long a server keeps an idle keep-alive connection open and recommends
//! an idle timeout for clients of it.
//!
//! ```text
//! cargo run --example probe -- http://127.0.0.1:8080/ [--front-idle 4s] [--margin 1s] [--max-wait 5m] [--get]
//! ```
//!
//! - `--front-idle D`: the idle timeout of the client in front of the server; checks
//!   `server keep-alive >= front idle + margin` and says what to change if not.
//! - `--margin D`: safety margin (default 1s).
//! - `--max-wait D`: how long to hold the idle connection waiting for the server to
//!   close it (default 5m).
//! - `--get`: send `GET` instead of `HEAD`.
//!
//! Durations need a unit: `90s`, `1500ms`, `1m30s`. The probe opens one connection,
//! sends one request, and holds the connection until the server closes it or
//! `--max-wait` runs out. Exits 2 on bad arguments, 1 when the probe fails.

use std::process::ExitCode;
use std::time::Duration;

use closefirst::keepalive::{parse_duration, probe, ProbeOptions, ProbeReport};

const USAGE: &str = "usage: probe <http://host[:port]/path> [--front-idle 4s] [--margin 1s] \
                     [--max-wait 5m] [--get]";

struct Args {
    uri: http::Uri,
    options: ProbeOptions,
    front_idle: Option<Duration>,
    margin: Duration,
    max_wait: Duration,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut uri = None;
    let mut options = ProbeOptions::new();
    let mut front_idle = None;
    let mut margin = Duration::from_secs(1);
    let mut max_wait = Duration::from_secs(300);
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
            flag if flag.starts_with("--") => return Err(format!("unknown option `{flag}`")),
            _ if uri.is_some() => return Err(format!("unexpected argument `{arg}`")),
            _ => {
                let parsed = arg
                    .parse::<http::Uri>()
                    .map_err(|e| format!("`{arg}` is not a URI: {e}"))?;
                uri = Some(parsed);
            }
        }
    }
    let uri = uri.ok_or_else(|| "missing the URI to probe".to_owned())?;
    let options = options
        .front_idle(front_idle)
        .margin(margin)
        .max_wait(max_wait);
    Ok(Args {
        uri,
        options,
        front_idle,
        margin,
        max_wait,
    })
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn print_report(args: &Args, report: &ProbeReport) {
    let none = || "(none)".to_owned();
    println!(
        "status:                   {} ({:?})",
        report.status, report.version
    );
    println!(
        "server:                   {}",
        report.server_header.clone().unwrap_or_else(none)
    );
    println!(
        "connection header:        {}",
        report.connection_header.clone().unwrap_or_else(none)
    );
    println!(
        "keep-alive header:        {}",
        report.keep_alive_header.clone().unwrap_or_else(none)
    );
    if let Some(error) = &report.keep_alive_error {
        println!("                          ({error})");
    }
    println!(
        "keep-alive hint:          {}",
        report.hint_timeout().map_or_else(none, ms)
    );
    let measured = match report.idle_close {
        _ if report.keep_alive_refused => "0 ms (the server refuses keep-alive)".to_owned(),
        Some(close) => ms(close),
        None => format!("still open after {}", ms(args.max_wait)),
    };
    println!("measured idle close:      {measured}");
    match report.recommended_idle_timeout() {
        Some(timeout) => println!(
            "recommended idle_timeout: {} (server keep-alive {} - margin {})",
            ms(timeout),
            report.backend_keep_alive().map_or_else(none, ms),
            ms(args.margin)
        ),
        None if report.backend_keep_alive().is_none() => println!(
            "recommended idle_timeout: unknown (no hint, and the server did not close \
             within --max-wait)"
        ),
        None => println!(
            "recommended idle_timeout: none: the margin leaves no time; do not keep idle \
             connections to this server"
        ),
    }
    if let Some(front_idle) = args.front_idle {
        let verdict = match &report.parity {
            Some(Ok(())) => "ok, the client closes first".to_owned(),
            Some(Err(e)) => format!("FAILS: {e}"),
            None => "unknown (nothing is known about the server's keep-alive)".to_owned(),
        };
        println!(
            "parity (front idle {}, margin {}): {verdict}",
            ms(front_idle),
            ms(args.margin)
        );
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    if std::env::args().any(|arg| arg == "--help" || arg == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    println!(
        "probing {} (holds one idle connection for up to {}) ...",
        args.uri,
        ms(args.max_wait)
    );
    match probe(&args.uri, args.options.clone()).await {
        Ok(report) => {
            print_report(&args, &report);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("probe failed: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                eprint!(": {cause}");
                source = cause.source();
            }
            eprintln!();
            ExitCode::FAILURE
        }
    }
}
