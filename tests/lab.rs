//! The race lab (`closefirst::lab`): the relay's delays, FIN and RST propagation, the
//! keep-alive race itself on raw sockets, and the origin's behaviour and counters.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use closefirst::lab::{Origin, OriginConfig, Relay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};

/// Bound on any single wait in these tests; only reached when something is broken.
const BOUND: Duration = Duration::from_secs(5);
/// Slack allowed on top of an expected duration (scheduling on a loaded CI machine).
const MARGIN: Duration = Duration::from_millis(150);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn origin(config: OriginConfig) -> Origin {
    Origin::start(config).await.expect("origin starts")
}

async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

fn get(id: &str) -> String {
    format!("GET / HTTP/1.1\r\nhost: lab\r\nx-request-id: {id}\r\n\r\n")
}

/// A response as the tests see it.
#[derive(Debug)]
struct Response {
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one response (head and `content-length` body). Fails with `UnexpectedEof` if
/// the connection ends first, carrying how many bytes had arrived.
async fn read_response(stream: &mut TcpStream) -> io::Result<Response> {
    let mut buf = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf[..end].to_vec()).expect("utf-8 head");
            let mut response = Response {
                head,
                body: buf[end + 4..].to_vec(),
            };
            let len: usize = response
                .header("content-length")
                .expect("content-length")
                .parse()
                .expect("number");
            while response.body.len() < len {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body cut"));
                }
                response.body.extend_from_slice(&chunk[..n]);
            }
            return Ok(response);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            let msg = format!("EOF after {} response bytes", buf.len());
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, msg));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn exchange(stream: &mut TcpStream, request: &str) -> Response {
    stream.write_all(request.as_bytes()).await.expect("write");
    let response = timeout(BOUND, read_response(stream))
        .await
        .expect("response in time")
        .expect("response");
    assert!(response.head.starts_with("HTTP/1.1 200 OK"), "{response:?}");
    assert_eq!(response.body, b"ok\n");
    response
}

/// Waits for the end of the connection: `Ok(())` for EOF, the error for a reset.
/// Panics if data arrives.
async fn read_end(stream: &mut TcpStream) -> io::Result<()> {
    let mut byte = [0; 1];
    let n = timeout(BOUND, stream.read(&mut byte))
        .await
        .expect("connection ends in time")?;
    assert_eq!(n, 0, "unexpected data");
    Ok(())
}

/// A TCP echo server for measuring the relay alone.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                stream.set_nodelay(true).unwrap();
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn relay_delays_each_direction() {
    let delay = ms(50);
    let echo = echo_server().await;
    let relay = Relay::start(echo, delay).await.unwrap();
    let mut stream = connect(relay.addr()).await;
    for round in 0..3 {
        let start = Instant::now();
        stream.write_all(b"ping").await.unwrap();
        let mut buf = [0; 4];
        timeout(BOUND, stream.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let rtt = start.elapsed();
        assert_eq!(&buf, b"ping");
        assert!(rtt >= 2 * delay, "round {round}: {rtt:?} < 2 x {delay:?}");
        assert!(rtt < 2 * delay + MARGIN, "round {round}: {rtt:?}");
    }
    assert_eq!(relay.connections(), 1);
    assert_eq!(relay.upstream(), echo);
    assert_eq!(relay.one_way_delay(), delay);
}

#[tokio::test]
async fn relay_keeps_order_of_many_chunks() {
    let relay = Relay::start(echo_server().await, ms(5)).await.unwrap();
    let stream = connect(relay.addr()).await;
    let (mut r, mut w) = stream.into_split();
    let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let expected = sent.clone();
    let writer = tokio::spawn(async move {
        for chunk in sent.chunks(1000) {
            w.write_all(chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
        w
    });
    let mut received = Vec::new();
    timeout(BOUND, r.read_to_end(&mut received))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received.len(), expected.len());
    assert!(received == expected, "bytes reordered or changed");
    drop(writer.await.unwrap());
}

#[tokio::test]
async fn origin_fin_reaches_the_client_one_delay_later() {
    let (idle, delay) = (ms(200), ms(50));
    let origin = origin(OriginConfig {
        idle_timeout: idle,
        ..OriginConfig::default()
    })
    .await;
    let relay = Relay::start(origin.addr(), delay).await.unwrap();
    let mut stream = connect(relay.addr()).await;

    let sent = Instant::now();
    exchange(&mut stream, &get("1")).await;
    read_end(&mut stream).await.expect("EOF, not a reset");
    // The request crosses the relay, the origin idles from its response on, and its
    // FIN crosses the relay: without the relay the EOF would come `2 x delay` earlier.
    let eof_after = sent.elapsed();
    assert!(eof_after >= idle + 2 * delay, "{eof_after:?}");
    assert!(eof_after < idle + 2 * delay + MARGIN, "{eof_after:?}");
    assert_eq!(origin.idle_closes(), 1);
}

#[tokio::test]
async fn fin_is_a_half_close_the_other_direction_keeps_flowing() {
    let delay = ms(30);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    // The server says goodbye, half-closes, and then reads what the client still sends.
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.write_all(b"bye").await.unwrap();
        stream.shutdown().await.unwrap();
        let closed = Instant::now();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        (closed, rest)
    });
    let relay = Relay::start(upstream, delay).await.unwrap();
    let mut stream = connect(relay.addr()).await;
    let mut got = Vec::new();
    timeout(BOUND, stream.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"bye");
    stream.write_all(b"late").await.unwrap();
    stream.shutdown().await.unwrap();
    let (closed, rest) = timeout(BOUND, server).await.unwrap().unwrap();
    assert_eq!(rest, b"late");
    // The FIN needed one delay to reach the client, the late bytes one more back.
    assert!(closed.elapsed() >= 2 * delay, "{:?}", closed.elapsed());
}

