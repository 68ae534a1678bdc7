//! `keepalive::probe` on real sockets against minimal raw-tokio servers that close
//! idle connections after a known time, and over `https` against the lab origin.

use std::net::SocketAddr;
use std::time::Duration;

use closefirst::keepalive::{probe, ProbeOptions};
use closefirst::lab::{Origin, OriginConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How a test server treats each connection.
#[derive(Clone, Copy)]
struct Server {
    /// Extra header lines, each ending in `\r\n`.
    headers: &'static str,
    /// Close this long after the response was written; `None`: wait for the client.
    close_after: Option<Duration>,
}

/// Starts a server on `127.0.0.1:0`; the receiver gets each request head it reads.
async fn start(server: Server) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (heads, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(handle(stream, server, heads.clone()));
        }
    });
    (addr, rx)
}

async fn handle(mut stream: TcpStream, server: Server, heads: mpsc::UnboundedSender<String>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let _ = heads.send(String::from_utf8_lossy(&head).into_owned());
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n{}\r\n",
        server.headers
    );
    if stream.write_all(response.as_bytes()).await.is_err() {
        return;
    }
    match server.close_after {
        // Dropping the stream sends the FIN.
        Some(idle) => tokio::time::sleep(idle).await,
        None => while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {},
    }
}

fn uri(addr: SocketAddr, path: &str) -> http::Uri {
    format!("http://{addr}{path}").parse().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn assert_within_10_percent(measured: Option<Duration>, expected: Duration) {
    let measured = measured.expect("the server closed the connection");
    let tolerance = expected / 10;
    assert!(
        measured + tolerance >= expected && measured <= expected + tolerance,
        "measured {measured:?}, expected {expected:?} ± 10%"
    );
}

#[tokio::test]
async fn measures_a_300ms_idle_close() {
    let (addr, mut heads) = start(Server {
        headers: "",
        close_after: Some(ms(300)),
    })
    .await;
    let report = probe(&uri(addr, "/health?x=1"), ProbeOptions::new())
        .await
        .expect("probe succeeds");
    assert_eq!(report.status, 200);
    assert_within_10_percent(report.idle_close, ms(300));
    assert_eq!(report.remote_addr, Some(addr));
    assert!(!report.keep_alive_refused);
    assert_eq!(report.keep_alive, None);
    assert_eq!(report.parity, None);

    let head = heads.recv().await.unwrap().to_ascii_lowercase();
    assert!(head.starts_with("head /health?x=1 http/1.1\r\n"), "{head}");
    assert!(head.contains(&format!("\r\nhost: {addr}\r\n")), "{head}");
}

#[tokio::test]
async fn measures_an_800ms_idle_close_with_get() {
    let (addr, mut heads) = start(Server {
        headers: "",
        close_after: Some(ms(800)),
    })
    .await;
    let report = probe(
        &uri(addr, "/"),
        ProbeOptions::new().method(http::Method::GET),
    )
    .await
    .expect("probe succeeds");
    assert_within_10_percent(report.idle_close, ms(800));
    // No hint: the recommendation comes from the measurement alone.
    let recommended = report.recommended_idle_timeout();
    assert!(recommended.is_none(), "800 ms - 1 s margin leaves no time");
    assert_eq!(report.margin, Duration::from_secs(1));

    let head = heads.recv().await.unwrap();
    assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head}");
}

#[tokio::test]
async fn hint_and_headers_are_recorded_and_the_smaller_bound_wins() {
    let (addr, _heads) = start(Server {
        headers: "Keep-Alive: timeout=5, max=100\r\nServer: tiny/1.0\r\nConnection: keep-alive\r\n",
        close_after: Some(ms(300)),
    })
    .await;
    let report = probe(&uri(addr, "/"), ProbeOptions::new().margin(ms(100)))
        .await
        .expect("probe succeeds");
    assert_eq!(
        report.keep_alive_header.as_deref(),
        Some("timeout=5, max=100")
    );
    let hint = report.keep_alive.expect("hint parsed");
    assert_eq!(hint.timeout, Some(Duration::from_secs(5)));
    assert_eq!(hint.max, Some(100));
    assert_eq!(report.hint_timeout(), Some(Duration::from_secs(5)));
    assert_eq!(report.server_header.as_deref(), Some("tiny/1.0"));
    assert_eq!(report.connection_header.as_deref(), Some("keep-alive"));
    assert_within_10_percent(report.idle_close, ms(300));
    // min(measured ≈300 ms, hint 5 s) - margin 100 ms ≈ 200 ms.
    assert_within_10_percent(report.recommended_idle_timeout(), ms(200));
}

#[tokio::test]
async fn a_server_that_never_closes_is_reported_as_open_after_max_wait() {
    let (addr, _heads) = start(Server {
        headers: "Keep-Alive: timeout=2\r\n",
        close_after: None,
    })
    .await;
    let started = std::time::Instant::now();
    let report = probe(
        &uri(addr, "/"),
        ProbeOptions::new()
            .max_wait(ms(300))
            .front_idle(Duration::from_secs(4)),
    )
    .await
    .expect("probe succeeds");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited too long"
    );
    assert_eq!(report.idle_close, None);
    assert_eq!(report.max_wait, ms(300));
    // Only the hint is known: 2 s - 1 s margin.
    assert_eq!(
        report.recommended_idle_timeout(),
        Some(Duration::from_secs(1))
    );
    let err = report.parity.expect("parity checked").unwrap_err();
    assert_eq!(err.backend_keep_alive(), Duration::from_secs(2));
    assert_eq!(err.max_front_idle(), Some(Duration::from_secs(1)));
    assert_eq!(err.shortfall(), Duration::from_secs(3));
}

