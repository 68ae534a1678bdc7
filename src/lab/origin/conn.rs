//! One accepted connection: read a request, count it, answer (or misbehave), and
//! close on the idle timer, on request, or after a number of requests.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::config::{Fault, Settings};
use super::request::{BodyKind, Head, Malformed};
use super::response::{self, Answer};
use super::stats::{lock, RecordedBody, Stats};
use super::stream::ServerStream;
use crate::lab::Rng;

/// Room kept free in the read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;
/// How long [`Fault::EarlyReject`] keeps reading (and discarding) the unread body
/// after its answer, so the kernel does not turn the close into a RST that could
/// destroy the answer before the client reads it (what nginx's `lingering_close` does).
const LINGER_AFTER_REJECT: Duration = Duration::from_secs(2);

/// How the origin closes a connection.
#[derive(Clone, Copy)]
enum Close {
    Fin,
    Rst,
}

/// Why reading a request stopped.
pub(super) enum Stop {
    /// The peer closed or the socket failed mid-request: just close.
    Gone,
    /// Not a request the origin understands: answer 400 and close.
    Malformed,
}

impl From<io::Error> for Stop {
    fn from(_: io::Error) -> Self {
        Stop::Gone
    }
}

impl From<Malformed> for Stop {
    fn from(_: Malformed) -> Self {
        Stop::Malformed
    }
}

/// One accepted connection.
pub(super) struct Conn {
    /// `None` once the origin has closed it.
    pub(super) stream: Option<ServerStream>,
    pub(super) buf: BytesMut,
    /// Index in accept order.
    index: usize,
    /// Requests answered (handler calls) on this connection.
    served: usize,
    stats: Arc<Stats>,
    settings: Arc<Settings>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Closed without `close()`: the peer went away, an error, or shutdown.
        if self.stream.take().is_some() {
            Stats::sub(&self.stats.open_connections);
        }
    }
}

