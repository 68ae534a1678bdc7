//! HTTPS through the built-in connector (feature `rustls`) against the lab origin
//! speaking TLS with a self-signed certificate (rcgen): reuse and socket options over
//! TLS, the server's idle close (`close_notify` + FIN) seen by the pre-reuse peek
//! while the client's thread is blocked, the same close just after the request was
//! written (a GET resent, a POST run once), certificate errors, and session
//! resumption on the connection that replaces one the client closed for idleness.
#![cfg(feature = "rustls")]

mod support;

#[path = "support/faults.rs"]
mod harness;

use std::error::Error as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Empty;

use closefirst::lab::{Fault, Origin, OriginConfig};
use closefirst::{Client, ConnectionInfo, Progress, TcpKeepalive};
use custom_tls::certs::TestCert;
use harness::{isolated, Flavor};
use tower::Layer as _;

/// The server's idle timeout in the idle-close scenario.
const SERVER_IDLE: Duration = Duration::from_millis(100);
/// How long the client's thread is blocked past the server's idle close.
const BLOCKED: Duration = Duration::from_millis(800);

/// A TLS origin on its own thread, misbehaving with `faults`.
fn origin(cert: &TestCert, idle: Duration, faults: &[(&str, Fault)]) -> Origin {
    let mut builder = Origin::builder(OriginConfig {
        idle_timeout: idle,
        send_keep_alive_hint: false,
        ..OriginConfig::default()
    })
    .numbered_responses(true)
    .tls(cert.server_config());
    for (id, fault) in faults {
        builder = builder.fault(*id, fault.clone());
    }
    builder.start_on_thread().expect("a listener and a thread")
}

fn client(cert: &TestCert) -> Client<Empty<Bytes>> {
    Client::builder()
        .idle_timeout(Duration::from_secs(30))
        // Pinned: the POST cases need a POST on a reused connection.
        .learn_idle_timeout(false)
        .tls_config(cert.client_config())
        .build()
        .expect("valid settings")
}

fn request(method: Method, url: &str, id: &str) -> Request<Empty<Bytes>> {
    Request::builder()
        .method(method)
        .uri(url)
        .header("x-request-id", id)
        .body(Empty::new())
        .expect("a valid request")
}

fn info(resp: &http::Response<hyper::body::Incoming>) -> ConnectionInfo {
    resp.extensions()
        .get::<ConnectionInfo>()
        .cloned()
        .expect("info attached")
}

