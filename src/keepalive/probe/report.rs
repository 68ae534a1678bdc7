//! [`ProbeReport`]: what the probe read off the response and measured, and the
//! recommendation drawn from it.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, CONNECTION, SERVER};
use http::response::Parts;
use http::{StatusCode, Version};

use super::options::ProbeOptions;
use crate::header::{connection_has, from_headers, KeepAlive, ParseError, KEEP_ALIVE};
use crate::keepalive::parity::{check_parity, ParityError};

/// How far the measured close may stray from the server's `Keep-Alive: timeout=N` hint
/// before [`ProbeReport::hint_mismatch`] reports it. The hint is in whole seconds and
/// the measurement starts a moment after the server's timer does, so a server that
/// keeps its word lands well inside this.
pub const HINT_TOLERANCE: Duration = Duration::from_millis(500);

/// The server's `Keep-Alive: timeout` hint disagrees with the close the probe
/// measured (by more than [`HINT_TOLERANCE`]). See [`ProbeReport::hint_mismatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HintMismatch {
    /// The server closed the idle connection sooner than its hint says: a client
    /// that trusts the hint writes onto connections the server is closing. Only the
    /// measured value is safe to configure against.
    ClosesEarlier {
        /// The advertised `timeout`.
        hint: Duration,
        /// The measured close.
        measured: Duration,
    },
    /// The server kept the idle connection longer than its hint says (Node.js
    /// advertises `timeout=5` and closes about a second later). A client that trusts
    /// the hint is safe, but the hint is not the server's real setting.
    ClosesLater {
        /// The advertised `timeout`.
        hint: Duration,
        /// The measured close; `None` when the connection was still open after
        /// [`max_wait`](ProbeReport::max_wait).
        measured: Option<Duration>,
    },
}

/// What [`probe`](super::probe) found out about a server.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProbeReport {
    /// The response status.
    pub status: StatusCode,
    /// The response's HTTP version.
    pub version: Version,
    /// The address connected to.
    pub remote_addr: Option<SocketAddr>,
    /// The raw `Keep-Alive` header (several lines joined with `, `), if any.
    pub keep_alive_header: Option<String>,
    /// The parsed `Keep-Alive` header; `None` when absent or malformed.
    pub keep_alive: Option<KeepAlive>,
    /// Why the `Keep-Alive` header could not be parsed, if it could not.
    pub keep_alive_error: Option<ParseError>,
    /// The raw `Connection` header (several lines joined with `, `), if any.
    pub connection_header: Option<String>,
    /// The raw `Server` header, if any.
    pub server_header: Option<String>,
    /// The response did not allow reuse (`Connection: close`, or HTTP/1.0 without
    /// `Connection: keep-alive`): the connection closes right after the response and
    /// [`idle_close`](Self::idle_close) is zero.
    pub keep_alive_refused: bool,
    /// How long the server kept the connection open once the response was read, as
    /// measured by the probe, rounded down to whole milliseconds. `None` when it was still open after
    /// [`max_wait`](Self::max_wait).
    pub idle_close: Option<Duration>,
    /// The [`ProbeOptions::max_wait`] the probe ran with.
    pub max_wait: Duration,
    /// The [`ProbeOptions::margin`] the probe ran with.
    pub margin: Duration,
    /// The parity check of [`ProbeOptions::front_idle`] against
    /// [`backend_keep_alive`](Self::backend_keep_alive). `None` when no front idle
    /// timeout was given, or when nothing about the server's keep-alive is known.
    /// A server that stayed open for all of `max_wait` passes when
    /// `front_idle + margin <= max_wait`.
    pub parity: Option<Result<(), ParityError>>,
}

impl ProbeReport {
    /// The `timeout=` of the server's `Keep-Alive` header.
    pub fn hint_timeout(&self) -> Option<Duration> {
        self.keep_alive.and_then(|hint| hint.timeout)
    }

