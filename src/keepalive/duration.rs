//! Durations written with explicit units, so seconds and milliseconds cannot be
//! confused in a command line or a configuration file.

use std::fmt;
use std::time::Duration;

/// The units [`parse_duration`] accepts, largest first. The index is the rank that
/// enforces descending order.
const UNITS: [(&str, Unit); 8] = [
    ("h", Unit::Hours),
    ("m", Unit::Minutes),
    ("s", Unit::Seconds),
    ("ms", Unit::Millis),
    ("us", Unit::Micros),
    // MICRO SIGN (U+00B5) and GREEK SMALL LETTER MU (U+03BC) look the same; accept both.
    ("\u{b5}s", Unit::Micros),
    ("\u{3bc}s", Unit::Micros),
    ("ns", Unit::Nanos),
];

const UNIT_LIST: &str = "h, m, s, ms, us (or µs) or ns";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Unit {
    Hours,
    Minutes,
    Seconds,
    Millis,
    Micros,
    Nanos,
}

impl Unit {
    fn nanos(self) -> u128 {
        match self {
            Unit::Hours => 3_600_000_000_000,
            Unit::Minutes => 60_000_000_000,
            Unit::Seconds => 1_000_000_000,
            Unit::Millis => 1_000_000,
            Unit::Micros => 1_000,
            Unit::Nanos => 1,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Unit::Hours => "h",
            Unit::Minutes => "m",
            Unit::Seconds => "s",
            Unit::Millis => "ms",
            Unit::Micros => "us",
            Unit::Nanos => "ns",
        }
    }

    fn of(self, n: u64) -> Option<Duration> {
        match self {
            Unit::Hours => n.checked_mul(3600).map(Duration::from_secs),
            Unit::Minutes => n.checked_mul(60).map(Duration::from_secs),
            Unit::Seconds => Some(Duration::from_secs(n)),
            Unit::Millis => Some(Duration::from_millis(n)),
            Unit::Micros => Some(Duration::from_micros(n)),
            Unit::Nanos => Some(Duration::from_nanos(n)),
        }
    }

    fn lookup(text: &str) -> Option<Unit> {
        UNITS
            .iter()
            .find(|(s, _)| *s == text)
            .map(|(_, unit)| *unit)
    }
}

/// A duration [`parse_duration`] refused. [`Display`](fmt::Display) quotes the input
/// and says what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurationError {
    input: String,
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Empty,
    NoUnit(String),
    Fraction {
        written: String,
        suggestion: Option<String>,
    },
    Sign,
    UnknownUnit(String),
    MissingNumber(String),
    UnexpectedChar(char),
    Order {
        earlier: String,
        later: String,
    },
    Overflow,
}

impl DurationError {
    /// The text that was refused, as given.
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid duration `{}`: ", self.input.escape_debug())?;
        match &self.kind {
            Kind::Empty => f.write_str("it is empty; write a number and a unit, such as 90s"),
            Kind::NoUnit(n) => write!(f, "`{n}` has no unit; write {n}s or {n}ms"),
            Kind::Fraction {
                written,
                suggestion,
            } => {
                write!(
                    f,
                    "`{written}`: decimal fractions are not allowed; use a smaller unit"
                )?;
                match suggestion {
                    Some(s) => write!(f, " ({s})"),
                    None => Ok(()),
                }
            }
            Kind::Sign => f.write_str("a duration cannot have a sign; write it without `+` or `-`"),
            Kind::UnknownUnit(unit) => write!(
                f,
                "unknown unit `{}` (expected {UNIT_LIST})",
                unit.escape_debug()
            ),
            Kind::MissingNumber(unit) => {
                write!(f, "unit `{unit}` has no number before it")
            }
            Kind::UnexpectedChar(c) => write!(
                f,
                "unexpected character `{}`; write numbers followed by units, such as 1m30s",
                c.escape_debug()
            ),
            Kind::Order { earlier, later } => write!(
                f,
                "`{later}` comes after `{earlier}`; write each unit at most once, \
                 from the largest to the smallest (h, m, s, ms, us, ns)"
            ),
            Kind::Overflow => f.write_str("too large to represent as a duration"),
        }
    }
}

impl std::error::Error for DurationError {}

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

/// The error for `<whole>.<fraction><unit>` (`from_point` starts at the `.` or `,`),
/// with the same duration in a smaller unit when that is a whole number that fits.
fn fraction_error(whole: &str, from_point: &str) -> Kind {
    let after_point = &from_point[1..];
    let fraction_len = after_point.bytes().take_while(u8::is_ascii_digit).count();
    let after = &after_point[fraction_len..];
    let unit_len = after
        .char_indices()
        .find(|(_, c)| !c.is_alphabetic())
        .map_or(after.len(), |(i, _)| i);
    let unit_text = &after[..unit_len];
    let written = format!("{whole}{}", &from_point[..1 + fraction_len + unit_len]);
    let suggestion = Unit::lookup(unit_text)
        .and_then(|unit| exact_nanos(whole, &after_point[..fraction_len], unit))
        .and_then(suggest);
    Kind::Fraction {
        written,
        suggestion,
    }
}

fn exact_nanos(whole: &str, fraction: &str, unit: Unit) -> Option<u128> {
    let fraction = fraction.trim_end_matches('0');
    // Beyond 9 fractional digits nothing is a whole number of nanoseconds.
    if fraction.len() > 9 {
        return None;
    }
    let whole: u128 = whole.parse().ok()?;
    let scale = 10u128.pow(fraction.len() as u32);
    let fraction: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    let numerator = whole
        .checked_mul(scale)?
        .checked_add(fraction)?
        .checked_mul(unit.nanos())?;
    (numerator % scale == 0).then_some(numerator / scale)
}

/// Writes `nanos` in the largest unit that represents it exactly, e.g. `1500ms`.
fn suggest(nanos: u128) -> Option<String> {
    if nanos > Duration::MAX.as_nanos() {
        return None;
    }
    let unit = [
        Unit::Hours,
        Unit::Minutes,
        Unit::Seconds,
        Unit::Millis,
        Unit::Micros,
        Unit::Nanos,
    ]
    .into_iter()
    .find(|unit| nanos % unit.nanos() == 0)?;
    Some(format!("{}{}", nanos / unit.nanos(), unit.suffix()))
}

#[cfg(test)]
mod tests {
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
}
