//! [`DurationError`]: what was wrong with a refused duration, in words.

use std::fmt;

use super::unit::UNIT_LIST;

/// A duration [`parse_duration`](super::parse_duration) refused. [`Display`](fmt::Display) quotes the input
/// and says what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurationError {
    pub(super) input: String,
    pub(super) kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Kind {
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
