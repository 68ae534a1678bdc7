//! What the pre-reuse check costs: checking an idle connection out of the pool and
//! returning it, with and without the `MSG_PEEK` look at its socket.
//!
//! ```text
//! cargo bench --bench checkout
//! ```
//!
//! The connection is a real loopback TCP connection to an in-process hyper server; the
//! measured loop touches only the pool (no request is sent).

#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

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
        .idle_timeout(Duration::from_secs(3600))
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

criterion_group!(benches, checkout);
criterion_main!(benches);
