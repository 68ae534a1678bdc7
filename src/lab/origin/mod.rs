//! [`Origin`]: the lab's HTTP/1.1 server on raw tokio sockets, and the crate's test
//! server. It sits at the far end of an experiment (client → [`Relay`](crate::lab::Relay)
//! → origin) and counts, on the server side, what it executed.
//!
//! `config` holds the knobs, `builder` the extra knobs and the two ways to run it,
//! `run` the listener and accept loop, `conn` one connection, `read` and `request`
//! how a request is read (with `httparse`), `response` what is written back, `stats`
//! what is counted.

mod builder;
mod config;
mod conn;
mod read;
mod request;
mod response;
mod run;
mod stats;
mod stream;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

pub use builder::OriginBuilder;
pub use config::{Fault, OriginConfig};
pub use stats::RecordedBody;

use config::Settings;
use run::Runner;
use stats::{lock, Stats};
use stream::Transport;

/// An HTTP/1.1 server on `127.0.0.1` that closes idle keep-alive connections on a
/// precise timer and counts what it executed.
///
/// It answers every request with `200 OK` and the body `ok\n`, keeps connections alive
/// unless the request says `Connection: close` (or is HTTP/1.0 without
/// `Connection: keep-alive`), and reads `Content-Length` and chunked request bodies.
/// [`Origin::builder`] adds what fault tests need: [`Fault`]s per request id, a
/// verbatim `Keep-Alive` header, stray bytes at an idle close, random delays, and a
/// thread of its own.
///
/// A request *executes* (is a *handler call*) once it has been read in full, before
/// the response is written; executions are counted per `x-request-id` header, so an
/// experiment can tell a request that was lost from one that ran twice
/// ([`duplicates`](Origin::duplicates)).
///
/// Dropping the `Origin` stops it: the listener and every connection are closed. An
/// origin on the caller's runtime ([`Origin::start`]) aborts its tasks, so this happens
/// on the runtime's next turn, not inside `drop`; one on its own thread
/// ([`OriginBuilder::start_on_thread`]) is gone when `drop` returns.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use closefirst::lab::{Origin, OriginConfig};
///
/// let origin = Origin::start(OriginConfig::default()).await?;
/// println!("listening on {}", origin.addr());
/// assert_eq!(origin.handler_calls(), 0);
/// assert_eq!(origin.executions("a"), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Origin {
    addr: SocketAddr,
    /// Whether the TCP listener speaks TLS.
    tls: bool,
    stats: Arc<Stats>,
    runner: Runner,
}

impl Origin {
    /// Listens on `127.0.0.1` (a free port) and serves connections with `config`.
    ///
    /// The server runs on the current tokio runtime (`tokio::spawn`); it must be called
    /// from within one.
    pub async fn start(config: OriginConfig) -> io::Result<Origin> {
        Origin::builder(config).start().await
    }

    /// A builder for an origin that does more than `config` says; see
    /// [`OriginBuilder`].
    pub fn builder(config: OriginConfig) -> OriginBuilder {
        OriginBuilder::new(config)
    }

    fn spawn_task(settings: Settings, transport: Transport) -> io::Result<Origin> {
        let tls = transport.is_tls();
        let (listeners, addr) = run::Listeners::bind(transport)?;
        let stats = Arc::new(Stats::default());
        let runner = run::spawn_task(listeners, Arc::new(settings), Arc::clone(&stats))?;
        Ok(Origin {
            addr,
            tls,
            stats,
            runner,
        })
    }

    fn spawn_thread(settings: Settings, transport: Transport) -> io::Result<Origin> {
        let tls = transport.is_tls();
        let (listeners, addr) = run::Listeners::bind(transport)?;
        let stats = Arc::new(Stats::default());
        let runner = run::spawn_thread(listeners, addr, Arc::new(settings), Arc::clone(&stats))?;
        Ok(Origin {
            addr,
            tls,
            stats,
            runner,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` followed by `path` (`https://` for an origin with
    /// [`OriginBuilder::tls`]).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        Stats::get(&self.stats.connections)
    }

    /// Connections accepted and not yet closed by either side (as far as the server
    /// has noticed).
    pub fn open_connections(&self) -> usize {
        Stats::get(&self.stats.open_connections)
    }

    /// Requests executed so far (read in full), with or without an `x-request-id`.
    pub fn handler_calls(&self) -> usize {
        Stats::get(&self.stats.handler_calls)
    }

    /// Connections closed by the idle timer so far.
    pub fn idle_closes(&self) -> usize {
        Stats::get(&self.stats.idle_closes)
    }

    /// Connections on which the server read EOF (or a reset) from the client while
    /// the connection was idle, before its own idle timer fired.
    pub fn client_closes(&self) -> usize {
        Stats::get(&self.stats.client_closes)
    }

    /// Connections the server closed on purpose (idle timer, `Connection: close`,
    /// `close_after_requests`, a fault), counted once the FIN or RST has been sent:
    /// unlike [`open_connections`](Origin::open_connections), which drops first, this
    /// cannot be observed before the close happened.
    pub fn closes_done(&self) -> usize {
        Stats::get(&self.stats.closes_done)
    }

    /// TLS 1.3 `KeyUpdate` records written and flushed on idle connections
    /// ([`OriginBuilder::tls_key_update_when_idle`]).
    pub fn tls_key_updates(&self) -> usize {
        Stats::get(&self.stats.tls_key_updates)
    }

    /// How many times the request with `x-request-id: id` was executed.
    pub fn executions(&self, id: &str) -> usize {
        Stats::count(&self.stats.executions, id)
    }

    /// Request heads with `x-request-id: id` the server has read, whether or not the
    /// body that followed was complete (an execution needs both).
    pub fn heads_seen(&self, id: &str) -> usize {
        Stats::count(&self.stats.heads_seen, id)
    }

    /// For each request head with `x-request-id: id`, in arrival order: the body
    /// received after it.
    pub fn bodies(&self, id: &str) -> Vec<RecordedBody> {
        lock(&self.stats.bodies)
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// For each request head with `x-request-id: id`, in arrival order: its header
    /// fields as received (names lower-cased; a field `http` cannot represent is left
    /// out), so a test can assert what reached the server, such as the headers a proxy
    /// in front must strip or add.
    pub fn request_headers(&self, id: &str) -> Vec<http::HeaderMap> {
        lock(&self.stats.headers)
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// For each accepted connection, in accept order, the number of requests it
    /// executed.
    pub fn requests_per_connection(&self) -> Vec<usize> {
        lock(&self.stats.requests_per_connection).clone()
    }

    /// Extra executions of request ids: an id executed three times counts 2. Zero
    /// means no request id ran more than once.
    pub fn duplicates(&self) -> usize {
        lock(&self.stats.executions)
            .values()
            .map(|n| n.saturating_sub(1))
            .sum()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.runner.stop();
    }
}