    /// The server's keep-alive as far as the probe can tell: the smaller of the
    /// measured [`idle_close`](Self::idle_close) and the
    /// [`hint_timeout`](Self::hint_timeout). `None` when neither is known.
    pub fn backend_keep_alive(&self) -> Option<Duration> {
        match (self.idle_close, self.hint_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The idle timeout a client of this server should use:
    /// [`backend_keep_alive`](Self::backend_keep_alive) minus the margin. `None` when
    /// nothing is known about the server's keep-alive, or when the margin leaves no
    /// time at all (the client should not keep idle connections to this server).
    pub fn recommended_idle_timeout(&self) -> Option<Duration> {
        self.backend_keep_alive()?
            .checked_sub(self.margin)
            .filter(|timeout| !timeout.is_zero())
    }

    /// Whether the `Keep-Alive: timeout` hint disagrees with the measured close by
    /// more than [`HINT_TOLERANCE`]; `None` when it agrees, when there is no hint, or
    /// when the server refused keep-alive. A server still open after `max_wait`
    /// disagrees only if `max_wait` is past the hint plus the tolerance.
    pub fn hint_mismatch(&self) -> Option<HintMismatch> {
        let hint = self.hint_timeout()?;
        if self.keep_alive_refused {
            return None;
        }
        let late_after = hint.saturating_add(HINT_TOLERANCE);
        match self.idle_close {
            Some(measured) if measured.saturating_add(HINT_TOLERANCE) < hint => {
                Some(HintMismatch::ClosesEarlier { hint, measured })
            }
            Some(measured) if measured > late_after => Some(HintMismatch::ClosesLater {
                hint,
                measured: Some(measured),
            }),
            None if self.max_wait > late_after => Some(HintMismatch::ClosesLater {
                hint,
                measured: None,
            }),
            _ => None,
        }
    }

    /// The report on the response `head`, the server's close measured `idle_close`
    /// after the body ended (`None`: not within `max_wait`), with the parity check the
    /// options ask for.
    pub(super) fn new(
        head: &Parts,
        remote_addr: Option<SocketAddr>,
        idle_close: Option<Duration>,
        options: &ProbeOptions,
    ) -> ProbeReport {
        let (keep_alive, keep_alive_error) = match from_headers(&head.headers) {
            Ok(hint) => (hint, None),
            Err(e) => (None, Some(e)),
        };
        let mut report = ProbeReport {
            status: head.status,
            version: head.version,
            remote_addr,
            keep_alive_header: joined(&head.headers, &KEEP_ALIVE),
            keep_alive,
            keep_alive_error,
            connection_header: joined(&head.headers, &CONNECTION),
            server_header: joined(&head.headers, &SERVER),
            keep_alive_refused: refuses_keep_alive(head.version, &head.headers),
            idle_close,
            max_wait: options.max_wait,
            margin: options.margin,
            parity: None,
        };
        if let Some(front_idle) = options.front_idle {
            report.parity = match report.backend_keep_alive() {
                Some(backend) => Some(check_parity(front_idle, backend, options.margin)),
                // Open for all of max_wait: that much is known to be enough.
                None if report.idle_close.is_none() => {
                    check_parity(front_idle, options.max_wait, options.margin)
                        .ok()
                        .map(Ok)
                }
                None => None,
            };
        }
        report
    }
}

/// Whether a response with this version and these headers ends its connection:
/// `Connection: close`, or HTTP/1.0 without `Connection: keep-alive`.
pub(super) fn refuses_keep_alive(version: Version, headers: &HeaderMap) -> bool {
    connection_has(headers, "close")
        || (version <= Version::HTTP_10 && !connection_has(headers, "keep-alive"))
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<_> = headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(idle_close: Option<Duration>, hint: Option<u64>) -> ProbeReport {
        ProbeReport {
            status: StatusCode::OK,
            version: Version::HTTP_11,
            remote_addr: None,
            keep_alive_header: None,
            keep_alive: hint.map(|secs| KeepAlive {
                timeout: Some(Duration::from_secs(secs)),
                max: None,
            }),
            keep_alive_error: None,
            connection_header: None,
            server_header: None,
            keep_alive_refused: false,
            idle_close,
            max_wait: Duration::from_secs(300),
            margin: Duration::from_secs(1),
            parity: None,
        }
    }

    #[test]
    fn recommendation_takes_the_smaller_of_measurement_and_hint() {
        let secs = Duration::from_secs;
        assert_eq!(
            report(Some(secs(5)), Some(10)).recommended_idle_timeout(),
            Some(secs(4))
        );
        assert_eq!(
            report(Some(secs(20)), Some(10)).recommended_idle_timeout(),
            Some(secs(9))
        );
        assert_eq!(
            report(None, Some(3)).recommended_idle_timeout(),
            Some(secs(2))
        );
        assert_eq!(
            report(Some(secs(3)), None).recommended_idle_timeout(),
            Some(secs(2))
        );
        assert_eq!(report(None, None).recommended_idle_timeout(), None);
        assert_eq!(report(Some(secs(1)), None).recommended_idle_timeout(), None);
        assert_eq!(
            report(Some(Duration::ZERO), None).recommended_idle_timeout(),
            None
        );
    }

    #[test]
    fn a_hint_is_held_to_the_measured_close_within_the_tolerance() {
        let secs = Duration::from_secs;
        let ms = Duration::from_millis;
        // Kept its word: the measurement starts a moment after the server's timer.
        assert_eq!(report(Some(ms(4_998)), Some(5)).hint_mismatch(), None);
        assert_eq!(report(Some(ms(5_400)), Some(5)).hint_mismatch(), None);
        assert_eq!(report(Some(ms(4_600)), Some(5)).hint_mismatch(), None);
        assert_eq!(
            report(Some(ms(6_001)), Some(5)).hint_mismatch(),
            Some(HintMismatch::ClosesLater {
                hint: secs(5),
                measured: Some(ms(6_001))
            }),
            "Node.js: timeout=5, closes a second later"
        );
        assert_eq!(
            report(Some(ms(300)), Some(5)).hint_mismatch(),
            Some(HintMismatch::ClosesEarlier {
                hint: secs(5),
                measured: ms(300)
            })
        );
        assert_eq!(
            report(None, Some(5)).hint_mismatch(),
            Some(HintMismatch::ClosesLater {
                hint: secs(5),
                measured: None
            }),
            "still open after max_wait 300 s"
        );
        let mut short_wait = report(None, Some(5));
        short_wait.max_wait = secs(5);
        assert_eq!(
            short_wait.hint_mismatch(),
            None,
            "could not wait long enough"
        );
        assert_eq!(report(Some(ms(300)), None).hint_mismatch(), None);
        let mut refused = report(Some(Duration::ZERO), Some(5));
        refused.keep_alive_refused = true;
        assert_eq!(refused.hint_mismatch(), None);
        // A hint as large as a hint can be: no overflow.
        let huge = report(Some(ms(1)), Some(u64::MAX)).hint_mismatch();
        assert!(matches!(huge, Some(HintMismatch::ClosesEarlier { .. })));
    }

    #[test]
    fn keep_alive_refusal() {
        let mut headers = HeaderMap::new();
        assert!(!refuses_keep_alive(Version::HTTP_11, &headers));
        assert!(refuses_keep_alive(Version::HTTP_10, &headers));
        headers.insert(CONNECTION, "Keep-Alive".parse().unwrap());
        assert!(!refuses_keep_alive(Version::HTTP_10, &headers));
        headers.insert(CONNECTION, "upgrade, Close".parse().unwrap());
        assert!(refuses_keep_alive(Version::HTTP_11, &headers));
    }
}
