//! The integration tests' view of the test server: the lab's
//! [`Origin`](closefirst::lab::Origin), on a thread and runtime of its own, under the
//! names the tests use.
//!
//! The server runs on its own OS thread with its own current-thread tokio runtime, so
//! a test that blocks its own runtime (or runs with paused time) does not stop it. It
//! listens on `127.0.0.1:0` and shuts down (listener and every connection closed,
//! thread joined) when the [`TestServer`] handle is dropped. Everything it does is the
//! lab origin's; this module only maps a [`ServerConfig`] onto
//! [`OriginBuilder`](closefirst::lab::OriginBuilder) and numbers the responses
//! (`ok N`, `x-connection`, `x-handler-calls-for-id`).

// Each test binary uses a subset of this module; the items are `pub` but the
// module is private to each test crate.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use closefirst::lab::{Origin, OriginConfig};

pub use closefirst::lab::{Fault, Rng};

/// Total size of the header lines written for [`Fault::HugeHeaders`].
pub const HUGE_HEADERS_BYTES: usize = Fault::HUGE_HEADERS_BYTES;

/// How the server closes a connection for `idle_close` and unannounced
/// `close_after_requests`.
#[derive(Clone, Debug, Default)]
pub enum CloseMode {
    /// Orderly close: the client sees EOF.
    #[default]
    Fin,
    /// Abortive close (`SO_LINGER` 0): the client sees `ECONNRESET`.
    Rst,
}

/// Behaviour of a [`TestServer`].
#[derive(Clone, Debug, Default)]
pub struct ServerConfig {
    /// Close a connection that has been idle (no byte of a new request) this
    /// long after the last response was written, or after accept.
    pub idle_close: Option<Duration>,
    /// How `idle_close` and `close_after_requests` close the connection.
    pub close_mode: CloseMode,
    /// If set, every response carries `Keep-Alive: <value>` verbatim.
    pub keep_alive_header: Option<String>,
    /// If true, every response carries `Connection: close` and the server
    /// closes (FIN) after writing it.
    pub connection_close: bool,
    /// Close (with `close_mode`) after answering this many requests on a
    /// connection. The last response does not announce the close.
    pub close_after_requests: Option<usize>,
    /// At `idle_close`, write a `408 Request Timeout` response before closing.
    pub stray_bytes_on_idle_close: bool,
    /// Wait this long before answering each request (applies to every way of
    /// answering, faults included).
    pub response_delay: Option<Duration>,
    /// Request ids (`x-request-id`) for which, the first time, the server reads the
    /// full request, counts the handler call, then closes with RST without
    /// answering: [`Fault::RstWithoutAnswer`].
    pub rst_without_answer: Vec<String>,
    /// Request ids for which, the first time, the server writes a truncated response
    /// and then closes with RST: [`Fault::PartialResponseThenRst`].
    pub partial_response_then_rst: Vec<String>,
    /// Request ids for which, the first time, the server writes part of a response
    /// head and then closes with RST: [`Fault::PartialHeadThenRst`].
    pub partial_head_then_rst: Vec<String>,
    /// Misbehaviours by request id (`x-request-id`), applied the first time the id
    /// is seen; they win over the three lists above.
    pub faults: HashMap<String, Fault>,
    /// If set, wait a random time in `lo..=hi` before answering each request (after
    /// `response_delay`), drawn from a PRNG seeded with `delay_seed`.
    pub response_delay_range: Option<(Duration, Duration)>,
    /// Seed of the `response_delay_range` PRNG.
    pub delay_seed: u64,
    /// With `close_after_requests`: announce the close with `Connection: close` on the
    /// last response (and close with FIN whatever `close_mode` says).
    pub announce_close_after_requests: bool,
}

/// The body bytes the server received for one request head, and whether the body
/// was complete.
pub type ReceivedBody = (Vec<u8>, bool);

/// Handle to a running test server. Dropping it stops the server and joins
/// its thread.
#[derive(Debug)]
pub struct TestServer {
    origin: Origin,
}

