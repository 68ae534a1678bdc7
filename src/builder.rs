//! [`Builder`]: every option of the pool, its default, and its validation.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::body::Body;
use crate::client::Client;
use crate::config::PoolConfig;
use crate::connect::{TcpConnector, TcpKeepalive};
use crate::dns::Name;
use crate::error::Error;
use crate::layer::PoolLayer;
use crate::retry::Policy;

/// Configures and builds a [`Client`] (or a [`PoolLayer`] for a custom connector).
///
/// Every option has a default chosen so that the client closes idle connections before
/// common servers do; [`build`](Builder::build) refuses inconsistent settings with an
/// [`Error`] naming the option and the unit, and never panics.
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http_body_util::Full;
///
/// let client: closefirst::Client<Full<Bytes>> = closefirst::Client::builder()
///     .idle_timeout(Duration::from_secs(60))
///     .keep_alive_margin(Duration::from_secs(1))
///     .max_idle_per_origin(32)
///     .max_connections_per_origin(256)
///     .max_lifetime(Duration::from_secs(600))
///     .max_requests_per_connection(1000)
///     .tcp_keepalive(closefirst::TcpKeepalive::new().idle(Duration::from_secs(30)))
///     .build()?;
///
/// let err = closefirst::Client::builder()
///     .idle_timeout(Duration::from_secs(1))
///     .keep_alive_margin(Duration::from_secs(2))
///     .build::<Full<Bytes>>()
///     .unwrap_err();
/// assert!(err.is_config());
/// assert_eq!(
///     err.to_string(),
///     "invalid configuration: keep_alive_margin (2000 ms) must be smaller than idle_timeout (1000 ms)"
/// );
/// # Ok::<(), closefirst::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct Builder {
    config: PoolConfig,
    /// `None` until [`Builder::keep_alive_margin`] is called: the default margin
    /// follows `idle_timeout`, an explicit one is checked against it.
    keep_alive_margin: Option<Duration>,
    tcp: TcpConnector,
    retry: Policy,
    #[cfg(feature = "rustls")]
    tls: Option<crate::connect::TlsConfig>,
    #[cfg(unix)]
    unix: Option<crate::connect::UnixConnector>,
}

