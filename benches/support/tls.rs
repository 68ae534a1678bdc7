//! The TLS cases of `alternate.rs` (only that bench includes this file, so the other
//! benches do not carry code they never call): a self-signed certificate made at start
//! (as `examples/race/certs.rs` makes it), the in-process server (`server.rs`'s service)
//! behind a tokio-rustls acceptor that speaks TLS 1.3 only and counts full and resumed
//! handshakes, and the two clients compared over it: closefirst with its `rustls`
//! feature and hyper-util's legacy client over hyper-rustls, each trusting that
//! certificate only. `tls_resumption.rs` includes it too: the same server, with an
//! idle timeout, and the certificate in PEM for nginx.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::HandshakeKind;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::support::server::{Accepted, BODY};
use crate::support::subject::read_to_end;

/// The clients of the TLS cases, in the order of the plain cases' first two.
pub(crate) const TLS_SUBJECTS: [&str; 2] = ["closefirst", "hyper_util_legacy"];

type LegacyTlsClient =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A self-signed certificate for `localhost` and `127.0.0.1`, and its key.
pub(crate) struct TestCert {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
    /// The same certificate and key in PEM, for nginx.
    cert_pem: String,
    key_pem: String,
}

impl TestCert {
    pub(crate) fn new() -> TestCert {
        let rcgen::CertifiedKey { cert, key_pair } = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("rcgen makes a certificate for valid names");
        TestCert {
            cert: cert.der().clone(),
            key: key_pair.serialize_der(),
            cert_pem: cert.pem(),
            key_pem: key_pair.serialize_pem(),
        }
    }

    /// The certificate and its key in PEM, in that order.
    // Only `tls_resumption.rs` serves nginx over TLS; `alternate.rs` includes this file too.
    #[allow(dead_code)]
    pub(crate) fn pem(&self) -> (&str, &str) {
        (&self.cert_pem, &self.key_pem)
    }

    /// The server's configuration: this certificate, TLS 1.3 only, `ring`; rustls's
    /// default session cache, so a client that offers a ticket can resume.
    fn server_config(&self) -> rustls::ServerConfig {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("ring supports TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], key)
            .expect("rcgen's key matches its certificate")
    }

    /// A client configuration trusting this certificate only. Each call makes a new
    /// one, with a session cache of its own: two clients given one configuration would
    /// share its cache and resume with each other's tickets.
    pub(crate) fn client_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert.clone())
            .expect("rcgen's certificate parses");
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(roots)
            .with_no_client_auth()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Handshakes the TLS server has completed so far, by kind.
#[derive(Clone, Default)]
pub(crate) struct Handshakes(Arc<HandshakeCounts>);

#[derive(Default)]
struct HandshakeCounts {
    full: AtomicUsize,
    resumed: AtomicUsize,
    failed: AtomicUsize,
}

/// A snapshot of `Handshakes`.
#[derive(Clone, Copy, Default)]
pub(crate) struct HandshakeTally {
    /// Full handshakes, with or without a HelloRetryRequest.
    pub(crate) full: usize,
    pub(crate) resumed: usize,
    /// Accepted connections whose handshake did not complete.
    pub(crate) failed: usize,
}

impl HandshakeTally {
    pub(crate) fn since(self, before: HandshakeTally) -> HandshakeTally {
        HandshakeTally {
            full: self.full.saturating_sub(before.full),
            resumed: self.resumed.saturating_sub(before.resumed),
            failed: self.failed.saturating_sub(before.failed),
        }
    }

