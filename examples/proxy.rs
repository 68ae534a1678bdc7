//! A reverse proxy: the crate in its main use.
//!
//! A hyper HTTP/1.1 server in front, a `closefirst::Client<hyper::body::Incoming>`
//! behind, and every request and response body streamed through as it arrives.
//!
//! ```text
//! cargo run --example proxy                      # the demo: about 15 s, then exits
//! cargo run --example proxy -- --requests 20     # a longer demo
//! cargo run --example proxy -- serve [--upstream http://127.0.0.1:8000] \
//!     [--listen 127.0.0.1:8080] [--timeout 30s] [--keep-host]
//! ```
//!
//! **The demo** starts the lab origin on loopback (it closes idle connections after
//! 2 s without saying so, like gunicorn) behind a relay that adds 25 ms each way, puts
//! the proxy in front, sends GETs and POSTs through it with idle gaps in the race
//! window, under the timer and over it, then one request to an upstream that is down,
//! prints what happened and exits (status 1 if a request failed or ran twice).
//!
//! **`serve`** runs the proxy until Ctrl-C. Without `--upstream` it starts a lab origin
//! on loopback to proxy to; `--listen` defaults to `127.0.0.1:8080`.
//!
//! What a request goes through, in [`Proxy::handle`]:
//! 1. Hop-by-hop headers go ([`HOP_BY_HOP`], and every header `Connection` names), in
//!    both directions. hyper frames each hop anew, so upgrades (WebSocket) are not
//!    proxied.
//! 2. `Host` becomes the upstream's authority, as nginx's `proxy_pass` does
//!    (`--keep-host` keeps the client's, as Envoy does); the client's `Host` goes on in
//!    `X-Forwarded-Host`. `X-Forwarded-For` is a chain: the client's address is
//!    appended to what earlier proxies wrote. `X-Forwarded-Proto` is set to `http`
//!    (this front's scheme), replacing what the client sent: the proxy is taken to be
//!    the edge, so a client cannot claim `https`.
//! 3. The upstream call runs under a timeout (until the response head, connecting and
//!    a resend included). `closefirst` resends what is safe to resend; the proxy never
//!    resends anything itself.
//! 4. The response goes back without hop-by-hop headers, its body streamed. When the
//!    upstream fails, the proxy answers itself with the status a proxy should send and
//!    the cause in `x-closefirst-error` ([`Outcome`]); the log line has the whole error.
//!
//! Every request is logged on stderr with the `ConnectionInfo` of its upstream
//! connection (reused, idle for, requests carried, attempts).

// The command line (the demo and `serve`), apart so this file stays the proxy.
#[path = "proxy/cli.rs"]
mod cli;

use std::convert::Infallible;
use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use closefirst::Progress;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST};
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cli::main().await
}

/// Where the proxy sends requests, and how.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `http://host:port` or `https://host:port`, no path: every request goes there.
    pub upstream: Uri,
    /// How long the upstream may take to send a response head, connecting and a
    /// resend included; then the client gets 504.
    pub timeout: Duration,
    /// Send the client's `Host` upstream instead of the upstream's authority.
    pub keep_host: bool,
}

/// What the proxy sends downstream: the upstream's body as it streams in, or a short
/// error page of its own.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// The proxy: cheap to clone, every clone shares the pool and the counters.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    client: closefirst::Client<Incoming>,
    scheme: Scheme,
    authority: Authority,
    timeout: Duration,
    keep_host: bool,
    counts: [AtomicU64; Outcome::ALL.len()],
}

