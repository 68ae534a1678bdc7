//! Checks of the error and statistics API that the fault tests rely on (issue 9):
//! `Error::attempts`, `Error::is_body`, `Error::is_unsupported`, the method and origin
//! in a request error's `Display`, `Evictions::cancelled` and `Refusals::body_failed`.
//!
//! They are kept in this one file so that the rest of the fault tests can be run
//! against a crate that lacks them by swapping in no-op versions.

#![allow(dead_code, unreachable_pub)]

use closefirst::{Error, PoolStats};

/// The error counts `expected` dispatches for the request.
pub fn assert_attempts(err: &Error, expected: u32, case: &str) {
    assert_eq!(err.attempts(), expected, "{case}: attempts of {err:?}");
}

/// The caller's own request body failed.
pub fn assert_body_error(err: &Error, case: &str) {
    assert!(err.is_body(), "{case}: not a body error: {err:?}");
}

/// The request was refused as unsupported before anything was sent.
pub fn assert_unsupported(err: &Error, case: &str) {
    assert!(err.is_unsupported(), "{case}: not unsupported: {err:?}");
}

/// A request error's `Display` names the method and the origin.
pub fn assert_names_request(err: &Error, method: &str, origin: &str, case: &str) {
    let text = err.to_string();
    assert!(
        text.contains(method) && text.contains(origin),
        "{case}: `{text}` should name {method} and {origin}"
    );
}

/// Connections closed because a request future was dropped mid-flight.
pub fn cancelled(stats: &PoolStats) -> Option<u64> {
    Some(stats.evictions.cancelled)
}

/// Requests not resent because the caller's own body failed.
pub fn body_failed(stats: &PoolStats) -> Option<u64> {
    Some(stats.refusals.body_failed)
}
