//! A live measurement of how long a server keeps an idle connection open.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, CONNECTION, HOST, SERVER, USER_AGENT};
use http::{Method, Request, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty};
use tokio::time::Instant;
use tower::ServiceExt;

use super::parity::{check_parity, Millis, ParityError};
use super::{from_headers, KeepAlive, ParseError, KEEP_ALIVE};
use crate::connect::{SocketHandle, TcpConnector};
use crate::error::{Error, Kind};
use crate::Progress;

const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(5 * 60);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MARGIN: Duration = Duration::from_secs(1);
/// How long to wait for hyper to shut the connection down once the probe gives up
/// waiting for the server, before the connection task is aborted.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Settings for [`probe`].
///
/// ```
/// use std::time::Duration;
/// let options = closefirst::keepalive::ProbeOptions::new()
///     .max_wait(Duration::from_secs(120))
///     .method(http::Method::GET)
///     .front_idle(Duration::from_secs(4))
///     .margin(Duration::from_millis(500));
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    method: Method,
    max_wait: Duration,
    connect_timeout: Duration,
    response_timeout: Duration,
    front_idle: Option<Duration>,
    margin: Duration,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            method: Method::HEAD,
            max_wait: DEFAULT_MAX_WAIT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            front_idle: None,
            margin: DEFAULT_MARGIN,
        }
    }
}

impl ProbeOptions {
    /// The defaults: `HEAD`, wait up to 5 minutes for the server to close, connect
    /// timeout 10 s, response timeout 30 s, no parity check, margin 1 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// The method of the one request sent (with an empty body). `HEAD` asks for no
    /// body; use `GET` for servers that treat `HEAD` differently. `CONNECT` is refused.
    /// Defaults to `HEAD`.
    #[must_use]
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// How long to hold the idle connection open waiting for the server to close it.
    /// A server that keeps it longer is reported with
    /// [`idle_close`](ProbeReport::idle_close) `None`. Must be greater than zero.
    /// Defaults to 5 minutes.
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Limit on resolving the host and opening the TCP connection. Must be greater
    /// than zero. Defaults to 10 seconds.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Limit on sending the request and reading the whole response. Must be greater
    /// than zero. Defaults to 30 seconds.
    #[must_use]
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The idle timeout of the client in front of this server (for instance the
    /// pool's `idle_timeout`), to check with [`check_parity`] against what the probe
    /// finds; the result is [`ProbeReport::parity`]. Defaults to `None` (no check).
    #[must_use]
    pub fn front_idle(mut self, front_idle: impl Into<Option<Duration>>) -> Self {
        self.front_idle = front_idle.into();
        self
    }

    /// Safety margin used for the parity check and subtracted for
    /// [`ProbeReport::recommended_idle_timeout`]. Defaults to 1 second.
    #[must_use]
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    fn validate(&self) -> Result<(), Error> {
        for (option, value) in [
            ("max_wait", self.max_wait),
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::config(format!(
                    "probe {option} must be greater than zero (got 0 ms)"
                )));
            }
        }
        if self.method == Method::CONNECT {
            return Err(Error::config(
                "probe method CONNECT opens a tunnel, not a keep-alive connection; \
                 use HEAD or GET",
            ));
        }
        Ok(())
    }
}

/// What [`probe`] found out about a server.
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
}