impl Proxy {
    /// A proxy sending every request through `client` to `settings.upstream`; refuses
    /// an upstream that is not `http(s)://authority`.
    pub fn new(client: closefirst::Client<Incoming>, settings: Settings) -> Result<Proxy, String> {
        let upstream = &settings.upstream;
        let (Some(scheme), Some(authority)) = (upstream.scheme(), upstream.authority()) else {
            return Err(format!(
                "upstream `{upstream}`: needs http:// or https:// and a host"
            ));
        };
        if upstream.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(format!("upstream `{upstream}`: a path is not supported"));
        }
        Ok(Proxy {
            inner: Arc::new(Inner {
                client,
                scheme: scheme.clone(),
                authority: authority.clone(),
                timeout: settings.timeout,
                keep_host: settings.keep_host,
                counts: std::array::from_fn(|_| AtomicU64::new(0)),
            }),
        })
    }

    /// Serves HTTP/1.1 connections from `listener`, each on a task of its own, forever.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait rather than spin.
                    eprintln!("proxy: accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let proxy = self.clone();
            tokio::spawn(async move {
                let service = service_fn(|req| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, Infallible>(proxy.handle(req, peer).await) }
                });
                // With a timer, hyper's 30 s limit on reading a request head applies.
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(error) = served {
                    // The client went away, or an upstream body broke off mid-stream:
                    // hyper then ends this connection, so the client sees a truncated
                    // response, never a complete-looking one.
                    eprintln!("proxy {peer}: connection ended: {}", chain(&error));
                }
            });
        }
    }

    /// Forwards one request and answers it; never fails: errors become responses.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        let mut log = InFlight {
            proxy: &self.inner,
            request: format!("{} {}", req.method(), req.uri()),
            peer,
            started: Instant::now(),
            finished: false,
        };
        let method = req.method().clone();
        let keyed = req.headers().contains_key("idempotency-key");
        let Some(req) = self.upstream_request(req, peer.ip()) else {
            let page = "this method or request target is not forwarded";
            log.finish(Outcome::NotForwarded, None, page.into());
            return answer(Outcome::NotForwarded, page);
        };

        let call = tokio::time::timeout(self.inner.timeout, self.inner.client.request(req));
        match call.await {
            Ok(Ok(mut resp)) => {
                strip_hop_by_hop(resp.headers_mut());
                let detail = match resp.extensions().get::<closefirst::ConnectionInfo>() {
                    Some(info) => format!(
                        "conn={} reused={} idle={:.1?} requests={} attempts={}",
                        info.id, info.reused, info.idle_for, info.requests, info.attempts
                    ),
                    None => String::new(),
                };
                log.finish(Outcome::Forwarded, Some(resp.status()), detail);
                resp.map(Either::Left)
            }
            Ok(Err(error)) => {
                let outcome = Outcome::of(&error);
                let page = explain(outcome, &method, keyed, error.attempts());
                let detail = format!(
                    "{page}; attempts={} progress={:?}: {}",
                    error.attempts(),
                    error.request_progress(),
                    chain(&error)
                );
                log.finish(outcome, None, detail);
                answer(outcome, &page)
            }
            Err(_elapsed) => {
                // The call was dropped: the pool closes its connection rather than
                // reuse one whose response it never read.
                let page = format!("no response head within {:?}", self.inner.timeout);
                log.finish(Outcome::UpstreamTimeout, None, page.clone());
                answer(Outcome::UpstreamTimeout, &page)
            }
        }
    }

    /// The downstream request made into the upstream one: target, headers, version.
    fn upstream_request(
        &self,
        req: Request<Incoming>,
        client: IpAddr,
    ) -> Option<Request<Incoming>> {
        let (mut parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        if !path.starts_with('/') || parts.method == Method::CONNECT {
            return None;
        }
        parts.uri = Uri::builder()
            .scheme(self.inner.scheme.clone())
            .authority(self.inner.authority.clone())
            .path_and_query(path)
            .build()
            .ok()?;
        // Taken first: `Connection` may name `Host` among the headers to strip.
        let host = parts.headers.get(HOST).cloned();
        strip_hop_by_hop(&mut parts.headers);
        if !self.inner.keep_host {
            // closefirst fills in `Host` from the URI: the upstream's authority.
            parts.headers.remove(HOST);
        }
        add_forwarded(&mut parts.headers, client, host);
        // Each hop speaks its own version, and this one keeps connections alive.
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        Some(Request::from_parts(parts, body))
    }

    /// The pool behind the proxy, for its statistics.
    pub fn client(&self) -> &closefirst::Client<Incoming> {
        &self.inner.client
    }

    /// How many requests ended with `outcome`.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.inner.counts[outcome as usize].load(Ordering::Relaxed)
    }

    /// Every outcome seen so far, with its count.
    pub fn outcomes(&self) -> Vec<(&'static str, u64)> {
        let all = Outcome::ALL.into_iter().map(|o| (o.flag(), self.count(o)));
        all.filter(|&(_, n)| n > 0).collect()
    }
}

