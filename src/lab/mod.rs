//! The race lab: reproduce the keep-alive race on loopback, on purpose.
//!
//! Enabled by the non-default cargo feature `lab`:
//!
//! ```toml
//! [dev-dependencies]
//! closefirst = { version = "0.1", features = ["lab"] }
//! ```
//!
//! # What it reproduces
//!
//! A server closes a keep-alive connection that has been idle for its timeout. Its
//! FIN needs time to reach the client; a request the client writes onto the connection
//! in that time arrives at a socket that is already closed, whose kernel answers with
//! a RST. The client sees EOF or `ECONNRESET` instead of a response (hyper reports
//! `IncompleteMessage`, a proxy turns it into a 502), and the server never saw the
//! request.
//!
//! On loopback the FIN arrives within microseconds, so the window is almost never hit.
//! [`Relay`] widens it the way a real network does: it sits between client and server
//! and delivers every byte, FIN and RST `one_way_delay` late, in both directions, so a
//! server close at `T` reaches the client at `T + delay`, and a request written in
//! between is answered by a RST that travels back to the client. [`Origin`] is the
//! server: a raw HTTP/1.1 server with a precise idle timer (started when the last byte
//! of a response is written), FIN or RST closes, an optional `Keep-Alive: timeout=N`
//! hint, and counters of what it executed, per `x-request-id`, so lost and duplicated
//! requests can be told apart.
//!
//! # Use it in your own CI
//!
//! Point a client built with *your* settings at a relay in front of an origin that
//! behaves like *your* server (its keep-alive timeout, whether it announces it, how it
//! closes), send requests with pauses around the server's idle timeout, and assert
//! that none failed and none ran twice. With `closefirst` and an idle timeout below
//! the server's, the client closes first and the race cannot happen:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Empty;
//! use closefirst::lab::{Origin, OriginConfig, Relay};
//!
//! // The server keeps idle connections 300 ms; the network adds 20 ms each way.
//! let origin = Origin::start(OriginConfig {
//!     idle_timeout: Duration::from_millis(300),
//!     ..OriginConfig::default()
//! })
//! .await?;
//! let relay = Relay::start(origin.addr(), Duration::from_millis(20)).await?;
//!
//! let client: closefirst::Client<Empty<Bytes>> = closefirst::Client::builder()
//!     .idle_timeout(Duration::from_millis(100))
//!     .keep_alive_margin(Duration::from_millis(20))
//!     .build()?;
//! let uri = format!("http://{}/", relay.addr());
//! for id in ["1", "2"] {
//!     let req = http::Request::get(&uri).header("x-request-id", id).body(Empty::new())?;
//!     let resp = client.request(req).await?;
//!     assert_eq!(resp.status(), 200);
//!     drop(resp);
//!     // Idle for about the server's timeout: exactly when its FIN would be in flight.
//!     tokio::time::sleep(Duration::from_millis(290)).await;
//! }
//! assert_eq!(origin.handler_calls(), 2);
//! assert_eq!(origin.duplicates(), 0);
//! # Ok(())
//! # }
//! ```
//!
//! Both types run on the caller's tokio runtime and stop when dropped;
//! [`Origin::builder`] can also run the origin on a thread of its own, so that a test
//! that blocks its runtime or pauses its clock still has a server that answers.
//!
//! # The test server
//!
//! [`Origin`] is also the server of this crate's own integration tests: through
//! [`OriginBuilder`] it misbehaves on purpose for chosen request ids ([`Fault`]: reset
//! without answer, partial heads and bodies, stray bytes, garbage, …) and records what
//! it received (bodies as [`RecordedBody`], headers through
//! [`Origin::request_headers`]), so a test can assert how many times the server's
//! handler ran and what reached it, not only what the client saw. [`Rng`] makes random timings
//! reproducible.

mod duplex;
mod origin;
mod relay;
mod rng;

pub use duplex::DuplexIo;
pub use origin::{Fault, Origin, OriginBuilder, OriginConfig, RecordedBody};
pub use relay::Relay;
pub use rng::Rng;
