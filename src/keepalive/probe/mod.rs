//! A live measurement of how long a server keeps an idle connection open.
//!
//! [`probe`] connects ([`TcpConnector`], and TLS for `https` with the `rustls`
//! feature), exchanges one request, then times the
//! server's close (`measure`) and writes up what it saw ([`ProbeReport`]) with the
//! settings of [`ProbeOptions`]. An operator's tool: nothing on a request's path
//! leads here.

mod measure;
mod options;
mod report;

pub use options::ProbeOptions;
pub use report::{HintMismatch, ProbeReport, HINT_TOLERANCE};

use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, USER_AGENT};
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use tokio::time::Instant;
use tower::ServiceExt;

use super::parity::Millis;
#[cfg(feature = "rustls")]
use crate::connect::TlsConfig;
use crate::connect::{BuiltinConnector, BuiltinIo, SocketHandle, TcpConnector};
use crate::error::{Error, Kind};
use crate::io::Mark;
use crate::origin::{origin_form, Origin};
use crate::Progress;

/// Measures how long the server at `uri` keeps an idle keep-alive connection open.
///
/// Opens one TCP connection with [`TcpConnector`] (for `https`, with the `rustls`
/// feature, a TLS session over it, trusting the platform's roots or those of
/// `ProbeOptions::tls_config`), sends one request (`HEAD` unless
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
/// - [`Error::is_invalid_uri`]: `uri` is not an absolute `http` or `https` URI with a
///   host (without the `rustls` feature, `https` is refused too).
/// - [`Error::is_config`]: an option is refused, or there is no tokio runtime.
/// - [`Error::is_connect`]: resolving, connecting or the TLS handshake failed (a
///   refused certificate too) or timed out.
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
    let (origin, target) = request_target(uri)?;

    let (io, socket) = open(uri, &options).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
        .await
        .map_err(|e| Error::connect(format!("{} (HTTP/1.1 handshake)", origin.authority()), e))?;
    let mut driver = measure::spawn_driver(connection);

    let request = Request::builder()
        .method(options.method.clone())
        .uri(target)
        .header(HOST, origin.host_header())
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
            .map_err(|e| Error::request(Mark::ZERO.progress_to(socket.mark()), false, e))?;
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
            return Err(Error::request(
                Mark::ZERO.progress_to(socket.mark()),
                false,
                timed_out,
            ));
        }
    };

    let idle_close = if report::refuses_keep_alive(head.version, &head.headers) {
        Some(Duration::ZERO)
    } else {
        measure::wait_for_close(&mut driver, drained_at, options.max_wait).await
    };
    drop(sender);
    measure::shut_down(&mut driver).await;
    Ok(ProbeReport::new(
        &head,
        socket.remote_addr(),
        idle_close,
        &options,
    ))
}

/// Opens the connection to measure, within the connect timeout, with the connector
/// the client builds: TCP for `http`, TLS over TCP for `https` (feature `rustls`).
/// Whatever the transport, the probe classifies a failure with the socket's handle.
async fn open(uri: &Uri, options: &ProbeOptions) -> Result<(BuiltinIo, SocketHandle), Error> {
    match uri.scheme_str() {
        Some("http") => {}
        #[cfg(feature = "rustls")]
        Some("https") => {}
        _ => {
            return Err(Error::invalid_uri(format!(
                "`{uri}`: this build of the probe speaks plain `http` only; it has no TLS \
                 client for `https` (build it with the `rustls` feature, or probe the \
                 backend's plain-http port instead)"
            )))
        }
    }
    // The connector shares the timeout between the host's addresses, so one that
    // drops packets leaves time for the next; the outer limit also bounds resolving
    // and the TLS handshake.
    let tcp = TcpConnector::new().connect_timeout(options.connect_timeout);
    let connector = BuiltinConnector::new(tcp);
    #[cfg(feature = "rustls")]
    let connector = connector.tls(options.tls.clone().unwrap_or_else(TlsConfig::platform));
    match tokio::time::timeout(options.connect_timeout, connector.oneshot(uri.clone())).await {
        Ok(connected) => {
            let io = connected?;
            let socket = io.handle();
            Ok((io, socket))
        }
        Err(_) => Err(Error::new(Kind::ConnectTimeout(options.connect_timeout))),
    }
}

/// The origin (for the `Host` header) and the origin-form request target for `uri`,
/// which must be an absolute `http` or `https` URI.
fn request_target(uri: &Uri) -> Result<(Origin, Uri), Error> {
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(Error::invalid_uri(format!(
                "`{uri}`: unsupported scheme `{other}`; the probe speaks `http` and `https`"
            )))
        }
        None => {
            return Err(Error::invalid_uri(format!(
                "`{uri}` is not absolute; write it as http://host[:port]/path"
            )))
        }
    }
    Ok((Origin::from_uri(uri)?, origin_form(uri)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_target_rules() {
        let (origin, target) =
            request_target(&Uri::from_static("http://a.test:8080/x?y=1")).unwrap();
        assert_eq!(origin.host_header(), "a.test:8080");
        assert_eq!(target, "/x?y=1");
        let (origin, target) = request_target(&Uri::from_static("http://u:p@[::1]")).unwrap();
        assert_eq!(origin.host_header(), "[::1]");
        assert_eq!(target, "/");
        // The same Host and target the client sends: no default port, and a query
        // with no path goes to `/`.
        let (origin, target) = request_target(&Uri::from_static("http://a.test:80?y=1")).unwrap();
        assert_eq!(origin.host_header(), "a.test");
        assert_eq!(target, "/?y=1");
        let (origin, _) = request_target(&Uri::from_static("https://a.test:443/")).unwrap();
        assert_eq!(origin.host_header(), "a.test");
        for bad in ["ftp://a.test/", "/path", "a.test:80"] {
            let err = request_target(&bad.parse().unwrap()).unwrap_err();
            assert!(err.is_invalid_uri(), "{bad}: {err}");
        }
    }
}
