//! A TCP relay that delays everything it forwards, like a network with latency.
//!
//! This file holds the listener and its lifetime; `connection` holds what happens on
//! one relayed connection (the delayed delivery of data, FIN and RST).

mod connection;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use connection::Connection;

/// Pause after a failed `accept` (out of file descriptors, say) before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// The longest delay [`Relay::start`] accepts: far more than any network a lab
/// imitates, and short enough that no deadline computed from it can overflow.
const MAX_ONE_WAY_DELAY: Duration = Duration::from_secs(60 * 60);

/// A TCP relay on `127.0.0.1` that delivers every byte, FIN and RST `one_way_delay`
/// after it saw it, in both directions.
///
/// Each accepted connection gets its own connection to the upstream address. What one
/// side sends reaches the other side `one_way_delay` later, in order:
///
/// * data is written to the other side;
/// * an orderly close (EOF) becomes a half-close (`shutdown(Write)`) of the other side,
///   while the opposite direction keeps flowing;
/// * a reset (`ECONNRESET`, or a reset noticed after EOF) becomes an abortive close
///   (`SO_LINGER` 0, RST) of the other side, which ends the relayed connection;
/// * data that cannot be written because the other side is gone resets the sender,
///   `one_way_delay` later, as the other side's kernel would have.
///
/// Dropping the `Relay` stops it: the listener and every relayed connection are closed
/// (the tasks are aborted, so this happens on the runtime's next turn, not inside
/// `drop`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use std::time::Duration;
/// use closefirst::lab::{Origin, OriginConfig, Relay};
///
/// let origin = Origin::start(OriginConfig::default()).await?;
/// let relay = Relay::start(origin.addr(), Duration::from_millis(20)).await?;
/// // Connect to `relay.addr()` instead of `origin.addr()`: 40 ms more per round trip.
/// assert_ne!(relay.addr(), origin.addr());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    upstream: SocketAddr,
    one_way_delay: Duration,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Listens on `127.0.0.1` (a free port) and relays every accepted connection to
    /// `upstream`, delaying each direction by `one_way_delay`.
    ///
    /// The relay runs on the current tokio runtime (`tokio::spawn`); it must be called
    /// from within one.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] when `one_way_delay` is longer than 1 hour;
    /// otherwise the error of binding the listener.
    pub async fn start(upstream: SocketAddr, one_way_delay: Duration) -> io::Result<Relay> {
        if one_way_delay > MAX_ONE_WAY_DELAY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "relay one_way_delay must be at most {} s (got {} ms)",
                    MAX_ONE_WAY_DELAY.as_secs(),
                    one_way_delay.as_millis()
                ),
            ));
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept_loop(
            listener,
            upstream,
            one_way_delay,
            Arc::clone(&connections),
        ));
        Ok(Relay {
            addr,
            upstream,
            one_way_delay,
            connections,
            task,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address each relayed connection is forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// The delay added in each direction.
    pub fn one_way_delay(&self) -> Duration {
        self.one_way_delay
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The accept task owns the listener and the `JoinSet` of relayed connections;
        // aborting it drops both, which aborts every connection task and closes its
        // sockets.
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    delay: Duration,
    connections: Arc<AtomicUsize>,
) {
    let mut relayed = JoinSet::new();
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(error) => {
                tracing::warn!(%error, "lab relay: accept failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        connections.fetch_add(1, Ordering::Relaxed);
        // Reap finished connections so the set does not grow with every accept.
        while relayed.try_join_next().is_some() {}
        relayed.spawn(async move {
            match TcpStream::connect(upstream).await {
                Ok(server) => Connection::new(client, server, delay).run().await,
                Err(error) => {
                    tracing::debug!(%error, %upstream, "lab relay: upstream connect failed");
                    // The client learns it the way it would from a refusing server.
                    reset(client);
                }
            }
        });
    }
}

/// Closes `stream` abortively: the peer gets a RST.
pub(super) fn reset(stream: TcpStream) {
    if let Err(error) = SockRef::from(&stream).set_linger(Some(Duration::ZERO)) {
        tracing::debug!(%error, "lab relay: SO_LINGER 0 failed; closing with FIN");
    }
    drop(stream);
}