// ---- Headers ----

/// Headers about one connection, not the message (RFC 9110, section 7.6.1), and the
/// proxy's own credentials; the headers that `Connection` names go too.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Removes [`HOP_BY_HOP`] and the headers `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Appends the client to `X-Forwarded-For`; sets `X-Forwarded-Proto` and
/// `X-Forwarded-Host` to what this proxy saw.
fn add_forwarded(headers: &mut HeaderMap, client: IpAddr, host: Option<HeaderValue>) {
    // Earlier entries are kept, several header lines folded into one list; a value that
    // is not visible ASCII cannot be a list of addresses and is dropped.
    let mut chain: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .collect();
    chain.push(client.to_canonical().to_string());
    let value = HeaderValue::try_from(chain.join(", "))
        .expect("visible ASCII and an IP address make a header value");
    headers.insert("x-forwarded-for", value);
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    match host {
        Some(host) => headers.insert("x-forwarded-host", host),
        None => headers.remove("x-forwarded-host"),
    };
}

// ---- Failures ----

/// The response header that names why the proxy answered itself, like Envoy's
/// response flags: one of [`Outcome::flag`].
pub const ERROR_HEADER: &str = "x-closefirst-error";

/// How a request ended, as counted by [`Proxy::count`]. Every outcome but `Forwarded`
/// is the proxy answering itself, with its [`flag`](Outcome::flag) in [`ERROR_HEADER`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream's response was passed on, whatever its status.
    Forwarded,
    /// 503: no connection (refused, unresolvable, the connect timeout, a refused TLS
    /// certificate). Nothing reached the upstream, unless an earlier attempt did (the
    /// log says so).
    ConnectFailed,
    /// 503: no connection came free within the checkout timeout
    /// (`max_connections_per_origin`).
    PoolExhausted,
    /// 504: no response head within [`Settings::timeout`].
    UpstreamTimeout,
    /// 502: a reused connection died as the request was sent, and the request could
    /// not be resent (a POST without `Idempotency-Key` may have run).
    StaleConnection,
    /// 502: the upstream closed or reset a new connection without answering.
    UpstreamClosed,
    /// 502: the response head broke off or was not HTTP.
    UpstreamResponseFailed,
    /// 400: the client's own request body failed (its upload broke off, or bad
    /// chunking): the client's doing, never resent.
    DownstreamBodyFailed,
    /// Nothing sent (nginx logs 499): the client went away before the response head;
    /// the upstream call was dropped and the pool closed its connection.
    DownstreamGone,
    /// 400: a method or request target the proxy does not forward (`CONNECT`,
    /// `OPTIONS *`).
    NotForwarded,
}

impl Outcome {
    /// Every outcome, in the order [`Proxy::outcomes`] lists them.
    pub const ALL: [Outcome; 10] = [
        Outcome::Forwarded,
        Outcome::ConnectFailed,
        Outcome::PoolExhausted,
        Outcome::UpstreamTimeout,
        Outcome::StaleConnection,
        Outcome::UpstreamClosed,
        Outcome::UpstreamResponseFailed,
        Outcome::DownstreamBodyFailed,
        Outcome::DownstreamGone,
        Outcome::NotForwarded,
    ];

    /// Reads a failed upstream call. The order matters: the client's own body failing
    /// is never the upstream's fault, and a resend that could not connect is a connect
    /// failure even though an earlier attempt was written (the log says so).
    fn of(error: &closefirst::Error) -> Outcome {
        if error.is_body() {
            Outcome::DownstreamBodyFailed
        } else if error.is_connect() {
            Outcome::ConnectFailed
        } else if error.is_timeout() {
            // The connect timeout is a connect error: this is the checkout timeout.
            Outcome::PoolExhausted
        } else if error.is_stale_connection() {
            Outcome::StaleConnection
        } else if error.is_unsupported() || error.is_invalid_uri() {
            Outcome::NotForwarded
        } else if error.request_progress() == Progress::ResponseStarted {
            Outcome::UpstreamResponseFailed
        } else {
            Outcome::UpstreamClosed
        }
    }

