//! Opening connections: the built-in TCP connector, its socket options, and the trait
//! a custom connector's IO implements.
//!
//! The pool opens connections through any `tower::Service<http::Uri>` whose response
//! is a hyper IO implementing [`Connection`]; [`TcpConnector`] is the built-in one.
//! A TLS connector (not built in yet) wraps a `TcpConnector` and forwards
//! [`Connection::socket`] from the inner [`TcpIo`], so the pool can still look at the
//! TCP socket before reusing the connection.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use socket2::SockRef;
use tokio::net::TcpSocket;

use crate::error::Error;
pub use crate::io::{SocketHandle, TcpIo};

/// What the pool needs from a connector's IO beyond reading and writing.
pub trait Connection {
    /// A handle to the underlying TCP socket, if there is one. With it, the pool
    /// checks an idle connection before reuse and tells how far a failed request got;
    /// without it (`None`), idle connections are reused unchecked and a failed request
    /// whose fate is unknown is treated as executed.
    fn socket(&self) -> Option<SocketHandle>;
}

impl Connection for TcpIo {
    fn socket(&self) -> Option<SocketHandle> {
        Some(self.handle())
    }
}

/// TCP keepalive settings: the kernel probes an idle connection so a peer that
/// vanished (crashed host, dropped NAT entry) is noticed while the connection sits in
/// the pool, not when a request is written to it.
///
/// `TcpKeepalive::new()` starts from the defaults: probes after 30 s of silence,
/// every 10 s, 3 unanswered probes declare the peer dead (found within about a minute).
///
/// ```
/// use std::time::Duration;
/// let keepalive = closefirst::TcpKeepalive::new()
///     .idle(Duration::from_secs(60))
///     .interval(Duration::from_secs(5))
///     .retries(4);
/// # let _ = keepalive;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpKeepalive {
    idle: Duration,
    interval: Duration,
    retries: u32,
}

const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_KEEPALIVE_RETRIES: u32 = 3;
/// The largest `TCP_KEEPIDLE` and `TCP_KEEPINTVL` Linux accepts (`MAX_TCP_KEEPIDLE`,
/// `MAX_TCP_KEEPINTVL`); larger values fail with `EINVAL` when the socket is set up,
/// so they are refused when the client is built, on every platform alike.
const MAX_KEEPALIVE_SECS: u64 = 32_767;
/// The largest `TCP_KEEPCNT` Linux accepts (`MAX_TCP_KEEPCNT`).
const MAX_KEEPALIVE_RETRIES: u32 = 127;
/// The largest `TCP_USER_TIMEOUT` Linux accepts: the option is a C `int` of
/// milliseconds, and a negative one is refused.
const MAX_USER_TIMEOUT_MS: u128 = i32::MAX as u128;

impl Default for TcpKeepalive {
    fn default() -> Self {
        TcpKeepalive {
            idle: DEFAULT_KEEPALIVE_IDLE,
            interval: DEFAULT_KEEPALIVE_INTERVAL,
            retries: DEFAULT_KEEPALIVE_RETRIES,
        }
    }
}

impl TcpKeepalive {
    /// The defaults: idle 30 s, interval 10 s, 3 retries.
    pub fn new() -> Self {
        Self::default()
    }

    /// Silence before the first probe (`TCP_KEEPIDLE`; `TCP_KEEPALIVE` on macOS).
    /// Whole seconds, from 1 s to 32767 s (the most Linux accepts; refused beyond it
    /// on every platform, so a setting means the same everywhere). Defaults to
    /// 30 seconds.
    #[must_use]
    pub fn idle(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// Time between unanswered probes (`TCP_KEEPINTVL`). Whole seconds, from 1 s to
    /// 32767 s (the most Linux accepts). Defaults to 10 seconds.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Unanswered probes before the connection is dropped (`TCP_KEEPCNT`). From 1 to
    /// 127 (the most Linux accepts). Defaults to 3.
    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The configured idle time.
    pub fn get_idle(&self) -> Duration {
        self.idle
    }

    /// The configured probe interval.
    pub fn get_interval(&self) -> Duration {
        self.interval
    }

    /// The configured number of probes.
    pub fn get_retries(&self) -> u32 {
        self.retries
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        whole_seconds("tcp_keepalive idle", self.idle)?;
        whole_seconds("tcp_keepalive interval", self.interval)?;
        if self.retries == 0 {
            return Err(Error::config(
                "tcp_keepalive retries must be at least 1 (got 0 probes)",
            ));
        }
        if self.retries > MAX_KEEPALIVE_RETRIES {
            return Err(Error::config(format!(
                "tcp_keepalive retries must be at most {MAX_KEEPALIVE_RETRIES} probes (got {} probes)",
                self.retries
            )));
        }
        Ok(())
    }

    fn to_socket2(self) -> socket2::TcpKeepalive {
        let keepalive = socket2::TcpKeepalive::new().with_time(self.idle);
        #[cfg(any(
            target_os = "linux",
            target_os = "android",
            target_os = "macos",
            target_os = "ios",
            target_os = "freebsd",
            target_os = "netbsd",
            target_os = "fuchsia",
            target_os = "illumos",
            windows
        ))]
        let keepalive = keepalive.with_interval(self.interval);
        #[cfg(any(
            target_os = "linux",
            target_os = "android",
            target_os = "macos",
            target_os = "ios",
            target_os = "freebsd",
            target_os = "netbsd",
            target_os = "fuchsia",
            target_os = "illumos",
        ))]
        let keepalive = keepalive.with_retries(self.retries);
        keepalive
    }
}

