//! The units a duration may be written in, and what each is worth.

use std::time::Duration;

/// The units [`parse_duration`](super::parse_duration) accepts, largest first. The
/// index is the rank that enforces descending order.
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

pub(super) const UNIT_LIST: &str = "h, m, s, ms, us (or µs) or ns";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Unit {
    Hours,
    Minutes,
    Seconds,
    Millis,
    Micros,
    Nanos,
}

impl Unit {
    pub(super) fn nanos(self) -> u128 {
        match self {
            Unit::Hours => 3_600_000_000_000,
            Unit::Minutes => 60_000_000_000,
            Unit::Seconds => 1_000_000_000,
            Unit::Millis => 1_000_000,
            Unit::Micros => 1_000,
            Unit::Nanos => 1,
        }
    }

    pub(super) fn suffix(self) -> &'static str {
        match self {
            Unit::Hours => "h",
            Unit::Minutes => "m",
            Unit::Seconds => "s",
            Unit::Millis => "ms",
            Unit::Micros => "us",
            Unit::Nanos => "ns",
        }
    }

    pub(super) fn of(self, n: u64) -> Option<Duration> {
        match self {
            Unit::Hours => n.checked_mul(3600).map(Duration::from_secs),
            Unit::Minutes => n.checked_mul(60).map(Duration::from_secs),
            Unit::Seconds => Some(Duration::from_secs(n)),
            Unit::Millis => Some(Duration::from_millis(n)),
            Unit::Micros => Some(Duration::from_micros(n)),
            Unit::Nanos => Some(Duration::from_nanos(n)),
        }
    }

    pub(super) fn lookup(text: &str) -> Option<Unit> {
        UNITS
            .iter()
            .find(|(s, _)| *s == text)
            .map(|(_, unit)| *unit)
    }
}