/// The whole error chain as text.
fn chain(err: &closefirst::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[test]
fn https_reuses_connections_and_reads_socket_options_back() {
    isolated(Flavor::Multi, || async {
        let cert = TestCert::new();
        // The server would rather speak h2; the client's ALPN is forced to http/1.1,
        // even over a configuration that asks for h2.
        let mut server_config = cert.server_config();
        server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let origin = Origin::builder(OriginConfig {
            idle_timeout: Duration::MAX,
            ..OriginConfig::default()
        })
        .numbered_responses(true)
        .tls(server_config)
        .start_on_thread()
        .expect("a listener and a thread");
        let mut client_config = cert.client_config();
        client_config.alpn_protocols = vec![b"h2".to_vec()];
        let client: Client<Empty<Bytes>> = Client::builder()
            .idle_timeout(Duration::from_secs(30))
            .tcp_keepalive(
                TcpKeepalive::new()
                    .idle(Duration::from_secs(41))
                    .interval(Duration::from_secs(7))
                    .retries(5),
            )
            .tcp_user_timeout(Duration::from_millis(4_500))
            .tls_config(client_config)
            .build()
            .expect("valid settings");
        let url = origin.url("/");
        assert!(
            url.starts_with("https://127.0.0.1:"),
            "an IP literal: {url}"
        );

        let (first, body) = support::get(&client, &url).await;
        assert_eq!(body, "ok 1");
        assert!(!first.reused);
        assert_eq!(first.remote_addr, Some(origin.addr()));
        let options = first.socket.expect("the TLS connection keeps its socket");
        assert_eq!(options.keepalive, Some(true));
        assert_eq!(options.nodelay, Some(true));
        if cfg!(any(target_os = "linux", target_os = "macos")) {
            assert_eq!(options.keepalive_idle, Some(Duration::from_secs(41)));
            assert_eq!(options.keepalive_interval, Some(Duration::from_secs(7)));
            assert_eq!(options.keepalive_retries, Some(5));
        }
        if cfg!(target_os = "linux") {
            assert_eq!(options.user_timeout, Some(Duration::from_millis(4_500)));
        }
        support::until(&client, |s| s.idle == 1).await;
        let (second, body) = support::get(&client, &url).await;
        assert_eq!(body, "ok 2");
        assert!(second.reused, "the TLS connection was reused");
        assert_eq!(second.id, first.id);
        assert_eq!(origin.connections(), 1);

        // A DNS name as the server name (SNI) works too.
        let by_name = format!("https://localhost:{}/", origin.addr().port());
        let (_, body) = support::get(&client, &by_name).await;
        assert!(body.starts_with("ok "), "{body}");
    });
}

#[test]
fn a_close_notify_and_fin_while_the_client_is_blocked_is_seen_before_reuse() {
    isolated(Flavor::Current, || async {
        let cert = TestCert::new();
        let origin = origin(&cert, SERVER_IDLE, &[]);
        let client = client(&cert);
        support::get(&client, &origin.url("/")).await;
        support::until(&client, |s| s.idle == 1).await;
        // Blocks every client task: hyper's connection task cannot read the alert.
        std::thread::sleep(BLOCKED);
        assert_eq!(origin.closes_done(), 1, "the server closed");

        let resp = client
            .request(request(Method::GET, &origin.url("/"), "after-idle"))
            .await
            .expect("sent on a new connection");
        let info = info(&resp);
        assert!(!info.reused, "the closed connection was not reused");
        assert_eq!(
            info.attempts, 1,
            "the stale connection was never written to"
        );
        assert_eq!(origin.executions("after-idle"), 1, "one handler call");
        assert_eq!(origin.connections(), 2);
        assert_eq!(client.stats().evictions.closed_by_server, 1);
    });
}

#[test]
fn a_close_notify_after_the_request_was_written_resends_a_get_and_not_a_post() {
    isolated(Flavor::Multi, || async {
        let cert = TestCert::new();
        let origin = origin(
            &cert,
            Duration::MAX,
            &[
                ("raced-get", Fault::FinWithoutAnswer),
                ("raced-post", Fault::FinWithoutAnswer),
            ],
        );
        let client = client(&cert);
        support::get(&client, &origin.url("/")).await;
        support::until(&client, |s| s.idle == 1).await;

        let resp = client
            .request(request(Method::GET, &origin.url("/"), "raced-get"))
            .await
            .unwrap_or_else(|e| panic!("the GET is resent: {e:?}"));
        assert_eq!(info(&resp).attempts, 2);
        assert_eq!(client.stats().resends.written_no_response, 1);
        assert_eq!(origin.executions("raced-get"), 2, "read, closed, resent");
        drop(resp);

        support::until(&client, |s| s.idle == 1).await;
        let err = client
            .request(request(Method::POST, &origin.url("/"), "raced-post"))
            .await
            .expect_err("a POST is not resent");
        assert_eq!(
            err.request_progress(),
            Progress::WrittenNoResponse,
            "the close_notify is not a response: {err:?}"
        );
        assert!(err.is_stale_connection(), "{err:?}");
        assert_eq!(origin.executions("raced-post"), 1, "run once");
    });
}

#[test]
fn a_certificate_from_an_unknown_authority_is_a_clear_connect_error() {
    isolated(Flavor::Multi, || async {
        let cert = TestCert::new();
        let origin = origin(&cert, Duration::MAX, &[]);
        let stranger = TestCert::new();
        for (what, client) in [
            ("a wrong root", self::client(&stranger)),
            (
                "the platform's roots",
                Client::builder().build().expect("valid settings"),
            ),
        ] {
            let err = client
                .request(request(Method::GET, &origin.url("/"), "refused"))
                .await
                .expect_err("the certificate is refused");
            assert!(err.is_connect(), "{what}: {err:?}");
            assert_eq!(
                err.to_string(),
                format!(
                    "GET {}: failed to connect: the server's TLS certificate was refused",
                    origin.url("")
                ),
                "{what}"
            );
            let text = chain(&err);
            assert!(
                text.contains("invalid peer certificate"),
                "{what}: rustls's own words: {text}"
            );
            assert_eq!(err.request_progress(), Progress::NotWritten, "{what}");
        }
        assert_eq!(origin.handler_calls(), 0);
    });
}

#[allow(dead_code)]
#[path = "../examples/custom_tls.rs"]
mod custom_tls;

#[test]
fn the_custom_tls_connector_example_reuses_its_connection() {
    isolated(Flavor::Multi, || async {
        let reused = custom_tls::run().await.expect("the example runs");
        assert!(reused, "the second request reused the TLS connection");
    });
}

/// The example's connector keeps the pool's classification: a `close_notify` after
/// a written GET leaves it resent.
#[test]
fn a_custom_tls_connector_through_wrapped_keeps_the_resend_rules() {
    isolated(Flavor::Multi, || async {
        let cert = TestCert::new();
        let origin = origin(&cert, Duration::MAX, &[("raced", Fault::FinWithoutAnswer)]);
        let mut config = cert.client_config();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = Client::builder()
            .layer::<Empty<Bytes>>()
            .expect("valid settings")
            .layer(custom_tls::tls_connector(config));
        let (_, body) = support::get(&client, &origin.url("/")).await;
        assert_eq!(body, "ok 1");
        support::until(&client, |s| s.idle == 1).await;
        let resp = client
            .request(request(Method::GET, &origin.url("/"), "raced"))
            .await
            .unwrap_or_else(|e| panic!("the GET is resent: {e:?}"));
        assert_eq!(info(&resp).attempts, 2);
        assert_eq!(origin.executions("raced"), 2);
    });
}

/// A TLS server of the test's own, as the lab origin does not say how a handshake went:
/// hyper's HTTP/1.1 server behind tokio-rustls (rustls's default session cache, so
/// it issues TLS 1.3 tickets), keep-alive on, never closing a connection itself,
/// counting accepted connections and resumed handshakes
/// (`ServerConnection::handshake_kind`). Stops accepting when dropped.
struct HandshakeCounter {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    resumed: Arc<AtomicUsize>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl HandshakeCounter {
    async fn start(config: rustls::ServerConfig) -> HandshakeCounter {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback listener");
        let addr = listener.local_addr().expect("a bound address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let resumed = Arc::new(AtomicUsize::new(0));
        let (counted, resumptions) = (Arc::clone(&accepted), Arc::clone(&resumed));
        let accept_loop = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let (acceptor, resumptions) = (acceptor.clone(), Arc::clone(&resumptions));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                        resumptions.fetch_add(1, Ordering::SeqCst);
                    }
                    let service = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(Bytes::from_static(b"ok")),
                        ))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        HandshakeCounter {
            addr,
            accepted,
            resumed,
            accept_loop,
        }
    }
}

