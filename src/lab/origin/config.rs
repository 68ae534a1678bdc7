//! What an origin does: the race lab's [`OriginConfig`], the per-request-id [`Fault`]s,
//! and the private `Settings` every connection reads (built by
//! [`OriginBuilder`](super::OriginBuilder) from both).

use std::collections::HashMap;
use std::time::Duration;

/// How an [`Origin`](super::Origin) behaves. Start from `OriginConfig::default()` and
/// change what the experiment needs:
///
/// ```
/// use std::time::Duration;
/// use closefirst::lab::OriginConfig;
///
/// // Like uvicorn: 5 s keep-alive, closes with FIN, announces nothing.
/// let uvicorn = OriginConfig { idle_timeout: Duration::from_secs(5), ..OriginConfig::default() };
/// assert!(!uvicorn.send_keep_alive_hint);
/// ```
///
/// The knobs fault tests need beyond these (a verbatim `Keep-Alive` value, stray bytes
/// at an idle close, random delays, faults per request id, …) are methods of
/// [`OriginBuilder`](super::OriginBuilder), so that this struct keeps its fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginConfig {
    /// Close a keep-alive connection that has been idle this long: measured from the
    /// moment the last byte of the previous response was written (or from accept, for
    /// a connection's first request) until the first byte of the next request.
    /// `Duration::MAX` (or any value too large to add to the clock) never closes.
    /// Defaults to 1 second.
    pub idle_timeout: Duration,
    /// Responses carry `Keep-Alive: timeout=N`, with `N` the idle timeout in whole
    /// seconds, rounded down, at least 1. Defaults to `false`.
    pub send_keep_alive_hint: bool,
    /// Close idle connections abortively (`SO_LINGER` 0: the client gets a RST) instead
    /// of with a FIN; this also applies to an unannounced
    /// [`close_after_requests`](OriginConfig::close_after_requests) (see
    /// [`OriginBuilder::announce_close`](super::OriginBuilder::announce_close)).
    /// Defaults to `false`.
    pub close_with_rst: bool,
    /// Close a connection (with a FIN, after a response carrying `Connection: close`)
    /// once it has answered this many requests; `Some(0)` counts as `Some(1)`.
    /// Defaults to `None`: no limit.
    pub close_after_requests: Option<usize>,
    /// Wait this long between reading a request and answering it. Defaults to zero.
    pub response_delay: Duration,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            idle_timeout: Duration::from_secs(1),
            send_keep_alive_hint: false,
            close_with_rst: false,
            close_after_requests: None,
            response_delay: Duration::ZERO,
        }
    }
}

/// A misbehaviour of the origin for one request id, applied the first time the
/// `x-request-id` is seen (its head is read); later requests with the same id are
/// answered normally, so a resend succeeds. Set with
/// [`OriginBuilder::fault`](super::OriginBuilder::fault).
///
/// Unless said otherwise the request (head and body) is read in full and counted as a
/// handler call first, the response delays are applied, and "close" is an orderly
/// close (FIN).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Close (FIN) without answering.
    FinWithoutAnswer,
    /// Close with RST (`SO_LINGER` 0) without answering.
    RstWithoutAnswer,
    /// Write a status line and part of the headers, then close.
    PartialHeadThenClose,
    /// Write a whole head (`content-length: 10`) and 5 bytes of body, then close.
    HalfBodyThenClose,
    /// Write `HTTP/1.1 2xx nonsense` and a blank line, then close.
    GarbageStatusLine,
    /// Write `FOO` and a blank line, then close.
    NotHttp,
    /// Write a status line and 1 MiB ([`Fault::HUGE_HEADERS_BYTES`]) of header lines,
    /// then close.
    HugeHeaders,
    /// Answer with two different `Content-Length` headers, then close.
    ConflictingContentLength,
    /// After the request head only, answer `413` with `Connection: close`, then close;
    /// the body is never read (not counted as a handler call). The origin keeps
    /// discarding input for up to 2 s after its FIN, as real servers do, so the
    /// client can read the answer.
    EarlyReject,
    /// Never answer and keep the connection open until the origin is dropped.
    BlackHole,
    /// Answer `101 Switching Protocols`, then echo every byte received until EOF.
    SwitchProtocols,
    /// Stop listening (new connections are refused; open ones are served), then
    /// close with RST without answering: a resend cannot connect.
    RstWithoutAnswerThenRefuse,
    /// Write a truncated response (`content-length: 100`, body `abc`), then RST.
    PartialResponseThenRst,
    /// Write part of a response head, then RST.
    PartialHeadThenRst,
}

impl Fault {
    /// Total size of the header lines written for [`Fault::HugeHeaders`]: 1 MiB.
    pub const HUGE_HEADERS_BYTES: usize = 1024 * 1024;
}

/// A response delay drawn at random, per request, from a seeded generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RandomDelay {
    pub(super) min: Duration,
    pub(super) max: Duration,
    pub(super) seed: u64,
}

/// Everything a connection needs to know, fixed when the origin starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Settings {
    /// `Duration::MAX` (or too large for the clock): never.
    pub(super) idle_timeout: Duration,
    pub(super) close_with_rst: bool,
    pub(super) keep_alive_hint: bool,
    /// Sent verbatim on every response, in place of the hint.
    pub(super) keep_alive_header: Option<String>,
    /// Every response says `Connection: close` and the origin closes after it.
    pub(super) connection_close: bool,
    pub(super) close_after_requests: Option<usize>,
    /// The last response before `close_after_requests` says `Connection: close`.
    pub(super) announce_close: bool,
    /// A `408` is written before an idle close.
    pub(super) stray_408_on_idle_close: bool,
    pub(super) response_delay: Duration,
    pub(super) random_delay: Option<RandomDelay>,
    pub(super) faults: HashMap<String, Fault>,
    /// Test-style responses: body `ok N`, `x-connection` and `x-handler-calls-for-id`.
    pub(super) numbered_responses: bool,
    /// Over TLS: send a TLS 1.3 `KeyUpdate` once a connection has been idle this long
    /// (once per idle period), and keep it open.
    pub(super) tls_key_update_when_idle: Option<Duration>,
    /// Bytes of `.` appended to every answer's body.
    pub(super) body_padding: usize,
}

impl From<OriginConfig> for Settings {
    fn from(config: OriginConfig) -> Self {
        Settings {
            idle_timeout: config.idle_timeout,
            close_with_rst: config.close_with_rst,
            keep_alive_hint: config.send_keep_alive_hint,
            keep_alive_header: None,
            connection_close: false,
            close_after_requests: config.close_after_requests,
            announce_close: true,
            stray_408_on_idle_close: false,
            response_delay: config.response_delay,
            random_delay: None,
            faults: HashMap::new(),
            numbered_responses: false,
            tls_key_update_when_idle: None,
            body_padding: 0,
        }
    }
}
