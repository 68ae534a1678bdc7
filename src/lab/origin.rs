//! A small HTTP/1.1 origin server on raw tokio sockets, with a precise idle timer.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Largest request head (request line and headers) the origin accepts.
const MAX_HEAD: usize = 64 * 1024;
/// Bytes read from a connection in one go.
const READ_CHUNK: usize = 8 * 1024;
/// Pause after a failed `accept` (out of file descriptors, say) before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);
/// Body of every successful response.
const BODY: &[u8] = b"ok\n";
/// Answer to a request the origin cannot parse; the connection is closed after it.
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// How an [`Origin`] behaves. Start from `OriginConfig::default()` and change what the
/// experiment needs:
///
/// ```
/// use std::time::Duration;
/// use closefirst::lab::OriginConfig;
///
/// // Like uvicorn: 5 s keep-alive, closes with FIN, announces nothing.
/// let uvicorn = OriginConfig { idle_timeout: Duration::from_secs(5), ..OriginConfig::default() };
/// assert!(!uvicorn.send_keep_alive_hint);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginConfig {
    /// Close a keep-alive connection that has been idle this long: measured from the
    /// moment the last byte of the previous response was written (or from accept, for
    /// a connection's first request) until the first byte of the next request.
    /// `Duration::MAX` (or any value too large to add to the clock) never closes.
    /// Defaults to 1 second.
    pub idle_timeout: Duration,
    /// Responses carry `Keep-Alive: timeout=N`, with `N` the idle timeout in whole
    /// seconds, rounded down, at least 1. Defaults to `false`.
    pub send_keep_alive_hint: bool,
    /// Close idle connections abortively (`SO_LINGER` 0: the client gets a RST) instead
    /// of with a FIN. Defaults to `false`.
    pub close_with_rst: bool,
    /// Close a connection (with a FIN, after a response carrying `Connection: close`)
    /// once it has answered this many requests; `Some(0)` counts as `Some(1)`.
    /// Defaults to `None`: no limit.
    pub close_after_requests: Option<usize>,
    /// Wait this long between reading a request and answering it. Defaults to zero.
    pub response_delay: Duration,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            idle_timeout: Duration::from_secs(1),
            send_keep_alive_hint: false,
            close_with_rst: false,
            close_after_requests: None,
            response_delay: Duration::ZERO,
        }
    }
}

/// An HTTP/1.1 server on `127.0.0.1` that closes idle keep-alive connections on a
/// precise timer and counts what it executed.
///
/// It answers every request with `200 OK` and the body `ok\n`, keeps connections alive
/// unless the request says `Connection: close` (or is HTTP/1.0 without
/// `Connection: keep-alive`), and reads `Content-Length` and chunked request bodies.
///
/// A request *executes* once it has been read in full, before the response is written;
/// executions are counted per `x-request-id` header, so an experiment can tell a
/// request that was lost from one that ran twice ([`duplicates`](Origin::duplicates)).
///
/// Dropping the `Origin` stops it: the listener and every connection are closed (the
/// tasks are aborted, so this happens on the runtime's next turn, not inside `drop`).
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
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Stats {
    connections: AtomicUsize,
    handler_calls: AtomicUsize,
    idle_closes: AtomicUsize,
    executions: Mutex<HashMap<String, usize>>,
}

