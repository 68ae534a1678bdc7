//! The suggestion for a refused decimal fraction: the same duration as a whole number
//! of a smaller unit (`1.5s` is `1500ms`), when there is one.

use std::time::Duration;

use super::error::Kind;
use super::unit::Unit;

/// The error for `<whole>.<fraction><unit>` (`from_point` starts at the `.` or `,`),
/// with the same duration in a smaller unit when that is a whole number that fits.
pub(super) fn fraction_error(whole: &str, from_point: &str) -> Kind {
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
