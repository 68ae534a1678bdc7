//! Values from outside are hostile: a server's `Keep-Alive` hint and every duration a
//! user can set may be huge (`u64::MAX` seconds, `Duration::MAX`). None of them may
//! panic, and each either behaves as documented or is refused by `build()`.
//!
//! The server here is a few lines of raw TCP inline in this file, so the test controls
//! the exact header bytes (a real HTTP server would refuse to send some of them).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use closefirst::retry::Policy;
use closefirst::{Client, ConnectionInfo, PoolStats, TcpKeepalive};

/// Bound on every wait in this file; generous, as nothing here should take more than
/// a few milliseconds.
const WAIT: Duration = Duration::from_secs(5);
/// The largest request head the raw server reads before giving up on a connection.
const MAX_HEAD: usize = 64 * 1024;

/// A raw HTTP/1.1 server that answers every request with `200 ok` (1 MiB of `x` for
/// path `/big`, more than hyper buffers, so the connection stays busy until the caller
/// reads the body) and the given `Keep-Alive` header value (none when `None`), and
/// counts accepted connections and requests read.
struct RawServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// How the raw server treats each connection.
#[derive(Clone, Copy)]
struct Behaviour {
    keep_alive: Option<&'static str>,
    /// Answer this many requests on a connection, then read the next one and close
    /// without answering (the request was executed, the response lost).
    answers_per_connection: Option<usize>,
}

impl RawServer {
    async fn start(keep_alive: Option<&'static str>) -> RawServer {
        RawServer::with(Behaviour {
            keep_alive,
            answers_per_connection: None,
        })
        .await
    }

