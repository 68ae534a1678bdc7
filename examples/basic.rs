//! The pooled client against a small local server: two requests, the second reusing
//! the first's connection, then the pool's statistics.
//!
//! ```text
//! cargo run --example basic
//! ```
//!
//! Everything runs on 127.0.0.1 and stops by itself.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // A local server that, like uvicorn, keeps idle connections for 5 s and says so.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    let mut resp = hyper::Response::new(Full::new(Bytes::from_static(b"hello\n")));
                    resp.headers_mut()
                        .insert("keep-alive", "timeout=5".parse().expect("valid header"));
                    Ok::<_, Infallible>(resp)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let client: closefirst::Client<Empty<Bytes>> = closefirst::Client::builder()
        .idle_timeout(Duration::from_secs(30))
        .keep_alive_margin(Duration::from_secs(1))
        .build()?;

    for attempt in 1..=2 {
        let req = http::Request::get(format!("http://{addr}/")).body(Empty::new())?;
        let resp = client.request(req).await?;
        let info = resp
            .extensions()
            .get::<closefirst::ConnectionInfo>()
            .cloned()
            .expect("the pool attaches ConnectionInfo to every response");
        let body = resp.into_body().collect().await?.to_bytes();
        println!(
            "request {attempt}: {:?} on connection {} (reused: {}, idle for {:?}, keepalive idle as applied: {:?})",
            String::from_utf8_lossy(&body).trim(),
            info.id,
            info.reused,
            info.idle_for,
            info.socket.and_then(|s| s.keepalive_idle),
        );
        // Let the connection go back to the pool before the next request.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The server's hint (5 s) minus the margin (1 s) wins over the 30 s idle timeout.
    println!("{:#?}", client.stats());
    server.abort();
    Ok(())
}
