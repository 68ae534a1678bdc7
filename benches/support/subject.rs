//! The clients the throughput benches compare, and the server they are compared on.
//!
//! Every client sends the same request (`GET /`, one `host` header), reads the body to
//! the end and checks its length, so no client is measured doing less work.
//! `REQUEST_HEADERS=n` (at most 16) adds `n` header fields such as a browser's request
//! carries through a proxy to the requests of closefirst and hyper-util (not to the
//! raw client's, whose request is fixed bytes).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

use super::raw::RawClient;
use super::server::{self, Accepted};

/// Requests in flight at once in the concurrent cases.
pub(crate) const CONCURRENCY: usize = 64;

/// The clients, in the order criterion measures them in `throughput.rs`.
/// `closefirst_no_peek` is closefirst with `check_before_reuse(false)`: not a setting
/// anyone should run, measured only to tell what the pre-reuse peek costs.
pub(crate) const SUBJECTS: [&str; 4] = [
    "closefirst",
    "hyper_util_legacy",
    "raw",
    "closefirst_no_peek",
];

type LegacyClient = hyper_util::client::legacy::Client<HttpConnector, Empty<Bytes>>;

/// The server under test and what every response from it looks like.
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    uri: Uri,
    body_len: usize,
    /// Counted only for the in-process server.
    accepted: Option<Accepted>,
    /// Header fields every pooled client's request carries (`REQUEST_HEADERS`).
    headers: HeaderMap,
}

/// Request header fields as a browser's request has them after a proxy, for
/// `REQUEST_HEADERS`.
const HEADERS: [(&str, &str); 16] = [
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    ),
    (
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
    ("accept-language", "en-US,en;q=0.5"),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    ("referer", "https://example.com/previous/page"),
    (
        "cookie",
        "session=0123456789abcdef0123456789abcdef; theme=dark",
    ),
    ("x-request-id", "7f3c2a9e-4b1d-4c8e-9a6f-2d5e8b1c0a47"),
    ("x-forwarded-for", "203.0.113.7, 198.51.100.23"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "www.example.com"),
    (
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ),
    ("cache-control", "no-cache"),
    ("pragma", "no-cache"),
    ("dnt", "1"),
    ("sec-fetch-mode", "navigate"),
    ("upgrade-insecure-requests", "1"),
];

fn request_headers() -> HeaderMap {
    let n = std::env::var("REQUEST_HEADERS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0)
        .min(HEADERS.len());
    HEADERS[..n]
        .iter()
        .map(|(name, value)| {
            (
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            )
        })
        .collect()
}

impl Target {
    pub(crate) fn new(addr: SocketAddr, body_len: usize, accepted: Option<Accepted>) -> Arc<Self> {
        Arc::new(Self {
            addr,
            uri: format!("http://{addr}/")
                .parse()
                .expect("a socket address makes a valid authority"),
            body_len,
            accepted,
            headers: request_headers(),
        })
    }

    /// Starts the in-process server (`support/server.rs`) on `rt`.
    pub(crate) fn in_process(rt: &Runtime) -> Arc<Self> {
        let accepted = Accepted::default();
        let addr = rt.block_on(server::start(accepted.clone()));
        Self::new(addr, server::BODY.len(), Some(accepted))
    }

    /// Whether the server counts its connections (the in-process one does, nginx not).
    pub(crate) fn counts_connections(&self) -> bool {
        self.accepted.is_some()
    }

    /// Connections the server has accepted so far; 0 when it does not count them.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.as_ref().map_or(0, Accepted::get)
    }
}

/// The client under test.
#[derive(Clone)]
pub(crate) enum Subject {
    Closefirst(closefirst::Client<Empty<Bytes>>),
    HyperUtilLegacy(LegacyClient),
    Raw(RawClient),
}

impl Subject {
    /// The client named `name` (one of `SUBJECTS`): closefirst and hyper-util at their
    /// defaults (closefirst also without its peek), which connect on demand; `raw` with
    /// `connections` sockets open.
    pub(crate) async fn new(name: &str, target: &Target, connections: usize) -> Subject {
        match name {
            "closefirst" => Subject::Closefirst(
                closefirst::Client::builder()
                    .build()
                    .expect("the defaults are valid"),
            ),
            "closefirst_no_peek" => Subject::Closefirst(
                closefirst::Client::builder()
                    .check_before_reuse(false)
                    .build()
                    .expect("the defaults are valid"),
            ),
            "hyper_util_legacy" => Subject::HyperUtilLegacy(
                hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                    .build_http::<Empty<Bytes>>(),
            ),
            "raw" => Subject::Raw(
                RawClient::connect(target.addr, connections)
                    .await
                    .expect("the bench server accepts connections"),
            ),
            _ => unreachable!("SUBJECTS lists every name"),
        }
    }

    /// One GET with its body read to the end; returns the body's length. `slot` picks
    /// the raw client's socket; the pools pick their own connection.
    pub(crate) async fn get(&self, target: &Target, slot: usize) -> usize {
        let len = match self {
            Subject::Closefirst(client) => {
                let mut req = Request::get(target.uri.clone())
                    .body(Empty::new())
                    .expect("a GET with a parsed URI is a valid request");
                if !target.headers.is_empty() {
                    req.headers_mut().clone_from(&target.headers);
                }
                read_to_end(client.request(req).await.expect("the bench server answers")).await
            }
            Subject::HyperUtilLegacy(client) => {
                let mut req = Request::get(target.uri.clone())
                    .body(Empty::new())
                    .expect("a GET with a parsed URI is a valid request");
                if !target.headers.is_empty() {
                    req.headers_mut().clone_from(&target.headers);
                }
                read_to_end(client.request(req).await.expect("the bench server answers")).await
            }
            Subject::Raw(client) => client.get(slot).await.expect("the bench server answers"),
        };
        assert_eq!(
            len, target.body_len,
            "every response carries the whole body"
        );
        len
    }

    /// `n` GETs at once, one spawned task each, joined before returning.
    pub(crate) async fn get_concurrently(&self, target: &Arc<Target>, n: usize) -> usize {
        let mut set = JoinSet::new();
        for slot in 0..n {
            let subject = self.clone();
            let target = Arc::clone(target);
            set.spawn(async move { subject.get(&target, slot).await });
        }
        let mut total = 0;
        while let Some(len) = set.join_next().await {
            total += len.expect("request task did not panic");
        }
        total
    }
}

/// Reads a response body to its end and returns its length; the bench server always
/// answers 200.
pub(crate) async fn read_to_end(resp: http::Response<Incoming>) -> usize {
    assert!(resp.status().is_success(), "the bench server answers 200");
    resp.into_body()
        .collect()
        .await
        .expect("the bench server sends the whole body")
        .to_bytes()
        .len()
}

/// The runtime every client and the in-process server share: multi-threaded with
/// 2 workers.
pub(crate) fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the machine can start a 2-worker runtime")
}
