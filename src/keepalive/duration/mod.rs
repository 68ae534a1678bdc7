//! Durations written with explicit units, so seconds and milliseconds cannot be
//! confused in a command line or a configuration file.
//!
//! [`parse_duration`] reads the text here; the table of units is in `unit`, the
//! wording of every refusal in `error`, and the exact equivalent suggested for a
//! refused fraction (`1.5s`: write `1500ms`) in `fraction`.

mod error;
mod fraction;
#[cfg(test)]
mod tests;
mod unit;

pub use error::DurationError;

use std::time::Duration;

use error::Kind;
use fraction::fraction_error;
use unit::Unit;

/// Parses a duration whose every number carries its unit: `90s`, `90000ms`, `1m30s`,
/// `1h`, `250us`.
///
/// - Units: `h`, `m`, `s`, `ms`, `us` (also written `µs`) and `ns`, lowercase.
/// - Several components add up (`1m30s` is 90 seconds); they must go from the largest
///   unit to the smallest, each unit at most once. Whitespace is allowed around the
///   whole text and between components (`1m 30s`), not between a number and its unit.
/// - Numbers are whole and unsigned: `1.5s` is refused (write `1500ms`), and so is a
///   bare number such as `90`, which could mean seconds or milliseconds.
/// - `0s` is a valid (zero) duration; totals beyond [`Duration::MAX`] are refused.
///
/// ```
/// use std::time::Duration;
/// use closefirst::keepalive::parse_duration;
///
/// assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
/// assert_eq!(parse_duration(" 250ms ").unwrap(), Duration::from_millis(250));
/// assert_eq!(
///     parse_duration("90").unwrap_err().to_string(),
///     "invalid duration `90`: `90` has no unit; write 90s or 90ms"
/// );
/// assert!(parse_duration("1.5s").unwrap_err().to_string().contains("1500ms"));
/// ```
///
/// # Errors
///
/// A [`DurationError`] naming the input and the problem: empty text, a number without
/// a unit, a fraction, a sign, an unknown unit, units out of order or repeated, or a
/// total too large for a [`Duration`].
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    parse_inner(text).map_err(|kind| DurationError {
        input: text.to_owned(),
        kind,
    })
}

fn parse_inner(text: &str) -> Result<Duration, Kind> {
    let mut rest = text.trim_start();
    if rest.trim_end().is_empty() {
        return Err(Kind::Empty);
    }
    let mut total = Duration::ZERO;
    let mut previous: Option<(Unit, &str)> = None;
    while !rest.is_empty() {
        let start = rest;
        let first = rest
            .chars()
            .next()
            .expect("the loop runs on non-empty text");
        if first == '+' || first == '-' {
            return Err(Kind::Sign);
        }
        let digits_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (digits, after) = rest.split_at(digits_len);
        let unit_len = after
            .char_indices()
            .find(|(_, c)| !c.is_alphabetic())
            .map_or(after.len(), |(i, _)| i);
        let (unit_text, after_unit) = after.split_at(unit_len);

        if digits.is_empty() {
            if unit_text.is_empty() {
                return Err(Kind::UnexpectedChar(first));
            }
            return Err(match Unit::lookup(unit_text) {
                Some(_) => Kind::MissingNumber(unit_text.to_owned()),
                None => Kind::UnknownUnit(unit_text.to_owned()),
            });
        }
        if unit_text.is_empty() {
            if after.starts_with(['.', ',']) {
                return Err(fraction_error(digits, after));
            }
            return Err(match after.chars().next() {
                None => Kind::NoUnit(digits.to_owned()),
                Some(c) if c.is_whitespace() => Kind::NoUnit(digits.to_owned()),
                Some(c) => Kind::UnexpectedChar(c),
            });
        }
        let unit = Unit::lookup(unit_text).ok_or_else(|| Kind::UnknownUnit(unit_text.into()))?;
        let component = &start[..digits_len + unit_len];
        if let Some((earlier_unit, earlier)) = previous {
            if unit <= earlier_unit {
                return Err(Kind::Order {
                    earlier: earlier.to_owned(),
                    later: component.to_owned(),
                });
            }
        }
        previous = Some((unit, component));

        let n: u64 = digits.parse().map_err(|_| Kind::Overflow)?;
        total = unit
            .of(n)
            .and_then(|d| total.checked_add(d))
            .ok_or(Kind::Overflow)?;
        rest = after_unit.trim_start();
    }
    Ok(total)
}
