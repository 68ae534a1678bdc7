//! One relayed connection: everything each side sends is queued with the instant it is
//! due at the other side, and delivered then (data written, EOF as a half-close, a
//! reset as an abortive close).

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use socket2::SockRef;
use tokio::io::{Interest, Ready};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::reset;

/// Bytes read from one side in one go.
const READ_CHUNK: usize = 16 * 1024;

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
pub(super) struct Connection {
    sides: [Side; 2],
    pipes: [Pipe; 2],
    delay: Duration,
}

fn other(side: usize) -> usize {
    1 - side
}

impl Connection {
    pub(super) fn new(client: TcpStream, server: TcpStream, delay: Duration) -> Connection {
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

    pub(super) async fn run(mut self) {
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