impl Stats {
    fn executions(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // A panic elsewhere cannot leave the counts half-updated: each update is one
        // insertion or increment.
        self.executions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Origin {
    /// Listens on `127.0.0.1` (a free port) and serves connections with `config`.
    ///
    /// The server runs on the current tokio runtime (`tokio::spawn`); it must be called
    /// from within one.
    pub async fn start(config: OriginConfig) -> io::Result<Origin> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(accept_loop(listener, Arc::new(config), Arc::clone(&stats)));
        Ok(Origin { addr, stats, task })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.stats.connections.load(Ordering::Relaxed)
    }

    /// Requests executed so far (read in full), with or without an `x-request-id`.
    pub fn handler_calls(&self) -> usize {
        self.stats.handler_calls.load(Ordering::Relaxed)
    }

    /// Connections closed by the idle timer so far.
    pub fn idle_closes(&self) -> usize {
        self.stats.idle_closes.load(Ordering::Relaxed)
    }

    /// How many times the request with `x-request-id: id` was executed.
    pub fn executions(&self, id: &str) -> usize {
        self.stats.executions().get(id).copied().unwrap_or(0)
    }

    /// Extra executions of request ids: an id executed three times counts 2. Zero
    /// means no request id ran more than once.
    pub fn duplicates(&self) -> usize {
        self.stats
            .executions()
            .values()
            .map(|n| n.saturating_sub(1))
            .sum()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        // The accept task owns the listener and the `JoinSet` of connections; aborting
        // it drops both, which aborts every connection task and closes its socket.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, config: Arc<OriginConfig>, stats: Arc<Stats>) {
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "lab origin: accept failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        // Reap finished connections so the set does not grow with every accept.
        while connections.try_join_next().is_some() {}
        let config = Arc::clone(&config);
        let stats = Arc::clone(&stats);
        connections.spawn(async move {
            if let Err(error) = serve(stream, &config, &stats).await {
                tracing::debug!(%error, "lab origin: connection failed");
            }
        });
    }
}

/// Serves one connection until it is closed.
async fn serve(stream: TcpStream, config: &OriginConfig, stats: &Stats) -> io::Result<()> {
    // Responses go out at once, not after a delayed ACK.
    stream.set_nodelay(true)?;
    let mut buf = Vec::new();
    let mut answered = 0usize;
    let mut idle_since = Instant::now();
    loop {
        // The head of the next request; the idle timer runs only while none of it has
        // arrived.
        let head = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                break end + 4;
            }
            if buf.len() > MAX_HEAD {
                return bad_request(&stream).await;
            }
            // An idle timeout past what an `Instant` holds never fires.
            let deadline = buf
                .is_empty()
                .then(|| idle_since.checked_add(config.idle_timeout))
                .flatten();
            match read_some(&stream, &mut buf, deadline).await? {
                Read::Data => {}
                Read::Eof => return Ok(()),
                Read::TimedOut => {
                    stats.idle_closes.fetch_add(1, Ordering::Relaxed);
                    if config.close_with_rst {
                        SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
                    }
                    return Ok(());
                }
            }
        };
        let Some(request) = Request::parse(&buf[..head]) else {
            return bad_request(&stream).await;
        };
        let body_len = match request.body {
            Body::Length(n) => {
                while buf.len() < head + n {
                    if let Read::Eof = read_some(&stream, &mut buf, None).await? {
                        return Ok(());
                    }
                }
                n
            }
            Body::Chunked => loop {
                match chunked_len(&buf[head..]) {
                    Chunked::Complete(n) => break n,
                    Chunked::Malformed => return bad_request(&stream).await,
                    Chunked::Incomplete => {
                        if let Read::Eof = read_some(&stream, &mut buf, None).await? {
                            return Ok(());
                        }
                    }
                }
            },
        };
        buf.drain(..head + body_len);

        // The request is in: it executes now, whatever happens to the response.
        stats.handler_calls.fetch_add(1, Ordering::Relaxed);
        if let Some(id) = &request.id {
            *stats.executions().entry(id.clone()).or_insert(0) += 1;
        }
        if !config.response_delay.is_zero() {
            tokio::time::sleep(config.response_delay).await;
        }

        answered += 1;
        let close = !request.keep_alive
            || config
                .close_after_requests
                .is_some_and(|max| answered >= max);
        let response = response(config, &request, close);
        write_all(&stream, &response).await?;
        if close {
            return Ok(());
        }
        // The idle period starts with the response's last byte.
        idle_since = Instant::now();
    }
}

fn response(config: &OriginConfig, request: &Request, close: bool) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n",
        BODY.len()
    );
    if close {
        head.push_str("connection: close\r\n");
    } else if config.send_keep_alive_hint {
        let secs = config.idle_timeout.as_secs().max(1);
        head.push_str(&format!("keep-alive: timeout={secs}\r\n"));
    }
    head.push_str("\r\n");
    let mut response = head.into_bytes();
    if !request.head_method {
        response.extend_from_slice(BODY);
    }
    response
}

async fn bad_request(stream: &TcpStream) -> io::Result<()> {
    write_all(stream, BAD_REQUEST).await
}

enum Read {
    Data,
    Eof,
    TimedOut,
}