    pub(crate) fn add(&mut self, other: HandshakeTally) {
        self.full += other.full;
        self.resumed += other.resumed;
        self.failed += other.failed;
    }
}

impl Handshakes {
    pub(crate) fn get(&self) -> HandshakeTally {
        HandshakeTally {
            full: self.0.full.load(Ordering::Relaxed),
            resumed: self.0.resumed.load(Ordering::Relaxed),
            failed: self.0.failed.load(Ordering::Relaxed),
        }
    }
}

/// Starts the in-process server behind TLS on the current runtime; it runs until the
/// runtime is dropped. Same service, keep-alive and `TCP_NODELAY` as `server::start`;
/// `accepted` counts TCP connections, `handshakes` the TLS handshakes by kind (read
/// with `ServerConnection::handshake_kind` once each completes). With `idle_timeout`,
/// a connection that has had no request for that long is closed as nginx closes it
/// (`close_notify`, then FIN); without, it stays open until the client closes it.
pub(crate) async fn start(
    cert: &TestCert,
    accepted: Accepted,
    handshakes: Handshakes,
    idle_timeout: Option<Duration>,
) -> SocketAddr {
    let acceptor = TlsAcceptor::from(Arc::new(cert.server_config()));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("the loopback interface accepts a listener on port 0");
    let addr = listener
        .local_addr()
        .expect("a bound listener has a local address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            accepted.0.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let handshakes = handshakes.clone();
            tokio::spawn(async move {
                let stream = match acceptor.accept(stream).await {
                    Ok(s) => s,
                    Err(_) => {
                        handshakes.0.failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
                let counter = match stream.get_ref().1.handshake_kind() {
                    Some(HandshakeKind::Resumed) => &handshakes.0.resumed,
                    _ => &handshakes.0.full,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                // When the last request arrived (or the handshake completed). The
                // response is one small write right after, so its idle timer starts
                // about where nginx's would.
                let last_request = Arc::new(Mutex::new(Instant::now()));
                let service = {
                    let last_request = Arc::clone(&last_request);
                    service_fn(move |_req| {
                        *last_request.lock().expect("never poisoned") = Instant::now();
                        async {
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(BODY),
                            )))
                        }
                    })
                };
                let conn = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                let Some(idle_timeout) = idle_timeout else {
                    let _ = conn.await;
                    return;
                };
                tokio::pin!(conn);
                loop {
                    let deadline = *last_request.lock().expect("never poisoned") + idle_timeout;
                    tokio::select! {
                        _ = conn.as_mut() => return,
                        () = tokio::time::sleep_until(deadline) => {}
                    }
                    if *last_request.lock().expect("never poisoned") + idle_timeout
                        <= Instant::now()
                    {
                        // Idle that long: hyper closes an idle connection at once
                        // (one with a request in progress after its response).
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A client of the TLS cases, with the `https://127.0.0.1:port/` URI it requests.
#[derive(Clone)]
pub(crate) struct TlsSubject {
    uri: Uri,
    client: TlsClient,
}

#[derive(Clone)]
enum TlsClient {
    Closefirst(closefirst::Client<Empty<Bytes>>),
    HyperUtilLegacy(LegacyTlsClient),
}

impl TlsSubject {
    /// The client named `name` (one of `TLS_SUBJECTS`) at its defaults, with a client
    /// configuration of its own that trusts `cert`, for the server at `addr`.
    pub(crate) fn new(name: &str, cert: &TestCert, addr: SocketAddr) -> TlsSubject {
        let client = match name {
            "closefirst" => TlsClient::Closefirst(
                closefirst::Client::builder()
                    .tls_config(cert.client_config())
                    .build()
                    .expect("the defaults are valid"),
            ),
            "hyper_util_legacy" => {
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(cert.client_config())
                    .https_only()
                    .enable_http1()
                    .build();
                TlsClient::HyperUtilLegacy(
                    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https),
                )
            }
            _ => unreachable!("TLS_SUBJECTS lists every name"),
        };
        TlsSubject {
            uri: format!("https://{addr}/")
                .parse()
                .expect("a socket address makes a valid authority"),
            client,
        }
    }

    /// closefirst's pool, for its counts.
    pub(crate) fn closefirst(&self) -> Option<&closefirst::Client<Empty<Bytes>>> {
        match &self.client {
            TlsClient::Closefirst(client) => Some(client),
            TlsClient::HyperUtilLegacy(_) => None,
        }
    }

    /// One GET with its body read to the end and its length checked.
    pub(crate) async fn get(&self) -> usize {
        let req = Request::get(self.uri.clone())
            .body(Empty::new())
            .expect("a GET with a parsed URI is a valid request");
        let resp = match &self.client {
            TlsClient::Closefirst(client) => {
                client.request(req).await.expect("the bench server answers")
            }
            TlsClient::HyperUtilLegacy(client) => {
                client.request(req).await.expect("the bench server answers")
            }
        };
        let len = read_to_end(resp).await;
        assert_eq!(len, BODY.len(), "every response carries the whole body");
        len
    }

    /// `n` GETs at once, one spawned task each, joined before returning.
    pub(crate) async fn get_concurrently(&self, n: usize) -> usize {
        let mut set = JoinSet::new();
        for _ in 0..n {
            let subject = self.clone();
            set.spawn(async move { subject.get().await });
        }
        let mut total = 0;
        while let Some(len) = set.join_next().await {
            total += len.expect("request task did not panic");
        }
        total
    }
}
