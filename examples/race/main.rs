//! The keep-alive race, reproduced: hyper-util's legacy client (what reqwest uses) and
//! `closefirst`, both at their defaults, run the same request schedule against a server
//! that closes idle connections after a timeout, through a relay that adds network
//! latency on loopback.
//!
//! ```text
//! cargo run --example race
//! cargo run --example race -- --requests 40 --latency-ms 25 --origin-idle-ms 2000 \
//!     --gap-min-ms 1900 --gap-max-ms 2100 --hint --seed 7
//! cargo run --example race -- --tls
//! ```
//!
//! With `--tls` everything runs over HTTPS (a throwaway self-signed certificate; the
//! control is hyper-util's legacy client over hyper-rustls): the origin closes idle
//! connections with a TLS `close_notify` alert and a FIN, as nginx does.
//!
//! The idle gaps between requests are drawn around the origin's idle timeout. A request
//! written in the last `2 × latency` before the origin's timer fires reaches a socket the
//! origin has already closed and is answered with a RST. The table shows, per client and
//! method, the failures (by kind), executions the origin saw more than once, and
//! connections opened. Exits with status 1 if `closefirst` lost an idempotent request
//! or executed any request twice. Everything runs on 127.0.0.1 and stops by itself.

mod schedule;

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Method;

use schedule::{Outcome, Scenario, Which};

const USAGE: &str = "usage: race [--requests N] [--latency-ms MS] [--origin-idle-ms MS] \
[--gap-min-ms MS] [--gap-max-ms MS] [--hint] [--seed N] [--tls]";

fn parse_args() -> Result<Scenario, String> {
    let mut scenario = Scenario {
        requests: 20,
        gap_min: Duration::ZERO,
        gap_max: Duration::ZERO,
        one_way_delay: Duration::from_millis(25),
        origin_idle: Duration::from_millis(2_000),
        keep_alive_hint: false,
        seed: 7,
        closefirst_settings: None,
        tls: false,
    };
    let (mut gap_min, mut gap_max) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            let value = args.next().ok_or_else(|| format!("{name} needs a value"))?;
            value
                .parse()
                .map_err(|_| format!("{name}: `{value}` is not a whole number"))
        };
        match arg.as_str() {
            "--requests" => {
                scenario.requests =
                    usize::try_from(number("--requests")?.max(1)).unwrap_or(usize::MAX)
            }
            "--latency-ms" => {
                scenario.one_way_delay = Duration::from_millis(number("--latency-ms")?)
            }
            "--origin-idle-ms" => {
                scenario.origin_idle = Duration::from_millis(number("--origin-idle-ms")?)
            }
            "--gap-min-ms" => gap_min = Some(Duration::from_millis(number("--gap-min-ms")?)),
            "--gap-max-ms" => gap_max = Some(Duration::from_millis(number("--gap-max-ms")?)),
            "--seed" => scenario.seed = number("--seed")?,
            "--hint" => scenario.keep_alive_hint = true,
            "--tls" => scenario.tls = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    if scenario.origin_idle < Duration::from_secs(1) && scenario.keep_alive_hint {
        return Err(
            "--hint needs --origin-idle-ms of at least 1000 (the hint is in whole seconds)".into(),
        );
    }
    // By default, gaps span the origin's timeout ± 100 ms: the race window
    // (2 × latency wide, ending at the timeout) is a quarter of that range.
    let spread = Duration::from_millis(100);
    scenario.gap_min = gap_min.unwrap_or(scenario.origin_idle.saturating_sub(spread));
    scenario.gap_max = gap_max.unwrap_or(scenario.origin_idle.saturating_add(spread));
    if scenario.gap_max < scenario.gap_min {
        return Err("--gap-max-ms must not be smaller than --gap-min-ms".into());
    }
    Ok(scenario)
}

#[tokio::main]
async fn main() -> ExitCode {
    let scenario = match parse_args() {
        Ok(scenario) => scenario,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    println!(
        "{} origin closes idle connections after {} ms ({}), {} ms one-way latency through the relay;",
        if scenario.tls { "HTTPS" } else { "HTTP" },
        scenario.origin_idle.as_millis(),
        if scenario.keep_alive_hint {
            "and says so in Keep-Alive"
        } else {
            "without a Keep-Alive hint"
        },
        scenario.one_way_delay.as_millis(),
    );
    println!(
        "{} requests per run, idle gaps {}–{} ms (race window: {}–{} ms), seed {}\n",
        scenario.requests,
        scenario.gap_min.as_millis(),
        scenario.gap_max.as_millis(),
        scenario
            .origin_idle
            .saturating_sub(scenario.one_way_delay.saturating_mul(2))
            .as_millis(),
        scenario.origin_idle.as_millis(),
        scenario.seed,
    );

    let runs = [
        (Which::HyperUtil, Method::GET),
        (Which::HyperUtil, Method::POST),
        (Which::Closefirst, Method::GET),
        (Which::Closefirst, Method::POST),
    ];
    // The four runs go at once, each with its own origin and relay.
    let done = Arc::new(AtomicUsize::new(0));
    let total = runs.len().saturating_mul(scenario.requests);
    let mut tasks = Vec::new();
    for (which, method) in runs.clone() {
        let scenario = scenario.clone();
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            schedule::run(which, method, &scenario, |_, _| {
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                eprint!("\rrunning: {n}/{total} requests sent");
            })
            .await
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        match task.await.expect("a run does not panic") {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => {
                eprintln!("\nthe lab could not start: {e}");
                return ExitCode::from(2);
            }
        }
    }
    eprintln!("\r{:<40}", "");

    print_table(&runs, &outcomes);

    let mut ok = true;
    for ((which, method), outcome) in runs.iter().zip(&outcomes) {
        if *which != Which::Closefirst {
            continue;
        }
        if *method == Method::GET && outcome.failures > 0 {
            println!(
                "FAIL: closefirst lost {} idempotent request(s)",
                outcome.failures
            );
            ok = false;
        }
        if outcome.duplicate_executions > 0 {
            println!(
                "FAIL: closefirst executed {} request(s) twice",
                outcome.duplicate_executions
            );
            ok = false;
        }
    }
    if ok {
        println!("closefirst lost no idempotent request and executed nothing twice.");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_table(runs: &[(Which, Method)], outcomes: &[Outcome]) {
    println!(
        "{:<18} {:<6} {:>8} {:>8} {:>10} {:>11} {:>11}",
        "client", "method", "requests", "failed", "never ran", "duplicates", "connections"
    );
    for ((which, method), o) in runs.iter().zip(outcomes) {
        println!(
            "{:<18} {:<6} {:>8} {:>8} {:>10} {:>11} {:>11}",
            which.to_string(),
            method.as_str(),
            o.requests,
            o.failures,
            o.never_executed,
            o.duplicate_executions,
            o.connections_opened
        );
    }
    println!("\nfailures by kind:");
    let mut any = false;
    for ((which, method), o) in runs.iter().zip(outcomes) {
        for (kind, n) in &o.failures_by_kind {
            any = true;
            println!("  {which} {method}: {n} × {kind}");
        }
    }
    if !any {
        println!("  none");
    }
    println!();
}
