//! A TCP relay that delays everything it forwards, like a network with latency.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use socket2::SockRef;
use tokio::io::{Interest, Ready};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Bytes read from one side in one go.
const READ_CHUNK: usize = 16 * 1024;
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
fn reset(stream: TcpStream) {
    if let Err(error) = SockRef::from(&stream).set_linger(Some(Duration::ZERO)) {
        tracing::debug!(%error, "lab relay: SO_LINGER 0 failed; closing with FIN");
    }
    drop(stream);
}

/// Something one side did, on its way to the other side.
#[derive(Debug)]
enum Event {
    Data(Bytes),
    Eof,
    Reset,
}

/// One socket of a relayed connection.
#[derive(Debug)]
struct Side {
    stream: TcpStream,
    /// Still reading: no EOF and no reset from this side yet.
    reading: bool,
    /// Reset (by its peer, or a write to it failed). Nothing more is read from or
    /// written to it.
    dead: bool,
}

/// Events travelling toward one side, each with the instant it is due there.
#[derive(Debug, Default)]
struct Pipe {
    queue: VecDeque<(Instant, Event)>,
    /// Bytes of the `Data` at the head of `queue` already written.
    written: usize,
    /// The head is due but the socket's send buffer is full.
    blocked: bool,
}

/// Why the wait in [`Connection::run`] ended.
enum Wake {
    Side(usize, io::Result<Ready>),
    Due,
}

/// A relayed connection: side 0 is the client, side 1 the upstream server.
/// `pipes[i]` holds the events travelling toward `sides[i]`.
struct Connection {
    sides: [Side; 2],
    pipes: [Pipe; 2],
    delay: Duration,
}

fn other(side: usize) -> usize {
    1 - side
}