/// The race itself, on raw sockets: the origin closes an idle connection, and a request
/// written while that FIN is still in flight is lost to a RST.
#[tokio::test]
async fn request_written_while_the_fin_is_in_flight_is_lost() {
    let (idle, delay) = (ms(200), ms(60));
    let origin = origin(OriginConfig {
        idle_timeout: idle,
        ..OriginConfig::default()
    })
    .await;
    let relay = Relay::start(origin.addr(), delay).await.unwrap();
    let mut stream = connect(relay.addr()).await;

    exchange(&mut stream, &get("1")).await;
    let received = Instant::now();
    // The origin wrote the response one delay before `received`, so it closes at
    // `received - delay + idle`, and the FIN reaches the client at `received + idle`.
    // Writing at `received + idle - delay / 3` lands well inside that window: the
    // origin has been closed for 40 ms, the client's kernel has not seen the FIN yet.
    tokio::time::sleep_until(received + idle - delay / 3).await;
    stream.write_all(get("2").as_bytes()).await.unwrap();
    let written = Instant::now();

    match timeout(BOUND, read_response(&mut stream)).await.unwrap() {
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            assert_eq!(e.to_string(), "EOF after 0 response bytes");
        }
        other => panic!("request 2 should be lost, got {other:?}"),
    }
    assert_eq!(origin.handler_calls(), 1);
    assert_eq!(origin.executions("2"), 0);
    assert_eq!(origin.connections(), 1);

    // The origin answered request 2 with a RST, and the relay carries it back: without
    // writing anything more, the client's socket gets reset (`SO_ERROR` is set) one
    // round trip after request 2 was written.
    let deadline = Instant::now() + BOUND;
    let error = loop {
        if let Some(error) = stream.take_error().unwrap() {
            break error;
        }
        assert!(Instant::now() < deadline, "no RST came back");
        tokio::time::sleep(ms(2)).await;
    };
    let reset_after = written.elapsed();
    assert!(
        matches!(
            error.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        "{error:?}"
    );
    assert!(reset_after >= 2 * delay, "{reset_after:?}");
    assert!(reset_after < 2 * delay + MARGIN, "{reset_after:?}");
}

