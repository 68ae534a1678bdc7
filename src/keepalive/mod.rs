//! The server's `Keep-Alive` header.
//!
//! A server may announce how long it keeps an idle connection open and how many more
//! requests it will accept on it:
//!
//! ```text
//! Keep-Alive: timeout=5, max=100
//! ```
//!
//! The pool reads this on every response and closes the connection `keep_alive_margin`
//! before `timeout` runs out (a `timeout` above one day counts as one day), and stops
//! reusing it when `max` is used up. A header the
//! pool cannot parse is ignored (logged at `debug`), never an error for the request.
//!
//! ```
//! use std::time::Duration;
//! let hint = closefirst::keepalive::parse(b"timeout=5, max=100").unwrap();
//! assert_eq!(hint.timeout, Some(Duration::from_secs(5)));
//! assert_eq!(hint.max, Some(100));
//!
//! let err = closefirst::keepalive::parse(b"timeout=soon").unwrap_err();
//! assert_eq!(err.to_string(), "malformed Keep-Alive header: `timeout` is not a whole number of seconds");
//! ```
//!
//! # Checking and measuring
//!
//! The rule of thumb is that the upstream-most side closes first:
//! `backend keep-alive >= front idle timeout + margin`. [`check_parity`] checks it and
//! says what to change when it fails; [`probe`] measures a live server (one connection,
//! held until the server closes it) and recommends an idle timeout; [`parse_duration`]
//! reads durations with explicit units (`90s`, `1m30s`, `250ms`) so that seconds and
//! milliseconds are never confused.
//!
//! ```
//! use std::time::Duration;
//! use closefirst::keepalive::{check_parity, parse_duration};
//!
//! let front = parse_duration("4s").unwrap();
//! let backend = parse_duration("5s").unwrap(); // uvicorn's default
//! let margin = parse_duration("1500ms").unwrap();
//! let err = check_parity(front, backend, margin).unwrap_err();
//! assert_eq!(err.max_front_idle(), Some(Duration::from_millis(3500)));
//! ```

mod duration;
mod parity;
mod probe;

pub use duration::{parse_duration, DurationError};
pub use parity::{check_parity, ParityError};
pub use probe::{probe, ProbeOptions, ProbeReport};

use std::fmt;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName};

/// The `Keep-Alive` header (the `http` crate has no constant for it).
pub(crate) const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// The parameters of a `Keep-Alive` response header that the pool uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeepAlive {
    /// `timeout=N`: how long the server keeps the connection open while idle.
    pub timeout: Option<Duration>,
    /// `max=M`: how many more requests the server will accept on the connection.
    pub max: Option<u64>,
}

/// A `Keep-Alive` header that does not follow the grammar
/// `#( token [ "=" ( token / quoted-string ) ] )`, or whose `timeout` or `max` is not a
/// whole number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    reason: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed Keep-Alive header: {}", self.reason)
    }
}

impl std::error::Error for ParseError {}

fn malformed(reason: &'static str) -> ParseError {
    ParseError { reason }
}

/// Parses one `Keep-Alive` header value.
///
/// Parameter names are matched without regard to case, whitespace around names, `=`
/// and values is allowed, values may be quoted, and unknown parameters are ignored.
/// When `timeout` or `max` appears more than once the smallest value counts, which is
/// the cautious reading.
pub fn parse(value: &[u8]) -> Result<KeepAlive, ParseError> {
    let mut hint = KeepAlive::default();
    parse_into(value, &mut hint)?;
    Ok(hint)
}

/// Parses every `Keep-Alive` header in `headers` as one list. `Ok(None)` when there is
/// none.
pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Option<KeepAlive>, ParseError> {
    let mut values = headers.get_all(KEEP_ALIVE).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let mut hint = KeepAlive::default();
    for value in values {
        parse_into(value.as_bytes(), &mut hint)?;
    }
    Ok(Some(hint))
}

fn parse_into(value: &[u8], hint: &mut KeepAlive) -> Result<(), ParseError> {
    let mut cursor = Cursor {
        bytes: value,
        pos: 0,
    };
    loop {
        cursor.skip_ows();
        match cursor.peek() {
            None => return Ok(()),
            // Empty list elements are allowed by the list grammar.
            Some(b',') => {
                cursor.pos += 1;
                continue;
            }
            Some(_) => {}
        }
        let name = cursor.token();
        if name.is_empty() {
            return Err(malformed("expected a parameter name"));
        }
        cursor.skip_ows();
        let value = if cursor.peek() == Some(b'=') {
            cursor.pos += 1;
            cursor.skip_ows();
            Some(cursor.value()?)
        } else {
            None
        };
        cursor.skip_ows();
        match cursor.peek() {
            None | Some(b',') => {}
            Some(_) => return Err(malformed("unexpected character after a parameter")),
        }
        if name.eq_ignore_ascii_case(b"timeout") {
            let secs = number(value.as_ref(), "`timeout` is not a whole number of seconds")?;
            let timeout = Duration::from_secs(secs);
            hint.timeout = Some(hint.timeout.map_or(timeout, |t| t.min(timeout)));
        } else if name.eq_ignore_ascii_case(b"max") {
            let max = number(value.as_ref(), "`max` is not a whole number")?;
            hint.max = Some(hint.max.map_or(max, |m| m.min(max)));
        }
    }
}

fn number(value: Option<&Value<'_>>, reason: &'static str) -> Result<u64, ParseError> {
    let digits = match value {
        Some(Value::Token(t)) => *t,
        Some(Value::Quoted(q)) => q.as_slice(),
        None => return Err(malformed(reason)),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(malformed(reason));
    }
    digits.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)
            .and_then(|acc| acc.checked_add(u64::from(d - b'0')))
            .ok_or_else(|| malformed("a number is too large"))
    })
}

enum Value<'a> {
    Token(&'a [u8]),
    Quoted(Vec<u8>),
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn token(&mut self) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        &self.bytes[start..self.pos]
    }

    fn value(&mut self) -> Result<Value<'a>, ParseError> {
        if self.peek() != Some(b'"') {
            let token = self.token();
            if token.is_empty() {
                return Err(malformed("a parameter has `=` but no value"));
            }
            return Ok(Value::Token(token));
        }
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(malformed("unterminated quoted value")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Value::Quoted(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c) => out.push(c),
                        None => return Err(malformed("unterminated quoted value")),
                    }
                    self.pos += 1;
                }
                Some(c) if c == b'\t' || c >= b' ' && c != 0x7f => {
                    out.push(c);
                    self.pos += 1;
                }
                Some(_) => return Err(malformed("control character in a quoted value")),
            }
        }
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

#[cfg(test)]
mod tests {
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
}
