//! A raw keep-alive client: the physical reference for the throughput bench.
//!
//! N persistent TCP sockets; per request one write of a fixed request and reads until
//! the response (head and `Content-Length` body) is complete, usually one read. It parses
//! only what it needs to find the end of the response, has no pool, no timers and no
//! retries, so it bounds what any client can reach against the same server.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response head larger than this is refused rather than buffered without bound.
const MAX_HEAD: usize = 64 * 1024;
/// A body larger than this is refused: the bench servers send a few bytes.
const MAX_BODY: usize = 1024 * 1024;

/// One persistent connection and its read buffer, reused across requests.
struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// N persistent connections to one server, each used by one request at a time.
#[derive(Clone)]
pub(crate) struct RawClient {
    // A slot is taken for the length of one request: the bench never puts two requests
    // on one slot at once, so the lock is never contended and only proves exclusivity.
    slots: Arc<[Mutex<Option<RawConn>>]>,
    request: Arc<[u8]>,
}

impl RawClient {
    /// Opens `n` connections to `addr` and prepares `GET / HTTP/1.1` with the same
    /// `Host` value hyper writes for `http://{addr}/`.
    pub(crate) async fn connect(addr: SocketAddr, n: usize) -> io::Result<Self> {
        let mut slots = Vec::with_capacity(n);
        for _ in 0..n {
            let stream = TcpStream::connect(addr).await?;
            // As closefirst does by default; the request is one write, so Nagle could
            // only matter for a request split across writes, which never happens here.
            stream.set_nodelay(true)?;
            slots.push(Mutex::new(Some(RawConn {
                stream,
                buf: Vec::with_capacity(4096),
            })));
        }
        let request = format!("GET / HTTP/1.1\r\nhost: {addr}\r\n\r\n").into_bytes();
        Ok(Self {
            slots: slots.into(),
            request: request.into(),
        })
    }

    /// Number of connections.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// One request on connection `slot` (modulo the number of connections); returns the
    /// body's length once the whole response has been read.
    pub(crate) async fn get(&self, slot: usize) -> io::Result<usize> {
        let slot = &self.slots[slot % self.slots.len()];
        let mut conn = slot
            .lock()
            .expect("no request panics while holding a slot")
            .take()
            .ok_or_else(|| io::Error::other("connection slot already in use"))?;
        let result = conn.exchange(&self.request).await;
        // A connection that failed mid-response is left out: its stream position is
        // unknown, and the bench stops on the error anyway.
        if result.is_ok() {
            *slot.lock().expect("no request panics while holding a slot") = Some(conn);
        }
        result
    }
}

impl RawConn {
    async fn exchange(&mut self, request: &[u8]) -> io::Result<usize> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(end) = find_head_end(&self.buf) {
                break end;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(io::Error::other("response head too large"));
            }
            self.read_more().await?;
        };
        let head = &self.buf[..head_end];
        if !head.starts_with(b"HTTP/1.1 200 ") {
            return Err(io::Error::other("response status is not HTTP/1.1 200"));
        }
        let body_len = content_length(head)?;
        let total = head_end + 4 + body_len;
        while self.buf.len() < total {
            self.read_more().await?;
        }
        if self.buf.len() > total {
            // One request in flight per connection: anything more is a server bug or a
            // framing this client does not understand.
            return Err(io::Error::other("bytes after the response"));
        }
        Ok(body_len)
    }

    async fn read_more(&mut self) -> io::Result<()> {
        self.buf.reserve(4096);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

/// Offset of the `\r\n\r\n` that ends the head.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// The `Content-Length` value; chunked or close-delimited bodies are refused, the bench
/// servers never send them.
fn content_length(head: &[u8]) -> io::Result<usize> {
    for line in head.split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(b"content-length") {
            let value = std::str::from_utf8(&line[colon + 1..])
                .map_err(|_| io::Error::other("content-length is not UTF-8"))?;
            let len: usize = value
                .trim()
                .parse()
                .map_err(|_| io::Error::other("content-length is not a number"))?;
            if len > MAX_BODY {
                return Err(io::Error::other("body too large"));
            }
            return Ok(len);
        }
    }
    Err(io::Error::other("response without content-length"))
}
