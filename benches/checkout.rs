//! What the pool costs per request on a warm connection: one `GET` per iteration,
//! through the public API, on a connection the pool already holds, answered by a
//! minimal in-process responder (a fixed 2-byte response, so the server side stays
//! small next to the client's work).
//!
//! ```text
//! cargo bench --bench checkout
//! ```
//!
//! Groups:
//! - `checkout`: what the pre-reuse check costs. One idle connection, a real loopback
//!   TCP connection (the pre-reuse `MSG_PEEK` needs a socket), one request per
//!   iteration with the check off and on. The difference between the two is the
//!   check; the rest is the request's round trip.
//! - `origins`: whether the pool's size costs a request. The same request to one
//!   origin (`http://o0.test/`) in a pool holding 1 origin and in one holding 10,000
//!   origins, one idle connection each; `10000_origins_round_robin` walks all 10,000 in
//!   turn, so each checkout touches state that is cold in the CPU caches. These
//!   connections are in-memory ([`DuplexIo`]) through [`PoolLayer`](closefirst::PoolLayer)
//!   with a connector of the bench's own, so there is no socket to peek (the pre-reuse
//!   check does not run).
//!
//! Every iteration asserts that its request reused a pooled connection, and each group
//! ends by checking that no connection was opened while measuring. The idle timeout
//! is an hour so no connection expires between warming and measuring.

#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::cell::Cell;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use closefirst::lab::DuplexIo;
use closefirst::{Client, ConnectionInfo};
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::Layer;

const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
const MANY_ORIGINS: usize = 10_000;
/// Buffer of each direction of an in-memory connection.
const DUPLEX_BUFFER: usize = 16 * 1024;
/// Scheduler turns to wait for the warm-up's connections to be checked in (each needs
/// a turn or two); far more than enough, yet a broken pool fails instead of hanging.
const MAX_SETTLE_TURNS: usize = 1_000_000;

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// Answers every request head on `stream` with [`RESPONSE`] until the client closes.
/// The bench sends only `GET`s without a body, so the end of a head is the end of a
/// request.
async fn respond(mut stream: impl AsyncRead + AsyncWrite + Unpin) {
    let mut received = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        received.extend_from_slice(&chunk[..n]);
        while let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            received.drain(..end + 4);
            if stream.write_all(RESPONSE).await.is_err() {
                return;
            }
        }
    }
}

/// One `GET` on a pooled connection, its body read to the end.
async fn get(client: &Client<Empty<Bytes>>, uri: &http::Uri) {
    let req = http::Request::get(uri.clone())
        .body(Empty::new())
        .expect("a GET to a valid URI is a valid request");
    let resp = client.request(req).await.expect("the responder answers");
    let reused = resp.extensions().get::<ConnectionInfo>().map(|i| i.reused);
    assert_eq!(reused, Some(true), "the warm connection is reused");
    resp.into_body()
        .collect()
        .await
        .expect("the responder sends the whole body");
}

/// Sends one request to each of `uris` to open their connections, then waits until
/// every one of them is idle in the pool.
async fn warm(client: &Client<Empty<Bytes>>, uris: &[http::Uri]) {
    for uri in uris {
        let req = http::Request::get(uri.clone()).body(Empty::new()).unwrap();
        let resp = client.request(req).await.unwrap();
        resp.into_body().collect().await.unwrap();
    }
    settle(client, uris.len()).await;
}

/// Waits until `idle` connections are idle in the pool: they return to it from their
/// own tasks, just after their response body ends.
async fn settle(client: &Client<Empty<Bytes>>, idle: usize) {
    for _ in 0..MAX_SETTLE_TURNS {
        if client.stats().idle == idle {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the connections were not checked in");
}

async fn start_tcp_responder() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(respond(stream));
        }
    });
    addr
}

fn checkout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(start_tcp_responder());
    let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
    let mut group = c.benchmark_group("checkout");
    for (name, check) in [("without_check", false), ("with_check", true)] {
        let client: Client<Empty<Bytes>> = Client::builder()
            .idle_timeout(IDLE_TIMEOUT)
            .check_before_reuse(check)
            .build()
            .unwrap();
        rt.block_on(warm(&client, std::slice::from_ref(&uri)));
        group.bench_function(name, |b| b.to_async(&rt).iter(|| get(&client, &uri)));
        assert_eq!(
            client.stats().connections_opened,
            1,
            "no new connection was opened"
        );
    }
    group.finish();
}

/// A client whose every connection is an in-memory duplex stream served by
/// [`respond`] on the current runtime.
fn duplex_client() -> Client<Empty<Bytes>> {
    let connector = tower::service_fn(|_: http::Uri| async {
        let (client_end, server_end) = DuplexIo::pair(DUPLEX_BUFFER);
        tokio::spawn(respond(server_end));
        Ok::<_, Infallible>(client_end)
    });
    Client::builder()
        .idle_timeout(IDLE_TIMEOUT)
        .layer::<Empty<Bytes>>()
        .expect("valid settings")
        .layer(connector)
}

fn origin_uri(i: usize) -> http::Uri {
    format!("http://o{i}.test/").parse().unwrap()
}

fn origins(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let uris: Vec<http::Uri> = (0..MANY_ORIGINS).map(origin_uri).collect();
    let one = &uris[0];
    let mut group = c.benchmark_group("origins");

    let client = duplex_client();
    rt.block_on(warm(&client, &uris[..1]));
    group.bench_function("1_origin", |b| b.to_async(&rt).iter(|| get(&client, one)));
    assert_eq!(client.stats().connections_opened, 1, "no new connection");
    drop(client);

    let client = duplex_client();
    rt.block_on(warm(&client, &uris));
    group.bench_function("10000_origins", |b| {
        b.to_async(&rt).iter(|| get(&client, one))
    });
    let next = Cell::new(0);
    group.bench_function("10000_origins_round_robin", |b| {
        b.to_async(&rt).iter(|| {
            let i = next.get();
            next.set((i + 1) % MANY_ORIGINS);
            get(&client, &uris[i])
        })
    });
    assert_eq!(
        client.stats().connections_opened,
        MANY_ORIGINS as u64,
        "no new connection"
    );
    // Each origin still has its connection (the last one used is checked in last).
    rt.block_on(settle(&client, MANY_ORIGINS));
    group.finish();
}

criterion_group!(benches, checkout, origins);
criterion_main!(benches);
