//! What the pre-reuse check costs: checking an idle connection out of the pool and
//! returning it, with and without the `MSG_PEEK` look at its socket.
//!
//! ```text
//! cargo bench --bench checkout
//! ```
//!
//! Groups:
//! - `checkout`: one idle connection, a real loopback TCP connection to an in-process
//!   hyper server, checked out and returned with the pre-reuse check off and on;
//! - `origins`: whether the pool's size costs a checkout: the same checkout and return
//!   for one origin (`http://o0.test/`) in a pool holding 1 origin and in one holding
//!   10,000 origins, one idle connection each; `10000_origins_round_robin` walks all
//!   10,000 in turn, so each checkout touches state that is cold in the CPU caches.
//!   These connections are in-memory (`tokio::io::duplex`) to hyper server tasks,
//!   made through `PoolLayer` with a connector of the bench's own, so there is no
//!   socket to peek (the pre-reuse check does not run).
//!
//! The measured loops touch only the pool (no request is sent). The idle timeout is an
//! hour so no connection expires between warming and measuring.

#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::cell::Cell;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use closefirst::lab::DuplexIo;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower::Layer;

const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
const MANY_ORIGINS: usize = 10_000;

async fn start_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn warm_client(addr: std::net::SocketAddr, check: bool) -> closefirst::Client<Empty<Bytes>> {
    let client: closefirst::Client<Empty<Bytes>> = closefirst::Client::builder()
        .idle_timeout(IDLE_TIMEOUT)
        .check_before_reuse(check)
        .build()
        .unwrap();
    let req = http::Request::get(format!("http://{addr}/"))
        .body(Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    resp.into_body().collect().await.unwrap();
    while client.stats().idle != 1 {
        tokio::task::yield_now().await;
    }
    client
}

fn checkout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(start_server());
    let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
    let mut group = c.benchmark_group("checkout");
    for (name, check) in [("without_check", false), ("with_check", true)] {
        let client = rt.block_on(warm_client(addr, check));
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let reused = client.__checkout_and_return(&uri).await.unwrap();
                assert!(reused, "the warm connection is reused");
            })
        });
        assert_eq!(
            client.stats().connections_opened,
            1,
            "no new connection was opened"
        );
    }
    group.finish();
}

/// A client whose every connection is an in-memory duplex stream served by a hyper
/// server task on the current runtime.
fn duplex_client() -> closefirst::Client<Empty<Bytes>> {
    let connector = tower::service_fn(|_: http::Uri| async {
        let (client_side, server_side) = tokio::io::duplex(16 * 1024);
        tokio::spawn(async move {
            let service = service_fn(|_req| async {
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(server_side), service)
                .await;
        });
        Ok::<_, Infallible>(DuplexIo::new(client_side))
    });
    closefirst::Client::builder()
        .idle_timeout(IDLE_TIMEOUT)
        .layer::<Empty<Bytes>>()
        .expect("valid settings")
        .layer(connector)
}

fn origin_uri(i: usize) -> http::Uri {
    format!("http://o{i}.test/").parse().unwrap()
}

/// A client with one idle connection to each of `origins` origins.
async fn warm_origins(origins: &[http::Uri]) -> closefirst::Client<Empty<Bytes>> {
    let client = duplex_client();
    for uri in origins {
        let req = http::Request::get(uri.clone()).body(Empty::new()).unwrap();
        let resp = client.request(req).await.unwrap();
        resp.into_body().collect().await.unwrap();
    }
    // Connections return to the pool from their own tasks, just after the body ends.
    while client.stats().idle != origins.len() {
        tokio::task::yield_now().await;
    }
    client
}

fn origins(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let uris: Vec<http::Uri> = (0..MANY_ORIGINS).map(origin_uri).collect();
    let one = &uris[0];
    let mut group = c.benchmark_group("origins");

    let client = rt.block_on(warm_origins(&uris[..1]));
    group.bench_function("1_origin", |b| {
        b.to_async(&rt).iter(|| async {
            let reused = client.__checkout_and_return(one).await.unwrap();
            assert!(reused, "the warm connection is reused");
        })
    });
    assert_eq!(client.stats().connections_opened, 1, "no new connection");
    drop(client);

    let client = rt.block_on(warm_origins(&uris));
    group.bench_function("10000_origins", |b| {
        b.to_async(&rt).iter(|| async {
            let reused = client.__checkout_and_return(one).await.unwrap();
            assert!(reused, "the warm connection is reused");
        })
    });
    let next = Cell::new(0);
    group.bench_function("10000_origins_round_robin", |b| {
        b.to_async(&rt).iter(|| async {
            let i = next.get();
            next.set((i + 1) % MANY_ORIGINS);
            let reused = client.__checkout_and_return(&uris[i]).await.unwrap();
            assert!(reused, "the warm connection is reused");
        })
    });
    let stats = client.stats();
    assert_eq!(
        stats.connections_opened, MANY_ORIGINS as u64,
        "no new connection"
    );
    assert_eq!(
        stats.idle, MANY_ORIGINS,
        "every origin still has its connection"
    );
    group.finish();
}

criterion_group!(benches, checkout, origins);
criterion_main!(benches);
