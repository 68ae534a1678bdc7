//! A small raw-tokio HTTP/1.1 server for the integration tests.
//!
//! The server runs on its own OS thread with its own current-thread tokio
//! runtime, so a test that blocks its own runtime (or runs with paused time)
//! does not stop the server. It listens on `127.0.0.1:0` and shuts itself
//! down (listener and every connection closed, thread joined) when the
//! [`TestServer`] handle is dropped.

// Each test binary uses a subset of this module; the items are `pub` but the
// module is private to each test crate.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// Largest request head (request line plus headers) the server accepts.
const MAX_HEAD: usize = 64 * 1024;
/// Largest single line (chunk-size line or trailer) in a chunked body.
const MAX_LINE: usize = 8 * 1024;
/// Written before an idle close when `stray_bytes_on_idle_close` is set.
const STRAY_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
/// Written for `partial_response_then_rst` before the reset.
const PARTIAL_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc";
/// Written for `partial_head_then_rst` before the reset: not even a whole status line
/// and headers, so the client has response bytes but no response.
const PARTIAL_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-len";
/// Answer to a request the server cannot parse.
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
/// Written for [`Fault::PartialHeadThenClose`]: part of a status line and headers.
const PARTIAL_HEAD_FIN: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nx-par";
/// Written for [`Fault::HalfBodyThenClose`]: a whole head announcing 10 bytes, and 5.
const HALF_BODY: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello";
/// Written for [`Fault::GarbageStatusLine`].
const GARBAGE_STATUS: &[u8] = b"HTTP/1.1 2xx nonsense\r\n\r\n";
/// Written for [`Fault::NotHttp`].
const NOT_HTTP: &[u8] = b"FOO\r\n\r\n";
/// Written for [`Fault::ConflictingContentLength`].
const CONFLICTING_LENGTHS: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 5\r\n\r\nabcde";
/// Written for [`Fault::EarlyReject`] after the request head, before its body is read.
const EARLY_413: &[u8] =
    b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
/// Written for [`Fault::SwitchProtocols`]; the connection then echoes every byte.
const SWITCHING_PROTOCOLS: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n";
/// Total size of the header lines written for [`Fault::HugeHeaders`].
pub const HUGE_HEADERS_BYTES: usize = 1024 * 1024;
/// How long [`Fault::EarlyReject`] keeps reading (and discarding) the unread body
/// after its answer, so the kernel does not turn the close into a RST that could
/// destroy the answer before the client reads it (what nginx's `lingering_close` does).
const LINGER_AFTER_REJECT: Duration = Duration::from_secs(2);

/// A misbehaviour of the server for one request id, applied the first time the
/// `x-request-id` is seen (the head is read); later requests with the same id are
/// answered normally, so a resend succeeds.
///
/// Unless said otherwise the request (head and body) is read in full and counted as a
/// handler call first, and "close" is an orderly close (FIN).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Close (FIN) without answering.
    FinWithoutAnswer,
    /// Close with RST (`SO_LINGER` 0) without answering.
    RstWithoutAnswer,
    /// Write a status line and part of the headers, then close.
    PartialHeadThenClose,
    /// Write a whole head (`content-length: 10`) and 5 bytes of body, then close.
    HalfBodyThenClose,
    /// Write `HTTP/1.1 2xx nonsense` and a blank line, then close.
    GarbageStatusLine,
    /// Write `FOO` and a blank line, then close.
    NotHttp,
    /// Write a status line and 1 MiB ([`HUGE_HEADERS_BYTES`]) of header lines, then
    /// close.
    HugeHeaders,
    /// Answer with two different `Content-Length` headers, then close.
    ConflictingContentLength,
    /// After the request head only, answer `413` with `Connection: close`, then close;
    /// the body is never read (not counted as a handler call). The server keeps
    /// discarding input for up to 2 s after its FIN, as real servers do, so the
    /// client can read the answer.
    EarlyReject,
    /// Never answer and keep the connection open until the server is dropped.
    BlackHole,
    /// Answer `101 Switching Protocols`, then echo every byte received until EOF.
    SwitchProtocols,
    /// Stop listening (new connections are refused; open ones are served), then
    /// close with RST without answering: a resend cannot connect.
    RstWithoutAnswerThenRefuse,
    /// Write a truncated response (`content-length: 100`, body `abc`), then RST.
    PartialResponseThenRst,
    /// Write part of a response head, then RST.
    PartialHeadThenRst,
}

