//! [`TcpConnector`], the built-in connector, and [`Connecting`], its future: hyper-util's
//! `HttpConnector` resolves the host and connects (happy eyeballs, a share of the
//! connect timeout per address, optional local address, a pluggable resolver); this
//! module sets the socket options and hands the pool a [`TcpIo`] it can peek and count.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use socket2::SockRef;
use tokio::net::TcpStream;
use tower::ServiceExt;

use super::keepalive::{millis, TcpKeepalive};
use crate::dns::{Name, ResolveError, Resolver};
use crate::error::{BoxError, Error, Kind};
use crate::io::{set_user_timeout, TcpIo};
use crate::origin;

/// The largest `TCP_USER_TIMEOUT` Linux accepts: the option is a C `int` of
/// milliseconds, and a negative one is refused.
const MAX_USER_TIMEOUT_MS: u128 = i32::MAX as u128;

/// hyper-util's default delay before the other address family is tried (RFC 6555
/// suggests 150–250 ms; hyper-util and reqwest use 300 ms).
const DEFAULT_HAPPY_EYEBALLS_TIMEOUT: Duration = Duration::from_millis(300);

/// The built-in connector: hyper-util's `HttpConnector` underneath, with the socket
/// options this crate relies on, returning a [`TcpIo`].
///
/// What hyper-util's connector does, this one does: the host is resolved (by the
/// system resolver or your own, [`resolver`](TcpConnector::resolver)); when the
/// answer holds both IPv6 and IPv4 addresses, the family of the first address is
/// tried first and the other joins after
/// [`happy_eyeballs_timeout`](TcpConnector::happy_eyeballs_timeout) (happy eyeballs,
/// RFC 6555); within a family, addresses are tried in order, each with an equal share
/// of [`connect_timeout`](TcpConnector::connect_timeout), so a black-holed first
/// address cannot use up the whole timeout. On top of it, every connection gets
/// `TCP_NODELAY`, kernel keepalive and `TCP_USER_TIMEOUT` as configured, and is wrapped
/// in a [`TcpIo`] so the pool can look at the socket before reuse and tell how far a
/// failed request got.
///
/// [`Builder`](crate::Builder) passes its `connect_timeout` here; with
/// [`PoolLayer`](crate::PoolLayer), set it on the connector too. By default only
/// `http` URIs are accepted ([`enforce_http`](TcpConnector::enforce_http)); a TLS
/// connector that wraps this one turns that off.
#[derive(Clone, Debug)]
pub struct TcpConnector {
    nodelay: bool,
    keepalive: Option<TcpKeepalive>,
    user_timeout: Option<Duration>,
    enforce_http: bool,
    connect_timeout: Option<Duration>,
    happy_eyeballs_timeout: Option<Duration>,
    local_address: Option<IpAddr>,
    resolver: Resolver,
}

impl Default for TcpConnector {
    fn default() -> Self {
        TcpConnector {
            nodelay: true,
            keepalive: Some(TcpKeepalive::default()),
            user_timeout: None,
            enforce_http: true,
            connect_timeout: None,
            happy_eyeballs_timeout: Some(DEFAULT_HAPPY_EYEBALLS_TIMEOUT),
            local_address: None,
            resolver: Resolver::system(),
        }
    }
}

impl TcpConnector {
    /// A connector with the defaults: `TCP_NODELAY` on, keepalive on with
    /// [`TcpKeepalive::new`], no `TCP_USER_TIMEOUT`, `http` only, the system resolver,
    /// happy eyeballs after 300 ms, no connect timeout of its own, no local address.
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

