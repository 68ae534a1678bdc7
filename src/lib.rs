//! An HTTP/1.1 connection pool for hyper 1.x and tower that never hands a request to a
//! connection the server is closing.
//!
//! # The race
//!
//! A client that keeps idle keep-alive connections races the server's idle timer. The
//! server closes an idle connection (FIN) just as the client writes a new request onto
//! it; the kernel accepts the write, the server answers with a RST, and the caller sees
//! an error (`IncompleteMessage`, a 502 from a proxy) that no server log explains. It
//! strikes irregular traffic against servers with short keep-alive timeouts: uvicorn
//! and Node.js keep idle connections 5 s, gunicorn 2 s.
//!
//! # The cures
//!
//! 1. **Close first, as late as is safe.** The client closes each idle connection
//!    `keep_alive_margin` (default 1 s) before the server would: before its
//!    `Keep-Alive: timeout=N`, or before the timer the pool saw it close at or proved it
//!    keeps with a probe connection no request rides ([`Builder::learn_idle_timeout`]),
//!    up to [`Builder::max_idle_timeout`] (90 s); at `idle_timeout` (4 s) while nothing
//!    is known; or when the connection's lifetime ends. A request that may not be resent
//!    rides only a connection proven to be kept that long. A reaper task sleeps until
//!    the earliest deadline; checkout refuses expired connections by itself.
//! 2. **Look before reuse.** Just before reusing an idle connection, one non-blocking
//!    `recv(MSG_PEEK)` reveals a FIN, RST or stray bytes the kernel already holds; such a
//!    connection is discarded, never written to
//!    ([`Builder::check_before_reuse`]).
//! 3. **Kernel keepalive.** `SO_KEEPALIVE` with `TCP_KEEPIDLE/INTVL/CNT` (and
//!    `TCP_USER_TIMEOUT` on Linux) on every connection ([`TcpKeepalive`]); the values
//!    the kernel applied are reported in [`ConnectionInfo::socket`].
//! 4. **Resend what is safe.** Every failure says how far the request got
//!    ([`Error::request_progress`]) and whether it hit a stale reused connection
//!    ([`Error::is_stale_connection`]). A request never written is resent whatever its
//!    method; one written on a reused connection with no response byte back is resent
//!    once, on a fresh connection, only if its method is idempotent or it is marked as
//!    safe to resend (an `Idempotency-Key` or `X-Idempotency-Key` header, or the
//!    [`retry::Idempotent`] extension); POST and PATCH never, unless you opt in.
//!    Resends happen at once and draw on a retry budget kept per origin ([`retry`],
//!    [`Builder::retry`]).
//!
//! The rule of thumb behind the defaults: the upstream-most side closes first,
//! `server keep-alive >= client idle_timeout + margin`.
//!
//! # Quick start
//!
//! ```no_run
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Empty};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let client: closefirst::Client<Empty<Bytes>> = closefirst::Client::builder()
//!     .idle_timeout(Duration::from_secs(4))
//!     .build()?;
//!
//! let req = http::Request::get("http://127.0.0.1:8080/").body(Empty::new())?;
//! let resp = client.request(req).await?;
//! let info = resp.extensions().get::<closefirst::ConnectionInfo>().cloned();
//! let body = resp.into_body().collect().await?.to_bytes();
//! println!("{} bytes, reused connection: {:?}", body.len(), info.map(|i| i.reused));
//! println!("{:?}", client.stats());
//! # Ok(())
//! # }
//! ```
//!
//! `Client` is also a `tower::Service<http::Request<B>>`, and [`PoolLayer`] builds one
//! over a connector of your own.
//!
//! # Steering the pool
//!
//! [`Client::preconnect`] opens connections ahead of traffic (TLS included), under the
//! same deadlines as every idle connection; [`Client::close_idle`] and
//! [`Client::close_idle_origin`] close idle connections now (dropping the last clone of
//! the client does too); [`ConnectionInfo::poison`] keeps a response's connection from
//! being reused; [`Builder::max_idle_total`] and [`Builder::max_connections_total`] cap
//! the pool across origins.
//!
//! # HTTPS, Unix sockets, connectors of your own
//!
//! - **HTTPS** (feature `rustls`): `https://` URIs work with `Client::builder().build()`,
//!   over rustls with the `ring` provider and the platform's trust roots, or your own
//!   configuration through `Builder::tls_config`. Every cure works through TLS: the
//!   peek looks at the TCP socket under the session (a `close_notify` alert counts as
//!   stray bytes), and a failed request is classified by the plaintext that reached
//!   hyper, so a `close_notify` in the race window still leaves a GET resent.
//! - **Unix domain sockets**: [`Builder::unix_socket`] sends every request to one
//!   socket path (the URI still gives the `Host` header); the peek and the resend
//!   rules work as on TCP, the `tcp_*` options do not apply.
//! - **Your own connector** (native-tls, openssl, a tunnel): [`connect::TcpIo`] is a
//!   tokio `AsyncRead + AsyncWrite`; wrap your stream in [`connect::Wrapped`] with the
//!   socket's handle and hand it to [`PoolLayer`] (see [`connect`] and
//!   `examples/custom_tls.rs`).
//!
//! # How a request flows
//!
//! The source tree reads in the order one request takes through it; imports only point
//! down this list.
//!
//! 1. `client` ([`Client::request`]) hands the request to the retry future (`retry`:
//!    [`retry::Policy`], [`retry::ReplayBody`], [`retry::RetryLayer`]), which keeps the
//!    head and records the body while more than one attempt is allowed.
//! 2. Each attempt goes to `dispatch`: it keys the request by `origin` (scheme, host,
//!    port; `Host` header; origin-form target), checks a connection out of `pool`, and
//!    sends the request on hyper. On a failure it asks `io` how far the request got
//!    ([`Progress`], from the bytes that crossed the socket).
//! 3. `pool` hands out the most recently idled connection whose deadline has not
//!    passed, after one look at its socket (`io`'s peek); otherwise it opens one through
//!    a [`connect`] connector (`TcpConnector` resolves with a [`dns`] resolver and sets
//!    [`TcpKeepalive`] and the other socket options; TLS on top for `https` with the
//!    `rustls` feature; or a Unix socket), or waits in a FIFO queue at
//!    `max_connections_per_origin` (or, at `max_connections_total`, closes another
//!    origin's least recently used idle connection, or waits for room in arrival order
//!    across origins).
//! 4. On the response head, `header` reads `Connection` and `Keep-Alive`, and the
//!    connection's idle period begins (the earliest moment the server can have started
//!    its own timer); when the body ends, the pool checks the connection in with a
//!    deadline below the server's known, hinted or learned idle timeout, counted from
//!    then, and a reaper closes it when that passes. Who polls hyper's connection future
//!    is the connection's own state (`pool::connection`): a task of its own for a
//!    connection opened from a task, or the request's task, parked in the pool while
//!    idle, for one opened from outside any task; a wake of a parked connection is read
//!    by polling it again (see the README, "When idleness starts, and what a wake
//!    means").
//! 5. Back in `retry`, a failure is resent or returned by the policy's rules, with
//!    [`Error`] reporting the furthest any attempt got.
//!
//! The leaves under all of it: `error` ([`Error`], [`Progress`]), `config` (every
//! default and its validation), `info` ([`ConnectionInfo`], [`PoolStats`]), `header`,
//! `origin`, `body` ([`Body`], and [`retry::ReplayBody`], which both `retry` and
//! `dispatch` send), `attempt` (what `retry` and `dispatch` share about attempts:
//! the markers on a resent request, refusal reasons, resend counters). Beside the path,
//! not on it: [`keepalive`] (operators' guardrails: parity,
//! durations with units, the probe behind the `closefirst-probe` binary), `metrics`
//! (feature `metrics`: [`Client::stats`] and [`Client::origin_stats`] through the
//! `metrics` facade) and `lab` (feature `lab`: the race lab, the one test and lab
//! origin server, in-memory connections).

#![cfg_attr(docsrs, feature(doc_cfg))]

mod attempt;
mod body;
mod builder;
mod client;
mod config;
pub mod connect;
mod dispatch;
pub mod dns;
mod error;
mod header;
mod info;
mod io;
pub mod keepalive;
#[cfg(feature = "lab")]
pub mod lab;
mod layer;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
mod origin;
mod pool;
#[cfg(feature = "metrics")]
mod record;
pub mod retry;

pub use body::Body;
pub use builder::Builder;
pub use client::{Client, ResponseFuture};
pub use config::{
    DEFAULT_CHECKOUT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_KEEP_ALIVE_MARGIN, DEFAULT_MAX_IDLE_PER_ORIGIN, DEFAULT_MAX_IDLE_TIMEOUT,
};
pub use connect::TcpKeepalive;
pub use error::{Error, Progress};
pub use info::{
    ConnectionInfo, DeadlineSource, Evictions, IdleCloses, OriginStats, PoolStats, Preconnects,
    Probes, Refusals, Resends, MAX_TRACKED_ORIGINS,
};
pub use layer::PoolLayer;