fn whole_seconds(option: &str, value: Duration) -> Result<(), Error> {
    if value > Duration::from_secs(MAX_KEEPALIVE_SECS) {
        return Err(Error::config(format!(
            "{option} must be at most {MAX_KEEPALIVE_SECS} s (got {})",
            millis(value)
        )));
    }
    if value.is_zero() || value.subsec_nanos() != 0 {
        return Err(Error::config(format!(
            "{option} must be a whole number of seconds, at least 1 s (got {})",
            millis(value)
        )));
    }
    Ok(())
}

/// `value` in milliseconds, with the sub-millisecond part only when there is one:
/// `1500 ms`, `0.5 ms`.
fn millis(value: Duration) -> String {
    let sub_milli = value.subsec_nanos() % 1_000_000;
    if sub_milli == 0 {
        format!("{} ms", value.as_millis())
    } else {
        let fraction = format!("{sub_milli:06}");
        format!(
            "{}.{} ms",
            value.as_millis(),
            fraction.trim_end_matches('0')
        )
    }
}

/// Socket options as the kernel reports them (`getsockopt`), not as configured.
///
/// A field is `None` where the platform has no such option or the kernel refused to
/// report it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketOptions {
    /// `TCP_NODELAY`.
    pub nodelay: Option<bool>,
    /// `SO_KEEPALIVE`.
    pub keepalive: Option<bool>,
    /// `TCP_KEEPIDLE` (`TCP_KEEPALIVE` on macOS).
    pub keepalive_idle: Option<Duration>,
    /// `TCP_KEEPINTVL`.
    pub keepalive_interval: Option<Duration>,
    /// `TCP_KEEPCNT`.
    pub keepalive_retries: Option<u32>,
    /// `TCP_USER_TIMEOUT` (Linux). `Some(Duration::ZERO)` means the kernel default.
    pub user_timeout: Option<Duration>,
}

#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "fuchsia",
    target_os = "illumos",
))]
fn read_keepalive_params(sock: &SockRef<'_>, options: &mut SocketOptions) {
    options.keepalive_idle = sock.tcp_keepalive_time().ok();
    options.keepalive_interval = sock.tcp_keepalive_interval().ok();
    options.keepalive_retries = sock.tcp_keepalive_retries().ok();
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "fuchsia",
    target_os = "illumos",
)))]
fn read_keepalive_params(_: &SockRef<'_>, _: &mut SocketOptions) {}

impl SocketOptions {
    pub(crate) fn read_from(sock: &SockRef<'_>) -> SocketOptions {
        let mut options = SocketOptions {
            nodelay: sock.tcp_nodelay().ok(),
            keepalive: sock.keepalive().ok(),
            ..SocketOptions::default()
        };
        read_keepalive_params(sock, &mut options);
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
        {
            options.user_timeout = sock
                .tcp_user_timeout()
                .ok()
                .map(|t| t.unwrap_or(Duration::ZERO));
        }
        options
    }
}

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
        let host = uri
            .host()
            .ok_or_else(|| Error::invalid_uri(format!("`{uri}` has no host")))?;
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
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
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
        if let Some(timeout) = self.user_timeout {
            if let Err(e) = sock.set_tcp_user_timeout(Some(timeout)) {
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
