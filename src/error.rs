//! The crate's single error type.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use http::Method;

pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// Errors returned by [`Client`](crate::Client), its [`Builder`](crate::Builder) and the
/// connectors in [`connect`](crate::connect).
///
/// The type is opaque on purpose: ask it questions with the `is_*` predicates and
/// [`request_progress`](Error::request_progress). [`Display`](fmt::Display) prints only
/// this level; the underlying cause (an `io::Error`, a `hyper::Error`, …) is available
/// through [`source`](StdError::source).
///
/// For a request that failed on its connection, `source()` is hyper's error: ask it
/// [`is_incomplete_message`](hyper::Error::is_incomplete_message), or take its own
/// `source()` for the `io::Error` (a reset, say). That holds for a request hyper handed
/// back unsent too: hyper wraps the connection's error in a `Canceled` error there, and
/// `source()` skips that wrapper to give the connection's error itself.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: Kind,
    progress: Progress,
    reused: bool,
    /// Attempts made for the request before it failed: see [`Error::attempts`].
    attempts: u32,
    /// The request's method and origin (`http://host:port`), when the error is about one.
    request: Option<(Method, String)>,
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
    /// The TLS handshake refused the server's certificate; the string names where.
    #[cfg_attr(not(feature = "rustls"), allow(dead_code))]
    Certificate(String),
    /// Connecting (including any handshake of a user connector) took too long.
    ConnectTimeout(Duration),
    /// Waiting for a connection under `max_connections_per_origin` took too long.
    CheckoutTimeout(Duration),
    /// The request was dispatched on a connection and failed there.
    Request,
    /// The caller's own request body yielded an error while it was being sent.
    Body,
    /// The request asks for something the client does not do; the string says what.
    Unsupported(String),
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

impl Progress {
    /// The further of two progresses: an attempt that got further is what counts for
    /// the whole request.
    pub(crate) fn furthest(self, other: Progress) -> Progress {
        let rank = |p: Progress| match p {
            Progress::NotWritten => 0,
            Progress::WrittenNoResponse => 1,
            Progress::ResponseStarted => 2,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Progress::NotWritten => "before it was written",
            Progress::WrittenNoResponse => "after it was written, with no response",
            Progress::ResponseStarted => "after the response started",
        }
    }
}

impl Error {
    pub(crate) fn new(kind: Kind) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                progress: Progress::NotWritten,
                reused: false,
                attempts: 0,
                request: None,
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

    /// A connect error for a server certificate the TLS handshake refused.
    #[cfg_attr(not(feature = "rustls"), allow(dead_code))]
    pub(crate) fn certificate(what: impl Into<String>, cause: impl Into<BoxError>) -> Error {
        Error::new(Kind::Certificate(what.into())).with_source(cause)
    }

    pub(crate) fn request(progress: Progress, reused: bool, cause: impl Into<BoxError>) -> Error {
        let mut error = Error::new(Kind::Request).with_source(cause);
        error.inner.progress = progress;
        error.inner.reused = reused;
        error
    }

