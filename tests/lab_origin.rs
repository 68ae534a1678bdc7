//! Tests of the lab's origin server (`closefirst::lab::Origin`), the one test server of
//! this crate, driven by raw TCP clients; and of the adapter over it in
//! `tests/support` that the other integration tests use.

mod support;

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use closefirst::lab::{Fault, Origin, OriginBuilder, OriginConfig, RecordedBody, Rng};
use support::{ServerConfig, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for anything that should happen "promptly".
const PATIENCE: Duration = Duration::from_secs(5);
const IDLE: Duration = Duration::from_millis(200);
const STRAY_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How a connection ended, as seen by the client.
#[derive(Debug)]
struct Ending {
    /// Bytes received before the end.
    bytes: Vec<u8>,
    /// `None` for EOF, otherwise the error kind of the failed read.
    error: Option<io::ErrorKind>,
}

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(server: &Origin) -> Client {
        let stream = TcpStream::connect(server.addr()).await.expect("connect");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).await.expect("write request");
    }

    async fn get(&mut self, id: Option<&str>) -> Response {
        let id = id
            .map(|id| format!("x-request-id: {id}\r\n"))
            .unwrap_or_default();
        let req = format!("GET /x HTTP/1.1\r\nhost: test\r\n{id}\r\n");
        self.send(req.as_bytes()).await;
        self.response().await
    }

    async fn response(&mut self) -> Response {
        tokio::time::timeout(PATIENCE, self.read_response())
            .await
            .expect("response timed out")
            .expect("read response")
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn read_response(&mut self) -> io::Result<Response> {
        let end = loop {
            if let Some(pos) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos;
            }
            self.fill().await?;
        };
        let head = String::from_utf8(self.buf[..end].to_vec()).expect("utf-8 head");
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status = status_line[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header colon");
                (n.to_owned(), v.trim().to_owned())
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .expect("content-length");
        while self.buf.len() < len {
            self.fill().await?;
        }
        let body = String::from_utf8(self.buf.drain(..len).collect()).unwrap();
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// Reads until EOF or a read error (bounded by `PATIENCE`).
    async fn ending(&mut self) -> Ending {
        let mut bytes = std::mem::take(&mut self.buf);
        let result = tokio::time::timeout(PATIENCE, async {
            let mut chunk = [0u8; 4096];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) => return None,
                    Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                    Err(e) => return Some(e.kind()),
                }
            }
        })
        .await
        .expect("connection was not closed");
        Ending {
            bytes,
            error: result,
        }
    }
}

/// The origin as the tests run it: numbered answers (`ok N`, `x-connection`,
/// `x-handler-calls-for-id`), on a thread of its own.
fn numbered(config: OriginConfig) -> OriginBuilder {
    Origin::builder(config).numbered_responses(true)
}

fn start(builder: OriginBuilder) -> Origin {
    builder
        .start_on_thread()
        .expect("the origin listens on 127.0.0.1")
}

/// The defaults, except that idle connections are never closed.
const NEVER_IDLE: OriginConfig = OriginConfig {
    idle_timeout: Duration::MAX,
    send_keep_alive_hint: false,
    close_with_rst: false,
    close_after_requests: None,
    response_delay: Duration::ZERO,
};

