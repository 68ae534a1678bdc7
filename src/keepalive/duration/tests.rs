use super::*;

fn ok(text: &str) -> Duration {
    parse_duration(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn err(text: &str) -> String {
    match parse_duration(text) {
        Ok(d) => panic!("{text:?} parsed as {d:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn single_units() {
    assert_eq!(ok("90s"), Duration::from_secs(90));
    assert_eq!(ok("90000ms"), Duration::from_secs(90));
    assert_eq!(ok("1h"), Duration::from_secs(3600));
    assert_eq!(ok("2m"), Duration::from_secs(120));
    assert_eq!(ok("250us"), Duration::from_micros(250));
    assert_eq!(ok("250µs"), Duration::from_micros(250));
    assert_eq!(ok("250\u{3bc}s"), Duration::from_micros(250));
    assert_eq!(ok("7ns"), Duration::from_nanos(7));
    assert_eq!(ok("0s"), Duration::ZERO);
    assert_eq!(ok("007s"), Duration::from_secs(7));
}

#[test]
fn components_add_up_in_descending_order() {
    assert_eq!(ok("1m30s"), Duration::from_secs(90));
    assert_eq!(ok("1h2m3s4ms5us6ns"), Duration::new(3723, 4_005_006));
    assert_eq!(ok("1h 30m"), Duration::from_secs(5400));
    assert_eq!(ok("1s500ms"), Duration::from_millis(1500));
    assert_eq!(ok(" \t4s\n"), Duration::from_secs(4));
}

#[test]
fn bare_numbers_are_refused_with_a_suggestion() {
    assert_eq!(
        err("90"),
        "invalid duration `90`: `90` has no unit; write 90s or 90ms"
    );
    assert_eq!(
        err("1m30"),
        "invalid duration `1m30`: `30` has no unit; write 30s or 30ms"
    );
    assert_eq!(
        err("5 s"),
        "invalid duration `5 s`: `5` has no unit; write 5s or 5ms"
    );
}

#[test]
fn empty_input() {
    for text in ["", "   ", "\t\n"] {
        assert!(err(text).ends_with("it is empty; write a number and a unit, such as 90s"));
    }
}

#[test]
fn fractions_are_refused_with_the_exact_equivalent() {
    assert_eq!(
        err("1.5s"),
        "invalid duration `1.5s`: `1.5s`: decimal fractions are not allowed; \
         use a smaller unit (1500ms)"
    );
    assert!(err("0.25h").ends_with("(15m)"));
    assert!(err("1.5m").ends_with("(90s)"));
    assert!(err("1,5s").ends_with("(1500ms)"));
    assert!(err("0.0000000001s").ends_with("use a smaller unit"));
    assert!(err("1.5").contains("decimal fractions are not allowed"));
    assert!(err("1.5parsecs").ends_with("use a smaller unit"));
    assert!(err("1.s").contains("`1.s`"));
}

#[test]
fn unknown_units_are_named() {
    assert_eq!(
        err("5sec"),
        "invalid duration `5sec`: unknown unit `sec` (expected h, m, s, ms, us (or µs) or ns)"
    );
    assert!(err("5S").contains("unknown unit `S`"));
    assert!(err("5d").contains("unknown unit `d`"));
    assert!(!err("s").contains("unknown unit"));
    assert!(err("s").contains("unit `s` has no number before it"));
    assert!(err("abc").contains("unknown unit `abc`"));
}

#[test]
fn order_and_repetition() {
    assert!(err("30s1m").contains("`1m` comes after `30s`"));
    assert!(err("1s1s").contains("`1s` comes after `1s`"));
    assert!(err("1ms 1s").contains("`1s` comes after `1ms`"));
    assert!(err("1us1µs").contains("`1µs` comes after `1us`"));
}

#[test]
fn signs_and_stray_characters() {
    assert!(err("-5s").contains("cannot have a sign"));
    assert!(err("+5s").contains("cannot have a sign"));
    assert!(err("5s-").contains("cannot have a sign"));
    assert!(err("5_000ms").contains("unexpected character `_`"));
    assert!(err("5s;").contains("unexpected character `;`"));
}

#[test]
fn overflow_is_an_error_not_a_panic() {
    assert!(err("99999999999999999999999s").ends_with("too large to represent as a duration"));
    assert!(err("18446744073709551615h").contains("too large to represent"));
    assert!(err("18446744073709551615s1000ms").contains("too large to represent"));
    assert_eq!(ok("18446744073709551615s"), Duration::from_secs(u64::MAX));
    assert_eq!(ok("18446744073709551615s999ms999us999ns"), Duration::MAX);
}

#[test]
fn control_characters_are_escaped_in_messages() {
    let message = err("5\u{7}");
    assert!(message.contains("\\u{7}"), "{message}");
    assert_eq!(parse_duration("x").unwrap_err().input(), "x");
}