impl Conn {
    /// Counts the connection as accepted and open.
    pub(super) fn accepted(
        stream: ServerStream,
        stats: Arc<Stats>,
        settings: Arc<Settings>,
    ) -> Conn {
        let index = Stats::add(&stats.connections);
        Stats::add(&stats.open_connections);
        lock(&stats.requests_per_connection).push(0);
        // Responses go out at once, not after a delayed ACK (TCP only).
        #[cfg(unix)]
        let tcp = !matches!(stream, ServerStream::Unix(_));
        #[cfg(not(unix))]
        let tcp = true;
        if tcp {
            if let Err(error) = stream.sock_ref().set_tcp_nodelay(true) {
                tracing::debug!(%error, "lab origin: set_nodelay failed");
            }
        }
        Conn {
            stream: Some(stream),
            buf: BytesMut::with_capacity(READ_CHUNK),
            index,
            served: 0,
            stats,
            settings,
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` is EOF (or a connection already
    /// closed by the origin).
    pub(super) async fn fill(&mut self) -> io::Result<usize> {
        self.buf.reserve(READ_CHUNK);
        match &mut self.stream {
            Some(stream) => stream.read_buf(&mut self.buf).await,
            None => Ok(0),
        }
    }

    /// Writes all of `bytes`; an error means the peer is gone.
    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.stream {
            Some(stream) => stream.write_all(bytes).await,
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Closes the connection. Counters are updated before the socket is closed, so a
    /// test that observes the close also observes them.
    async fn close(mut self, how: Close) {
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        Stats::sub(&self.stats.open_connections);
        match how {
            Close::Fin => {
                let _ = stream.shutdown().await;
            }
            Close::Rst => {
                let _ = stream.sock_ref().set_linger(Some(Duration::ZERO));
            }
        }
        drop(stream);
        Stats::add(&self.stats.closes_done);
    }

    fn client_closed(self) {
        Stats::add(&self.stats.client_closes);
        // Dropping `self` closes the socket and counts it as no longer open.
    }

    fn configured_close(&self) -> Close {
        if self.settings.close_with_rst {
            Close::Rst
        } else {
            Close::Fin
        }
    }

    /// Serves the connection until it is closed.
    pub(super) async fn run(mut self) {
        // The idle period starts at accept, then with each response's last byte.
        let mut idle_since = Instant::now();
        loop {
            if self.buf.is_empty() {
                let Some(read) = self.idle_read(idle_since).await else {
                    return self.idle_close().await;
                };
                match read {
                    Ok(0) => return self.client_closed(),
                    Ok(_) => {}
                    Err(error) if is_peer_close(&error) => return self.client_closed(),
                    Err(_) => return,
                }
            }
            let head = match self.read_head().await {
                Ok(head) => head,
                Err(Stop::Gone) => return,
                Err(Stop::Malformed) => return self.bad_request().await,
            };
            match self.serve(head).await {
                Ok(()) => idle_since = Instant::now(),
                Err(Some(ending)) => return self.end(ending).await,
                Err(None) => return,
            }
        }
    }

    /// Waits for the first bytes of the next request on a connection idle since
    /// `idle_since`; `None` when the idle timer fires first. On the way, the TLS
    /// `KeyUpdate` of [`Settings::tls_key_update_when_idle`], once.
    async fn idle_read(&mut self, idle_since: Instant) -> Option<io::Result<usize>> {
        // An idle timeout past what an `Instant` holds never fires.
        let deadline = idle_since.checked_add(self.settings.idle_timeout);
        let key_update_at = self
            .settings
            .tls_key_update_when_idle
            .and_then(|after| idle_since.checked_add(after))
            .filter(|at| deadline.is_none_or(|deadline| *at < deadline));
        if let Some(at) = key_update_at {
            // Cancelling a read loses nothing: bytes reach `buf` only when it completes.
            match tokio::time::timeout_at(at, self.fill()).await {
                Ok(read) => return Some(read),
                Err(_elapsed) => {
                    if let Err(error) = self.key_update().await {
                        return Some(Err(error));
                    }
                }
            }
        }
        match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, self.fill()).await.ok(),
            None => Some(self.fill().await),
        }
    }

    /// Writes a TLS 1.3 `KeyUpdate` record, if the connection is TLS 1.3; an error is
    /// the peer gone.
    async fn key_update(&mut self) -> io::Result<()> {
        let Some(stream) = &mut self.stream else {
            return Ok(());
        };
        match stream.refresh_tls_keys() {
            Ok(true) => {
                stream.flush().await?;
                Stats::add(&self.stats.tls_key_updates);
            }
            Ok(false) => {}
            // TLS 1.2 has no such record: nothing sent, the connection stays as it is.
            Err(error) => tracing::debug!(%error, "lab origin: no TLS key update"),
        }
        Ok(())
    }

    /// Reads the body of the request with `head`, counts it and answers. `Err` ends
    /// the connection: `Some` says how.
    async fn serve(&mut self, mut head: Head) -> Result<(), Option<Ending>> {
        if let (Some(id), Some(headers)) = (&head.id, head.headers.take()) {
            lock(&self.stats.headers)
                .entry(id.clone())
                .or_default()
                .push(headers);
        }
        let fault = head.id.as_ref().and_then(|id| {
            (Stats::bump(&self.stats.heads_seen, id) == 1)
                .then(|| self.settings.faults.get(id).cloned())
                .flatten()
        });
        if fault == Some(Fault::EarlyReject) {
            // What already arrived of the body is recorded; the rest is never read.
            let buffered = match head.body {
                BodyKind::Length(len) => self.buf[..len.min(self.buf.len())].to_vec(),
                BodyKind::Chunked => Vec::new(),
            };
            self.record_body(&head, buffered, false);
            return Err(Some(Ending::RejectEarly));
        }
        let mut body = Vec::new();
        let read = self.read_body(head.body, &mut body).await;
        self.record_body(&head, body, read.is_ok());
        match read {
            Ok(()) => {}
            Err(Stop::Gone) => return Err(None),
            Err(Stop::Malformed) => return Err(Some(Ending::BadRequest)),
        }

        // The request is in: it executes now, whatever happens to the response.
        self.served = self.served.saturating_add(1);
        Stats::add(&self.stats.handler_calls);
        if let Some(slot) = lock(&self.stats.requests_per_connection).get_mut(self.index) {
            *slot = self.served;
        }
        let id_calls = head
            .id
            .as_ref()
            .map(|id| Stats::bump(&self.stats.executions, id));
        self.delay().await;
        if let Some(fault) = fault {
            return Err(Some(Ending::Fault(fault)));
        }

        let settings = Arc::clone(&self.settings);
        let last = settings
            .close_after_requests
            .is_some_and(|max| self.served >= max);
        let close_now =
            !head.keep_alive || settings.connection_close || (last && settings.announce_close);
        let answer = Answer {
            settings: &settings,
            served: self.served,
            connection: self.index,
            id_calls,
            head_method: head.head_method,
            close: close_now,
        };
        if self.write(&answer.to_bytes()).await.is_err() {
            return Err(None);
        }
        if close_now {
            return Err(Some(Ending::Close(Close::Fin)));
        }
        if last {
            return Err(Some(Ending::Close(self.configured_close())));
        }
        Ok(())
    }

    /// The fixed response delay, then the random one.
    async fn delay(&self) {
        if !self.settings.response_delay.is_zero() {
            tokio::time::sleep(self.settings.response_delay).await;
        }
        if let Some(random) = self.settings.random_delay {
            let delay = lock(&self.stats.delay_rng)
                .get_or_insert_with(|| Rng::new(random.seed))
                .duration_between(random.min, random.max);
            tokio::time::sleep(delay).await;
        }
    }

    fn record_body(&self, head: &Head, bytes: Vec<u8>, complete: bool) {
        if let Some(id) = &head.id {
            lock(&self.stats.bodies)
                .entry(id.clone())
                .or_default()
                .push(RecordedBody { bytes, complete });
        }
    }

    async fn end(self, ending: Ending) {
        match ending {
            Ending::Close(how) => self.close(how).await,
            Ending::BadRequest => self.bad_request().await,
            Ending::RejectEarly => self.reject_early().await,
            Ending::Fault(fault) => self.misbehave(fault).await,
        }
    }
}

/// How a connection ends after a request.
enum Ending {
    Close(Close),
    BadRequest,
    RejectEarly,
    Fault(Fault),
}

/// Errors that mean the client closed (or reset) its end.
fn is_peer_close(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

// Closing on purpose, and misbehaving.
impl Conn {
    async fn idle_close(mut self) {
        Stats::add(&self.stats.idle_closes);
        let how = self.configured_close();
        if self.settings.stray_408_on_idle_close {
            let _ = self.write(response::STRAY_408).await;
        }
        self.close(how).await;
    }

    async fn bad_request(mut self) {
        let _ = self.write(response::BAD_REQUEST).await;
        self.close(Close::Fin).await;
    }

    /// Carries out `fault` for a request that has been read in full.
    async fn misbehave(mut self, fault: Fault) {
        let how = match fault {
            Fault::RstWithoutAnswer | Fault::PartialResponseThenRst | Fault::PartialHeadThenRst => {
                Close::Rst
            }
            Fault::RstWithoutAnswerThenRefuse => {
                self.stats.stop_listening.notify_one();
                self.stats.listener_closed.notified().await;
                Close::Rst
            }
            // Handled before the body is read; here only if wired oddly.
            Fault::EarlyReject => return self.reject_early().await,
            Fault::BlackHole => {
                // The task is aborted (and the socket closed) when the origin is dropped.
                return std::future::pending().await;
            }
            Fault::SwitchProtocols => return self.echo_after_101().await,
            _ => Close::Fin,
        };
        let bytes = response::fault_bytes(&fault);
        if !bytes.is_empty() && self.write(&bytes).await.is_err() {
            return;
        }
        self.close(how).await;
    }

    async fn reject_early(mut self) {
        if self.write(response::EARLY_413).await.is_err() {
            return;
        }
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        Stats::sub(&self.stats.open_connections);
        let _ = stream.shutdown().await;
        let mut sink = vec![0u8; 64 * 1024];
        let _ = tokio::time::timeout(LINGER_AFTER_REJECT, async {
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }

    async fn echo_after_101(mut self) {
        if self.write(response::SWITCHING_PROTOCOLS).await.is_err() {
            return;
        }
        loop {
            if !self.buf.is_empty() {
                let pending = self.buf.split();
                if self.write(&pending).await.is_err() {
                    return;
                }
            }
            match self.fill().await {
                Ok(0) | Err(_) => return self.close(Close::Fin).await,
                Ok(_) => {}
            }
        }
    }
}