    /// The time the TCP connects of one connection may take, shared equally between
    /// the addresses of each family (with three IPv4 addresses, each gets a third); an
    /// address that does not answer in its share is given up for the next. `None` for
    /// no limit of the connector's own. Any duration is accepted; past about 30 years
    /// it is no limit in practice.
    ///
    /// [`Builder::build`](crate::Builder::build) sets this to the builder's
    /// `connect_timeout`, which also bounds the whole connect (resolution included).
    /// Defaults to `None` on a connector made by hand.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.connect_timeout = timeout.into();
        self
    }

    /// How long the first address family (the family of the resolver's first answer)
    /// is tried alone before the other family is tried in parallel, when a host
    /// resolves to both IPv6 and IPv4 addresses (happy eyeballs, RFC 6555); the first
    /// connection made wins. `None` tries all addresses one after the other, in the
    /// resolver's order. `Duration::ZERO` tries both families at once. Any duration is
    /// accepted. Defaults to 300 milliseconds, as hyper-util.
    #[must_use]
    pub fn happy_eyeballs_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.happy_eyeballs_timeout = timeout.into();
        self
    }

    /// The local IP address to bind sockets to before connecting, or `None` to let the
    /// kernel choose. With an IPv4 address only IPv4 destinations can be reached (and
    /// IPv6 with an IPv6 one): while happy eyeballs is on, addresses of the other
    /// family are skipped. An address that is not the machine's fails each connect
    /// with an error for which [`Error::is_connect`] is true. Defaults to `None`.
    #[must_use]
    pub fn local_address(mut self, address: impl Into<Option<IpAddr>>) -> Self {
        self.local_address = address.into();
        self
    }

    /// Resolves host names with `resolver` instead of the system resolver: any
    /// `tower::Service<`[`Name`]`>` answering with an iterator of [`SocketAddr`]s, as
    /// hyper-util's `HttpConnector` takes (see [`dns`](crate::dns)). It is cloned
    /// for each lookup, and not called for IP literals. Defaults to the system
    /// resolver (`getaddrinfo` on tokio's blocking pool).
    #[must_use]
    pub fn resolver<R>(mut self, resolver: R) -> Self
    where
        R: tower::Service<Name> + Clone + Send + Sync + 'static,
        R::Response: Iterator<Item = SocketAddr>,
        R::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        R::Future: Send + 'static,
    {
        self.resolver = Resolver::new(resolver);
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

    fn http_connector(&self) -> HttpConnector<Resolver> {
        let mut http = HttpConnector::new_with_resolver(self.resolver.clone());
        // The scheme was checked here already, with a message naming this crate's way
        // to `https`.
        http.enforce_http(false);
        http.set_nodelay(self.nodelay);
        http.set_connect_timeout(self.connect_timeout);
        http.set_happy_eyeballs_timeout(self.happy_eyeballs_timeout);
        http.set_local_address(self.local_address);
        http
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
        let started = Instant::now();
        let stream = match self.http_connector().oneshot(uri.clone()).await {
            Ok(io) => io.into_inner(),
            Err(error) => return Err(self.connect_error(host, port, started, error.into())),
        };
        self.apply_options(&stream);
        Ok(TcpIo::new(stream))
    }

    /// The error for a failed connect: a timeout when the whole `connect_timeout` is
    /// spent, a resolution error, or a connect error naming `host:port`.
    fn connect_error(&self, host: &str, port: u16, started: Instant, error: BoxError) -> Error {
        // With one address its share is the whole timeout, and hyper-util's timer for
        // it can fire in the same tick as the pool's (which started earlier and bounds
        // the whole connect): report what the pool would have, a connect timeout.
        if let Some(limit) = self.connect_timeout {
            if started.elapsed() >= limit {
                return Error::new(Kind::ConnectTimeout(limit)).with_source(error);
            }
        }
        if ResolveError::is_in_chain(&*error) {
            return Error::connect(format!("{host}:{port} (resolving)"), error);
        }
        Error::connect(format!("{host}:{port}"), error)
    }

    /// Sets keepalive and `TCP_USER_TIMEOUT` once connected (hyper-util sets
    /// `TCP_NODELAY`): here, with the platform lists the read-back in
    /// [`SocketOptions`](crate::connect::SocketOptions) uses, so what is set is what
    /// is reported. The handshake itself is bounded by the connect timeout.
    fn apply_options(&self, stream: &TcpStream) {
        let sock = SockRef::from(stream);
        if let Some(keepalive) = self.keepalive {
            if let Err(e) = sock.set_tcp_keepalive(&keepalive.to_socket2()) {
                tracing::warn!(error = %e, "failed to set TCP keepalive options");
            }
        }
        if let Some(timeout) = self.user_timeout {
            if let Err(e) = set_user_timeout(&sock, timeout) {
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