impl Builder {
    /// A builder with every default.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a connection may sit idle in the pool while nothing is known of the
    /// server's idle timer: no `Keep-Alive: timeout` hint, no close seen, nothing proven.
    ///
    /// Keep it below the server's keep-alive timeout by at least the margin
    /// (`server keep-alive >= idle_timeout + margin`): then the client closes first
    /// even at first contact. A server's hint replaces it (minus the margin, up to
    /// [`max_idle_timeout`](Builder::max_idle_timeout)), and so does what the pool
    /// learns of the server's timer (see [`learn_idle_timeout`](Builder::learn_idle_timeout));
    /// with learning off, a hint can only shorten it (a hint above one day counts as
    /// one day). Must be greater than zero. Any larger value is accepted: past about 30 years (`Duration::MAX`
    /// included) it means idle connections are never closed for being idle (server
    /// hints, the learned timeout and `max_lifetime` still apply). Defaults to 4 seconds.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// The longest a connection may sit idle on a server's `Keep-Alive: timeout` hint or
    /// on what the pool has learned of its timer (a close seen, or an idle time proven
    /// by a connection no request rode). Below `idle_timeout` it counts as
    /// `idle_timeout`. Ignored with [`learn_idle_timeout(false)`](Builder::learn_idle_timeout).
    /// Defaults to 90 seconds ([`DEFAULT_MAX_IDLE_TIMEOUT`](crate::DEFAULT_MAX_IDLE_TIMEOUT)):
    /// what Go's `Transport` and hyper-util keep idle connections, above nginx's 75 s,
    /// and below the 4–10 minutes after which load balancers and NAT gateways drop an
    /// idle flow silently (kernel keepalive, on by default, keeps such entries alive).
    pub fn max_idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.max_idle_timeout = timeout;
        self
    }

    /// How long before a server's announced `Keep-Alive: timeout` the client closes the
    /// connection. Covers the network delay and the server's timer granularity: the
    /// server's timer starts when it writes the response, the client's when it has read
    /// it, and a FIN takes time to arrive. The same margin keeps the learned idle
    /// timeout below the closes observed. A margin set here must be smaller than
    /// `idle_timeout`, or [`build`](Builder::build) refuses it.
    /// Defaults to the smaller of 1 second and a quarter of `idle_timeout` (so 1 second
    /// for the default 4 s `idle_timeout`, 125 ms for an `idle_timeout` of 500 ms).
    pub fn keep_alive_margin(mut self, margin: Duration) -> Self {
        self.keep_alive_margin = Some(margin);
        self
    }

    /// How many idle connections to keep per origin; past it the least recently used
    /// one is closed. `0` turns reuse off. Idle connections are closed after
    /// `idle_timeout` anyway, so the list holds at most the origin's recent peak
    /// concurrency; a cap below that peak makes every burst reconnect. Set one to
    /// bound memory or server-side sockets per origin. Defaults to no limit.
    pub fn max_idle_per_origin(mut self, max: usize) -> Self {
        self.config.max_idle_per_origin = max;
        self
    }

    /// How many connections (idle, busy or connecting) one origin may have. Past it,
    /// requests wait for a connection in arrival order, up to `checkout_timeout`.
    /// Must be at least 1. Defaults to no limit.
    pub fn max_connections_per_origin(mut self, max: usize) -> Self {
        self.config.max_connections_per_origin = Some(max);
        self
    }

    /// How many idle connections to keep across all origins, probes included; past it
    /// the least recently used idle connection, of any origin, is closed. Bounds the
    /// sockets a client talking to many origins keeps open on their behalf (each origin
    /// may also be bounded with [`max_idle_per_origin`](Builder::max_idle_per_origin)).
    /// Must be at least 1 (use `max_idle_per_origin(0)` to turn reuse off). Defaults to
    /// no limit.
    pub fn max_idle_total(mut self, max: usize) -> Self {
        self.config.max_idle_total = Some(max);
        self
    }

    /// How many connections (idle, busy or connecting) the client may have across all
    /// origins. Past it, a request that needs a new connection closes the least recently
    /// used idle connection of any origin to make room; with none idle, it waits, in
    /// arrival order across origins, up to `checkout_timeout`, for the first connection
    /// that closes anywhere (a connection checked in while requests to other origins
    /// wait is closed for them). Must be at least 1. Defaults to no limit.
    pub fn max_connections_total(mut self, max: usize) -> Self {
        self.config.max_connections_total = Some(max);
        self
    }

    /// How long a request waits for a connection when `max_connections_per_origin` (or
    /// `max_connections_total`) is reached; then it fails with an error for which
    /// [`is_timeout`](Error::is_timeout) is true. `None` waits indefinitely; so, in
    /// practice, does any value past about 30 years (`Duration::MAX` included), which
    /// the timer caps there. Must be greater than zero. Defaults to 30 seconds.
    pub fn checkout_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.checkout_timeout = timeout.into();
        self
    }

    /// How long opening a connection may take (name resolution, TCP connect, and a
    /// custom connector's own handshake). The built-in connector also gives each
    /// address of a family an equal share of it, so an address that never answers
    /// leaves time for the next. `None` for no limit; any value past about 30 years
    /// (`Duration::MAX` included) is capped there, in practice no limit either. Must
    /// be greater than zero. Defaults to 10 seconds.
    pub fn connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.config.connect_timeout = timeout.into();
        self
    }

    /// The longest a connection is used, counted from when it was opened; a connection
    /// past it is closed when its current response ends. Each connection's lifetime is
    /// shortened by a random 0–10 % so that connections opened together are not all
    /// replaced together. `None` for no limit; so, in practice, is any value past about
    /// 30 years (`Duration::MAX` included), which is capped there. Must be greater than
    /// zero. Defaults to no limit.
    pub fn max_lifetime(mut self, lifetime: impl Into<Option<Duration>>) -> Self {
        self.config.max_lifetime = lifetime.into();
        self
    }

    /// The most requests one connection carries before the client closes it. Must be at
    /// least 1. Defaults to no limit.
    pub fn max_requests_per_connection(mut self, max: u64) -> Self {
        self.config.max_requests_per_connection = Some(max);
        self
    }

    /// Whether to peek at an idle connection's socket just before reusing it, and
    /// discard it if the server has closed it, reset it, or sent unexpected bytes.
    /// One non-blocking syscall per reuse. Defaults to `true`.
    pub fn check_before_reuse(mut self, check: bool) -> Self {
        self.config.check_before_reuse = check;
        self
    }

    /// Whether to learn each origin's idle timer, both ways, and close its idle
    /// connections `keep_alive_margin` before it. Downward: from the closes the pool
    /// sees (the server closing an idle connection, stale-connection failures), the
    /// latest one. Upward, without risking a request: the first idle connection of an
    /// origin to reach its deadline becomes the origin's probe, out of rotation, until
    /// the server closes it (its timer is then known) or about twice its idle time
    /// passes (that much is then proven); reuses that got their response prove their
    /// idle time too. Up to [`max_idle_timeout`](Builder::max_idle_timeout). A request
    /// that may not be resent (a POST without `Idempotency-Key`) rides only a
    /// connection idle below what the server was seen to allow, minus the margin, and
    /// otherwise gets a new one. What is in force per origin is in
    /// [`Client::origin_stats`](crate::Client::origin_stats). With `false`,
    /// `idle_timeout` is fixed (a hint can only shorten it), there is no probe, and
    /// every request may ride any connection within its deadline. Defaults to `true`.
    pub fn learn_idle_timeout(mut self, learn: bool) -> Self {
        self.config.learn_idle_timeout = learn;
        self
    }

    /// Kernel TCP keepalive for new connections, or `None` to leave it off. Applies to
    /// the built-in connector. Its limits (idle and interval 1–32767 s, 1–127 retries)
    /// are checked by [`build`](Builder::build). Defaults to [`TcpKeepalive::new`]: on,
    /// 30 s idle, 10 s interval, 3 retries.
    pub fn tcp_keepalive(mut self, keepalive: impl Into<Option<TcpKeepalive>>) -> Self {
        self.tcp = self.tcp.keepalive(keepalive);
        self
    }

    /// `TCP_NODELAY` for new connections. Applies to the built-in connector.
    /// Defaults to `true`.
    pub fn tcp_nodelay(mut self, nodelay: bool) -> Self {
        self.tcp = self.tcp.nodelay(nodelay);
        self
    }

    /// `TCP_USER_TIMEOUT` for new connections (Linux, Android, Fuchsia; ignored
    /// elsewhere). Applies to the built-in connector. From 1 ms to 2147483647 ms
    /// (about 24.8 days, the most Linux accepts); [`build`](Builder::build) refuses
    /// other values. Defaults to off.
    pub fn tcp_user_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.tcp = self.tcp.user_timeout(timeout);
        self
    }

    /// Resolves host names with `resolver` instead of the system resolver: any
    /// `tower::Service<`[`Name`]`>` answering with an iterator of [`SocketAddr`]s, as
    /// hyper-util's `HttpConnector` takes; see [`dns`](crate::dns). Applies to the
    /// built-in connector. Defaults to the system resolver (`getaddrinfo`).
    pub fn resolver<R>(mut self, resolver: R) -> Self
    where
        R: tower::Service<Name> + Clone + Send + Sync + 'static,
        R::Response: Iterator<Item = SocketAddr>,
        R::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        R::Future: Send + 'static,
    {
        self.tcp = self.tcp.resolver(resolver);
        self
    }

    /// The local IP address new connections are bound to, or `None` to let the kernel
    /// choose. Only destinations of its family (IPv4 or IPv6) can then be reached;
    /// while happy eyeballs is on, addresses of the other family are skipped. Applies
    /// to the built-in connector. Defaults to `None`.
    pub fn local_address(mut self, address: impl Into<Option<IpAddr>>) -> Self {
        self.tcp = self.tcp.local_address(address);
        self
    }

    /// When a host resolves to both IPv6 and IPv4 addresses, how long the family of
    /// the first address is tried alone before the other joins in (happy eyeballs);
    /// `None` tries every address in turn. Each address gets an equal share of
    /// `connect_timeout` within its family either way. Applies to the built-in
    /// connector. Defaults to 300 milliseconds.
    pub fn happy_eyeballs_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.tcp = self.tcp.happy_eyeballs_timeout(timeout);
        self
    }

    /// Which failed requests are sent again; see [`retry`](crate::retry). Defaults to
    /// [`Policy::idempotent`]: a request that never reached the socket is resent
    /// whatever its method, and one that met a stale reused connection before any
    /// response byte is resent once if its method is idempotent or it is [marked as safe
    /// to resend](crate::retry#marking-a-request-as-safe-to-resend).
    /// [`Policy::never`] turns resending off.
    pub fn retry(mut self, policy: Policy) -> Self {
        self.retry = policy;
        self
    }

    /// The TLS configuration for `https` URIs (feature `rustls`), in place of the
    /// platform's trust roots: your own roots, client certificates, protocol versions.
    /// Its ALPN protocols are replaced by `http/1.1`, the only one the pool speaks.
    /// The server name is the URI's host (an IP literal works too). Defaults to rustls
    /// with the `ring` provider and the platform's trust roots, loaded on the first
    /// `https` connection.
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn tls_config(mut self, config: rustls::ClientConfig) -> Self {
        self.tls = Some(crate::connect::TlsConfig::given(config));
        self
    }

    /// Sends every request to the Unix domain socket at `path`, whatever the URI's host
    /// (which still gives the `Host` header and the pool's key): write requests to
    /// `http://localhost/path`. The pre-reuse check and the classification of failed
    /// requests work as on TCP; the `tcp_*` options do not apply. An `https` URI runs
    /// TLS over the socket (feature `rustls`). Defaults to none (TCP).
    #[cfg(unix)]
    pub fn unix_socket(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.unix = Some(crate::connect::UnixConnector::new(path));
        self
    }

    /// Builds a client with the built-in connector: TCP for `http`, and with the
    /// `rustls` feature TLS for `https`; without it, `https` URIs are refused.
    pub fn build<B: Body>(self) -> Result<Client<B>, Error> {
        let config = self.validate()?;
        self.tcp.validate()?;
        // The pool bounds the whole connect; the connector shares the same timeout
        // between addresses, so one that never answers cannot use all of it.
        let tcp = self.tcp.connect_timeout(config.connect_timeout);
        let connector = crate::connect::BuiltinConnector::new(tcp);
        #[cfg(unix)]
        let connector = connector.unix(self.unix);
        #[cfg(feature = "rustls")]
        let connector = match self.tls {
            Some(tls) => connector.tls(tls),
            None => connector,
        };
        Ok(Client::with_connector(config, self.retry, connector))
    }

    /// Builds a [`PoolLayer`] that makes a [`Client`] from any connector. The `tcp_*`
    /// options, `resolver`, `local_address`, `happy_eyeballs_timeout`, `tls_config` and
    /// `unix_socket` do not apply to a connector of your own.
    pub fn layer<B>(self) -> Result<PoolLayer<B>, Error> {
        let config = self.validate()?;
        Ok(PoolLayer::from_parts(config, self.retry))
    }

    fn validate(&self) -> Result<PoolConfig, Error> {
        self.retry.validate()?;
        self.config
            .clone()
            .validated(self.keep_alive_margin, self.retry.get_attempts())
    }
}

// The entry points of the types this builder makes live here, so that imports point
// one way: the builder knows the client and the layer, not the other way round.
impl Client<()> {
    /// A [`Builder`] with every default.
    pub fn builder() -> Builder {
        Builder::new()
    }
}

impl<B> PoolLayer<B> {
    /// A layer with the builder's pool settings (its connector options, `tcp_*`,
    /// `resolver`, `local_address` and `happy_eyeballs_timeout`, are for the built-in
    /// connector and do not apply). Refuses invalid settings as [`Builder::build`]
    /// does.
    pub fn new(builder: Builder) -> Result<Self, Error> {
        builder.layer()
    }
}

#[cfg(test)]
mod tests;
