//! The probe's `--json` output: one object on stdout, every duration in
//! milliseconds, written by hand (no serde) with the escaping JSON requires.

use std::fmt::Write as _;
use std::time::Duration;

use closefirst::keepalive::{HintMismatch, ProbeReport};

use crate::{error_chain, verdict, Args, Verdict};

/// A JSON string literal: quotes, backslashes and control characters escaped.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_opt_string(text: Option<&str>) -> String {
    text.map_or_else(|| "null".to_owned(), json_string)
}

fn json_ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "null".to_owned(), |d| d.as_millis().to_string())
}

fn json_report(out: &mut String, report: &ProbeReport) {
    let mismatch = match report.hint_mismatch() {
        None => "null".to_owned(),
        Some(HintMismatch::ClosesEarlier { hint, measured }) => format!(
            "{{\"closes\":\"earlier\",\"hint_ms\":{},\"measured_ms\":{}}}",
            hint.as_millis(),
            measured.as_millis()
        ),
        Some(HintMismatch::ClosesLater { hint, measured }) => format!(
            "{{\"closes\":\"later\",\"hint_ms\":{},\"measured_ms\":{}}}",
            hint.as_millis(),
            json_ms(measured)
        ),
        Some(other) => format!("{{\"closes\":{}}}", json_string(&format!("{other:?}"))),
    };
    let parity_message = match &report.parity {
        Some(Err(e)) => Some(e.to_string()),
        _ => None,
    };
    let _ = write!(
        out,
        ",\"status\":{},\"version\":{},\"remote_addr\":{},\"server\":{},\
         \"connection_header\":{},\"keep_alive_header\":{},\"keep_alive_error\":{},\
         \"keep_alive_refused\":{},\"hint_timeout_ms\":{},\"measured_idle_close_ms\":{},\
         \"still_open_after_max_wait\":{},\"backend_keep_alive_ms\":{},\
         \"recommended_idle_timeout_ms\":{},\"hint_mismatch\":{},\"parity_message\":{}",
        report.status.as_u16(),
        json_string(&format!("{:?}", report.version)),
        json_opt_string(report.remote_addr.map(|a| a.to_string()).as_deref()),
        json_opt_string(report.server_header.as_deref()),
        json_opt_string(report.connection_header.as_deref()),
        json_opt_string(report.keep_alive_header.as_deref()),
        json_opt_string(
            report
                .keep_alive_error
                .as_ref()
                .map(|e| e.to_string())
                .as_deref()
        ),
        report.keep_alive_refused,
        json_ms(report.hint_timeout()),
        json_ms(report.idle_close),
        report.idle_close.is_none(),
        json_ms(report.backend_keep_alive()),
        json_ms(report.recommended_idle_timeout()),
        mismatch,
        json_opt_string(parity_message.as_deref()),
    );
}

pub(crate) fn print_json(
    args: &Args,
    outcomes: &[(String, Result<ProbeReport, closefirst::Error>)],
) {
    let mut verdicts = Vec::new();
    let mut results = Vec::new();
    for (uri, result) in outcomes {
        let verdict = verdict(result, args.front_idle);
        verdicts.push(verdict);
        let mut out = format!(
            "{{\"uri\":{},\"verdict\":\"{}\",\"error\":{}",
            json_string(uri),
            verdict.as_str(),
            json_opt_string(result.as_ref().err().map(error_chain).as_deref()),
        );
        if let Ok(report) = result {
            json_report(&mut out, report);
        }
        out.push('}');
        results.push(out);
    }
    let overall = if verdicts.contains(&Verdict::Fail) {
        Verdict::Fail
    } else if verdicts.contains(&Verdict::Undecided) {
        Verdict::Undecided
    } else {
        Verdict::Pass
    };
    println!(
        "{{\"verdict\":\"{}\",\"front_idle_ms\":{},\"margin_ms\":{},\"max_wait_ms\":{},\
         \"results\":[{}]}}",
        overall.as_str(),
        json_ms(args.front_idle),
        args.margin.as_millis(),
        args.max_wait.as_millis(),
        results.join(",")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_what_json_requires() {
        assert_eq!(json_string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(json_string("\n\r\t\u{1}"), r#""\n\r\t\u0001""#);
        assert_eq!(json_string("é ✓"), "\"é ✓\"");
    }
}
