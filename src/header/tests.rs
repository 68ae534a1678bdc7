use super::*;

fn secs(n: u64) -> Option<Duration> {
    Some(Duration::from_secs(n))
}

#[test]
fn parses_timeout_and_max() {
    let hint = parse(b"timeout=5, max=1000").unwrap();
    assert_eq!(hint.timeout, secs(5));
    assert_eq!(hint.max, Some(1000));
}

#[test]
fn names_are_case_insensitive_and_whitespace_is_allowed() {
    let hint = parse(b"  TimeOut = 7 ,\tMAX=3 ").unwrap();
    assert_eq!(hint.timeout, secs(7));
    assert_eq!(hint.max, Some(3));
}

#[test]
fn quoted_values_and_unknown_parameters() {
    let hint = parse(br#"foo="a, \"b\"", timeout="12", bar, baz=qux"#).unwrap();
    assert_eq!(hint.timeout, secs(12));
    assert_eq!(hint.max, None);
}

#[test]
fn empty_elements_and_empty_value() {
    assert_eq!(parse(b"").unwrap(), KeepAlive::default());
    assert_eq!(parse(b" , ,timeout=1,,").unwrap().timeout, secs(1));
}

#[test]
fn repeated_parameters_keep_the_smallest() {
    let hint = parse(b"timeout=10, timeout=3, max=5, max=9").unwrap();
    assert_eq!(hint.timeout, secs(3));
    assert_eq!(hint.max, Some(5));
}

#[test]
fn malformed_values_are_errors_naming_the_problem() {
    let cases: &[(&[u8], &str)] = &[
        (b"timeout=5s", "`timeout` is not a whole number of seconds"),
        (b"timeout=-1", "`timeout` is not a whole number of seconds"),
        (b"timeout", "`timeout` is not a whole number of seconds"),
        (
            b"timeout=\"\"",
            "`timeout` is not a whole number of seconds",
        ),
        (b"max=many", "`max` is not a whole number"),
        (b"timeout=", "a parameter has `=` but no value"),
        (b"timeout=\"5", "unterminated quoted value"),
        (b"timeout=5 6", "unexpected character after a parameter"),
        (b"=5", "expected a parameter name"),
        (b"timeout=99999999999999999999999", "a number is too large"),
        (b"a=\"\x01\"", "control character in a quoted value"),
    ];
    for (input, reason) in cases {
        let err = parse(input).unwrap_err();
        assert_eq!(
            err.reason,
            *reason,
            "input {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn several_header_lines_form_one_list() {
    let mut headers = HeaderMap::new();
    assert_eq!(from_headers(&headers), Ok(None));
    headers.append(KEEP_ALIVE, "timeout=9".parse().unwrap());
    headers.append(KEEP_ALIVE, "max=4, timeout=6".parse().unwrap());
    let hint = from_headers(&headers).unwrap().unwrap();
    assert_eq!(hint.timeout, secs(6));
    assert_eq!(hint.max, Some(4));
}

#[test]
fn non_utf8_bytes_do_not_panic() {
    assert!(parse(b"timeout=\xff").is_err());
    assert!(parse(b"\xfe=1").is_err());
    assert_eq!(parse(b"x=\"\xe9\", timeout=2").unwrap().timeout, secs(2));
}

#[test]
fn connection_tokens_are_whole_list_elements_in_any_case() {
    let mut headers = HeaderMap::new();
    assert!(!connection_has(&headers, "close"));
    headers.insert(CONNECTION, "keep-alive".parse().unwrap());
    assert!(!connection_has(&headers, "close"));
    assert!(connection_has(&headers, "Keep-Alive"));
    headers.insert(CONNECTION, "Upgrade, CLOSE ".parse().unwrap());
    assert!(connection_has(&headers, "close"));
    assert!(connection_has(&headers, "upgrade"));
    headers.insert(CONNECTION, "closed".parse().unwrap());
    assert!(!connection_has(&headers, "close"));
    headers.append(CONNECTION, "\tclose".parse().unwrap());
    assert!(
        connection_has(&headers, "close"),
        "every header line counts"
    );
}

#[test]
fn list_elements_on_raw_bytes() {
    assert!(list_has(b" keep-alive ,close", "close"));
    assert!(list_has(b",,Close,", "close"));
    assert!(!list_has(b"", "close"));
    assert!(!list_has(b"clo se", "close"));
    assert!(!list_has(b"\xffclose", "close"));
}