#[tokio::test]
async fn rst_close_mode_resets_the_client_directly_and_through_the_relay() {
    let idle = ms(100);
    let origin = origin(OriginConfig {
        idle_timeout: idle,
        close_with_rst: true,
        ..OriginConfig::default()
    })
    .await;

    let mut direct = connect(origin.addr()).await;
    exchange(&mut direct, &get("d")).await;
    let error = read_end(&mut direct).await.expect_err("a reset, not EOF");
    assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);

    let delay = ms(40);
    let relay = Relay::start(origin.addr(), delay).await.unwrap();
    let mut relayed = connect(relay.addr()).await;
    let sent = Instant::now();
    exchange(&mut relayed, &get("r")).await;
    let error = read_end(&mut relayed).await.expect_err("a reset, not EOF");
    assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
    let reset_after = sent.elapsed();
    assert!(reset_after >= idle + 2 * delay, "{reset_after:?}");
    assert!(reset_after < idle + 2 * delay + MARGIN, "{reset_after:?}");
    assert_eq!(origin.idle_closes(), 2);
}

#[tokio::test]
async fn client_reset_reaches_the_origin_side() {
    let delay = ms(30);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = Relay::start(listener.local_addr().unwrap(), delay)
        .await
        .unwrap();
    let client = connect(relay.addr()).await;
    let (mut server, _) = listener.accept().await.unwrap();
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    let reset_at = Instant::now();
    drop(client);
    let mut byte = [0; 1];
    let result = timeout(BOUND, server.read(&mut byte)).await.unwrap();
    assert_eq!(
        result.expect_err("a reset").kind(),
        io::ErrorKind::ConnectionReset
    );
    assert!(reset_at.elapsed() >= delay);
}

#[tokio::test]
async fn close_after_requests_closes_with_connection_close() {
    let origin = origin(OriginConfig {
        close_after_requests: Some(2),
        ..OriginConfig::default()
    })
    .await;
    let mut stream = connect(origin.addr()).await;
    let first = exchange(&mut stream, &get("1")).await;
    assert_eq!(first.header("connection"), None);
    let second = exchange(&mut stream, &get("2")).await;
    assert_eq!(second.header("connection"), Some("close"));
    read_end(&mut stream).await.expect("EOF");

    let mut stream = connect(origin.addr()).await;
    exchange(&mut stream, &get("3")).await;
    assert_eq!(origin.connections(), 2);
    assert_eq!(origin.handler_calls(), 3);
    assert_eq!(origin.idle_closes(), 0);
}

