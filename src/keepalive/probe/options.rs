//! [`ProbeOptions`]: what the probe sends and how long it waits, with defaults and
//! validation.

use std::time::Duration;

use http::Method;

use crate::error::Error;

const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(5 * 60);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MARGIN: Duration = Duration::from_secs(1);

/// Settings for [`probe`](super::probe).
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
    pub(super) method: Method,
    pub(super) max_wait: Duration,
    pub(super) connect_timeout: Duration,
    pub(super) response_timeout: Duration,
    pub(super) front_idle: Option<Duration>,
    pub(super) margin: Duration,
    #[cfg(feature = "rustls")]
    pub(super) tls: Option<crate::connect::TlsConfig>,
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
            #[cfg(feature = "rustls")]
            tls: None,
        }
    }
}

impl ProbeOptions {
    /// The defaults: `HEAD`, wait up to 5 minutes for the server to close, connect
    /// timeout 10 s, response timeout 30 s, no parity check, margin 1 s, and for
    /// `https` (feature `rustls`) the platform's trust roots.
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
    /// [`idle_close`](super::ProbeReport::idle_close) `None`. Must be greater than zero.
    /// Defaults to 5 minutes.
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Limit on resolving the host, opening the TCP connection and, for `https`, the
    /// TLS handshake. The TCP connects share it between the host's addresses, as in
    /// [`TcpConnector::connect_timeout`](crate::connect::TcpConnector::connect_timeout).
    /// Must be greater than zero. Defaults to 10 seconds.
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
    /// pool's `idle_timeout`), to check with [`check_parity`](crate::keepalive::check_parity)
    /// against what the probe finds; the result is
    /// [`ProbeReport::parity`](super::ProbeReport::parity). Defaults to `None` (no check).
    #[must_use]
    pub fn front_idle(mut self, front_idle: impl Into<Option<Duration>>) -> Self {
        self.front_idle = front_idle.into();
        self
    }

    /// Safety margin used for the parity check and subtracted for
    /// [`ProbeReport::recommended_idle_timeout`](super::ProbeReport::recommended_idle_timeout).
    /// Defaults to 1 second.
    #[must_use]
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The TLS configuration for `https` URIs (feature `rustls`), in place of the
    /// platform's trust roots: for a server whose certificate a private CA signed, a
    /// `rustls::ClientConfig` whose roots hold that CA. As with
    /// [`Builder::tls_config`](crate::Builder::tls_config), its ALPN protocols are
    /// replaced by `http/1.1` and the server name is the URI's host. Defaults to rustls
    /// with the `ring` provider and the platform's trust roots.
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    #[must_use]
    pub fn tls_config(mut self, config: rustls::ClientConfig) -> Self {
        self.tls = Some(crate::connect::TlsConfig::given(config));
        self
    }

    pub(super) fn validate(&self) -> Result<(), Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
