//! The crate's single error type.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// Errors returned by [`Client`](crate::Client), its [`Builder`](crate::Builder) and the
/// connectors in [`connect`](crate::connect).
///
/// The type is opaque on purpose: ask it questions with the `is_*` predicates and
/// [`request_progress`](Error::request_progress). [`Display`](fmt::Display) prints only
/// this level; the underlying cause (an `io::Error`, a `hyper::Error`, …) is available
/// through [`source`](StdError::source).
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: Kind,
    progress: Progress,
    reused: bool,
    /// Dispatches made for the request before it failed (0 when none was made).
    attempts: u32,
    source: Option<BoxError>,
}

#[derive(Debug)]
pub(crate) enum Kind {
    /// A builder option was refused; the string names the option and the value.
    Config(String),
    /// The request URI cannot be sent; the string says why and quotes the URI.
    InvalidUri(String),
    /// Resolving or connecting to the origin failed.
    Connect(String),
    /// Connecting (including any handshake of a user connector) took too long.
    ConnectTimeout(Duration),
    /// Waiting for a connection under `max_connections_per_origin` took too long.
    CheckoutTimeout(Duration),
    /// The request was dispatched on a connection and failed there.
    Request,
}

/// How far a failed request got before it failed.
///
/// This is what decides whether a request may be sent again: a request that was
/// [`NotWritten`](Progress::NotWritten) never reached the server and can be resent
/// whatever its method; one that was [`WrittenNoResponse`](Progress::WrittenNoResponse)
/// may have been executed by the server; once the
/// [`ResponseStarted`](Progress::ResponseStarted), it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Progress {
    /// Not one byte of the request reached the socket. Errors that happen before a
    /// request is dispatched (invalid configuration or URI, connect failures,
    /// checkout timeouts) report this too.
    NotWritten,
    /// Bytes of the request were written, but not one byte of a response came back.
    WrittenNoResponse,
    /// At least one byte of the response arrived, or how far the request got cannot
    /// be told (a connector whose IO gives no [`SocketHandle`](crate::connect::SocketHandle)):
    /// the request must be treated as executed.
    ResponseStarted,
}

impl Error {
    pub(crate) fn new(kind: Kind) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                progress: Progress::NotWritten,
                reused: false,
                attempts: 0,
                source: None,
            }),
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Error {
        Error::new(Kind::Config(message.into()))
    }

    pub(crate) fn invalid_uri(message: impl Into<String>) -> Error {
        Error::new(Kind::InvalidUri(message.into()))
    }

    pub(crate) fn connect(what: impl Into<String>, cause: impl Into<BoxError>) -> Error {
        Error::new(Kind::Connect(what.into())).with_source(cause)
    }

    pub(crate) fn request(progress: Progress, reused: bool, cause: impl Into<BoxError>) -> Error {
        let mut error = Error::new(Kind::Request).with_source(cause);
        error.inner.progress = progress;
        error.inner.reused = reused;
        error
    }

    pub(crate) fn with_source(mut self, cause: impl Into<BoxError>) -> Error {
        self.inner.source = Some(cause.into());
        self
    }

    pub(crate) fn with_attempts(mut self, attempts: u32) -> Error {
        self.inner.attempts = attempts;
        self
    }

    /// Dispatches made before the failure, as far as this error knows.
    pub(crate) fn attempts(&self) -> u32 {
        self.inner.attempts
    }

    /// The request was dispatched on a connection and failed there.
    pub(crate) fn is_request_error(&self) -> bool {
        matches!(self.inner.kind, Kind::Request)
    }

    /// An option given to the [`Builder`](crate::Builder) (or to a connector or policy)
    /// was refused. The message names the option, the value and the unit.
    pub fn is_config(&self) -> bool {
        matches!(self.inner.kind, Kind::Config(_))
    }

    /// The request's URI cannot be sent: it lacks a scheme or host, or its scheme is
    /// not supported by the connector.
    pub fn is_invalid_uri(&self) -> bool {
        matches!(self.inner.kind, Kind::InvalidUri(_))
    }

    /// Opening a new connection failed (name resolution, TCP connect, a user
    /// connector's handshake, or the connect timeout).
    pub fn is_connect(&self) -> bool {
        matches!(self.inner.kind, Kind::Connect(_) | Kind::ConnectTimeout(_))
    }

    /// A time limit ran out: the connect timeout, or the checkout timeout while waiting
    /// for a connection under `max_connections_per_origin`.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.inner.kind,
            Kind::ConnectTimeout(_) | Kind::CheckoutTimeout(_)
        )
    }

    /// The request failed on a *reused* connection before any response byte came back:
    /// the signature of the keep-alive race, where the server closed the idle
    /// connection as the request was being sent.
    pub fn is_stale_connection(&self) -> bool {
        matches!(self.inner.kind, Kind::Request)
            && self.inner.reused
            && self.inner.progress != Progress::ResponseStarted
    }

    /// Whether the connection the request failed on had served earlier requests.
    /// `false` for errors that happened before a connection was chosen.
    pub fn is_reused_connection(&self) -> bool {
        self.inner.reused
    }

    /// How far the request got before it failed. See [`Progress`].
    pub fn request_progress(&self) -> Progress {
        self.inner.progress
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("closefirst::Error");
        d.field("kind", &self.inner.kind);
        if matches!(self.inner.kind, Kind::Request) {
            d.field("progress", &self.inner.progress);
            d.field("reused", &self.inner.reused);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.kind {
            Kind::Config(message) => write!(f, "invalid configuration: {message}"),
            Kind::InvalidUri(message) => write!(f, "invalid request URI: {message}"),
            Kind::Connect(what) => write!(f, "failed to connect to {what}"),
            Kind::ConnectTimeout(after) => {
                write!(f, "connect timed out after {} ms", after.as_millis())
            }
            Kind::CheckoutTimeout(after) => write!(
                f,
                "timed out after {} ms waiting for a connection \
                 (max_connections_per_origin reached)",
                after.as_millis()
            ),
            Kind::Request => {
                let progress = match self.inner.progress {
                    Progress::NotWritten => "before it was written",
                    Progress::WrittenNoResponse => "after it was written, with no response",
                    Progress::ResponseStarted => "after the response started",
                };
                let connection = if self.inner.reused { "reused" } else { "new" };
                write!(f, "request failed {progress} on a {connection} connection")
            }
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|e| &**e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_static() {
        fn assert_bounds<T: Send + Sync + 'static>() {}
        assert_bounds::<Error>();
    }

    #[test]
    fn stale_connection_needs_a_reused_connection_and_no_response() {
        let io = || std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(Error::request(Progress::WrittenNoResponse, true, io()).is_stale_connection());
        assert!(Error::request(Progress::NotWritten, true, io()).is_stale_connection());
        assert!(!Error::request(Progress::WrittenNoResponse, false, io()).is_stale_connection());
        assert!(!Error::request(Progress::ResponseStarted, true, io()).is_stale_connection());
        assert!(!Error::config("x").is_stale_connection());
    }

    #[test]
    fn display_prints_one_level_and_source_gives_the_cause() {
        let cause = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = Error::connect("http://127.0.0.1:1", cause);
        assert_eq!(error.to_string(), "failed to connect to http://127.0.0.1:1");
        assert!(error.is_connect());
        assert!(!error.is_timeout());
        assert_eq!(error.source().expect("source set").to_string(), "refused");
        assert_eq!(error.request_progress(), Progress::NotWritten);
    }
}