    /// The caller's request body failed; `progress` is how far the request had got.
    pub(crate) fn body(progress: Progress, reused: bool, cause: impl Into<BoxError>) -> Error {
        let mut error = Error::new(Kind::Body).with_source(cause);
        error.inner.progress = progress;
        error.inner.reused = reused;
        error
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Error {
        Error::new(Kind::Unsupported(message.into()))
    }

    /// Raises the reported progress to `progress` if an earlier attempt got further.
    pub(crate) fn with_progress_at_least(mut self, progress: Progress) -> Error {
        self.inner.progress = self.inner.progress.furthest(progress);
        self
    }

    /// Names the request the error is about, unless a more precise name is already set.
    pub(crate) fn with_request(
        mut self,
        method: &Method,
        origin: impl FnOnce() -> String,
    ) -> Error {
        if self.inner.request.is_none() {
            self.inner.request = Some((method.clone(), origin()));
        }
        self
    }

    pub(crate) fn with_source(mut self, cause: impl Into<BoxError>) -> Error {
        self.inner.source = Some(cause.into());
        self
    }

    pub(crate) fn with_attempts(mut self, attempts: u32) -> Error {
        self.inner.attempts = attempts;
        self
    }

    /// How many attempts the request made in all, resends included.
    ///
    /// An attempt counts from the moment a connection is asked for on the request's
    /// behalf, pooled or new, whether or not one is had: a request whose first connect
    /// is refused or times out, or that gives up waiting for a free connection (the
    /// checkout timeout), made 1 attempt, as did one that failed on its connection and
    /// was not resent. A URI that the connector itself refuses (the built-in one
    /// without the `rustls` feature refuses `https`) also counts 1: the connection was
    /// asked for.
    ///
    /// 0 only when the request failed before any connection was asked for: its URI has
    /// no scheme or host or a scheme other than `http` and `https`
    /// ([`is_invalid_uri`](Error::is_invalid_uri)), it is a `CONNECT`
    /// ([`is_unsupported`](Error::is_unsupported)), or the error is not about a
    /// request at all (a [`Builder`](crate::Builder) option refused,
    /// [`is_config`](Error::is_config)).
    pub fn attempts(&self) -> u32 {
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
        matches!(
            self.inner.kind,
            Kind::Connect(_) | Kind::ConnectTimeout(_) | Kind::Certificate(_)
        )
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
    ///
    /// **This does not mean the server did not run the request.** When
    /// [`request_progress`](Error::request_progress) is
    /// [`WrittenNoResponse`](Progress::WrittenNoResponse), the request reached the
    /// socket and the server may have executed it before the connection died (or the
    /// connection died before the server read it: nobody can tell). Only
    /// [`NotWritten`](Progress::NotWritten) proves it never left the client. Resend a
    /// stale-connection failure yourself only if the request is idempotent or [marked as
    /// safe to resend](crate::retry#marking-a-request-as-safe-to-resend), as the [retry
    /// policy](crate::retry) does.
    ///
    /// Never true for a failure of the caller's own body ([`is_body`](Error::is_body)).
    pub fn is_stale_connection(&self) -> bool {
        matches!(self.inner.kind, Kind::Request)
            && self.inner.reused
            && self.inner.progress != Progress::ResponseStarted
    }

    /// The caller's own request body yielded an error while the request was being sent
    /// (a file read failed, a proxied upload was aborted by its client). Such a request
    /// is never resent, since its body cannot be sent whole; the server got at most
    /// part of it. [`source`](StdError::source) is the body's error.
    pub fn is_body(&self) -> bool {
        matches!(self.inner.kind, Kind::Body)
    }

    /// The request asks for something the client does not do, such as `CONNECT`
    /// (tunnels need a connector of their own). Nothing was sent.
    pub fn is_unsupported(&self) -> bool {
        matches!(self.inner.kind, Kind::Unsupported(_))
    }

    /// Whether the connection the request failed on had served earlier requests.
    /// `false` for errors that happened before a connection was chosen.
    pub fn is_reused_connection(&self) -> bool {
        self.inner.reused
    }

    /// How far the request got before it failed: the furthest that *any* of its
    /// attempts got, so an error from a resend (say, a failed connect) still reports
    /// that an earlier attempt was written. See [`Progress`].
    pub fn request_progress(&self) -> Progress {
        self.inner.progress
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("closefirst::Error");
        d.field("kind", &self.inner.kind);
        if let Some((method, origin)) = &self.inner.request {
            d.field("method", method);
            d.field("origin", origin);
        }
        d.field("progress", &self.inner.progress);
        d.field("reused", &self.inner.reused);
        d.field("attempts", &self.inner.attempts);
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        if let Some((method, origin)) = &inner.request {
            write!(f, "{method} {origin}: ")?;
        }
        let connection = if inner.reused { "reused" } else { "new" };
        match &inner.kind {
            Kind::Config(message) => write!(f, "invalid configuration: {message}")?,
            Kind::InvalidUri(message) => write!(f, "invalid request URI: {message}")?,
            Kind::Unsupported(message) => write!(f, "unsupported request: {message}")?,
            // The origin is already named in front.
            Kind::Connect(_) if inner.request.is_some() => f.write_str("failed to connect")?,
            Kind::Connect(what) => write!(f, "failed to connect to {what}")?,
            Kind::Certificate(_) if inner.request.is_some() => {
                f.write_str("failed to connect: the server's TLS certificate was refused")?
            }
            Kind::Certificate(what) => write!(
                f,
                "failed to connect to {what}: the server's TLS certificate was refused"
            )?,
            Kind::ConnectTimeout(after) => {
                write!(f, "connect timed out after {} ms", after.as_millis())?
            }
            Kind::CheckoutTimeout(after) => write!(
                f,
                "timed out after {} ms waiting for a connection \
                 (max_connections_per_origin reached)",
                after.as_millis()
            )?,
            Kind::Request => write!(
                f,
                "request failed {} on a {connection} connection",
                inner.progress.describe()
            )?,
            Kind::Body => write!(
                f,
                "the request body failed {} on a {connection} connection; not resent",
                inner.progress.describe()
            )?,
        }
        // A resend that failed earlier than a previous attempt got: say so, as the
        // progress reported is the earlier attempt's.
        if !matches!(inner.kind, Kind::Request | Kind::Body)
            && inner.progress != Progress::NotWritten
        {
            write!(
                f,
                "; an earlier attempt failed {}",
                inner.progress.describe()
            )?;
        }
        if inner.attempts > 1 {
            write!(f, " ({} attempts)", inner.attempts)?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        let source: &(dyn StdError + 'static) = self.inner.source.as_deref()?;
        Some(past_cancellation(source))
    }
}

/// The cause behind hyper's `Canceled`, if `source` is one that has a cause.
///
/// hyper hands back a request it never started as `Canceled`, caused by what ended the
/// connection (an `io::Error` inside a `hyper::Error`, an `IncompleteMessage`, ...).
/// That cause is what happened, and it is where callers look (`source()` as a
/// `hyper::Error`, then its `io::Error`), so the chain goes to it directly. Only this
/// one level is skipped: the cause keeps its own sources, and `Debug` still prints
/// hyper's error whole.
fn past_cancellation<'a>(source: &'a (dyn StdError + 'static)) -> &'a (dyn StdError + 'static) {
    match source.downcast_ref::<hyper::Error>() {
        Some(hyper) if hyper.is_canceled() => hyper.source().unwrap_or(source),
        _ => source,
    }
}

#[cfg(test)]
mod tests;
