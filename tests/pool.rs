//! The pooled client on real sockets against a test server that counts connections
//! and handler calls and closes idle connections on its own timer.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use closefirst::Client;
use support::{get, until, ServerConfig, TestServer};

const WAIT: Duration = Duration::from_secs(5);

fn client(builder: closefirst::Builder) -> Client<Empty<Bytes>> {
    builder.build().expect("valid settings")
}

async fn until_idle(client: &Client<Empty<Bytes>>, idle: usize) {
    until(client, |s| s.idle == idle).await;
}

#[tokio::test]
async fn the_client_closes_first_and_a_later_request_opens_a_new_connection() {
    let server = TestServer::start(ServerConfig {
        idle_close: Some(Duration::from_secs(1)),
        ..ServerConfig::default()
    });
    let client = client(
        Client::builder()
            .idle_timeout(Duration::from_millis(300))
            .keep_alive_margin(Duration::ZERO),
    );
    let (first, _) = get(&client, &server.url("/")).await;
    assert!(!first.reused);

    tokio::time::sleep(Duration::from_millis(500)).await;
    // The server's 1 s timer has not fired; the client's 300 ms one has.
    assert!(
        server
            .wait_until_async(|s| s.client_closed_first() == 1, WAIT)
            .await
    );
    assert_eq!(server.server_closed_idle(), 0);
    assert_eq!(client.stats().evictions.idle_timeout, 1);

    let (second, _) = get(&client, &server.url("/")).await;
    assert!(!second.reused);
    assert_ne!(second.id, first.id);
    assert_eq!(server.connections_accepted(), 2);
    assert_eq!(server.handler_calls(), 2);
}

#[tokio::test]
async fn reuse_within_the_idle_timeout_hits_the_same_connection() {
    let server = TestServer::start(ServerConfig::default());
    let client = client(Client::builder());
    let (first, body1) = get(&client, &server.url("/")).await;
    until_idle(&client, 1).await;
    let (second, body2) = get(&client, &server.url("/a?b=c")).await;
    assert!(!first.reused && second.reused);
    assert_eq!(first.id, second.id);
    assert_eq!((first.requests, second.requests), (1, 2));
    assert_eq!((body1.as_str(), body2.as_str()), ("ok 1", "ok 2"));
    assert_eq!(second.remote_addr, Some(server.addr()));
    assert_eq!(server.connections_accepted(), 1);
    let stats = client.stats();
    assert_eq!((stats.connections_opened, stats.reuses), (1, 1));
}

#[tokio::test]
async fn connection_close_from_the_server_is_honoured() {
    let server = TestServer::start(ServerConfig {
        connection_close: true,
        ..ServerConfig::default()
    });
    let client = client(Client::builder());
    for _ in 0..3 {
        let (info, _) = get(&client, &server.url("/")).await;
        assert!(!info.reused);
    }
    assert_eq!(server.connections_accepted(), 3);
    assert!(
        server
            .wait_until_async(|s| s.open_connections() == 0, WAIT)
            .await
    );
    until(&client, |s| s.evictions.connection_close == 3).await;
    assert_eq!(client.stats().idle, 0);
}

#[tokio::test]
async fn connection_close_on_the_request_is_honoured() {
    let server = TestServer::start(ServerConfig::default());
    let client = client(Client::builder());
    for _ in 0..2 {
        let req = Request::get(server.url("/"))
            .header("connection", "close")
            .body(Empty::new())
            .unwrap();
        let resp = client.request(req).await.unwrap();
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!(server.connections_accepted(), 2);
    assert!(
        server
            .wait_until_async(|s| s.open_connections() == 0, WAIT)
            .await
    );
    assert_eq!(client.stats().idle, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn fifty_requests_wait_in_order_for_one_connection() {
    let server = TestServer::start(ServerConfig::default());
    let client = client(Client::builder().max_connections_per_origin(1));
    // On a current-thread runtime the tasks start in spawn order, so they queue for
    // the one connection in that order; FIFO serving means request i is the
    // connection's (i + 1)-th.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let client = client.clone();
            let url = server.url("/");
            tokio::spawn(async move { get(&client, &url).await.1 })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), format!("ok {}", i + 1));
    }
    assert_eq!(server.connections_accepted(), 1);
    assert_eq!(server.requests_per_connection(), [50]);
    let stats = client.stats();
    assert_eq!((stats.connections_opened, stats.reuses), (1, 49));
    assert_eq!(stats.waiting, 0);
}

#[tokio::test]
async fn no_socket_stays_open_after_the_client_is_dropped() {
    let server = TestServer::start(ServerConfig::default());
    let client = client(Client::builder().idle_timeout(Duration::from_secs(60)));
    // Three requests at once need three connections, all idle afterwards.
    let url = server.url("/");
    tokio::join!(get(&client, &url), get(&client, &url), get(&client, &url));
    until_idle(&client, 3).await;
    assert_eq!(server.open_connections(), 3);

    drop(client);
    assert!(
        server
            .wait_until_async(|s| s.open_connections() == 0, WAIT)
            .await
    );
    assert_eq!(server.client_closed_first(), 3);
}

#[tokio::test]
async fn bad_uris_are_clear_errors() {
    let client = client(Client::builder());
    let send = |uri: &str| client.request(Request::get(uri).body(Empty::new()).unwrap());

    let err = send("/relative").await.unwrap_err();
    assert!(err.is_invalid_uri(), "{err}");
    assert!(
        err.to_string().contains("`/relative` has no scheme"),
        "{err}"
    );

    let err = send("https://127.0.0.1:1/").await.unwrap_err();
    #[cfg(not(feature = "rustls"))]
    assert!(err.is_invalid_uri(), "{err}");
    #[cfg(not(feature = "rustls"))]
    assert!(
        err.to_string()
            .contains("use PoolLayer with a TLS connector"),
        "{err}"
    );
    // With HTTPS built in, the URI is fine and nothing listens on port 1.
    #[cfg(feature = "rustls")]
    assert!(err.is_connect(), "{err}");
    assert_eq!(client.stats().connections_opened, 0);
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    // Bind then drop to get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = client(Client::builder());
    let req = Request::get(format!("http://127.0.0.1:{port}/"))
        .body(Empty::new())
        .unwrap();
    let err = client.request(req).await.unwrap_err();
    assert!(err.is_connect(), "{err}");
    assert!(!err.is_timeout());
    assert_eq!(err.request_progress(), closefirst::Progress::NotWritten);
    assert_eq!(
        client.stats().active,
        0,
        "a failed connect gives its slot back"
    );
}

#[tokio::test]
async fn host_header_is_added_when_missing_and_kept_when_given() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut heads = Vec::new();
        let (mut sock, _) = listener.accept().await.unwrap();
        for _ in 0..2 {
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8];
                sock.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            heads.push(String::from_utf8(head).unwrap().to_ascii_lowercase());
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
        }
        heads
    });
    let client = client(Client::builder());
    let url = format!("http://user@{addr}/path?q=1");
    get(&client, &url).await;
    until_idle(&client, 1).await;
    let req = Request::get(&url)
        .header("host", "example.test")
        .body(Empty::new())
        .unwrap();
    client
        .request(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    let heads = tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    assert!(
        heads[0].starts_with("get /path?q=1 http/1.1\r\n"),
        "{}",
        heads[0]
    );
    assert!(
        heads[0].contains(&format!("host: {addr}\r\n")),
        "{}",
        heads[0]
    );
    assert!(heads[1].contains("host: example.test\r\n"), "{}", heads[1]);
    assert_eq!(heads[1].matches("host:").count(), 1);
}
