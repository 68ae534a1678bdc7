//! The probe's human-readable output (`--json` is in `json.rs`).

use std::time::Duration;

use closefirst::keepalive::{HintMismatch, ProbeReport};

use crate::{error_chain, verdict, Args, Verdict};

pub(crate) fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn mismatch_text(mismatch: HintMismatch) -> String {
    match mismatch {
        HintMismatch::ClosesEarlier { hint, measured } => format!(
            "the server advertises timeout {} but closed after {}: do not trust its hint",
            ms(hint),
            ms(measured)
        ),
        HintMismatch::ClosesLater {
            hint,
            measured: Some(measured),
        } => format!(
            "the server advertises timeout {} but closed only after {}",
            ms(hint),
            ms(measured)
        ),
        HintMismatch::ClosesLater {
            hint,
            measured: None,
        } => format!(
            "the server advertises timeout {} but was still open after --max-wait",
            ms(hint)
        ),
        _ => format!("{mismatch:?}"),
    }
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
    if let Some(mismatch) = report.hint_mismatch() {
        println!("hint disagrees:           {}", mismatch_text(mismatch));
    }
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
            None => "undecided (the server stayed open for all of --max-wait, which is \
                     shorter than front idle + margin; raise --max-wait)"
                .to_owned(),
        };
        println!(
            "parity (front idle {}, margin {}): {verdict}",
            ms(front_idle),
            ms(args.margin)
        );
    }
}

pub(crate) fn print_text(
    args: &Args,
    outcomes: &[(String, Result<ProbeReport, closefirst::Error>)],
) {
    for (uri, result) in outcomes {
        println!("== {uri}");
        match result {
            Ok(report) => print_report(args, report),
            Err(e) => println!("probe failed:             {}", error_chain(e)),
        }
    }
    if args.front_idle.is_some() {
        let verdicts: Vec<_> = outcomes
            .iter()
            .map(|(_, result)| verdict(result, args.front_idle))
            .collect();
        let count = |v: Verdict| verdicts.iter().filter(|&&x| x == v).count();
        println!(
            "== parity: {} pass, {} fail, {} undecided",
            count(Verdict::Pass),
            count(Verdict::Fail),
            count(Verdict::Undecided)
        );
    }
}
