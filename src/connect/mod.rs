//! Opening connections: the built-in TCP connector, its socket options, and the trait
//! a custom connector's IO implements.
//!
//! The pool opens connections through any `tower::Service<http::Uri>` whose response
//! is a hyper IO implementing [`Connection`]; [`TcpConnector`] is the built-in one.
//! A TLS connector (not built in yet) wraps a `TcpConnector` and forwards
//! [`Connection::socket`] from the inner [`TcpIo`], so the pool can still look at the
//! TCP socket before reusing the connection.
//!
//! In the flow of one request this sits between the pool, which calls a connector
//! when it has no idle connection to hand out, and the IO layer below
//! (`io`: [`TcpIo`], [`SocketHandle`], [`SocketOptions`]), whose types it re-exports
//! under their public paths:
//!
//! - `tcp`: [`TcpConnector`] and its future, [`Connecting`];
//! - `keepalive`: [`TcpKeepalive`] and its validation.

mod keepalive;
mod tcp;

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