impl Drop for HandshakeCounter {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

/// A connection the client closed for idleness is replaced by one whose handshake
/// resumes the session: the client keeps its rustls configuration, and so its ticket
/// store, across connections. The same client with resumption turned off makes a full
/// handshake each time, which shows the server's count can tell.
#[test]
fn a_connection_after_an_idle_close_resumes_the_tls_session() {
    isolated(Flavor::Multi, || async {
        let cert = TestCert::new();
        for resume in [true, false] {
            let server = HandshakeCounter::start(cert.server_config()).await;
            let url = format!("https://{}/", server.addr);
            let mut config = cert.client_config();
            if !resume {
                config.resumption = rustls::client::Resumption::disabled();
            }
            let client: Client<Empty<Bytes>> = Client::builder()
                .idle_timeout(Duration::from_millis(50))
                // Fixed: no probe keeps a connection past the idle timeout.
                .learn_idle_timeout(false)
                .tls_config(config)
                .build()
                .expect("valid settings");
            for closed in 1..=3 {
                let (info, body) = support::get(&client, &url).await;
                assert_eq!(body, "ok");
                assert!(!info.reused, "request {closed} opened a connection");
                // The pool closes the idle connection itself, after its idle timeout.
                support::until(&client, |s| s.evictions.idle_timeout == closed).await;
            }
            assert_eq!(client.stats().connections_opened, 3);
            assert_eq!(server.accepted.load(Ordering::SeqCst), 3);
            let resumed = server.resumed.load(Ordering::SeqCst);
            if resume {
                assert_eq!(
                    resumed, 2,
                    "the first handshake is full, the next two resume"
                );
            } else {
                assert_eq!(resumed, 0, "resumption off: every handshake is full");
            }
        }
    });
}