/// Polls `what` every 5 ms (blocking the calling thread) until it holds or `timeout`
/// elapses; returns whether it held.
fn wait_until(origin: &Origin, what: impl Fn(&Origin) -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !what(origin) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Like [`wait_until`] but sleeps with `tokio::time::sleep`; the deadline is real time.
async fn wait_until_async(
    origin: &Origin,
    what: impl Fn(&Origin) -> bool,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    while !what(origin) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

fn body(bytes: &[u8], complete: bool) -> (Vec<u8>, bool) {
    (bytes.to_vec(), complete)
}

fn bodies(origin: &Origin, id: &str) -> Vec<(Vec<u8>, bool)> {
    origin
        .bodies(id)
        .into_iter()
        .map(
            |RecordedBody {
                 bytes, complete, ..
             }| (bytes, complete),
        )
        .collect()
}

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn handle_is_send_and_sync() {
    assert_send_sync::<Origin>();
    assert_send_sync::<OriginBuilder>();
    assert_send_sync::<TestServer>();
    assert_send_sync::<ServerConfig>();
}

#[tokio::test]
async fn keep_alive_reuse_and_counters() {
    let server = start(numbered(NEVER_IDLE));
    assert!(server.url("/a/b").starts_with("http://127.0.0.1:"));
    assert!(server
        .url("/a/b")
        .ends_with(&format!(":{}/a/b", server.addr().port())));

    let mut c0 = Client::connect(&server).await;
    for n in 1..=3 {
        let r = c0.get(None).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, format!("ok {n}"));
        assert_eq!(r.header("x-connection"), Some("0"));
        assert_eq!(r.header("x-handler-calls-for-id"), None);
        assert_eq!(r.header("connection"), None);
        assert_eq!(r.header("keep-alive"), None);
    }
    let mut c1 = Client::connect(&server).await;
    let r = c1.get(Some("req-1")).await;
    assert_eq!(r.body, "ok 1");
    assert_eq!(r.header("x-connection"), Some("1"));
    assert_eq!(r.header("x-handler-calls-for-id"), Some("1"));
    let r = c1.get(Some("req-1")).await;
    assert_eq!(r.header("x-handler-calls-for-id"), Some("2"));

    // Counters are visible as soon as the response has been received.
    assert_eq!(server.connections(), 2);
    assert_eq!(server.open_connections(), 2);
    assert_eq!(server.handler_calls(), 5);
    assert_eq!(server.executions("req-1"), 2);
    assert_eq!(server.executions("other"), 0);
    assert_eq!(server.requests_per_connection(), vec![3, 2]);

    drop(c0);
    drop(c1);
    assert!(wait_until_async(&server, |s| s.open_connections() == 0, PATIENCE).await);
    assert_eq!(server.client_closes(), 2);
    assert_eq!(server.idle_closes(), 0);
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let server = start(numbered(NEVER_IDLE));
    let mut c = Client::connect(&server).await;
    c.send(
        b"GET /1 HTTP/1.1\r\nx-request-id: p1\r\n\r\n\
          POST /2 HTTP/1.1\r\nContent-Length: 5\r\nX-Request-Id: p2\r\n\r\nhello\
          GET /3 HTTP/1.1\r\nx-request-id: p3\r\n\r\n",
    )
    .await;
    for n in 1..=3 {
        let r = c.response().await;
        assert_eq!(r.body, format!("ok {n}"));
        assert_eq!(r.header("x-handler-calls-for-id"), Some("1"));
    }
    assert_eq!(server.executions("p1"), 1);
    assert_eq!(server.executions("p2"), 1);
    assert_eq!(server.executions("p3"), 1);
    assert_eq!(server.requests_per_connection(), vec![3]);
}

#[tokio::test]
async fn chunked_and_sized_bodies_are_consumed() {
    let server = start(numbered(NEVER_IDLE));
    let mut c = Client::connect(&server).await;
    // Chunked body with an extension and a trailer, sent in pieces.
    c.send(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nx-request-id: ch\r\n\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.send(b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.send(b"0\r\nx-trailer: yes\r\n\r\n").await;
    let r = c.response().await;
    assert_eq!(r.body, "ok 1");

    // A large content-length body, then another request on the same
    // connection: the body must have been consumed exactly.
    let body = vec![b'z'; 100_000];
    c.send(
        format!(
            "PUT /big HTTP/1.1\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    c.send(&body).await;
    let r = c.response().await;
    assert_eq!(r.body, "ok 2");
    let r = c.get(Some("after")).await;
    assert_eq!(r.body, "ok 3");

    assert_eq!(server.executions("ch"), 1);
    assert_eq!(server.handler_calls(), 3);
    assert_eq!(server.requests_per_connection(), vec![3]);
}

#[tokio::test]
async fn idle_close_fin_is_seen_as_eof_after_the_idle_time() {
    let server = start(numbered(OriginConfig {
        idle_timeout: IDLE,
        ..NEVER_IDLE
    }));
    let mut c = Client::connect(&server).await;
    assert_eq!(c.get(None).await.body, "ok 1");
    let idle_since = Instant::now();
    let end = c.ending().await;
    let waited = idle_since.elapsed();
    assert_eq!(end.error, None, "expected EOF: {end:?}");
    assert!(end.bytes.is_empty(), "{end:?}");
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
        "closed after {waited:?}"
    );
    // Counters are updated before the socket is closed.
    assert_eq!(server.idle_closes(), 1);
    assert_eq!(server.client_closes(), 0);
    assert_eq!(server.open_connections(), 0);
    assert_eq!(server.requests_per_connection(), vec![1]);
}

#[tokio::test]
async fn idle_close_applies_from_accept() {
    let server = start(numbered(OriginConfig {
        idle_timeout: IDLE,
        ..NEVER_IDLE
    }));
    let connected = Instant::now();
    let mut c = Client::connect(&server).await;
    let end = c.ending().await;
    let waited = connected.elapsed();
    assert_eq!(end.error, None, "expected EOF: {end:?}");
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
        "closed after {waited:?}"
    );
    assert_eq!(server.idle_closes(), 1);
    assert_eq!(server.requests_per_connection(), vec![0]);
}

#[tokio::test]
async fn idle_close_rst_is_seen_as_connection_reset() {
    let server = start(numbered(OriginConfig {
        idle_timeout: IDLE,
        close_with_rst: true,
        ..NEVER_IDLE
    }));
    let mut c = Client::connect(&server).await;
    assert_eq!(c.get(None).await.body, "ok 1");
    let idle_since = Instant::now();
    let end = c.ending().await;
    let waited = idle_since.elapsed();
    assert_eq!(end.error, Some(io::ErrorKind::ConnectionReset), "{end:?}");
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
        "reset after {waited:?}"
    );
    assert_eq!(server.idle_closes(), 1);
    assert_eq!(server.open_connections(), 0);
}

#[tokio::test]
async fn stray_bytes_are_written_before_the_idle_close() {
    let server = start(
        numbered(OriginConfig {
            idle_timeout: IDLE,
            ..NEVER_IDLE
        })
        .stray_408_on_idle_close(true),
    );
    let mut c = Client::connect(&server).await;
    assert_eq!(c.get(None).await.body, "ok 1");
    let end = c.ending().await;
    assert_eq!(end.error, None, "expected EOF: {end:?}");
    assert_eq!(end.bytes, STRAY_408);
    assert_eq!(server.idle_closes(), 1);
    drop(server);

    // With RST, the stray bytes still reach a reading client first.
    let server = start(
        numbered(OriginConfig {
            idle_timeout: IDLE,
            close_with_rst: true,
            ..NEVER_IDLE
        })
        .stray_408_on_idle_close(true),
    );
    let mut c = Client::connect(&server).await;
    assert_eq!(c.get(None).await.body, "ok 1");
    let end = c.ending().await;
    assert_eq!(end.error, Some(io::ErrorKind::ConnectionReset), "{end:?}");
    assert_eq!(end.bytes, STRAY_408);
    assert_eq!(server.idle_closes(), 1);
}

#[tokio::test]
async fn keep_alive_header_is_sent_verbatim() {
    let server = start(numbered(NEVER_IDLE).keep_alive_header("timeout=5, max=100".to_owned()));
    let mut c = Client::connect(&server).await;
    for _ in 0..2 {
        let r = c.get(None).await;
        assert_eq!(r.header("keep-alive"), Some("timeout=5, max=100"));
    }
}

#[tokio::test]
async fn connection_close_config_closes_after_each_response() {
    let server = start(numbered(NEVER_IDLE).connection_close(true));
    for i in 0..2 {
        let mut c = Client::connect(&server).await;
        let r = c.get(None).await;
        assert_eq!(r.body, "ok 1");
        assert_eq!(r.header("connection"), Some("close"));
        assert_eq!(r.header("x-connection"), Some(i.to_string().as_str()));
        let end = c.ending().await;
        assert_eq!(end.error, None, "expected EOF: {end:?}");
        assert!(end.bytes.is_empty());
    }
    assert_eq!(server.open_connections(), 0);
    assert_eq!(server.requests_per_connection(), vec![1, 1]);
    assert_eq!(server.idle_closes(), 0);
    assert_eq!(server.client_closes(), 0);
}

#[tokio::test]
async fn request_connection_close_is_honoured() {
    let server = start(numbered(NEVER_IDLE));
    let mut c = Client::connect(&server).await;
    assert_eq!(c.get(None).await.body, "ok 1");
    c.send(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").await;
    let r = c.response().await;
    assert_eq!(r.body, "ok 2");
    assert_eq!(r.header("connection"), Some("close"));
    let end = c.ending().await;
    assert_eq!(end.error, None, "expected EOF: {end:?}");
    assert_eq!(server.open_connections(), 0);
}

#[tokio::test]
async fn close_after_requests_with_fin_and_rst() {
    // Unannounced: the last answer does not say `Connection: close`.
    let server = start(
        numbered(OriginConfig {
            close_after_requests: Some(2),
            ..NEVER_IDLE
        })
        .announce_close(false),
    );
    let mut c = Client::connect(&server).await;
    assert_eq!(c.get(None).await.body, "ok 1");
    let r = c.get(None).await;
    assert_eq!(r.body, "ok 2");
    assert_eq!(r.header("connection"), None);
    let end = c.ending().await;
    assert_eq!(end.error, None, "expected EOF: {end:?}");
    assert_eq!(server.requests_per_connection(), vec![2]);
    assert_eq!(server.open_connections(), 0);
    drop(server);

    let server = start(
        numbered(OriginConfig {
            close_after_requests: Some(1),
            close_with_rst: true,
            ..NEVER_IDLE
        })
        .announce_close(false),
    );
    let mut c = Client::connect(&server).await;
    assert_eq!(c.get(None).await.body, "ok 1");
    let end = c.ending().await;
    assert_eq!(end.error, Some(io::ErrorKind::ConnectionReset), "{end:?}");
    assert_eq!(server.requests_per_connection(), vec![1]);
}

#[tokio::test]
async fn rst_without_answer_only_the_first_time() {
    let server = start(numbered(NEVER_IDLE).fault("boom", Fault::RstWithoutAnswer));
    let mut c = Client::connect(&server).await;
    c.send(b"POST / HTTP/1.1\r\nx-request-id: boom\r\ncontent-length: 3\r\n\r\nabc")
        .await;
    let end = c.ending().await;
    assert_eq!(end.error, Some(io::ErrorKind::ConnectionReset), "{end:?}");
    assert!(end.bytes.is_empty(), "{end:?}");
    assert_eq!(server.handler_calls(), 1);
    assert_eq!(server.executions("boom"), 1);
    assert_eq!(server.open_connections(), 0);

    // The retry of the same id is answered, and the count includes the
    // first, unanswered, call. Other ids are unaffected.
    let mut c = Client::connect(&server).await;
    let r = c.get(Some("boom")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-handler-calls-for-id"), Some("2"));
    assert_eq!(r.header("x-connection"), Some("1"));
    let r = c.get(Some("fine")).await;
    assert_eq!(r.header("x-handler-calls-for-id"), Some("1"));
    assert_eq!(server.handler_calls(), 3);
    assert_eq!(server.requests_per_connection(), vec![1, 2]);
}

#[tokio::test]
async fn partial_response_then_rst_only_the_first_time() {
    let server = start(numbered(NEVER_IDLE).fault("half", Fault::PartialResponseThenRst));
    let mut c = Client::connect(&server).await;
    c.send(b"GET / HTTP/1.1\r\nx-request-id: half\r\n\r\n")
        .await;
    let end = c.ending().await;
    assert_eq!(end.error, Some(io::ErrorKind::ConnectionReset), "{end:?}");
    // The partial response arrives before the reset.
    assert_eq!(
        end.bytes, b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc",
        "{end:?}"
    );
    assert_eq!(server.executions("half"), 1);

    let mut c = Client::connect(&server).await;
    let r = c.get(Some("half")).await;
    assert_eq!(r.body, "ok 1");
    assert_eq!(r.header("x-handler-calls-for-id"), Some("2"));
}

#[tokio::test]
async fn client_closing_first_is_counted() {
    let server = start(numbered(OriginConfig {
        idle_timeout: Duration::from_secs(30),
        ..NEVER_IDLE
    }));
    let mut c = Client::connect(&server).await;
    assert_eq!(c.get(None).await.body, "ok 1");
    drop(c);
    // A connection closed before sending anything counts too.
    drop(Client::connect(&server).await);
    assert!(wait_until_async(&server, |s| s.client_closes() == 2, PATIENCE).await);
    assert!(wait_until_async(&server, |s| s.open_connections() == 0, PATIENCE).await);
    assert_eq!(server.idle_closes(), 0);
    assert_eq!(server.connections(), 2);
    assert_eq!(server.requests_per_connection(), vec![1, 0]);
}

#[tokio::test]
async fn client_reset_while_idle_is_counted() {
    let server = start(numbered(NEVER_IDLE));
    let mut c = Client::connect(&server).await;
    assert_eq!(c.get(None).await.body, "ok 1");
    socket2::SockRef::from(&c.stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
    assert!(
        wait_until_async(
            &server,
            |s| s.client_closes() == 1 && s.open_connections() == 0,
            PATIENCE
        )
        .await
    );
}

#[tokio::test]
async fn malformed_request_gets_400_and_close() {
    let server = start(numbered(NEVER_IDLE));
    for garbage in [
        &b"this is not http\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nno-colon-here\r\n\r\n",
        b"POST / HTTP/1.1\r\ncontent-length: nope\r\n\r\n",
        b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        // A chunk longer than its size line says.
        b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabcd\r\n",
        b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 5\r\n\r\nabc",
    ] {
        let mut c = Client::connect(&server).await;
        c.send(garbage).await;
        let r = c.response().await;
        assert_eq!(r.status, 400);
        assert_eq!(r.header("connection"), Some("close"));
        let end = c.ending().await;
        assert_eq!(end.error, None, "expected EOF: {end:?}");
    }
    assert_eq!(server.handler_calls(), 0);
    assert_eq!(server.open_connections(), 0);
}

#[tokio::test]
async fn response_delay_is_applied() {
    let server = start(numbered(OriginConfig {
        response_delay: Duration::from_millis(300),
        ..NEVER_IDLE
    }));
    let mut c = Client::connect(&server).await;
    let sent = Instant::now();
    c.send(b"GET / HTTP/1.1\r\nx-request-id: slow\r\n\r\n")
        .await;
    // The call is counted before the delay.
    assert!(wait_until_async(&server, |s| s.executions("slow") == 1, PATIENCE).await);
    let r = c.response().await;
    let waited = sent.elapsed();
    assert_eq!(r.body, "ok 1");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "answered after {waited:?}"
    );
}

/// The server keeps serving while the test's own runtime is blocked.
#[tokio::test]
async fn server_runs_while_the_test_runtime_is_blocked() {
    let server = start(numbered(OriginConfig {
        idle_timeout: IDLE,
        ..NEVER_IDLE
    }));
    let addr = server.addr();
    let client = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    });
    // Blocks this current-thread runtime; the server does not need it.
    std::thread::sleep(Duration::from_millis(100));
    let out = client.join().unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.ends_with("\r\n\r\nok 1"), "{out}");

    // The idle timer runs on real time even while this runtime sleeps.
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(wait_until(&server, |s| s.idle_closes() == 1, PATIENCE));
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(c.read(&mut [0u8; 16]).unwrap(), 0);
    assert!(wait_until(&server, |s| s.open_connections() == 0, PATIENCE));
}

/// With the test's clock paused, the server still uses real time, and
/// `wait_until_async` measures its deadline in real time.
#[tokio::test(start_paused = true)]
async fn paused_test_clock_does_not_affect_the_server() {
    let server = start(numbered(OriginConfig {
        idle_timeout: IDLE,
        ..NEVER_IDLE
    }));
    let mut c = Client::connect(&server).await;
    c.send(b"GET / HTTP/1.1\r\n\r\n").await;
    let r = c.read_response().await.unwrap();
    assert_eq!(r.body, "ok 1");
    let start = Instant::now();
    assert!(wait_until_async(&server, |s| s.idle_closes() == 1, PATIENCE).await);
    assert!(start.elapsed() >= Duration::from_millis(100));
    // A condition that never holds gives up after the real-time deadline.
    let start = Instant::now();
    assert!(!wait_until_async(&server, |_| false, Duration::from_millis(100)).await);
    assert!(start.elapsed() >= Duration::from_millis(100));
}

#[test]
fn wait_until_times_out_and_succeeds() {
    // The adapter's own helper, which the other tests use.
    let server = TestServer::start(ServerConfig::default());
    let started = Instant::now();
    assert!(!server.wait_until(|s| s.handler_calls() > 0, Duration::from_millis(50)));
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert!(server.wait_until(|s| s.handler_calls() == 0, Duration::ZERO));
}

#[tokio::test]
async fn drop_stops_the_server_and_closes_connections() {
    let server = start(numbered(NEVER_IDLE));
    let addr = server.addr();
    let mut busy = Client::connect(&server).await;
    assert_eq!(busy.get(None).await.body, "ok 1");
    let mut idle = Client::connect(&server).await;
    assert!(wait_until_async(&server, |s| s.connections() == 2, PATIENCE).await);

    let dropping = Instant::now();
    drop(server); // joins the server thread
    assert!(dropping.elapsed() < Duration::from_secs(2));

    // Every connection has been closed by the server...
    for c in [&mut busy, &mut idle] {
        let end = c.ending().await;
        assert!(end.bytes.is_empty(), "{end:?}");
        assert!(
            matches!(end.error, None | Some(io::ErrorKind::ConnectionReset)),
            "{end:?}"
        );
    }
    // ...and nothing listens on the port any more.
    let err = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
}

fn faulty(id: &str, fault: Fault) -> Origin {
    start(numbered(NEVER_IDLE).fault(id, fault))
}

/// Sends a POST with `body` for `id` and reads until the server ends the connection.
async fn post_and_read_ending(server: &Origin, id: &str, body: &[u8]) -> Ending {
    let mut c = Client::connect(server).await;
    let head = format!(
        "POST / HTTP/1.1\r\nx-request-id: {id}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    c.send(head.as_bytes()).await;
    c.send(body).await;
    c.ending().await
}

#[tokio::test]
async fn faults_write_their_bytes_then_close_and_only_the_first_time() {
    let cases: [(Fault, &[u8], Option<io::ErrorKind>); 7] = [
        (Fault::FinWithoutAnswer, b"", None),
        (
            Fault::RstWithoutAnswer,
            b"",
            Some(io::ErrorKind::ConnectionReset),
        ),
        (
            Fault::PartialHeadThenClose,
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nx-par",
            None,
        ),
        (
            Fault::HalfBodyThenClose,
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello",
            None,
        ),
        (
            Fault::GarbageStatusLine,
            b"HTTP/1.1 2xx nonsense\r\n\r\n",
            None,
        ),
        (Fault::NotHttp, b"FOO\r\n\r\n", None),
        (
            Fault::ConflictingContentLength,
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 5\r\n\r\nabcde",
            None,
        ),
    ];
    for (fault, bytes, error) in cases {
        let server = faulty("f", fault.clone());
        let end = post_and_read_ending(&server, "f", b"abc").await;
        assert_eq!(end.error, error, "{fault:?}: {end:?}");
        assert_eq!(end.bytes, bytes, "{fault:?}");
        assert_eq!(server.executions("f"), 1, "{fault:?}");
        assert_eq!(bodies(&server, "f"), vec![body(b"abc", true)]);
        // The second time the id is answered.
        let mut c = Client::connect(&server).await;
        let r = c.get(Some("f")).await;
        assert_eq!(r.status, 200, "{fault:?}");
        assert_eq!(server.heads_seen("f"), 2, "{fault:?}");
    }
}

#[tokio::test]
async fn huge_headers_are_a_mebibyte() {
    let server = faulty("big", Fault::HugeHeaders);
    let end = post_and_read_ending(&server, "big", b"").await;
    assert_eq!(end.error, None, "{end:?}");
    assert!(end.bytes.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(end.bytes.ends_with(b"\r\n\r\n"));
    assert!(
        end.bytes.len() >= Fault::HUGE_HEADERS_BYTES,
        "{}",
        end.bytes.len()
    );
}

#[tokio::test]
async fn early_reject_answers_after_the_head_and_does_not_count_a_call() {
    let server = faulty("big", Fault::EarlyReject);
    let mut c = Client::connect(&server).await;
    c.send(b"POST / HTTP/1.1\r\nx-request-id: big\r\ncontent-length: 1000000\r\n\r\nabc")
        .await;
    // Answered without the body; the client has sent 3 bytes of it.
    let r = c.response().await;
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
    // The rest of the body is still accepted (and discarded) until the client is done.
    c.send(&vec![b'x'; 64 * 1024]).await;
    c.stream.shutdown().await.expect("shutdown");
    let end = c.ending().await;
    assert_eq!(end.error, None, "EOF after the answer: {end:?}");
    assert_eq!(server.executions("big"), 0);
    assert_eq!(server.heads_seen("big"), 1);
    let bodies = server.bodies("big");
    assert_eq!(bodies.len(), 1);
    assert!(!bodies[0].complete, "incomplete");
}

#[tokio::test]
async fn an_incomplete_body_is_recorded_and_not_counted() {
    let server = start(numbered(NEVER_IDLE));
    let mut c = Client::connect(&server).await;
    c.send(b"PUT / HTTP/1.1\r\nx-request-id: cut\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n")
        .await;
    drop(c);
    assert!(wait_until_async(&server, |s| !s.bodies("cut").is_empty(), PATIENCE).await);
    assert_eq!(bodies(&server, "cut"), vec![body(b"ab", false)]);
    assert_eq!(server.executions("cut"), 0);
    assert_eq!(server.handler_calls(), 0);
}

#[tokio::test]
async fn black_hole_keeps_the_connection_open_until_the_server_is_dropped() {
    let server = faulty("hole", Fault::BlackHole);
    let mut c = Client::connect(&server).await;
    c.send(b"GET / HTTP/1.1\r\nx-request-id: hole\r\n\r\n")
        .await;
    assert!(wait_until_async(&server, |s| s.executions("hole") == 1, PATIENCE).await);
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(200), c.stream.read(&mut byte)).await;
    assert!(read.is_err(), "no answer and no close: {read:?}");
    drop(server);
    let end = c.ending().await;
    assert!(end.bytes.is_empty(), "{end:?}");
}

#[tokio::test]
async fn switching_protocols_then_echo() {
    let server = faulty("up", Fault::SwitchProtocols);
    let mut c = Client::connect(&server).await;
    c.send(
        b"GET / HTTP/1.1\r\nx-request-id: up\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\nearly",
    )
    .await;
    let expected =
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\nearly";
    while c.buf.len() < expected.len() {
        tokio::time::timeout(PATIENCE, c.fill())
            .await
            .expect("bounded")
            .expect("read");
    }
    assert_eq!(&c.buf[..], &expected[..]);
    c.buf.clear();
    c.send(b"ping").await;
    while c.buf.len() < 4 {
        tokio::time::timeout(PATIENCE, c.fill())
            .await
            .expect("bounded")
            .expect("read");
    }
    assert_eq!(&c.buf[..], b"ping");
    c.stream.shutdown().await.expect("shutdown");
    let end = c.ending().await;
    assert_eq!(end.error, None, "{end:?}");
}

#[tokio::test]
async fn announced_close_after_requests() {
    let server = start(
        numbered(OriginConfig {
            close_after_requests: Some(2),
            close_with_rst: true,
            ..NEVER_IDLE
        })
        .announce_close(true),
    );
    let mut c = Client::connect(&server).await;
    assert_eq!(c.get(None).await.header("connection"), None);
    let r = c.get(None).await;
    assert_eq!(r.header("connection"), Some("close"));
    let end = c.ending().await;
    assert_eq!(end.error, None, "an announced close is a FIN: {end:?}");
    assert!(wait_until_async(&server, |s| s.closes_done() == 1, PATIENCE).await);
}

#[tokio::test]
async fn random_delays_are_in_range_and_reproducible() {
    let mut a = Rng::new(7);
    let mut b = Rng::new(7);
    let lo = Duration::from_millis(1);
    let hi = Duration::from_millis(5);
    for _ in 0..1000 {
        let d = a.duration_between(lo, hi);
        assert!(d >= lo && d <= hi, "{d:?}");
        assert_eq!(d, b.duration_between(lo, hi));
    }
    assert_eq!(
        a.duration_between(hi, lo),
        hi,
        "an empty range gives its start"
    );
    // The full range must not overflow.
    let _ = a.up_to(u64::MAX);

    let server = start(numbered(NEVER_IDLE).random_delay(
        Duration::from_millis(50),
        Duration::from_millis(60),
        1,
    ));
    let mut c = Client::connect(&server).await;
    let started = Instant::now();
    assert_eq!(c.get(None).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(50));
}

#[tokio::test]
async fn rst_then_refuse_stops_listening_before_the_reset() {
    let server = faulty("last", Fault::RstWithoutAnswerThenRefuse);
    let mut other = Client::connect(&server).await;
    let end = post_and_read_ending(&server, "last", b"abc").await;
    assert_eq!(end.error, Some(io::ErrorKind::ConnectionReset), "{end:?}");
    assert_eq!(server.executions("last"), 1);
    // New connections are refused; the open one is still served.
    let refused = TcpStream::connect(server.addr()).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(other.get(Some("still")).await.status, 200);
}

/// `tests/support` maps a `ServerConfig` onto the origin: numbered answers, the
/// older per-id lists as faults, a verbatim `Keep-Alive`, and an unannounced close
/// after N requests with the configured close mode.
#[tokio::test]
async fn the_adapter_maps_its_config_onto_the_origin() {
    let server = TestServer::start(ServerConfig {
        keep_alive_header: Some("timeout=7".to_owned()),
        close_after_requests: Some(2),
        close_mode: support::CloseMode::Rst,
        rst_without_answer: vec!["boom".to_owned()],
        partial_head_then_rst: vec!["part".to_owned()],
        ..ServerConfig::default()
    });
    let addr = server.addr();
    let connect = || async move {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Client {
            stream,
            buf: Vec::new(),
        }
    };
    let mut c = connect().await;
    c.send(b"GET / HTTP/1.1\r\nx-request-id: boom\r\n\r\n")
        .await;
    let end = c.ending().await;
    assert_eq!(end.error, Some(io::ErrorKind::ConnectionReset), "{end:?}");
    assert!(end.bytes.is_empty(), "{end:?}");

    let mut c = connect().await;
    c.send(b"GET / HTTP/1.1\r\nx-request-id: part\r\n\r\n")
        .await;
    let end = c.ending().await;
    assert_eq!(end.error, Some(io::ErrorKind::ConnectionReset), "{end:?}");
    assert_eq!(end.bytes, b"HTTP/1.1 200 OK\r\ncontent-len");

    let mut c = connect().await;
    let r = c.get(Some("boom")).await;
    assert_eq!(r.body, "ok 1");
    assert_eq!(r.header("x-handler-calls-for-id"), Some("2"));
    assert_eq!(r.header("keep-alive"), Some("timeout=7"));
    let r = c.get(None).await;
    assert_eq!(r.body, "ok 2");
    assert_eq!(r.header("connection"), None, "not announced");
    let end = c.ending().await;
    assert_eq!(end.error, Some(io::ErrorKind::ConnectionReset), "{end:?}");
    assert_eq!(server.calls_for("boom"), 2);
    assert_eq!(server.seen_for("part"), 1);
    assert_eq!(server.connections_accepted(), 3);
    assert_eq!(server.requests_per_connection(), vec![1, 1, 2]);
    assert_eq!(
        server.bodies_for("boom"),
        vec![(Vec::new(), true), (Vec::new(), true)]
    );
}

/// Everything the thread-run origin does also works on the caller's runtime.
#[tokio::test]
async fn builder_knobs_work_on_the_callers_runtime() {
    let origin = numbered(OriginConfig {
        idle_timeout: IDLE,
        ..NEVER_IDLE
    })
    .fault("f", Fault::HalfBodyThenClose)
    .stray_408_on_idle_close(true)
    .start()
    .await
    .expect("the origin listens on 127.0.0.1");
    let end = post_and_read_ending(&origin, "f", b"abc").await;
    assert_eq!(end.error, None, "{end:?}");
    assert_eq!(
        end.bytes,
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello"
    );
    let mut c = Client::connect(&origin).await;
    let r = c.get(Some("f")).await;
    assert_eq!(r.body, "ok 1");
    assert_eq!(r.header("x-handler-calls-for-id"), Some("2"));
    let end = c.ending().await;
    assert_eq!(end.bytes, STRAY_408, "{end:?}");
    assert_eq!(origin.executions("f"), 2);
    assert_eq!(origin.idle_closes(), 1);
    assert!(wait_until_async(&origin, |s| s.closes_done() == 2, PATIENCE).await);
    assert_eq!(origin.duplicates(), 1);
}
