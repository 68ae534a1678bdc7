//! [`TcpConnector`], the built-in connector, and [`Connecting`], its future: resolve
//! the host, connect over TCP with the configured socket options, and hand the pool a
//! [`TcpIo`] it can peek and count.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use socket2::SockRef;
use tokio::net::TcpSocket;

use super::keepalive::{millis, TcpKeepalive};
use crate::error::Error;
use crate::io::{set_user_timeout, TcpIo};
use crate::origin;

/// The largest `TCP_USER_TIMEOUT` Linux accepts: the option is a C `int` of
/// milliseconds, and a negative one is refused.
const MAX_USER_TIMEOUT_MS: u128 = i32::MAX as u128;

/// The built-in connector: resolves the host, connects over TCP with the configured
/// socket options, and returns a [`TcpIo`].
///
/// Addresses are tried in the order the resolver returns them; the pool's
/// `connect_timeout` bounds the whole attempt. By default only `http` URIs are
/// accepted ([`enforce_http`](TcpConnector::enforce_http)); a TLS connector that wraps
/// this one turns that off.
#[derive(Clone, Debug)]
pub struct TcpConnector {
    nodelay: bool,
    keepalive: Option<TcpKeepalive>,
    user_timeout: Option<Duration>,
    enforce_http: bool,
}

impl Default for TcpConnector {
    fn default() -> Self {
        TcpConnector {
            nodelay: true,
            keepalive: Some(TcpKeepalive::default()),
            user_timeout: None,
            enforce_http: true,
        }
    }
}

impl TcpConnector {
    /// A connector with the defaults: `TCP_NODELAY` on, keepalive on with
    /// [`TcpKeepalive::new`], no `TCP_USER_TIMEOUT`, `http` only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `TCP_NODELAY`. Defaults to `true`: requests are small and latency matters
    /// more than packet count.
    #[must_use]
    pub fn nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }

    /// Kernel keepalive settings, or `None` to leave `SO_KEEPALIVE` off.
    /// Defaults to [`TcpKeepalive::new`] (30 s idle, 10 s interval, 3 retries).
    #[must_use]
    pub fn keepalive(mut self, keepalive: impl Into<Option<TcpKeepalive>>) -> Self {
        self.keepalive = keepalive.into();
        self
    }

    /// `TCP_USER_TIMEOUT` (Linux, Android, Fuchsia; ignored elsewhere): how long
    /// written data may stay unacknowledged before the kernel drops the connection.
    /// Millisecond precision (finer parts are dropped), from 1 ms to 2147483647 ms
    /// (about 24.8 days, the most Linux accepts); others are refused. Defaults to off
    /// (the kernel's default, which can be many minutes).
    #[must_use]
    pub fn user_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.user_timeout = timeout.into();
        self
    }

    /// Whether URIs other than `http` are refused. Defaults to `true`; a TLS
    /// connector wrapping this one sets it to `false`.
    #[must_use]
    pub fn enforce_http(mut self, enforce: bool) -> Self {
        self.enforce_http = enforce;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if let Some(keepalive) = &self.keepalive {
            keepalive.validate()?;
        }
        if let Some(timeout) = self.user_timeout {
            if timeout.is_zero() {
                return Err(Error::config(
                    "tcp_user_timeout must be greater than zero (got 0 ms); use None to turn it off",
                ));
            }
            // Below 1 ms the kernel would get 0, which means "off", not "very short".
            if timeout < Duration::from_millis(1) {
                return Err(Error::config(format!(
                    "tcp_user_timeout must be at least 1 ms (got {}); use None to turn it off",
                    millis(timeout)
                )));
            }
            if timeout.as_millis() > MAX_USER_TIMEOUT_MS {
                return Err(Error::config(format!(
                    "tcp_user_timeout must be at most {MAX_USER_TIMEOUT_MS} ms (got {}); \
                     use None to turn it off",
                    millis(timeout)
                )));
            }
        }
        Ok(())
    }

    async fn connect(self, uri: Uri) -> Result<TcpIo, Error> {
        self.validate()?;
        if self.enforce_http && uri.scheme_str() != Some("http") {
            return Err(Error::invalid_uri(format!(
                "`{uri}`: the built-in TCP connector speaks plain `http` only; \
                 use PoolLayer with a TLS connector for `https`"
            )));
        }
        let (host, port) = origin::host_and_port(&uri)?;
        let bare_host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match bare_host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((bare_host, port))
                .await
                .map_err(|e| Error::connect(format!("{host}:{port} (resolving)"), e))?
                .collect(),
        };
        let mut last_error =
            io::Error::new(io::ErrorKind::NotFound, "the host resolved to no address");
        for addr in addrs {
            match self.connect_addr(addr).await {
                Ok(io) => return Ok(io),
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "connect attempt failed");
                    last_error = e;
                }
            }
        }
        Err(Error::connect(format!("{host}:{port}"), last_error))
    }

    async fn connect_addr(&self, addr: SocketAddr) -> io::Result<TcpIo> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        self.apply_options(&SockRef::from(&socket));
        let stream = socket.connect(addr).await?;
        Ok(TcpIo::new(stream))
    }

    fn apply_options(&self, sock: &SockRef<'_>) {
        if let Err(e) = sock.set_tcp_nodelay(self.nodelay) {
            tracing::warn!(error = %e, "failed to set TCP_NODELAY");
        }
        if let Some(keepalive) = self.keepalive {
            if let Err(e) = sock.set_tcp_keepalive(&keepalive.to_socket2()) {
                tracing::warn!(error = %e, "failed to set TCP keepalive options");
            }
        }
        if let Some(timeout) = self.user_timeout {
            if let Err(e) = set_user_timeout(sock, timeout) {
                tracing::warn!(error = %e, "failed to set TCP_USER_TIMEOUT");
            }
        }
    }
}

impl tower::Service<Uri> for TcpConnector {
    type Response = TcpIo;
    type Error = Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        Connecting {
            inner: Box::pin(self.clone().connect(uri)),
        }
    }
}

/// The future returned by [`TcpConnector`]'s `Service::call`.
pub struct Connecting {
    inner: Pin<Box<dyn Future<Output = Result<TcpIo, Error>> + Send>>,
}

impl Future for Connecting {
    type Output = Result<TcpIo, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for Connecting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connecting").finish_non_exhaustive()
    }
}