impl Connection {
    fn new(client: TcpStream, server: TcpStream, delay: Duration) -> Connection {
        let side = |stream: TcpStream| {
            // Without it, Nagle and delayed ACKs add up to 40 ms on loopback and the
            // delay would no longer be the one asked for.
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "lab relay: TCP_NODELAY failed");
            }
            Side {
                stream,
                reading: true,
                dead: false,
            }
        };
        Connection {
            sides: [side(client), side(server)],
            pipes: [Pipe::default(), Pipe::default()],
            delay,
        }
    }

    async fn run(mut self) {
        loop {
            for to in 0..2 {
                if let Some(reset_side) = self.deliver_due(to) {
                    let [client, server] = self.sides;
                    let (target, gone) = if reset_side == 0 {
                        (client, server)
                    } else {
                        (server, client)
                    };
                    reset(target.stream);
                    drop(gone);
                    return;
                }
            }
            if self.finished() {
                return;
            }
            let wake = {
                let interest = |i: usize| {
                    let side = &self.sides[i];
                    if side.dead {
                        return None;
                    }
                    // A side that sent EOF is still watched for a later reset (the
                    // kernel reports it as an error, since reads only return 0 now).
                    let mut interest = Interest::ERROR;
                    if side.reading {
                        interest |= Interest::READABLE;
                    }
                    if self.pipes[i].blocked {
                        interest |= Interest::WRITABLE;
                    }
                    Some(side.stream.ready(interest))
                };
                let mut ready0 = pin!(interest(0));
                let mut ready1 = pin!(interest(1));
                let next_due = self
                    .pipes
                    .iter()
                    .filter(|pipe| !pipe.blocked)
                    .filter_map(|pipe| pipe.queue.front().map(|(at, _)| *at))
                    .min();
                let mut due = pin!(next_due.map(tokio::time::sleep_until));
                poll_fn(|cx| {
                    if let Some(ready) = ready0.as_mut().as_pin_mut() {
                        if let Poll::Ready(result) = ready.poll(cx) {
                            return Poll::Ready(Wake::Side(0, result));
                        }
                    }
                    if let Some(ready) = ready1.as_mut().as_pin_mut() {
                        if let Poll::Ready(result) = ready.poll(cx) {
                            return Poll::Ready(Wake::Side(1, result));
                        }
                    }
                    if let Some(sleep) = due.as_mut().as_pin_mut() {
                        if sleep.poll(cx).is_ready() {
                            return Poll::Ready(Wake::Due);
                        }
                    }
                    Poll::Pending
                })
                .await
            };
            match wake {
                Wake::Due => {}
                Wake::Side(i, Err(error)) => {
                    tracing::debug!(%error, side = i, "lab relay: readiness failed");
                    self.kill(i);
                }
                Wake::Side(i, Ok(ready)) => {
                    if ready.is_writable() {
                        self.pipes[i].blocked = false;
                    }
                    // Read even on an error: data sent before the reset comes first,
                    // and the read then returns the error itself.
                    let mut nothing_read = true;
                    if self.sides[i].reading
                        && (ready.is_readable() || ready.is_read_closed() || ready.is_error())
                    {
                        nothing_read = !self.read(i);
                    }
                    // After EOF a reset shows only as an error (reads return 0). An error
                    // that no read reports must end the side too, or the readiness would
                    // wake this loop forever.
                    if ready.is_error() && nothing_read {
                        self.kill(i);
                    }
                }
            }
        }
    }

    /// Everything is said and delivered: both sides sent EOF and nothing is in flight.
    fn finished(&self) -> bool {
        self.sides.iter().all(|side| !side.reading) && self.pipes.iter().all(|p| p.queue.is_empty())
    }

    /// Reads one chunk from side `from` and queues what it got (data, EOF or reset)
    /// toward the other side. Returns `false` when there was nothing to read yet.
    fn read(&mut self, from: usize) -> bool {
        let mut buf = [0; READ_CHUNK];
        match self.sides[from].stream.try_read(&mut buf) {
            Ok(0) => {
                self.sides[from].reading = false;
                self.send(other(from), Event::Eof);
            }
            Ok(n) => {
                let data = Bytes::copy_from_slice(&buf[..n]);
                self.send(other(from), Event::Data(data));
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return false,
            Err(error) => {
                tracing::debug!(%error, side = from, "lab relay: read failed");
                self.kill(from);
            }
        }
        true
    }

    /// Queues `event` toward side `to`, due one delay from now.
    fn send(&mut self, to: usize, event: Event) {
        let now = Instant::now();
        // `start` caps the delay at an hour, so this cannot overflow; were it to,
        // delivering at once beats a panic in the relay task.
        let at = now.checked_add(self.delay).unwrap_or(now);
        self.pipes[to].queue.push_back((at, event));
    }

    /// Side `side` was reset: stop using it and send the reset on to the other side.
    fn kill(&mut self, side: usize) {
        if self.sides[side].dead {
            return;
        }
        self.sides[side].dead = true;
        self.sides[side].reading = false;
        // What was waiting to be written to it is discarded, not waited for.
        self.pipes[side].blocked = false;
        self.send(other(side), Event::Reset);
    }

    /// Performs the due events toward side `to`, in order, as far as the socket lets
    /// it. Returns `Some(to)` when a reset is due there, which ends the connection.
    fn deliver_due(&mut self, to: usize) -> Option<usize> {
        let now = Instant::now();
        loop {
            let pipe = &mut self.pipes[to];
            let (at, event) = pipe.queue.front()?;
            if *at > now || pipe.blocked {
                return None;
            }
            match event {
                Event::Reset => return Some(to),
                Event::Eof => {
                    if !self.sides[to].dead {
                        let sock = SockRef::from(&self.sides[to].stream);
                        if let Err(error) = sock.shutdown(std::net::Shutdown::Write) {
                            tracing::debug!(%error, side = to, "lab relay: shutdown failed");
                        }
                    }
                    pipe.queue.pop_front();
                }
                Event::Data(bytes) => {
                    if self.sides[to].dead {
                        pipe.queue.pop_front();
                        pipe.written = 0;
                        continue;
                    }
                    match self.sides[to].stream.try_write(&bytes[pipe.written..]) {
                        Ok(n) => {
                            pipe.written += n;
                            if pipe.written == bytes.len() {
                                pipe.queue.pop_front();
                                pipe.written = 0;
                            }
                        }
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                            pipe.blocked = true;
                            return None;
                        }
                        Err(error) => {
                            // The other side is gone; its kernel would answer the
                            // sender's data with a RST, one delay from now.
                            tracing::debug!(%error, side = to, "lab relay: write failed");
                            pipe.queue.pop_front();
                            pipe.written = 0;
                            self.kill(to);
                        }
                    }
                }
            }
        }
    }
}