impl TestServer {
    /// Binds `127.0.0.1:0`, starts the server thread and returns once the
    /// server is listening.
    pub fn start(config: ServerConfig) -> TestServer {
        let mut builder = Origin::builder(OriginConfig {
            idle_timeout: config.idle_close.unwrap_or(Duration::MAX),
            send_keep_alive_hint: false,
            close_with_rst: matches!(config.close_mode, CloseMode::Rst),
            close_after_requests: config.close_after_requests,
            response_delay: config.response_delay.unwrap_or(Duration::ZERO),
        })
        .numbered_responses(true)
        .connection_close(config.connection_close)
        .announce_close(config.announce_close_after_requests)
        .stray_408_on_idle_close(config.stray_bytes_on_idle_close);
        if let Some(value) = config.keep_alive_header {
            builder = builder.keep_alive_header(value);
        }
        if let Some((lo, hi)) = config.response_delay_range {
            builder = builder.random_delay(lo, hi, config.delay_seed);
        }
        let lists = [
            (config.rst_without_answer, Fault::RstWithoutAnswer),
            (
                config.partial_response_then_rst,
                Fault::PartialResponseThenRst,
            ),
            (config.partial_head_then_rst, Fault::PartialHeadThenRst),
        ];
        for (ids, fault) in lists {
            for id in ids {
                builder = builder.fault(id, fault.clone());
            }
        }
        for (id, fault) in config.faults {
            builder = builder.fault(id, fault);
        }
        let origin = builder
            .start_on_thread()
            .expect("test server: a listener on 127.0.0.1 and a thread");
        TestServer { origin }
    }

    /// The lab origin behind this handle.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.origin.addr()
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        self.origin.url(path)
    }

    /// Connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.origin.connections()
    }

    /// Connections accepted and not yet closed by either side (as far as the
    /// server has noticed).
    pub fn open_connections(&self) -> usize {
        self.origin.open_connections()
    }

    /// Requests fully read, including those answered with a reset.
    pub fn handler_calls(&self) -> usize {
        self.origin.handler_calls()
    }

    /// Handler calls whose `x-request-id` equals `request_id`.
    pub fn calls_for(&self, request_id: &str) -> usize {
        self.origin.executions(request_id)
    }

    /// Connections the server closed on purpose, counted once the FIN or RST has
    /// been sent.
    pub fn closes_done(&self) -> usize {
        self.origin.closes_done()
    }

    /// Request heads with this `x-request-id` the server has read, whether or not the
    /// body that followed was complete (a handler call needs both).
    pub fn seen_for(&self, request_id: &str) -> usize {
        self.origin.heads_seen(request_id)
    }

    /// For each request head with this `x-request-id`, in arrival order: the body
    /// bytes received and whether the body was complete.
    pub fn bodies_for(&self, request_id: &str) -> Vec<ReceivedBody> {
        self.origin
            .bodies(request_id)
            .into_iter()
            .map(|body| (body.bytes, body.complete))
            .collect()
    }

    /// Connections on which the server read EOF (or a reset) from the client
    /// while the connection was idle, before its own idle timer fired.
    pub fn client_closed_first(&self) -> usize {
        self.origin.client_closes()
    }

    /// Connections the server closed because `idle_close` fired.
    pub fn server_closed_idle(&self) -> usize {
        self.origin.idle_closes()
    }

    /// For each accepted connection, in accept order, the number of requests
    /// it served.
    pub fn requests_per_connection(&self) -> Vec<usize> {
        self.origin.requests_per_connection()
    }

    /// Polls `what` every 5 ms (blocking the calling thread) until it holds or
    /// `timeout` elapses; returns whether it held.
    pub fn wait_until(&self, what: impl Fn(&TestServer) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if what(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Like [`TestServer::wait_until`] but sleeps with `tokio::time::sleep`.
    /// The deadline is measured in real time, not on tokio's clock.
    pub async fn wait_until_async(
        &self,
        what: impl Fn(&TestServer) -> bool,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if what(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A request of `method` to the server's `/`, tagged `x-request-id: id` (the server
/// counts handler calls per id), with the body `payload`.
pub fn request(
    server: &TestServer,
    method: http::Method,
    id: &str,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    http::Request::builder()
        .method(method)
        .uri(server.url("/"))
        .header("x-request-id", id)
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"payload",
        )))
        .expect("a valid request")
}

/// Sends a GET for `url`, asserts a `200`, reads the body to its end, and returns the
/// response's `ConnectionInfo` and the body as text.
pub async fn get(
    client: &closefirst::Client<http_body_util::Empty<bytes::Bytes>>,
    url: &str,
) -> (closefirst::ConnectionInfo, String) {
    use http_body_util::BodyExt;
    let req = http::Request::get(url)
        .body(http_body_util::Empty::new())
        .expect("a valid request");
    let resp = client.request(req).await.expect("request succeeds");
    assert_eq!(resp.status(), 200);
    let info = resp
        .extensions()
        .get::<closefirst::ConnectionInfo>()
        .cloned()
        .expect("info attached");
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body reads")
        .to_bytes();
    (info, String::from_utf8(body.to_vec()).expect("a text body"))
}

/// Waits (real time, at most 5 s) until the client's pool stats satisfy `what`:
/// connections go back to the pool on a task of their own once their body is read.
pub async fn until<B: closefirst::Body>(
    client: &closefirst::Client<B>,
    what: impl Fn(&closefirst::PoolStats) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !what(&client.stats()) {
        assert!(
            Instant::now() < deadline,
            "never reached: {:?}",
            client.stats()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
