//! Assertions on the error API that the fault tests share, each with a message naming
//! the case: `Error::attempts`, `Error::is_body`, `Error::is_unsupported`, and the
//! method and origin in a request error's `Display`.

#![allow(dead_code, unreachable_pub)]

use closefirst::Error;

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