/// How the server closes a connection for `idle_close` and
/// `close_after_requests`.
#[derive(Clone, Debug, Default)]
pub enum CloseMode {
    /// Orderly close: the client sees EOF.
    #[default]
    Fin,
    /// Abortive close (`SO_LINGER` 0): the client sees `ECONNRESET`.
    Rst,
}

/// Behaviour of a [`TestServer`].
#[derive(Clone, Debug, Default)]
pub struct ServerConfig {
    /// Close a connection that has been idle (no byte of a new request) this
    /// long after the last response was written, or after accept.
    pub idle_close: Option<Duration>,
    /// How `idle_close` and `close_after_requests` close the connection.
    pub close_mode: CloseMode,
    /// If set, every response carries `Keep-Alive: <value>` verbatim.
    pub keep_alive_header: Option<String>,
    /// If true, every response carries `Connection: close` and the server
    /// closes (FIN) after writing it.
    pub connection_close: bool,
    /// Close (with `close_mode`) after answering this many requests on a
    /// connection. The last response does not announce the close.
    pub close_after_requests: Option<usize>,
    /// At `idle_close`, write a `408 Request Timeout` response before closing.
    pub stray_bytes_on_idle_close: bool,
    /// Wait this long before answering each request (applies to every way of
    /// answering, including `rst_without_answer` and
    /// `partial_response_then_rst`).
    pub response_delay: Option<Duration>,
    /// Request ids (`x-request-id`) for which, the first time the id is seen,
    /// the server reads the full request, counts the handler call, then
    /// closes with RST without answering.
    pub rst_without_answer: Vec<String>,
    /// Request ids for which, the first time the id is seen, the server writes
    /// a truncated response (`content-length: 100`, body `abc`) and then
    /// closes with RST.
    pub partial_response_then_rst: Vec<String>,
    /// Request ids for which, the first time, the server writes part of a response
    /// head and then closes with RST.
    pub partial_head_then_rst: Vec<String>,
    /// Misbehaviours by request id (`x-request-id`), applied the first time the id
    /// is seen. See [`Fault`]. (The three lists above are older spellings of
    /// [`Fault::RstWithoutAnswer`], [`Fault::PartialResponseThenRst`] and
    /// [`Fault::PartialHeadThenRst`], applied on the first handler call.)
    pub faults: HashMap<String, Fault>,
    /// If set, wait a random time in `lo..=hi` before answering each request (after
    /// `response_delay`), drawn from a PRNG seeded with `delay_seed`.
    pub response_delay_range: Option<(Duration, Duration)>,
    /// Seed of the `response_delay_range` PRNG.
    pub delay_seed: u64,
    /// With `close_after_requests`: announce the close with `Connection: close` on the
    /// last response (and close with FIN whatever `close_mode` says).
    pub announce_close_after_requests: bool,
}

/// A small seeded PRNG (splitmix64) for reproducible random timings in tests.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..=max` (slightly biased; fine for timings).
    pub fn up_to(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(n) => self.next_u64() % n,
            None => self.next_u64(),
        }
    }

    /// A duration in `lo..=hi` with microsecond resolution (`lo` when `hi < lo`).
    pub fn duration_between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo);
        let micros = u64::try_from(span.as_micros()).unwrap_or(u64::MAX);
        lo.saturating_add(Duration::from_micros(self.up_to(micros)))
    }
}

/// The body bytes the server received for one request head, and whether the body
/// was complete.
pub type ReceivedBody = (Vec<u8>, bool);

