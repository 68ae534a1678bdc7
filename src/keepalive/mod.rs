//! Guardrails for operators: the server's `Keep-Alive` header, the rule of thumb as a
//! check, durations with units, and a live probe of a server.
//!
//! None of this is on a request's path: the pool reads response headers through the
//! crate's own header module, and this module only re-exports that parser
//! ([`parse`], [`KeepAlive`], [`ParseError`]) under a public name.
//!
//! # The `Keep-Alive` header
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
//! The `closefirst-probe` binary runs [`probe`] from a shell, on several URIs at once,
//! with `--json` output, and exits non-zero when parity fails, so that a deploy can be
//! gated on it (`cargo install closefirst`, then `closefirst-probe --help`). In a
//! running client, [`Client::origin_stats`](crate::Client::origin_stats) shows the
//! same evidence live: which side closed idle connections first.
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

pub use crate::header::{parse, KeepAlive, ParseError};
pub use duration::{parse_duration, DurationError};
pub use parity::{check_parity, ParityError};
pub use probe::{probe, HintMismatch, ProbeOptions, ProbeReport, HINT_TOLERANCE};