    async fn with(behaviour: Behaviour) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let accepted = Arc::clone(&accepted);
            let requests = Arc::clone(&requests);
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve(stream, behaviour, Arc::clone(&requests)));
                }
            }
        });
        RawServer {
            addr,
            accepted,
            requests,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn big_url(&self) -> String {
        format!("http://{}/big", self.addr)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, behaviour: Behaviour, requests: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut answered = 0;
    loop {
        // GET requests without a body: the head is the whole request.
        let end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            if buf.len() > MAX_HEAD {
                return;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let big = buf.starts_with(b"GET /big ");
        buf.drain(..end);
        requests.fetch_add(1, Ordering::SeqCst);
        if behaviour.answers_per_connection == Some(answered) {
            return;
        }
        let body = if big {
            vec![b'x'; 1 << 20]
        } else {
            b"ok".to_vec()
        };
        let mut head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n", body.len());
        if let Some(value) = behaviour.keep_alive {
            head.push_str(&format!("keep-alive: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut response = head.into_bytes();
        response.extend_from_slice(&body);
        if stream.write_all(&response).await.is_err() {
            return;
        }
        answered += 1;
    }
}

async fn get(client: &Client<Empty<Bytes>>, url: &str) -> ConnectionInfo {
    let req = Request::get(url).body(Empty::new()).unwrap();
    let resp = tokio::time::timeout(WAIT, client.request(req))
        .await
        .expect("the request completes in time")
        .expect("the request succeeds");
    assert_eq!(resp.status(), 200);
    let info = resp
        .extensions()
        .get::<ConnectionInfo>()
        .cloned()
        .expect("ConnectionInfo is attached to every response");
    let body = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .expect("the body completes in time")
        .expect("the body reads without error")
        .to_bytes();
    assert_eq!(&body[..], b"ok");
    info
}

/// Waits (real time, bounded by [`WAIT`]) until the pool has decided what to do with
/// the connection whose body was just read: it went back to the idle list, or was
/// closed. Connections go back on a task of their own once their body has ended.
/// Returns the stats at that point, or `None` if the pool never decided (the check-in
/// task died).
async fn settled(client: &Client<Empty<Bytes>>) -> Option<PoolStats> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = client.stats();
        if stats.idle == 1 || stats.evictions.total() > 0 {
            return Some(stats);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Two requests in a row against a server sending `keep_alive`; returns whether the
/// second one reused the first one's connection, checking that the pool and the server
/// agree.
async fn second_request_reuses(
    builder: closefirst::Builder,
    keep_alive: Option<&'static str>,
) -> bool {
    let server = RawServer::start(keep_alive).await;
    let client: Client<Empty<Bytes>> = builder.build().expect("valid settings");
    let first = get(&client, &server.url()).await;
    assert!(!first.reused);
    let stats = settled(&client).await;
    assert!(
        stats.is_some(),
        "keep-alive {keep_alive:?}: the connection was neither pooled nor closed \
         (the check-in task died?): {:?}",
        client.stats()
    );
    let second = get(&client, &server.url()).await;
    let expected_connections = if second.reused { 1 } else { 2 };
    assert_eq!(
        server.accepted(),
        expected_connections,
        "keep-alive {keep_alive:?}: server-side connection count"
    );
    if second.reused {
        assert_eq!(second.id, first.id);
        assert_eq!(second.requests, 2);
    }
    second.reused
}

#[tokio::test]
async fn a_keep_alive_timeout_of_u64_max_seconds_is_capped_and_the_connection_is_reused() {
    assert!(
        second_request_reuses(Client::builder(), Some("timeout=18446744073709551615")).await,
        "a huge hint must not stop reuse"
    );
    assert!(
        second_request_reuses(
            Client::builder(),
            Some("timeout=18446744073709551615, max=18446744073709551615")
        )
        .await
    );
}

#[tokio::test]
async fn a_keep_alive_timeout_of_zero_retires_the_connection() {
    assert!(!second_request_reuses(Client::builder(), Some("timeout=0")).await);
}

#[tokio::test]
async fn malformed_keep_alive_values_are_ignored_and_the_connection_is_reused() {
    for value in [
        "timeout=abc",
        "timeout=-1",
        "timeout=99999999999999999999",
        "timeout=184467440737095516150",
        "timeout=1e9",
        "timeout=\"",
    ] {
        assert!(
            second_request_reuses(Client::builder(), Some(value)).await,
            "{value}"
        );
    }
}

/// Every duration option set to `Duration::MAX` at once (the margin just below it, as
/// it must stay smaller than `idle_timeout`): `build()` accepts them, requests work,
/// connections are reused, and huge server hints on top change nothing.
#[tokio::test]
async fn duration_max_settings_build_and_serve_requests() {
    let builder = || {
        Client::builder()
            .idle_timeout(Duration::MAX)
            .max_lifetime(Duration::MAX)
            .checkout_timeout(Duration::MAX)
            .connect_timeout(Duration::MAX)
            .retry(Policy::idempotent().backoff(Duration::MAX))
    };
    assert!(second_request_reuses(builder(), None).await);
    assert!(second_request_reuses(builder(), Some("timeout=18446744073709551615")).await);
    // The margin applies to server hints (and learned timeouts) only: without a hint
    // the connection is kept.
    let huge_margin = || builder().keep_alive_margin(Duration::MAX - Duration::from_nanos(1));
    assert!(second_request_reuses(huge_margin(), None).await);
    // A hint, capped at a day, leaves nothing after such a margin: not kept.
    assert!(!second_request_reuses(huge_margin(), Some("timeout=18446744073709551615")).await);
    // The margin leaves nothing of a 5 s hint: the connection is not kept.
    assert!(!second_request_reuses(huge_margin(), Some("timeout=5")).await);
}

/// With every connection taken, a request waits up to `checkout_timeout`; a huge one
/// waits (it does not fail at once, nor panic), and gets the connection when it is
/// freed.
#[tokio::test]
async fn a_huge_checkout_timeout_waits_for_the_connection() {
    let server = RawServer::start(None).await;
    let client: Client<Empty<Bytes>> = Client::builder()
        .max_connections_per_origin(1)
        .checkout_timeout(Duration::MAX)
        .build()
        .expect("valid settings");
    let req = Request::get(server.big_url()).body(Empty::new()).unwrap();
    let held = tokio::time::timeout(WAIT, client.request(req))
        .await
        .expect("in time")
        .expect("first request succeeds");
    let waiting = tokio::spawn({
        let client = client.clone();
        let url = server.url();
        async move { get(&client, &url).await }
    });
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.stats().waiting != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second request never waited: {:?}",
            client.stats()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Reading the first body to its end frees the connection for the waiter.
    held.into_body().collect().await.expect("body");
    let second = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the waiter is served in time")
        .expect("the waiter did not panic");
    assert!(second.reused);
    assert_eq!(server.accepted(), 1);
}

/// A resend waits `backoff` first. `Duration::MAX` sleeps (tokio caps it at about 30
/// years) rather than panicking: the request is still pending when the caller's own
/// timeout ends it, and it was not sent a third time.
#[tokio::test]
async fn a_huge_backoff_waits_instead_of_panicking() {
    // The second request on a connection is read and never answered: a GET on a
    // reused connection with no response byte back, which the default policy resends.
    let server = RawServer::with(Behaviour {
        keep_alive: None,
        answers_per_connection: Some(1),
    })
    .await;
    let client: Client<Empty<Bytes>> = Client::builder()
        .retry(Policy::idempotent().no_budget().backoff(Duration::MAX))
        .build()
        .expect("valid settings");
    get(&client, &server.url()).await;
    assert!(settled(&client).await.is_some_and(|s| s.idle == 1));
    let req = Request::get(server.url()).body(Empty::new()).unwrap();
    let outcome = tokio::time::timeout(Duration::from_millis(500), client.request(req)).await;
    assert!(
        outcome.is_err(),
        "the resend waits out its backoff: {:?}",
        outcome.map(|r| r.map(|resp| resp.status()))
    );
    assert_eq!(server.requests(), 2, "the resend never went out");
}

#[test]
fn kernel_keepalive_values_beyond_what_the_kernel_takes_are_refused() {
    let refused = |keepalive: TcpKeepalive| {
        let err = Client::builder()
            .tcp_keepalive(keepalive)
            .build::<Empty<Bytes>>()
            .unwrap_err();
        assert!(err.is_config());
        err.to_string()
    };
    assert_eq!(
        refused(TcpKeepalive::new().idle(Duration::MAX)),
        "invalid configuration: tcp_keepalive idle must be at most 32767 s \
         (got 18446744073709551615999.999999 ms)"
    );
    assert_eq!(
        refused(TcpKeepalive::new().interval(Duration::from_secs(32768))),
        "invalid configuration: tcp_keepalive interval must be at most 32767 s \
         (got 32768000 ms)"
    );
    assert_eq!(
        refused(TcpKeepalive::new().retries(u32::MAX)),
        "invalid configuration: tcp_keepalive retries must be at most 127 probes \
         (got 4294967295 probes)"
    );
    let user_timeout = |timeout: Duration| {
        Client::builder()
            .tcp_user_timeout(timeout)
            .build::<Empty<Bytes>>()
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        user_timeout(Duration::MAX),
        "invalid configuration: tcp_user_timeout must be at most 2147483647 ms \
         (got 18446744073709551615999.999999 ms); use None to turn it off"
    );
    assert!(user_timeout(Duration::from_millis(2_147_483_648)).contains("(got 2147483648 ms)"));
    // Below 1 ms the kernel would read 0: "off", the opposite of what was asked.
    assert_eq!(
        user_timeout(Duration::from_micros(500)),
        "invalid configuration: tcp_user_timeout must be at least 1 ms (got 0.5 ms); \
         use None to turn it off"
    );
}

/// The largest accepted kernel values build, connect, and are what the kernel reports.
#[tokio::test]
async fn the_largest_accepted_kernel_values_are_applied() {
    let server = RawServer::start(None).await;
    let client: Client<Empty<Bytes>> = Client::builder()
        .tcp_keepalive(
            TcpKeepalive::new()
                .idle(Duration::from_secs(32767))
                .interval(Duration::from_secs(32767))
                .retries(127),
        )
        .tcp_user_timeout(Duration::from_millis(2_147_483_647))
        .build()
        .expect("the largest values are accepted");
    let info = get(&client, &server.url()).await;
    let socket = info
        .socket
        .expect("the built-in connector reports socket options");
    if cfg!(target_os = "linux") {
        assert_eq!(socket.keepalive, Some(true));
        assert_eq!(socket.keepalive_idle, Some(Duration::from_secs(32767)));
        assert_eq!(socket.keepalive_interval, Some(Duration::from_secs(32767)));
        assert_eq!(socket.keepalive_retries, Some(127));
        assert_eq!(
            socket.user_timeout,
            Some(Duration::from_millis(2_147_483_647))
        );
    }
}

/// The probe's options and parity check with `Duration::MAX`: no panic, and a server
/// that closes at once is measured.
#[tokio::test]
async fn probe_options_of_duration_max_do_not_panic() {
    let server = RawServer::start(Some("timeout=18446744073709551615")).await;
    let uri: http::Uri = server.url().parse().unwrap();
    let options = closefirst::keepalive::ProbeOptions::new()
        .method(http::Method::GET)
        .connect_timeout(Duration::MAX)
        .response_timeout(Duration::MAX)
        .max_wait(Duration::from_millis(200))
        .front_idle(Duration::MAX)
        .margin(Duration::MAX);
    let report = tokio::time::timeout(WAIT, closefirst::keepalive::probe(&uri, options))
        .await
        .expect("the probe ends after max_wait")
        .expect("the probe succeeds");
    assert_eq!(report.hint_timeout(), Some(Duration::from_secs(u64::MAX)));
    assert_eq!(report.recommended_idle_timeout(), None);
    let parity = report.parity.expect("front_idle was given");
    let err = parity.expect_err("nothing is long enough for MAX + MAX");
    assert_eq!(err.required_backend_keep_alive(), Duration::MAX);
    assert!(!err.to_string().is_empty());
}

/// A default must never make a valid explicit setting fail: a short `idle_timeout` on
/// its own builds (the default margin follows it) and serves requests.
#[tokio::test]
async fn a_short_idle_timeout_alone_builds_and_serves() {
    let builder = Client::builder().idle_timeout(Duration::from_millis(500));
    assert!(second_request_reuses(builder, None).await);
    // An explicit margin is still checked against it.
    let err = Client::builder()
        .idle_timeout(Duration::from_millis(500))
        .keep_alive_margin(Duration::from_millis(500))
        .build::<Empty<Bytes>>()
        .unwrap_err();
    assert!(err.is_config());
}

/// The lab's origin and relay take user durations too: a huge idle timeout never
/// closes, a relay delay beyond an hour is refused.
#[tokio::test]
async fn lab_servers_take_huge_durations_without_panicking() {
    use closefirst::lab::{Origin, OriginConfig, Relay};

    let origin = Origin::start(OriginConfig {
        idle_timeout: Duration::MAX,
        response_delay: Duration::from_millis(1),
        ..OriginConfig::default()
    })
    .await
    .unwrap();
    let client: Client<Empty<Bytes>> = Client::builder().build().unwrap();
    let url = format!("http://{}/", origin.addr());
    let req = Request::get(&url).body(Empty::new()).unwrap();
    let resp = tokio::time::timeout(WAIT, client.request(req))
        .await
        .expect("in time")
        .expect("the origin answers");
    assert_eq!(resp.status(), 200);
    assert_eq!(origin.handler_calls(), 1);

    let err = Relay::start(origin.addr(), Duration::MAX)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(
        err.to_string(),
        "relay one_way_delay must be at most 3600 s (got 18446744073709551615999 ms)"
    );
    Relay::start(origin.addr(), Duration::from_secs(3600))
        .await
        .expect("an hour is accepted");
}
