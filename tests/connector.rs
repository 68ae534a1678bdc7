//! The built-in connector (hyper-util's `HttpConnector` underneath): a custom resolver,
//! a share of the connect timeout per address, happy eyeballs, the local address.
//!
//! Every "black hole" here is a loopback listener whose accept queue is full: Linux
//! drops a SYN to such a listener (the client retransmits and waits), which is what an
//! address that drops packets looks like, without depending on the network. TEST-NET
//! addresses are no use for this: a sandbox's gateway may answer or refuse them (on
//! the machine these tests were written on, 192.0.2.1 refused and 10.255.255.1
//! accepted). [`BlackHole::new`] checks that a connect to it hangs before a test relies
//! on it.

mod support;

use std::convert::Infallible;
use std::error::Error as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Empty, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use closefirst::dns::Name;
use closefirst::{Client, Error};

const LOCALHOST_V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LOCALHOST_V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// A small HTTP/1.1 server on `ip` answering `200 ok` to everything, recording the
/// peer address of every connection it accepts. Stops accepting when dropped.
struct Live {
    addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    accepting: JoinHandle<()>,
}

impl Live {
    async fn start(ip: IpAddr) -> Live {
        let listener = TcpListener::bind((ip, 0))
            .await
            .expect("test server: a listener on loopback");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let peers = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&peers);
        // Ends when the test drops the server (abort) or the runtime shuts down.
        let accepting = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                seen.lock()
                    .expect("no test thread panics holding it")
                    .push(peer);
                tokio::spawn(async move {
                    let ok = hyper::service::service_fn(|_| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), ok)
                        .await;
                });
            }
        });
        Live {
            addr,
            peers,
            accepting,
        }
    }

    fn peers(&self) -> Vec<SocketAddr> {
        self.peers
            .lock()
            .expect("no test thread panics holding it")
            .clone()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// A loopback address whose SYNs are dropped: a listener with a backlog of 0 whose
/// accept queue is filled and never drained.
struct BlackHole {
    addr: SocketAddr,
    _listener: TcpListener,
    _queued: Vec<TcpStream>,
}

impl BlackHole {
    /// How long a probe connect must hang for the address to count as black-holed.
    const PROBE: Duration = Duration::from_millis(300);
    /// Connections queued at most before giving up on the accept queue ever filling.
    const MAX_QUEUED: usize = 8;

    async fn new(ip: IpAddr) -> BlackHole {
        let socket = match ip {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .expect("a TCP socket");
        socket.bind((ip, 0).into()).expect("bind on loopback");
        let listener = socket.listen(0).expect("listen");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let mut queued = Vec::new();
        for _ in 0..Self::MAX_QUEUED {
            match tokio::time::timeout(Self::PROBE, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => queued.push(stream),
                Ok(Err(e)) => panic!("connecting to the filling listener {addr} failed: {e}"),
                // The queue is full and SYNs are dropped: the black hole holds.
                Err(_) => {
                    return BlackHole {
                        addr,
                        _listener: listener,
                        _queued: queued,
                    }
                }
            }
        }
        panic!(
            "{addr}: {} connections queued and the next still connected; \
             this kernel does not drop SYNs to a full accept queue",
            Self::MAX_QUEUED
        );
    }
}

/// A resolver that answers every name with `addrs`, counting its calls and keeping
/// the names asked.
#[derive(Clone, Default)]
struct Fixed {
    addrs: Vec<SocketAddr>,
    calls: Arc<AtomicUsize>,
    names: Arc<Mutex<Vec<String>>>,
}

impl Fixed {
    fn new(addrs: impl IntoIterator<Item = SocketAddr>) -> Fixed {
        Fixed {
            addrs: addrs.into_iter().collect(),
            ..Fixed::default()
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl tower::Service<Name> for Fixed {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.names
            .lock()
            .expect("no test thread panics holding it")
            .push(name.as_str().to_owned());
        let answer = if name.as_str().ends_with(".invalid") {
            Ok(self.addrs.clone().into_iter())
        } else {
            Err(std::io::Error::other("not a test name"))
        };
        std::future::ready(answer)
    }
}

async fn get_err(client: &Client<Empty<Bytes>>, url: &str) -> Error {
    let req = Request::get(url)
        .body(Empty::new())
        .expect("a valid request");
    client
        .request(req)
        .await
        .expect_err("the request must fail")
}

/// Every message down `err`'s source chain, for assertions on a cause.
fn chain(err: &Error) -> Vec<String> {
    let mut messages = vec![err.to_string()];
    let mut next = err.source();
    while let Some(cause) = next {
        messages.push(cause.to_string());
        next = cause.source();
    }
    messages
}

fn ipv6_loopback_works() -> bool {
    std::net::TcpListener::bind((LOCALHOST_V6, 0)).is_ok()
}

#[tokio::test]
async fn a_black_holed_first_address_leaves_time_for_the_next() {
    let hole = BlackHole::new(LOCALHOST_V4).await;
    let live = Live::start(LOCALHOST_V4).await;
    let connect_timeout = Duration::from_secs(4);
    let client: Client<Empty<Bytes>> = Client::builder()
        .connect_timeout(connect_timeout)
        .resolver(Fixed::new([hole.addr, live.addr]))
        .build()
        .unwrap();

    let started = Instant::now();
    // No port in the URI: the resolver's ports are kept.
    let (info, body) = support::get(&client, "http://backend.invalid/").await;
    let elapsed = started.elapsed();

    assert_eq!(body, "ok");
    assert_eq!(info.remote_addr, Some(live.addr));
    assert_eq!(
        live.peers().len(),
        1,
        "one connection reached the live address"
    );
    // Two addresses: each had half of the 4 s. The black hole was tried first and held
    // its whole share; the live address then connected at once.
    assert!(
        elapsed >= Duration::from_millis(1_900),
        "the black-holed address was tried first for its share: {elapsed:?}"
    );
    // Expected at about 2 s: a margin of 2 s for a loaded machine.
    assert!(
        elapsed < connect_timeout,
        "connected within the connect timeout: {elapsed:?}"
    );
}

#[tokio::test]
async fn a_custom_resolver_is_used_for_names_and_not_for_ip_literals() {
    let live = Live::start(LOCALHOST_V4).await;
    // Port 0: the URI's port is used.
    let resolver = Fixed::new([SocketAddr::new(LOCALHOST_V4, 0)]);
    let client: Client<Empty<Bytes>> = Client::builder()
        .resolver(resolver.clone())
        .build()
        .unwrap();
    let url = format!("http://backend.invalid:{}/", live.addr.port());

    let (first, _) = support::get(&client, &url).await;
    support::until(&client, |s| s.idle == 1).await;
    let (second, _) = support::get(&client, &url).await;
    assert!(!first.reused && second.reused);
    assert_eq!(resolver.calls(), 1, "a reused connection needs no lookup");
    assert_eq!(*resolver.names.lock().unwrap(), ["backend.invalid"]);
    assert_eq!(first.remote_addr, Some(live.addr));

    support::get(&client, &format!("http://127.0.0.1:{}/", live.addr.port())).await;
    assert_eq!(resolver.calls(), 1, "an IP literal is not resolved");

    let err = get_err(&client, "http://elsewhere.example/").await;
    assert!(err.is_connect() && !err.is_timeout(), "{err}");
    let messages = chain(&err);
    assert_eq!(
        messages[0],
        "GET http://elsewhere.example: failed to connect"
    );
    assert!(
        messages
            .iter()
            .any(|m| m == "resolving `elsewhere.example` failed"),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m == "not a test name"),
        "{messages:?}"
    );
    assert_eq!(resolver.calls(), 2);
}

#[tokio::test]
async fn an_empty_answer_is_a_clear_connect_error() {
    let client: Client<Empty<Bytes>> = Client::builder().resolver(Fixed::new([])).build().unwrap();
    let err = get_err(&client, "http://nowhere.invalid:8080/").await;
    assert!(err.is_connect(), "{err}");
    let messages = chain(&err);
    assert_eq!(
        messages[0],
        "GET http://nowhere.invalid:8080: failed to connect"
    );
    assert!(
        messages
            .iter()
            .any(|m| m == "`nowhere.invalid` resolved to no address"),
        "{messages:?}"
    );
}

#[tokio::test]
async fn the_connector_alone_names_host_port_and_resolving() {
    use tower::ServiceExt;
    let connector = closefirst::connect::TcpConnector::new().resolver(Fixed::new([]));
    let err = connector
        .oneshot("http://nowhere.invalid:8080/".parse().unwrap())
        .await
        .unwrap_err();
    assert!(err.is_connect());
    assert_eq!(
        err.to_string(),
        "failed to connect to nowhere.invalid:8080 (resolving)"
    );

    let closed = {
        let listener = std::net::TcpListener::bind((LOCALHOST_V4, 0)).unwrap();
        listener.local_addr().unwrap()
    };
    let err = closefirst::connect::TcpConnector::new()
        .oneshot(format!("http://{closed}/").parse().unwrap())
        .await
        .unwrap_err();
    assert!(err.is_connect() && !err.is_timeout());
    assert_eq!(err.to_string(), format!("failed to connect to {closed}"));
}

#[tokio::test]
async fn a_single_black_holed_address_is_a_connect_timeout() {
    let hole = BlackHole::new(LOCALHOST_V4).await;
    let connect_timeout = Duration::from_millis(300);
    let client: Client<Empty<Bytes>> = Client::builder()
        .connect_timeout(connect_timeout)
        .build()
        .unwrap();
    // The connector's timer for the only address and the pool's timer for the whole
    // connect end in the same millisecond: whichever fires first, the error is one.
    for _ in 0..5 {
        let started = Instant::now();
        let err = get_err(&client, &format!("http://{}/", hole.addr)).await;
        assert!(err.is_connect() && err.is_timeout(), "{err}");
        assert!(
            err.to_string().ends_with("connect timed out after 300 ms"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

#[tokio::test]
async fn the_local_address_is_the_peer_the_server_sees() {
    let local = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    if std::net::TcpListener::bind((local, 0)).is_err() {
        // macOS, for one, has only 127.0.0.1 on its loopback interface.
        eprintln!("skipped: {local} cannot be bound here");
        return;
    }
    let live = Live::start(LOCALHOST_V4).await;
    let client: Client<Empty<Bytes>> = Client::builder().local_address(local).build().unwrap();
    let (info, _) = support::get(&client, &format!("http://{}/", live.addr)).await;
    assert_eq!(info.remote_addr, Some(live.addr));
    let peers = live.peers();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].ip(), local);
}

#[tokio::test]
async fn a_local_address_that_is_not_ours_is_a_connect_error_naming_the_origin() {
    // TEST-NET-2: assigned to no machine.
    let foreign = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    let live = Live::start(LOCALHOST_V4).await;
    let client: Client<Empty<Bytes>> = Client::builder().local_address(foreign).build().unwrap();
    let url = format!("http://{}/", live.addr);
    let err = get_err(&client, &url).await;
    assert!(err.is_connect() && !err.is_timeout(), "{err}");
    assert_eq!(
        err.to_string(),
        format!("GET http://{}: failed to connect", live.addr)
    );
    assert!(live.peers().is_empty());
}

#[tokio::test]
async fn happy_eyeballs_reaches_ipv4_behind_a_black_holed_ipv6_address() {
    if !ipv6_loopback_works() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let hole = BlackHole::new(LOCALHOST_V6).await;
    let live = Live::start(LOCALHOST_V4).await;
    let client: Client<Empty<Bytes>> = Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .resolver(Fixed::new([hole.addr, live.addr]))
        .build()
        .unwrap();

    let started = Instant::now();
    let (info, _) = support::get(&client, "http://dual.invalid/").await;
    let elapsed = started.elapsed();

    assert_eq!(info.remote_addr, Some(live.addr));
    // IPv6 came first, so it was tried alone for the 300 ms delay; then IPv4 joined
    // and connected at once. Without happy eyeballs IPv6 would have held its share
    // (5 s of the 10).
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[tokio::test]
async fn happy_eyeballs_reaches_ipv6_behind_a_black_holed_ipv4_address() {
    if !ipv6_loopback_works() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let hole = BlackHole::new(LOCALHOST_V4).await;
    let live = Live::start(LOCALHOST_V6).await;
    let client: Client<Empty<Bytes>> = Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .happy_eyeballs_timeout(Duration::from_millis(100))
        .resolver(Fixed::new([hole.addr, live.addr]))
        .build()
        .unwrap();

    let started = Instant::now();
    let (info, _) = support::get(&client, "http://dual.invalid/").await;
    let elapsed = started.elapsed();

    assert_eq!(info.remote_addr, Some(live.addr));
    assert_eq!(live.peers()[0].ip(), LOCALHOST_V6);
    assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[tokio::test]
async fn without_happy_eyeballs_addresses_are_tried_in_turn() {
    if !ipv6_loopback_works() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let hole = BlackHole::new(LOCALHOST_V6).await;
    let live = Live::start(LOCALHOST_V4).await;
    let connect_timeout = Duration::from_secs(3);
    let client: Client<Empty<Bytes>> = Client::builder()
        .connect_timeout(connect_timeout)
        .happy_eyeballs_timeout(None)
        .resolver(Fixed::new([hole.addr, live.addr]))
        .build()
        .unwrap();

    let started = Instant::now();
    let (info, _) = support::get(&client, "http://dual.invalid/").await;
    let elapsed = started.elapsed();

    assert_eq!(info.remote_addr, Some(live.addr));
    // One list of two addresses: the IPv6 black hole held its half (1.5 s).
    assert!(elapsed >= Duration::from_millis(1_500), "{elapsed:?}");
    assert!(elapsed < connect_timeout, "{elapsed:?}");
}

#[tokio::test]
async fn the_resolvers_port_is_kept_when_the_uri_has_none_or_the_default() {
    let live = Live::start(LOCALHOST_V4).await;
    for url in ["http://backend.invalid/", "http://backend.invalid:80/"] {
        // A client per URI, so that each one connects.
        let resolver = Fixed::new([live.addr]);
        let client: Client<Empty<Bytes>> = Client::builder()
            .resolver(resolver.clone())
            .build()
            .unwrap();
        let (info, _) = support::get(&client, url).await;
        assert!(!info.reused);
        assert_eq!(info.remote_addr, Some(live.addr), "{url}");
        assert_eq!(resolver.calls(), 1);
    }
    assert_eq!(live.peers().len(), 2);
}
