//! A TLS connector of your own on top of the pool, in a few lines: the built-in TCP
//! connector underneath, any TLS library on top (tokio-rustls here; native-tls or
//! openssl work the same way, as `TcpIo` is a tokio `AsyncRead + AsyncWrite`), and
//! [`Wrapped`] to hand the result to the pool with the TCP socket's handle, so the
//! pre-reuse peek and the resend rules keep working through TLS.
//!
//! ```text
//! cargo run --example custom_tls
//! ```
//!
//! It starts the lab origin with TLS (a throwaway self-signed certificate) on
//! 127.0.0.1, sends two requests on one connection, and stops.

#[path = "race/certs.rs"]
pub(crate) mod certs;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::Uri;
use http_body_util::Empty;
use rustls::pki_types::ServerName;
use tokio_rustls::client::TlsStream;
use tower::{Layer, ServiceExt};

use closefirst::connect::{TcpConnector, TcpIo, Wrapped};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The whole connector: TCP with the pool's socket options, then a TLS handshake.
pub(crate) fn tls_connector(
    config: rustls::ClientConfig,
) -> impl tower::Service<
    Uri,
    Response = Wrapped<TlsStream<TcpIo>>,
    Error = BoxError,
    Future = impl Future<Output = Result<Wrapped<TlsStream<TcpIo>>, BoxError>> + Send,
> + Clone
       + Send
       + Sync
       + 'static {
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpConnector::new().enforce_http(false);
    tower::service_fn(move |uri: Uri| {
        let (tls, tcp) = (tls.clone(), tcp.clone());
        async move {
            let host = uri.host().ok_or("no host")?.trim_matches(['[', ']']);
            let name = ServerName::try_from(host.to_owned())?;
            let io = tcp.oneshot(uri).await?;
            let handle = io.handle(); // taken before the TLS layer owns the socket
            let stream = tls.connect(name, io).await?;
            Ok::<_, BoxError>(Wrapped::new(stream, handle))
        }
    })
}

/// Sends two requests through the custom connector; returns whether the second one
/// reused the first one's connection.
pub(crate) async fn run() -> Result<bool, BoxError> {
    let cert = certs::TestCert::new();
    let origin = closefirst::lab::Origin::builder(Default::default())
        .tls(cert.server_config())
        .start()
        .await?;
    let mut config = cert.client_config();
    // The pool speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let client = closefirst::Client::builder()
        .layer::<Empty<Bytes>>()?
        .layer(tls_connector(config));

    let mut reused = false;
    for _ in 0..2 {
        let req = http::Request::get(origin.url("/")).body(Empty::new())?;
        let resp = client.request(req).await?;
        let info = resp
            .extensions()
            .get::<closefirst::ConnectionInfo>()
            .cloned()
            .ok_or("every response carries its ConnectionInfo")?;
        println!(
            "{} on connection {} (reused: {}, socket options: {:?})",
            resp.status(),
            info.id,
            info.reused,
            info.socket
        );
        reused = info.reused;
        http_body_util::BodyExt::collect(resp.into_body()).await?;
        // The connection goes back to the pool on a task of its own once the body
        // has ended; give it a moment (bounded) so the next request can reuse it.
        for _ in 0..200 {
            if client.stats().idle > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    Ok(reused)
}

#[allow(dead_code)] // a test includes this file as a module and calls `run`
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    run().await.map(|_| ())
}
