//! Opening connections: the built-in TCP connector, its socket options, HTTPS
//! (feature `rustls`), Unix domain sockets, and what a custom connector's IO implements.
//!
//! The pool opens connections through any `tower::Service<http::Uri>` whose response
//! is a hyper IO implementing [`Connection`]. [`Builder::build`](crate::Builder::build)
//! uses the built-in one: TCP for `http`; TCP and rustls for `https` with the `rustls`
//! feature (`Builder::tls_config`); one Unix socket for
//! every request with [`Builder::unix_socket`](crate::Builder::unix_socket)
//! ([`UnixConnector`]).
//!
//! # A connector of your own
//!
//! [`TcpIo`] and [`UnixIo`] implement tokio's `AsyncRead`/`AsyncWrite`, so any TLS
//! library (native-tls, openssl, rustls) or a tunnel can be layered on them. Take the
//! socket's [`SocketHandle`] before wrapping, and hand the wrapped stream to hyper in a
//! [`Wrapped`]: the pool keeps peeking the socket before reuse, reads the socket
//! options back, and classifies a failed request by the plaintext that reached hyper
//! (a TLS `close_notify` in the race window is not a response). See
//! `examples/custom_tls.rs` for a whole TLS connector in a few lines:
//!
//! ```no_run
//! # async fn connect(uri: http::Uri) -> Result<(), closefirst::Error> {
//! use closefirst::connect::{TcpConnector, Wrapped};
//! use tower::ServiceExt;
//!
//! let tcp = TcpConnector::new().enforce_http(false).oneshot(uri).await?;
//! let handle = tcp.handle();
//! let stream = tcp; // e.g. `tokio_native_tls::TlsConnector::connect(host, tcp).await?`
//! let io = Wrapped::new(stream, handle); // give this to the pool
//! # let _ = io;
//! # Ok(())
//! # }
//! ```
//!
//! In the flow of one request this sits between the pool, which calls a connector
//! when it has no idle connection to hand out, and the IO layer below
//! (`io`: [`TcpIo`], [`SocketHandle`], [`SocketOptions`]), whose types it re-exports
//! under their public paths:
//!
//! - `tcp`: [`TcpConnector`] and its future, [`Connecting`];
//! - `keepalive`: [`TcpKeepalive`] and its validation;
//! - `unix`: [`UnixConnector`];
//! - `tls` (feature `rustls`): the client configuration and the handshake;
//! - `builtin`: the connector `Builder::build` uses, one IO type for all of them.

mod builtin;
mod keepalive;
mod tcp;
#[cfg(feature = "rustls")]
mod tls;
#[cfg(unix)]
mod unix;

pub(crate) use builtin::{BuiltinConnector, BuiltinIo};
#[cfg(feature = "rustls")]
pub(crate) use tls::TlsConfig;
#[cfg(unix)]
pub use unix::{UnixConnecting, UnixConnector};

/// The host name a resolver is asked for (hyper-util's type; see [`dns`](crate::dns)).
pub use crate::dns::Name;
#[cfg(unix)]
pub use crate::io::UnixIo;
pub use crate::io::{SocketHandle, SocketOptions, TcpIo, Wrapped};
pub use keepalive::TcpKeepalive;
pub use tcp::{Connecting, TcpConnector};

/// What the pool needs from a connector's IO beyond reading and writing.
pub trait Connection {
    /// A handle to the underlying TCP socket, if there is one. With it, the pool
    /// checks an idle connection before reuse and tells how far a failed request got;
    /// without it (`None`), idle connections are reused unchecked and a failed request
    /// whose fate is unknown is treated as executed.
    fn socket(&self) -> Option<SocketHandle>;
}

impl Connection for TcpIo {
    fn socket(&self) -> Option<SocketHandle> {
        Some(self.handle())
    }
}

#[cfg(unix)]
impl Connection for UnixIo {
    fn socket(&self) -> Option<SocketHandle> {
        Some(self.handle())
    }
}

impl<S> Connection for Wrapped<S> {
    fn socket(&self) -> Option<SocketHandle> {
        Some(self.handle().clone())
    }
}