/// Reads what is available into `buf`, waiting for it until `deadline` if one is given.
async fn read_some(
    stream: &TcpStream,
    buf: &mut Vec<u8>,
    deadline: Option<Instant>,
) -> io::Result<Read> {
    loop {
        match deadline {
            Some(deadline) => {
                if tokio::time::timeout_at(deadline, stream.readable())
                    .await
                    .is_err()
                {
                    return Ok(Read::TimedOut);
                }
            }
            None => stream.readable().await?,
        }
        // Declared after the wait so it is not part of the future's state.
        let mut chunk = [0; READ_CHUNK];
        match stream.try_read(&mut chunk) {
            Ok(0) => return Ok(Read::Eof),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(Read::Data);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// What the origin needs to know about a request head.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    head_method: bool,
    keep_alive: bool,
    body: Body,
    id: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
enum Body {
    Length(usize),
    Chunked,
}

impl Request {
    /// Parses a request head (ending with the empty line). `None` if it is malformed.
    fn parse(head: &[u8]) -> Option<Request> {
        let head = std::str::from_utf8(head).ok()?;
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next()?.split(' ');
        let method = request_line.next()?;
        let _target = request_line.next()?;
        let version = request_line.next()?;
        let http_11 = match version {
            "HTTP/1.1" => true,
            "HTTP/1.0" => false,
            _ => return None,
        };
        let mut request = Request {
            head_method: method == "HEAD",
            keep_alive: http_11,
            body: Body::Length(0),
            id: None,
        };
        let (mut says_close, mut says_keep_alive) = (false, false);
        for line in lines.take_while(|line| !line.is_empty()) {
            let (name, value) = line.split_once(':')?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                if request.body != Body::Chunked {
                    request.body = Body::Length(value.parse().ok()?);
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                // Chunked, when present, is the last coding and decides the framing.
                let last = value.rsplit(',').next().unwrap_or("").trim();
                if !last.eq_ignore_ascii_case("chunked") {
                    return None;
                }
                request.body = Body::Chunked;
            } else if name.eq_ignore_ascii_case("connection") {
                for token in value.split(',').map(str::trim) {
                    says_close |= token.eq_ignore_ascii_case("close");
                    says_keep_alive |= token.eq_ignore_ascii_case("keep-alive");
                }
            } else if name.eq_ignore_ascii_case("x-request-id") {
                request.id = Some(value.to_owned());
            }
        }
        // `close` wins, whatever the order; HTTP/1.0 keeps alive only when asked to.
        request.keep_alive = !says_close && (http_11 || says_keep_alive);
        Some(request)
    }
}

enum Chunked {
    /// The whole chunked body (up to and including the final empty line) is this long.
    Complete(usize),
    Incomplete,
    Malformed,
}

/// Measures a chunked body at the start of `bytes`.
fn chunked_len(bytes: &[u8]) -> Chunked {
    let mut pos = 0;
    loop {
        let Some(line_len) = find(&bytes[pos..], b"\r\n") else {
            return if bytes.len() - pos > MAX_HEAD {
                Chunked::Malformed
            } else {
                Chunked::Incomplete
            };
        };
        let line = &bytes[pos..pos + line_len];
        pos += line_len + 2;
        // Chunk extensions (`;name=value`) are allowed and ignored.
        let size = line.split(|&b| b == b';').next().unwrap_or(b"");
        let Some(size) = std::str::from_utf8(size)
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
        else {
            return Chunked::Malformed;
        };
        if size == 0 {
            // Trailer fields, then the empty line.
            loop {
                let Some(line_len) = find(&bytes[pos..], b"\r\n") else {
                    return Chunked::Incomplete;
                };
                pos += line_len + 2;
                if line_len == 0 {
                    return Chunked::Complete(pos);
                }
            }
        }
        let Some(end) = pos.checked_add(size).and_then(|end| end.checked_add(2)) else {
            return Chunked::Malformed;
        };
        if bytes.len() < end {
            return Chunked::Incomplete;
        }
        if &bytes[end - 2..end] != b"\r\n" {
            return Chunked::Malformed;
        }
        pos = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_framing_connection_and_id() {
        let r = Request::parse(
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-Request-Id: 7\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, Body::Length(5));
        assert_eq!(r.id.as_deref(), Some("7"));
        assert!(r.keep_alive);

        let r = Request::parse(
            b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, Body::Chunked);
        assert!(!r.keep_alive);

        let r = Request::parse(b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert!(r.keep_alive && r.head_method);
        assert!(
            !Request::parse(b"GET / HTTP/1.0\r\n\r\n")
                .unwrap()
                .keep_alive
        );

        assert!(Request::parse(b"GET /\r\n\r\n").is_none());
        assert!(Request::parse(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n").is_none());
        assert!(Request::parse(b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n").is_none());
    }

    #[test]
    fn measures_chunked_bodies() {
        let body = b"5;ext=1\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        assert!(matches!(chunked_len(body), Chunked::Complete(n) if n == body.len() - 4));
        assert!(matches!(chunked_len(b"0\r\n\r\n"), Chunked::Complete(5)));
        assert!(matches!(chunked_len(b"5\r\nhel"), Chunked::Incomplete));
        assert!(matches!(chunked_len(b"0\r\n"), Chunked::Incomplete));
        assert!(matches!(chunked_len(b"zz\r\n"), Chunked::Malformed));
        assert!(matches!(chunked_len(b"2\r\nabcd\r\n"), Chunked::Malformed));
    }
}