    /// The name in [`ERROR_HEADER`] and in the log.
    pub fn flag(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::ConnectFailed => "connect-failed",
            Outcome::PoolExhausted => "pool-exhausted",
            Outcome::UpstreamTimeout => "upstream-timeout",
            Outcome::StaleConnection => "stale-connection",
            Outcome::UpstreamClosed => "upstream-closed",
            Outcome::UpstreamResponseFailed => "upstream-response-failed",
            Outcome::DownstreamBodyFailed => "downstream-body-failed",
            Outcome::DownstreamGone => "downstream-gone",
            Outcome::NotForwarded => "not-forwarded",
        }
    }

    /// The status the proxy answers with (for `Forwarded`, the upstream's is sent).
    pub fn status(self) -> StatusCode {
        match self {
            Outcome::Forwarded => StatusCode::OK,
            Outcome::ConnectFailed | Outcome::PoolExhausted => StatusCode::SERVICE_UNAVAILABLE,
            Outcome::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Outcome::StaleConnection
            | Outcome::UpstreamClosed
            | Outcome::UpstreamResponseFailed => StatusCode::BAD_GATEWAY,
            Outcome::DownstreamBodyFailed | Outcome::NotForwarded => StatusCode::BAD_REQUEST,
            // Only logged: there is nobody to send it to.
            Outcome::DownstreamGone => StatusCode::from_u16(499).expect("499 is in range"),
        }
    }
}

/// What the client is told: what happened, not where (addresses and causes go to the
/// log only).
fn explain(outcome: Outcome, method: &Method, keyed: bool, attempts: u32) -> String {
    let idempotent = matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    let text = match outcome {
        Outcome::StaleConnection => {
            let why = if attempts > 1 {
                "it was resent once and failed again"
            } else if !idempotent && !keyed {
                "it is not idempotent and has no Idempotency-Key, so it may have run: not resent"
            } else {
                "the retry policy allowed no resend (budget spent, or a body too large to replay)"
            };
            return format!(
                "the upstream closed a reused connection as the request was sent; {why}"
            );
        }
        Outcome::ConnectFailed => "the upstream could not be reached",
        Outcome::PoolExhausted => "no upstream connection came free in time",
        Outcome::UpstreamClosed => "the upstream closed the connection without answering",
        Outcome::UpstreamResponseFailed => "the upstream's response broke off",
        Outcome::DownstreamBodyFailed => {
            "the request body broke off (the client's doing); not resent"
        }
        other => other.flag(),
    };
    text.to_owned()
}

fn answer(outcome: Outcome, page: &str) -> Response<ProxyBody> {
    let body = Full::new(Bytes::from(format!("{page}\n")));
    let mut resp = Response::new(Either::Right(body));
    *resp.status_mut() = outcome.status();
    let flag = HeaderValue::from_static(outcome.flag());
    resp.headers_mut().insert(ERROR_HEADER, flag);
    resp
}

/// An error and its causes, on one line.
fn chain(error: &dyn StdError) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// One request's count and log line: written when it is answered, or when hyper drops
/// the request because its client went away.
struct InFlight<'a> {
    proxy: &'a Inner,
    request: String,
    peer: SocketAddr,
    started: Instant,
    finished: bool,
}

impl InFlight<'_> {
    /// `status` is the upstream's, for a forwarded response.
    fn finish(&mut self, outcome: Outcome, status: Option<StatusCode>, detail: String) {
        self.finished = true;
        self.proxy.counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
        let status = status.unwrap_or(outcome.status()).as_u16();
        let (peer, request, flag) = (self.peer, &self.request, outcome.flag());
        let took = self.started.elapsed();
        eprintln!("proxy {peer} \"{request}\" {status} {flag} {took:.1?} {detail}");
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let detail = "the client went away before the response; upstream call dropped";
            self.finish(Outcome::DownstreamGone, None, detail.into());
        }
    }
}
