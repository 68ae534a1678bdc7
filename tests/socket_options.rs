//! Kernel keepalive and socket options: what the kernel reports for a live connection
//! equals what was configured.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};

use closefirst::connect::SocketOptions;
use closefirst::{Client, ConnectionInfo, TcpKeepalive};
use support::{ServerConfig, TestServer};

async fn socket_options(builder: closefirst::Builder) -> SocketOptions {
    let server = TestServer::start(ServerConfig::default());
    let client: Client<Empty<Bytes>> = builder.build().unwrap();
    let req = Request::get(server.url("/")).body(Empty::new()).unwrap();
    let resp = client.request(req).await.unwrap();
    let info = resp.extensions().get::<ConnectionInfo>().cloned().unwrap();
    resp.into_body().collect().await.unwrap();
    info.socket
        .expect("the built-in connector reports socket options")
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn configured_keepalive_and_user_timeout_are_what_the_kernel_reports() {
    let options = socket_options(
        Client::builder()
            .tcp_keepalive(
                TcpKeepalive::new()
                    .idle(Duration::from_secs(7))
                    .interval(Duration::from_secs(3))
                    .retries(5),
            )
            .tcp_user_timeout(Duration::from_millis(4_500)),
    )
    .await;
    assert_eq!(options.keepalive, Some(true));
    assert_eq!(options.keepalive_idle, Some(Duration::from_secs(7)));
    assert_eq!(options.keepalive_interval, Some(Duration::from_secs(3)));
    assert_eq!(options.keepalive_retries, Some(5));
    assert_eq!(options.user_timeout, Some(Duration::from_millis(4_500)));
    assert_eq!(options.nodelay, Some(true));
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn defaults_are_applied_to_the_socket() {
    let options = socket_options(Client::builder()).await;
    assert_eq!(options.keepalive, Some(true));
    assert_eq!(options.keepalive_idle, Some(Duration::from_secs(30)));
    assert_eq!(options.keepalive_interval, Some(Duration::from_secs(10)));
    assert_eq!(options.keepalive_retries, Some(3));
    assert_eq!(
        options.user_timeout, None,
        "not set: the kernel default applies"
    );
    assert_eq!(options.nodelay, Some(true));
}

#[tokio::test]
async fn keepalive_and_nodelay_can_be_turned_off() {
    let options = socket_options(Client::builder().tcp_keepalive(None).tcp_nodelay(false)).await;
    assert_eq!(options.keepalive, Some(false));
    assert_eq!(options.nodelay, Some(false));
}

#[test]
fn zero_interval_and_zero_retries_are_builder_errors() {
    let build = |keepalive: TcpKeepalive| {
        Client::builder()
            .tcp_keepalive(keepalive)
            .build::<Empty<Bytes>>()
            .unwrap_err()
    };
    let err = build(TcpKeepalive::new().interval(Duration::ZERO));
    assert!(err.is_config());
    assert_eq!(
        err.to_string(),
        "invalid configuration: tcp_keepalive interval must be a whole number of seconds, at least 1 s (got 0 ms)"
    );
    let err = build(TcpKeepalive::new().retries(0));
    assert_eq!(
        err.to_string(),
        "invalid configuration: tcp_keepalive retries must be at least 1 (got 0 probes)"
    );
}