/// Counters shared between the server thread and the test.
#[derive(Default)]
struct State {
    connections_accepted: AtomicUsize,
    open_connections: AtomicUsize,
    handler_calls: AtomicUsize,
    client_closed_first: AtomicUsize,
    server_closed_idle: AtomicUsize,
    /// Closes by the server (through `Conn::close`) whose FIN or RST has been sent.
    closes_done: AtomicUsize,
    calls_per_id: Mutex<HashMap<String, usize>>,
    /// Request heads read per id, complete or not.
    seen_per_id: Mutex<HashMap<String, usize>>,
    /// Body bytes received per id, one entry per request head, and whether the body
    /// was complete.
    bodies_per_id: Mutex<HashMap<String, Vec<ReceivedBody>>>,
    requests_per_connection: Mutex<Vec<usize>>,
    /// `None` until the first random delay is drawn.
    delay_rng: Mutex<Option<Rng>>,
    /// Asks the accept loop to close the listener.
    stop_listening: tokio::sync::Notify,
    /// The accept loop closed the listener.
    listener_closed: tokio::sync::Notify,
}

/// Locks a mutex, ignoring poisoning (a panicking test must not hide the
/// counters from another assertion).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Handle to a running test server. Dropping it stops the server and joins
/// its thread.
pub struct TestServer {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl TestServer {
    /// Binds `127.0.0.1:0`, starts the server thread and returns once the
    /// server is listening.
    pub fn start(config: ServerConfig) -> TestServer {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
            .expect("test server: socket");
        let bind = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
        socket.bind(&bind.into()).expect("test server: bind");
        socket.listen(1024).expect("test server: listen");
        socket
            .set_nonblocking(true)
            .expect("test server: set_nonblocking");
        let listener: std::net::TcpListener = socket.into();
        let addr = listener.local_addr().expect("test server: local_addr");

        let state = Arc::new(State::default());
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name(format!("test-server-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("test server: runtime");
                rt.block_on(async move {
                    let listener =
                        TcpListener::from_std(listener).expect("test server: register listener");
                    let _ = ready_tx.send(());
                    serve(listener, Arc::new(config), thread_state, shutdown_rx).await;
                });
            })
            .expect("test server: spawn thread");
        ready_rx
            .recv()
            .expect("test server: thread failed to start");

        TestServer {
            addr,
            state,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.state.connections_accepted.load(Ordering::SeqCst)
    }

    /// Connections accepted and not yet closed by either side (as far as the
    /// server has noticed).
    pub fn open_connections(&self) -> usize {
        self.state.open_connections.load(Ordering::SeqCst)
    }

    /// Requests fully read, including those answered with a reset.
    pub fn handler_calls(&self) -> usize {
        self.state.handler_calls.load(Ordering::SeqCst)
    }

    /// Handler calls whose `x-request-id` equals `request_id`.
    pub fn calls_for(&self, request_id: &str) -> usize {
        lock(&self.state.calls_per_id)
            .get(request_id)
            .copied()
            .unwrap_or(0)
    }

    /// Connections the server closed on purpose (idle close, `Connection: close`,
    /// `close_after_requests`, a fault), counted only once the FIN or RST has been
    /// sent: unlike [`TestServer::open_connections`], which drops first, this cannot
    /// be observed before the close happened.
    pub fn closes_done(&self) -> usize {
        self.state.closes_done.load(Ordering::SeqCst)
    }

    /// Request heads with this `x-request-id` the server has read, whether or not the
    /// body that followed was complete (a handler call needs both).
    pub fn seen_for(&self, request_id: &str) -> usize {
        lock(&self.state.seen_per_id)
            .get(request_id)
            .copied()
            .unwrap_or(0)
    }

    /// For each request head with this `x-request-id`, in arrival order: the body
    /// bytes received and whether the body was complete. Only a complete one was
    /// counted as a handler call.
    pub fn bodies_for(&self, request_id: &str) -> Vec<ReceivedBody> {
        lock(&self.state.bodies_per_id)
            .get(request_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Connections on which the server read EOF (or a reset) from the client
    /// while the connection was idle, before its own idle timer fired.
    pub fn client_closed_first(&self) -> usize {
        self.state.client_closed_first.load(Ordering::SeqCst)
    }

    /// Connections the server closed because `idle_close` fired.
    pub fn server_closed_idle(&self) -> usize {
        self.state.server_closed_idle.load(Ordering::SeqCst)
    }

    /// For each accepted connection, in accept order, the number of requests
    /// it served.
    pub fn requests_per_connection(&self) -> Vec<usize> {
        lock(&self.state.requests_per_connection).clone()
    }

    /// Polls `what` every 5 ms (blocking the calling thread) until it holds or
    /// `timeout` elapses; returns whether it held.
    pub fn wait_until(&self, what: impl Fn(&TestServer) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if what(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Like [`TestServer::wait_until`] but sleeps with `tokio::time::sleep`.
    /// The deadline is measured in real time, not on tokio's clock.
    pub async fn wait_until_async(
        &self,
        what: impl Fn(&TestServer) -> bool,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if what(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() && !std::thread::panicking() {
                panic!("test server thread panicked");
            }
        }
    }
}

/// Accept loop. Returns (with every connection closed) on shutdown.
async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    state: Arc<State>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut conns = JoinSet::new();
    let mut listener = Some(listener);
    loop {
        tokio::select! {
            // Either a shutdown signal or the handle vanished.
            _ = &mut shutdown => break,
            _ = state.stop_listening.notified(), if listener.is_some() => {
                listener = None;
                state.listener_closed.notify_one();
            }
            accepted = accept(listener.as_ref()) => match accepted {
                Ok((stream, _peer)) => {
                    let index = state.connections_accepted.fetch_add(1, Ordering::SeqCst);
                    state.open_connections.fetch_add(1, Ordering::SeqCst);
                    lock(&state.requests_per_connection).push(0);
                    let conn = Conn {
                        stream: Some(stream),
                        buf: BytesMut::with_capacity(8 * 1024),
                        index,
                        served: 0,
                        state: Arc::clone(&state),
                        config: Arc::clone(&config),
                    };
                    conns.spawn(conn.run());
                }
                Err(_) => {
                    // e.g. EMFILE; back off briefly instead of spinning.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            },
            Some(done) = conns.join_next(), if !conns.is_empty() => {
                if let Err(err) = done {
                    if err.is_panic() {
                        std::panic::resume_unwind(err.into_panic());
                    }
                }
            }
        }
    }
    drop(listener);
    // Aborts every connection task; dropping a task drops (closes) its socket.
    conns.shutdown().await;
}

/// Accepts on `listener`; never completes once it is closed.
async fn accept(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Why reading a request stopped.
enum ReadError {
    /// The peer closed or the socket failed mid-request: just close.
    Gone,
    /// The bytes are not a request we understand: answer 400 and close.
    Malformed,
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Gone
    }
}

/// How the request body is delimited.
enum BodyKind {
    Length(usize),
    Chunked,
}

/// The parts of a request head the server cares about.
struct Head {
    request_id: Option<String>,
    close: bool,
    body: BodyKind,
}

/// How a connection is closed by the server.
#[derive(Clone, Copy)]
enum Close {
    Fin,
    Rst,
}

impl From<&CloseMode> for Close {
    fn from(mode: &CloseMode) -> Self {
        match mode {
            CloseMode::Fin => Close::Fin,
            CloseMode::Rst => Close::Rst,
        }
    }
}

/// One accepted connection.
struct Conn {
    /// `None` once the server has closed it.
    stream: Option<TcpStream>,
    buf: BytesMut,
    index: usize,
    served: usize,
    state: Arc<State>,
    config: Arc<ServerConfig>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Closed without `close()` (peer went away, error, or shutdown).
        if self.stream.take().is_some() {
            self.state.open_connections.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Conn {
    fn stream(&mut self) -> &mut TcpStream {
        self.stream.as_mut().expect("connection already closed")
    }

    /// Reads more bytes into the buffer; `Ok(0)` is EOF.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(8 * 1024);
        }
        let Conn { stream, buf, .. } = self;
        let stream = stream.as_mut().expect("connection already closed");
        stream.read_buf(buf).await
    }

    /// Closes the connection. Counters are updated before the socket is
    /// closed, so a test that observes the close also observes them.
    async fn close(mut self, how: Close) {
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        self.state.open_connections.fetch_sub(1, Ordering::SeqCst);
        match how {
            Close::Fin => {
                let _ = stream.shutdown().await;
            }
            Close::Rst => {
                let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            }
        }
        drop(stream);
        self.state.closes_done.fetch_add(1, Ordering::SeqCst);
    }

    async fn run(mut self) {
        loop {
            // Idle: wait for the first byte of the next request.
            if self.buf.is_empty() {
                let idle_close = self.config.idle_close;
                let read = match idle_close {
                    Some(limit) => match tokio::time::timeout(limit, self.fill()).await {
                        Ok(read) => read,
                        Err(_elapsed) => return self.idle_close().await,
                    },
                    None => self.fill().await,
                };
                match read {
                    Ok(0) => return self.client_closed_first(),
                    Ok(_) => {}
                    Err(err) if is_peer_close(&err) => return self.client_closed_first(),
                    Err(_) => return,
                }
            }

            let head = match self.read_head().await {
                Ok(head) => head,
                Err(ReadError::Gone) => return,
                Err(ReadError::Malformed) => return self.bad_request().await,
            };
            let fault = head.request_id.as_ref().and_then(|id| {
                let mut seen = lock(&self.state.seen_per_id);
                let count = seen.entry(id.clone()).or_insert(0);
                *count += 1;
                if *count == 1 {
                    self.config.faults.get(id).cloned()
                } else {
                    None
                }
            });

            if fault == Some(Fault::EarlyReject) {
                // What already arrived of the body is recorded; the rest is never read.
                let buffered = match head.body {
                    BodyKind::Length(len) => self.buf[..len.min(self.buf.len())].to_vec(),
                    BodyKind::Chunked => Vec::new(),
                };
                self.record_body(&head, buffered, false);
                return self.reject_early().await;
            }

            let mut body = Vec::new();
            let read = self.read_body(&head.body, &mut body).await;
            self.record_body(&head, body, read.is_ok());
            match read {
                Ok(()) => {}
                Err(ReadError::Gone) => return,
                Err(ReadError::Malformed) => return self.bad_request().await,
            }

            // The handler call: counted before anything is written.
            self.served += 1;
            self.state.handler_calls.fetch_add(1, Ordering::SeqCst);
            lock(&self.state.requests_per_connection)[self.index] = self.served;
            let id_calls = head.request_id.as_ref().map(|id| {
                let mut per_id = lock(&self.state.calls_per_id);
                let count = per_id.entry(id.clone()).or_insert(0);
                *count += 1;
                *count
            });
            let first_time = |list: &[String]| match (&head.request_id, id_calls) {
                (Some(id), Some(1)) => list.iter().any(|x| x == id),
                _ => false,
            };
            let fault = if fault.is_some() {
                fault
            } else if first_time(&self.config.rst_without_answer) {
                Some(Fault::RstWithoutAnswer)
            } else if first_time(&self.config.partial_response_then_rst) {
                Some(Fault::PartialResponseThenRst)
            } else if first_time(&self.config.partial_head_then_rst) {
                Some(Fault::PartialHeadThenRst)
            } else {
                None
            };

            if let Some(delay) = self.config.response_delay {
                tokio::time::sleep(delay).await;
            }
            if let Some((lo, hi)) = self.config.response_delay_range {
                let delay = {
                    let mut rng = lock(&self.state.delay_rng);
                    rng.get_or_insert_with(|| Rng::new(self.config.delay_seed))
                        .duration_between(lo, hi)
                };
                tokio::time::sleep(delay).await;
            }

            if let Some(fault) = fault {
                return self.misbehave(fault).await;
            }

            let last = self
                .config
                .close_after_requests
                .is_some_and(|max| self.served >= max);
            let close_now = head.close
                || self.config.connection_close
                || (last && self.config.announce_close_after_requests);
            let response = self.response(id_calls, close_now);
            if self.stream().write_all(&response).await.is_err() {
                return;
            }
            if close_now {
                return self.close(Close::Fin).await;
            }
            if last {
                let how = Close::from(&self.config.close_mode);
                return self.close(how).await;
            }
        }
    }

    fn record_body(&self, head: &Head, bytes: Vec<u8>, complete: bool) {
        if let Some(id) = &head.request_id {
            lock(&self.state.bodies_per_id)
                .entry(id.clone())
                .or_default()
                .push((bytes, complete));
        }
    }

    /// Carries out `fault` for a request that has been read in full.
    async fn misbehave(mut self, fault: Fault) {
        let (bytes, how): (Vec<u8>, Close) = match fault {
            Fault::FinWithoutAnswer => (Vec::new(), Close::Fin),
            Fault::RstWithoutAnswer => (Vec::new(), Close::Rst),
            Fault::PartialHeadThenClose => (PARTIAL_HEAD_FIN.to_vec(), Close::Fin),
            Fault::HalfBodyThenClose => (HALF_BODY.to_vec(), Close::Fin),
            Fault::GarbageStatusLine => (GARBAGE_STATUS.to_vec(), Close::Fin),
            Fault::NotHttp => (NOT_HTTP.to_vec(), Close::Fin),
            Fault::HugeHeaders => (huge_headers(), Close::Fin),
            Fault::ConflictingContentLength => (CONFLICTING_LENGTHS.to_vec(), Close::Fin),
            Fault::PartialResponseThenRst => (PARTIAL_RESPONSE.to_vec(), Close::Rst),
            Fault::PartialHeadThenRst => (PARTIAL_HEAD.to_vec(), Close::Rst),
            // Handled before the body is read; here only if a test wires it oddly.
            Fault::EarlyReject => return self.reject_early().await,
            Fault::BlackHole => {
                // The task is aborted (and the socket closed) when the server is dropped.
                std::future::pending::<()>().await;
                return;
            }
            Fault::SwitchProtocols => return self.echo_after_101().await,
            Fault::RstWithoutAnswerThenRefuse => {
                self.state.stop_listening.notify_one();
                self.state.listener_closed.notified().await;
                (Vec::new(), Close::Rst)
            }
        };
        if !bytes.is_empty() && self.stream().write_all(&bytes).await.is_err() {
            return;
        }
        self.close(how).await;
    }

    async fn reject_early(mut self) {
        if self.stream().write_all(EARLY_413).await.is_err() {
            return;
        }
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        self.state.open_connections.fetch_sub(1, Ordering::SeqCst);
        let _ = stream.shutdown().await;
        let mut sink = vec![0u8; 64 * 1024];
        let _ = tokio::time::timeout(LINGER_AFTER_REJECT, async {
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }

    async fn echo_after_101(mut self) {
        if self.stream().write_all(SWITCHING_PROTOCOLS).await.is_err() {
            return;
        }
        loop {
            if !self.buf.is_empty() {
                let pending = self.buf.split();
                if self.stream().write_all(&pending).await.is_err() {
                    return;
                }
            }
            match self.fill().await {
                Ok(0) | Err(_) => return self.close(Close::Fin).await,
                Ok(_) => {}
            }
        }
    }

    fn client_closed_first(self) {
        self.state
            .client_closed_first
            .fetch_add(1, Ordering::SeqCst);
        // Dropping `self` closes the socket and updates `open_connections`.
    }

    async fn idle_close(mut self) {
        self.state.server_closed_idle.fetch_add(1, Ordering::SeqCst);
        let how = Close::from(&self.config.close_mode);
        if self.config.stray_bytes_on_idle_close {
            let _ = self.stream().write_all(STRAY_408).await;
        }
        self.close(how).await;
    }

    async fn bad_request(mut self) {
        let _ = self.stream().write_all(BAD_REQUEST).await;
        self.close(Close::Fin).await;
    }

    fn response(&self, id_calls: Option<usize>, close: bool) -> Vec<u8> {
        let body = format!("ok {}", self.served);
        let mut head = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-connection: {}\r\n",
            body.len(),
            self.index
        );
        if let Some(count) = id_calls {
            head.push_str(&format!("x-handler-calls-for-id: {count}\r\n"));
        }
        if let Some(value) = &self.config.keep_alive_header {
            head.push_str(&format!("Keep-Alive: {value}\r\n"));
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        head.push_str(&body);
        head.into_bytes()
    }

    /// Reads and parses a request head (through the blank line).
    async fn read_head(&mut self) -> Result<Head, ReadError> {
        let end = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(ReadError::Malformed);
            }
            if self.fill().await? == 0 {
                return Err(ReadError::Gone);
            }
        };
        let raw = self.buf.split_to(end + 4);
        parse_head(&raw[..end])
    }

    /// Reads the request body into `into` (de-chunked).
    async fn read_body(&mut self, body: &BodyKind, into: &mut Vec<u8>) -> Result<(), ReadError> {
        match *body {
            BodyKind::Length(len) => self.take(len, into).await,
            BodyKind::Chunked => loop {
                let line = self.read_line().await?;
                let size = parse_chunk_size(&line)?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    while !self.read_line().await?.is_empty() {}
                    return Ok(());
                }
                self.take(size, into).await?;
                if !self.read_line().await?.is_empty() {
                    return Err(ReadError::Malformed);
                }
            },
        }
    }

    /// Moves exactly `len` bytes of input into `into`.
    async fn take(&mut self, mut len: usize, into: &mut Vec<u8>) -> Result<(), ReadError> {
        loop {
            let take = len.min(self.buf.len());
            into.extend_from_slice(&self.buf[..take]);
            self.buf.advance(take);
            len -= take;
            if len == 0 {
                return Ok(());
            }
            if self.fill().await? == 0 {
                return Err(ReadError::Gone);
            }
        }
    }

    /// Reads one CRLF-terminated line, returned without the CRLF.
    async fn read_line(&mut self) -> Result<BytesMut, ReadError> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n") {
                let mut line = self.buf.split_to(pos + 2);
                line.truncate(pos);
                return Ok(line);
            }
            if self.buf.len() > MAX_LINE {
                return Err(ReadError::Malformed);
            }
            if self.fill().await? == 0 {
                return Err(ReadError::Gone);
            }
        }
    }
}

/// Errors that mean the client closed (or reset) its end.
fn is_peer_close(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// A status line, [`HUGE_HEADERS_BYTES`] of header lines and a blank line.
fn huge_headers() -> Vec<u8> {
    let line = format!("x-filler: {}\r\n", "a".repeat(1000));
    let mut out = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n".to_vec();
    while out.len() < HUGE_HEADERS_BYTES {
        out.extend_from_slice(line.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses the request line and headers (without the final blank line).
fn parse_head(raw: &[u8]) -> Result<Head, ReadError> {
    let text = std::str::from_utf8(raw).map_err(|_| ReadError::Malformed)?;
    let mut lines = text.split("\r\n");

    let request_line = lines.next().ok_or(ReadError::Malformed)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Malformed);
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) || target.is_empty() {
        return Err(ReadError::Malformed);
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(ReadError::Malformed),
    };

    let mut request_id = None;
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(ReadError::Malformed)?;
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(ReadError::Malformed);
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("x-request-id") {
            request_id = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("content-length") {
            let len: usize = value.parse().map_err(|_| ReadError::Malformed)?;
            if content_length.is_some_and(|prev| prev != len) {
                return Err(ReadError::Malformed);
            }
            content_length = Some(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(',').next().unwrap_or("").trim();
            if !last.eq_ignore_ascii_case("chunked") {
                return Err(ReadError::Malformed);
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    conn_close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    conn_keep_alive = true;
                }
            }
        }
    }

    let body = if chunked {
        BodyKind::Chunked
    } else {
        BodyKind::Length(content_length.unwrap_or(0))
    };
    let close = conn_close || (http10 && !conn_keep_alive);
    Ok(Head {
        request_id,
        close,
        body,
    })
}

/// Parses a chunk-size line (`1a;ext=1`).
fn parse_chunk_size(line: &[u8]) -> Result<usize, ReadError> {
    let text = std::str::from_utf8(line).map_err(|_| ReadError::Malformed)?;
    let size = text.split(';').next().unwrap_or("").trim();
    if size.is_empty() || size.len() > 15 {
        return Err(ReadError::Malformed);
    }
    usize::from_str_radix(size, 16).map_err(|_| ReadError::Malformed)
}
