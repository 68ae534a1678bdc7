//! The two response headers the pool reads: `Connection` (does the server close after
//! this response?) and `Keep-Alive` (how long will it keep the connection idle, and
//! for how many more requests?).
//!
//! A leaf: it imports nothing from the crate. The pool reads every response head
//! through it before a connection goes back to the idle list; the probe
//! ([`keepalive::probe`](crate::keepalive::probe)) reads the same headers through it.
//! The public parser is re-exported as [`keepalive::parse`](crate::keepalive::parse).
//!
//! Values come from the server and are hostile: nothing here panics on any input (the
//! fuzz target `keep_alive_header` holds the parser to that), and numbers that do not
//! fit are errors, not wrapped. Capping a hint that fits but is absurd (a `timeout` of
//! years) is the pool's decision, not the parser's.

use std::fmt;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, CONNECTION};

#[cfg(test)]
mod tests;

/// Whether any `Connection` header in `headers` lists `token` (`close`, `keep-alive`,
/// `upgrade`), compared without regard to case.
pub(crate) fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .any(|value| list_has(value.as_bytes(), token))
}

/// Whether the comma-separated list `value` (one header line, as raw bytes) has an
/// element equal to `token` without regard to case or surrounding whitespace. For
/// code that sees header values before they are a [`HeaderMap`], such as a raw server.
pub(crate) fn list_has(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|element| element.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

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
