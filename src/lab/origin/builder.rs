//! [`OriginBuilder`]: an [`OriginConfig`] plus the knobs fault tests need, and the
//! two ways to run the origin (on the caller's runtime, or on a thread of its own).

use std::io;
use std::time::Duration;

use super::config::{Fault, OriginConfig, RandomDelay, Settings};
use super::stream::Transport;
use super::Origin;

/// Builds an [`Origin`] with more control than [`OriginConfig`] offers: what the
/// fault and pool tests need. Made by [`Origin::builder`].
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use std::time::Duration;
/// use closefirst::lab::{Fault, Origin, OriginConfig};
///
/// // Its own thread and runtime: it keeps serving while the caller blocks.
/// let origin = Origin::builder(OriginConfig::default())
///     .keep_alive_header("timeout=5, max=100")
///     .fault("first", Fault::RstWithoutAnswer)
///     .start_on_thread()?;
/// assert_eq!(origin.handler_calls(), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct OriginBuilder {
    settings: Settings,
    transport: Transport,
}

impl OriginBuilder {
    pub(super) fn new(config: OriginConfig) -> OriginBuilder {
        OriginBuilder {
            settings: Settings::from(config),
            transport: Transport::default(),
        }
    }

    /// Every response carries `Keep-Alive: <value>` verbatim (even one that says
    /// `Connection: close`), in place of the hint of
    /// [`OriginConfig::send_keep_alive_hint`]. Defaults to none.
    pub fn keep_alive_header(mut self, value: impl Into<String>) -> Self {
        self.settings.keep_alive_header = Some(value.into());
        self
    }

    /// Every response carries `Connection: close`, and the origin closes (FIN) after
    /// writing it. Defaults to `false`.
    pub fn connection_close(mut self, yes: bool) -> Self {
        self.settings.connection_close = yes;
        self
    }

    /// Whether the last response before
    /// [`OriginConfig::close_after_requests`] announces the close with
    /// `Connection: close` (and the origin closes with a FIN). When `false`, the
    /// origin closes without warning, with a RST if
    /// [`OriginConfig::close_with_rst`] is set. Defaults to `true`.
    pub fn announce_close(mut self, yes: bool) -> Self {
        self.settings.announce_close = yes;
        self
    }

    /// At an idle close, first write a `408 Request Timeout` response nobody asked
    /// for (as some servers do). Defaults to `false`.
    pub fn stray_408_on_idle_close(mut self, yes: bool) -> Self {
        self.settings.stray_408_on_idle_close = yes;
        self
    }

    /// After [`OriginConfig::response_delay`], also wait a random time in
    /// `min..=max` (microsecond resolution) before each answer, drawn from a
    /// [`Rng`](crate::lab::Rng) seeded with `seed`, so a run can be reproduced.
    /// Defaults to none.
    pub fn random_delay(mut self, min: Duration, max: Duration, seed: u64) -> Self {
        self.settings.random_delay = Some(RandomDelay { min, max, seed });
        self
    }

    /// Misbehave with `fault` the first time a request with `x-request-id: id`
    /// arrives. Defaults to none.
    pub fn fault(mut self, id: impl Into<String>, fault: Fault) -> Self {
        self.settings.faults.insert(id.into(), fault);
        self
    }

    /// Answer with the body `ok N` (`N` counts the requests answered on this
    /// connection, from 1) and the headers `x-connection` (the connection's index, in
    /// accept order, from 0) and `x-handler-calls-for-id` (with an `x-request-id`: the
    /// handler calls for it so far), instead of `ok\n` with `content-type`. Defaults
    /// to `false`.
    pub fn numbered_responses(mut self, yes: bool) -> Self {
        self.settings.numbered_responses = yes;
        self
    }

    /// Appends `len` bytes (`.`) to the body of every answer (`200 OK`, numbered or
    /// not), with a `content-length` to match: a body larger than hyper takes in with
    /// the head (a few KiB) keeps the connection busy until the caller reads it, while
    /// the origin, having written it all into the socket, starts its idle timer at
    /// once. Defaults to 0.
    pub fn body_padding(mut self, len: usize) -> Self {
        self.settings.body_padding = len;
        self
    }

    /// Speaks TLS with `config` on its TCP listener (feature `rustls`): every
    /// connection starts with a handshake, and every close the origin makes with a
    /// FIN (the idle timer, `Connection: close`) sends a `close_notify` alert first, as
    /// nginx does. [`Origin::url`] then says `https`. Defaults to plain TCP.
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn tls(mut self, config: rustls::ServerConfig) -> Self {
        self.transport.tls = Some(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)));
        self
    }

    /// Over TLS ([`tls`](OriginBuilder::tls)): once a connection has been idle this
    /// long after a response (or after accept), send a TLS 1.3 `KeyUpdate` record
    /// (rustls' `refresh_traffic_keys`) and keep the connection open, once per idle
    /// period. A server may send such records at any time; a client must not take the
    /// ciphertext that arrives on an idle connection for a close or for stray bytes.
    /// No effect on plain TCP or Unix sockets, nor on a TLS 1.2 connection (where the
    /// record does not exist); [`Origin::tls_key_updates`] counts the records sent.
    /// The idle timer
    /// ([`OriginConfig::idle_timeout`]) keeps running. Defaults to never.
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn tls_key_update_when_idle(mut self, after: Duration) -> Self {
        self.settings.tls_key_update_when_idle = Some(after);
        self
    }

    /// Also listens on a Unix domain socket at `path` (which must not exist yet),
    /// serving it as the TCP listener is served, without TLS. The socket file is not
    /// removed when the origin stops. Defaults to none.
    #[cfg(unix)]
    pub fn unix_socket(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.transport.unix = Some(path.into());
        self
    }

    /// Listens on `127.0.0.1` (a free port) and serves on the current tokio runtime
    /// (`tokio::spawn`); it must be called from within one. Dropping the [`Origin`]
    /// aborts the server's tasks.
    pub async fn start(self) -> io::Result<Origin> {
        Origin::spawn_task(self.settings, self.transport)
    }

    /// Listens on `127.0.0.1` (a free port) and serves on a new OS thread with its
    /// own current-thread runtime, so a caller that blocks its runtime, or pauses its
    /// clock, does not stop or slow the server. Returns once the origin listens;
    /// dropping the [`Origin`] stops the runtime (closing every socket) and joins the
    /// thread.
    pub fn start_on_thread(self) -> io::Result<Origin> {
        Origin::spawn_thread(self.settings, self.transport)
    }
}