#[tokio::test]
async fn no_hint_and_no_close_gives_no_recommendation_but_max_wait_bounds_parity() {
    let (addr, _heads) = start(Server {
        headers: "",
        close_after: None,
    })
    .await;
    let options = ProbeOptions::new().max_wait(ms(300)).margin(ms(50));
    let report = probe(&uri(addr, "/"), options.clone().front_idle(ms(200)))
        .await
        .expect("probe succeeds");
    assert_eq!(report.idle_close, None);
    assert_eq!(report.recommended_idle_timeout(), None);
    // Open for 300 ms proves 200 ms + 50 ms is safe ...
    assert_eq!(report.parity, Some(Ok(())));
    // ... but says nothing about 4 s.
    let report = probe(&uri(addr, "/"), options.front_idle(Duration::from_secs(4)))
        .await
        .expect("probe succeeds");
    assert_eq!(report.parity, None);
}

#[tokio::test]
async fn parity_is_checked_against_the_measured_close() {
    let (addr, _heads) = start(Server {
        headers: "",
        close_after: Some(ms(300)),
    })
    .await;
    let report = probe(
        &uri(addr, "/"),
        ProbeOptions::new().front_idle(ms(500)).margin(ms(100)),
    )
    .await
    .expect("probe succeeds");
    let err = report.parity.expect("parity checked").unwrap_err();
    assert_eq!(err.front_idle(), ms(500));
    assert_within_10_percent(Some(err.shortfall()), ms(300));
    assert!(err
        .to_string()
        .contains("raise the backend keep-alive to at least 600 ms"));

    let report = probe(
        &uri(addr, "/"),
        ProbeOptions::new().front_idle(ms(100)).margin(ms(50)),
    )
    .await
    .expect("probe succeeds");
    assert_eq!(report.parity, Some(Ok(())));
}

#[tokio::test]
async fn connection_close_means_no_keep_alive() {
    let (addr, _heads) = start(Server {
        headers: "Connection: close\r\n",
        close_after: None,
    })
    .await;
    let report = probe(&uri(addr, "/"), ProbeOptions::new().front_idle(ms(100)))
        .await
        .expect("probe succeeds");
    assert!(report.keep_alive_refused);
    assert_eq!(report.idle_close, Some(Duration::ZERO));
    assert_eq!(report.recommended_idle_timeout(), None);
    assert!(matches!(report.parity, Some(Err(_))));
}

#[tokio::test]
async fn a_malformed_hint_is_reported_not_fatal() {
    let (addr, _heads) = start(Server {
        headers: "Keep-Alive: timeout=soon\r\n",
        close_after: Some(ms(100)),
    })
    .await;
    let report = probe(&uri(addr, "/"), ProbeOptions::new())
        .await
        .expect("probe succeeds");
    assert_eq!(report.keep_alive, None);
    assert_eq!(report.keep_alive_header.as_deref(), Some("timeout=soon"));
    assert!(report.keep_alive_error.is_some());
    assert!(report.idle_close.is_some());
}

#[tokio::test]
async fn bad_uris_are_invalid_uri_errors() {
    // `https` is not among them: the tests build the `rustls` feature (below).
    for bad in ["/no/host", "example.com", "ftp://127.0.0.1/"] {
        let uri: http::Uri = bad.parse().unwrap();
        let err = probe(&uri, ProbeOptions::new()).await.unwrap_err();
        assert!(err.is_invalid_uri(), "{bad}: {err}");
        assert!(err.to_string().contains(bad), "{err}");
    }
}

#[tokio::test]
async fn refused_connection_is_a_connect_error_and_bad_options_a_config_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = probe(&uri(addr, "/"), ProbeOptions::new())
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err}");

    let err = probe(
        &uri(addr, "/"),
        ProbeOptions::new().max_wait(Duration::ZERO),
    )
    .await
    .unwrap_err();
    assert!(err.is_config(), "{err}");
}

#[tokio::test]
async fn a_silent_server_hits_the_response_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _held = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    let err = probe(
        &uri(addr, "/"),
        ProbeOptions::new().response_timeout(ms(200)),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.request_progress(),
        closefirst::Progress::WrittenNoResponse
    );
    let source = std::error::Error::source(&err).expect("timeout cause");
    assert!(source.to_string().contains("200 ms"), "{source}");
}

#[path = "../examples/race/certs.rs"]
mod certs;

#[tokio::test]
async fn over_https_the_probe_times_the_close_and_refuses_an_unknown_certificate() {
    let cert = certs::TestCert::new();
    let origin = Origin::builder(OriginConfig {
        idle_timeout: Duration::from_millis(300),
        send_keep_alive_hint: false,
        ..OriginConfig::default()
    })
    .tls(cert.server_config())
    .start_on_thread()
    .expect("the origin listens");
    let uri: http::Uri = origin.url("/").parse().unwrap();
    assert_eq!(uri.scheme_str(), Some("https"));

    let report = probe(&uri, ProbeOptions::new().tls_config(cert.client_config()))
        .await
        .expect("the probe trusts the origin's certificate");
    assert_eq!(report.status, 200);
    let close = report
        .idle_close
        .expect("the origin closes idle connections");
    // The close_notify and FIN at 300 ms, timed from the end of the response.
    assert!(
        (Duration::from_millis(150)..Duration::from_secs(3)).contains(&close),
        "{close:?}"
    );

    let stranger = certs::TestCert::new();
    let err = probe(
        &uri,
        ProbeOptions::new().tls_config(stranger.client_config()),
    )
    .await
    .unwrap_err();
    assert!(err.is_connect(), "{err}");
    assert!(err.to_string().contains("certificate was refused"), "{err}");
}
