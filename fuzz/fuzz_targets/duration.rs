//! Fuzzes `parse_duration` with arbitrary UTF-8 text.
//!
//! Properties checked on every input:
//! - an accepted duration reads back the same from its canonical spelling
//!   (`1h2m3s4ms5us6ns`, or `0s`) and from a single nanosecond count;
//! - text containing `.` is always refused (no fractions);
//! - every error message names the input.

#![no_main]

use std::time::Duration;

use closefirst::keepalive::parse_duration;
use libfuzzer_sys::fuzz_target;

fn canonical(d: Duration) -> String {
    let nanos = d.as_nanos();
    let units: [(u128, &str); 6] = [
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    let mut rest = nanos;
    let mut out = String::new();
    for (size, suffix) in units {
        let n = rest / size;
        rest %= size;
        if n > 0 {
            out.push_str(&format!("{n}{suffix}"));
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_duration(text) {
        Ok(d) => {
            assert!(!text.contains('.'), "a fraction was accepted: {text:?}");
            let spelled = canonical(d);
            assert_eq!(parse_duration(&spelled), Ok(d), "canonical {spelled:?}");
            let padded = format!(" {spelled}\t");
            assert_eq!(parse_duration(&padded), Ok(d), "padded {padded:?}");
            if let Ok(nanos) = u64::try_from(d.as_nanos()) {
                assert_eq!(parse_duration(&format!("{nanos}ns")), Ok(d));
            }
        }
        Err(e) => {
            assert_eq!(e.input(), text);
            assert!(e.to_string().starts_with("invalid duration `"));
        }
    }
});