#[tokio::test]
async fn request_connection_close_is_honoured() {
    let origin = origin(OriginConfig::default()).await;
    let mut stream = connect(origin.addr()).await;
    let response = exchange(
        &mut stream,
        "GET / HTTP/1.1\r\nhost: lab\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(response.header("connection"), Some("close"));
    read_end(&mut stream).await.expect("EOF");
}

#[tokio::test]
async fn keep_alive_hint_is_whole_seconds_at_least_one() {
    for (idle, expected) in [(ms(2_900), "timeout=2"), (ms(300), "timeout=1")] {
        let origin = origin(OriginConfig {
            idle_timeout: idle,
            send_keep_alive_hint: true,
            ..OriginConfig::default()
        })
        .await;
        let mut stream = connect(origin.addr()).await;
        let response = exchange(&mut stream, &get("1")).await;
        assert_eq!(response.header("keep-alive"), Some(expected));
    }
    let origin = origin(OriginConfig::default()).await;
    let mut stream = connect(origin.addr()).await;
    assert_eq!(
        exchange(&mut stream, &get("1")).await.header("keep-alive"),
        None
    );
}

#[tokio::test]
async fn counts_executions_and_duplicates_per_request_id() {
    let origin = origin(OriginConfig::default()).await;
    let mut a = connect(origin.addr()).await;
    let mut b = connect(origin.addr()).await;
    exchange(&mut a, &get("x")).await;
    exchange(&mut b, &get("y")).await;
    exchange(&mut a, &get("x")).await;
    // Bodies: content-length and chunked, split across writes.
    exchange(
        &mut b,
        "POST / HTTP/1.1\r\nx-request-id: x\r\ncontent-length: 5\r\n\r\nhello",
    )
    .await;
    b.write_all(b"POST / HTTP/1.1\r\nx-request-id: z\r\ntransfer-encoding: chunked\r\n\r\n3\r\nab")
        .await
        .unwrap();
    tokio::time::sleep(ms(20)).await;
    assert_eq!(origin.executions("z"), 0, "counted before the body was in");
    exchange(&mut b, "c\r\n0\r\n\r\n").await;
    exchange(&mut a, "GET / HTTP/1.1\r\nhost: lab\r\n\r\n").await;

    assert_eq!(origin.executions("x"), 3);
    assert_eq!(origin.executions("y"), 1);
    assert_eq!(origin.executions("z"), 1);
    assert_eq!(origin.executions("nope"), 0);
    assert_eq!(origin.duplicates(), 2);
    assert_eq!(origin.handler_calls(), 6);
    assert_eq!(origin.connections(), 2);
}

#[tokio::test]
async fn pipelined_requests_and_head_are_answered_in_order() {
    let origin = origin(OriginConfig::default()).await;
    let mut stream = connect(origin.addr()).await;
    let response = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\n";
    let two = format!("{}{}", get("p1"), get("p2"));
    stream.write_all(two.as_bytes()).await.unwrap();
    let mut expected = [&response[..], b"ok\n", response, b"ok\n"].concat();
    let mut got = vec![0; expected.len()];
    timeout(BOUND, stream.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, expected);

    // HEAD: content-length 3 but no body; the next response follows directly.
    let two = format!("HEAD / HTTP/1.1\r\nhost: lab\r\n\r\n{}", get("p3"));
    stream.write_all(two.as_bytes()).await.unwrap();
    expected = [&response[..], response, b"ok\n"].concat();
    let mut got = vec![0; expected.len()];
    timeout(BOUND, stream.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, expected);
    assert_eq!(origin.handler_calls(), 4);
}

#[tokio::test]
async fn malformed_request_gets_400_and_close() {
    let origin = origin(OriginConfig::default()).await;
    let mut stream = connect(origin.addr()).await;
    stream.write_all(b"NONSENSE\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    timeout(BOUND, stream.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert!(got.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    assert_eq!(origin.handler_calls(), 0);
}

#[tokio::test]
async fn response_delay_is_applied_after_execution() {
    let origin = origin(OriginConfig {
        response_delay: ms(100),
        ..OriginConfig::default()
    })
    .await;
    let mut stream = connect(origin.addr()).await;
    stream.write_all(get("slow").as_bytes()).await.unwrap();
    let start = Instant::now();
    tokio::time::sleep(ms(30)).await;
    assert_eq!(origin.executions("slow"), 1, "executes before answering");
    timeout(BOUND, read_response(&mut stream))
        .await
        .unwrap()
        .unwrap();
    assert!(start.elapsed() >= ms(100));
}

/// Polls until connecting to `addr` is refused.
async fn wait_until_refused(addr: SocketAddr) {
    let deadline = Instant::now() + BOUND;
    loop {
        match TcpStream::connect(addr).await {
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
                return;
            }
            Ok(_) => assert!(Instant::now() < deadline, "{addr} still accepts"),
        }
        tokio::time::sleep(ms(5)).await;
    }
}

#[tokio::test]
async fn dropping_the_relay_and_the_origin_closes_everything() {
    let origin = origin(OriginConfig {
        idle_timeout: Duration::from_secs(60),
        ..OriginConfig::default()
    })
    .await;
    let relay = Relay::start(origin.addr(), ms(10)).await.unwrap();
    let (relay_addr, origin_addr) = (relay.addr(), origin.addr());

    let mut relayed = connect(relay_addr).await;
    exchange(&mut relayed, &get("1")).await;
    let mut direct = connect(origin_addr).await;
    exchange(&mut direct, &get("2")).await;

    drop(relay);
    // The relay's sockets close: the client sees the end at once, not after 60 s.
    let _ = read_end(&mut relayed).await;
    wait_until_refused(relay_addr).await;
    // The origin is still up.
    exchange(&mut direct, &get("3")).await;

    drop(origin);
    let _ = read_end(&mut direct).await;
    wait_until_refused(origin_addr).await;
}

#[tokio::test]
async fn relay_resets_the_client_when_upstream_refuses() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = listener.local_addr().unwrap();
    drop(listener);
    let relay = Relay::start(dead, ms(10)).await.unwrap();
    let mut stream = connect(relay.addr()).await;
    let error = read_end(&mut stream).await.expect_err("a reset");
    assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(relay.connections(), 1);
}