/// Measures how long the server at `uri` keeps an idle keep-alive connection open.
///
/// Opens one TCP connection with [`TcpConnector`], sends one request (`HEAD` unless
/// [`ProbeOptions::method`] says otherwise) with a `Host` header, reads the response
/// and its body to the end, records the `Keep-Alive`, `Connection` and `Server`
/// headers, then holds the idle connection open and times how long the server takes
/// to close it. **The probe holds the connection, and this future, for up to
/// [`ProbeOptions::max_wait`]** (5 minutes by default) when the server does not
/// close it sooner.
///
/// The time is measured from the moment the response body was read to its end, so it
/// comes out slightly shorter than the server's timer, the safe direction.
///
/// Must run inside a tokio runtime (the connection is driven by a spawned task).
///
/// # Errors
///
/// - [`Error::is_invalid_uri`]: `uri` is not an absolute `http` URI with a host
///   (`https` is not supported).
/// - [`Error::is_config`]: an option is refused, or there is no tokio runtime.
/// - [`Error::is_connect`]: resolving or connecting failed or timed out.
/// - Otherwise the request failed; [`Error::request_progress`] says how far it got
///   (a response that did not arrive within the response timeout reports an
///   [`io::ErrorKind::TimedOut`] source).
///
/// ```no_run
/// use std::time::Duration;
/// use closefirst::keepalive::{probe, ProbeOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), closefirst::Error> {
/// let uri = http::Uri::from_static("http://127.0.0.1:8080/");
/// let report = probe(&uri, ProbeOptions::new().front_idle(Duration::from_secs(4))).await?;
/// println!("server closed the idle connection after {:?}", report.idle_close);
/// println!("use idle_timeout {:?}", report.recommended_idle_timeout());
/// # Ok(())
/// # }
/// ```
pub async fn probe(uri: &Uri, options: ProbeOptions) -> Result<ProbeReport, Error> {
    options.validate()?;
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::config(
            "keepalive::probe must run inside a tokio runtime",
        ));
    }
    let (host_header, origin_form) = request_target(uri)?;

    let io = match tokio::time::timeout(
        options.connect_timeout,
        TcpConnector::new().oneshot(uri.clone()),
    )
    .await
    {
        Ok(connected) => connected?,
        Err(_) => return Err(Error::new(Kind::ConnectTimeout(options.connect_timeout))),
    };
    let socket = io.handle();
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
        .await
        .map_err(|e| Error::connect(format!("{host_header} (HTTP/1.1 handshake)"), e))?;
    // The task records when the connection ended: that instant, not the moment this
    // future happens to be polled again, is the server's close.
    let mut driver = tokio::spawn(async move {
        let result = connection.await;
        (result, Instant::now())
    });

    let request = Request::builder()
        .method(options.method.clone())
        .uri(origin_form)
        .header(HOST, host_header.as_str())
        .header(
            USER_AGENT,
            concat!("closefirst-probe/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| Error::invalid_uri(format!("`{uri}`: {e}")))?;

    let exchange = async {
        sender
            .ready()
            .await
            .map_err(|e| Error::request(Progress::NotWritten, false, e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Error::request(progress(&socket), false, e))?;
        let (head, mut body) = response.into_parts();
        while let Some(frame) = body.frame().await {
            frame.map_err(|e| Error::request(Progress::ResponseStarted, false, e))?;
        }
        Ok::<_, Error>((head, Instant::now()))
    };
    let (head, drained_at) = match tokio::time::timeout(options.response_timeout, exchange).await {
        Ok(result) => result?,
        Err(_) => {
            driver.abort();
            let timed_out = io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no complete response within the probe's response timeout of {}",
                    Millis(options.response_timeout)
                ),
            );
            return Err(Error::request(progress(&socket), false, timed_out));
        }
    };

    let keep_alive_refused = refuses_keep_alive(head.version, &head.headers);
    let idle_close = if keep_alive_refused {
        Some(Duration::ZERO)
    } else {
        // `sender` stays alive while waiting: dropping it would make hyper close the
        // idle connection itself.
        match tokio::time::timeout(options.max_wait, &mut driver).await {
            Ok(Ok((result, closed_at))) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "probed connection ended with an error");
                }
                Some(whole_millis(
                    closed_at.saturating_duration_since(drained_at),
                ))
            }
            Ok(Err(join_error)) => {
                tracing::debug!(error = %join_error, "probe connection task failed");
                Some(whole_millis(
                    Instant::now().saturating_duration_since(drained_at),
                ))
            }
            Err(_) => None,
        }
    };
    drop(sender);
    if !driver.is_finished()
        && tokio::time::timeout(SHUTDOWN_GRACE, &mut driver)
            .await
            .is_err()
    {
        driver.abort();
    }

    let (keep_alive, keep_alive_error) = match from_headers(&head.headers) {
        Ok(hint) => (hint, None),
        Err(e) => (None, Some(e)),
    };
    let mut report = ProbeReport {
        status: head.status,
        version: head.version,
        remote_addr: socket.remote_addr(),
        keep_alive_header: joined(&head.headers, &KEEP_ALIVE),
        keep_alive,
        keep_alive_error,
        connection_header: joined(&head.headers, &CONNECTION),
        server_header: joined(&head.headers, &SERVER),
        keep_alive_refused,
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
    Ok(report)
}

/// The `Host` header and the origin-form request target for `uri`.
fn request_target(uri: &Uri) -> Result<(String, Uri), Error> {
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(Error::invalid_uri(format!(
                "`{uri}`: the probe speaks plain `http` only, not `https`"
            )))
        }
        Some(other) => {
            return Err(Error::invalid_uri(format!(
                "`{uri}`: unsupported scheme `{other}`; the probe speaks plain `http` only"
            )))
        }
        None => {
            return Err(Error::invalid_uri(format!(
                "`{uri}` is not absolute; write it as http://host[:port]/path"
            )))
        }
    }
    let host = uri
        .host()
        .filter(|host| !host.is_empty())
        .ok_or_else(|| Error::invalid_uri(format!("`{uri}` has no host")))?;
    let host_header = match uri.port_u16() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let origin_form = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .parse::<Uri>()
        .map_err(|e| Error::invalid_uri(format!("`{uri}`: {e}")))?;
    Ok((host_header, origin_form))
}

/// Rounds down to whole milliseconds: finer digits of a measurement over the network
/// are noise, and rounding down errs on the safe side.
fn whole_millis(measured: Duration) -> Duration {
    Duration::from_millis(u64::try_from(measured.as_millis()).unwrap_or(u64::MAX))
}

/// How far the request got, from the socket's byte counters (the connection is new,
/// so every byte belongs to this request).
fn progress(socket: &SocketHandle) -> Progress {
    if socket.bytes_read() > 0 {
        Progress::ResponseStarted
    } else if socket.bytes_written() > 0 {
        Progress::WrittenNoResponse
    } else {
        Progress::NotWritten
    }
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

fn refuses_keep_alive(version: Version, headers: &HeaderMap) -> bool {
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
    fn request_target_rules() {
        let (host, target) = request_target(&Uri::from_static("http://a.test:8080/x?y=1")).unwrap();
        assert_eq!(host, "a.test:8080");
        assert_eq!(target, "/x?y=1");
        let (host, target) = request_target(&Uri::from_static("http://u:p@[::1]")).unwrap();
        assert_eq!(host, "[::1]");
        assert_eq!(target, "/");
        for bad in ["https://a.test/", "ftp://a.test/", "/path", "a.test:80"] {
            let err = request_target(&bad.parse().unwrap()).unwrap_err();
            assert!(err.is_invalid_uri(), "{bad}: {err}");
        }
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

    #[test]
    fn zero_options_are_refused() {
        let err = ProbeOptions::new()
            .max_wait(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert!(err.is_config());
        assert!(err.to_string().contains("max_wait"), "{err}");
        assert!(ProbeOptions::new()
            .method(Method::CONNECT)
            .validate()
            .unwrap_err()
            .is_config());
        assert!(ProbeOptions::new().validate().is_ok());
    }
}
