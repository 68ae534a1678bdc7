//! [`TcpIo`], the IO the built-in connector produces: a tokio `TcpStream` shared
//! between hyper's connection and the pool, counting the bytes that cross it.

use std::fmt;
use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::TcpStream;

use super::socket::{forward_io, SocketHandle, SocketIo, Stream};
use crate::info::SocketOptions;

/// A TCP connection as the pool uses it: implements hyper's `Read` and `Write` (to hand
/// to hyper directly) and tokio's `AsyncRead` and `AsyncWrite` (to layer TLS or a
/// tunnel on it), counts bytes in both directions, and hands out [`SocketHandle`]s to
/// the same socket.
///
/// Produced by [`TcpConnector`](crate::connect::TcpConnector); a custom connector can
/// wrap its own `TcpStream` with [`TcpIo::new`] to get the pre-reuse check and the
/// request-progress classification. To layer TLS on it, take its
/// [`handle`](TcpIo::handle) first and give both to [`Wrapped::new`](super::Wrapped::new).
pub struct TcpIo {
    io: SocketIo,
}

impl TcpIo {
    /// Wraps a connected stream. The socket options reported by
    /// [`SocketHandle::socket_options`] are read from the kernel here.
    pub fn new(stream: TcpStream) -> TcpIo {
        let remote_addr = stream.peer_addr().ok();
        let local_addr = stream.local_addr().ok();
        let options = SocketOptions::read_from(&SockRef::from(&stream));
        TcpIo {
            io: SocketIo::new(Stream::Tcp(stream), remote_addr, local_addr, options),
        }
    }

    /// A handle to the same socket.
    pub fn handle(&self) -> SocketHandle {
        self.io.handle()
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.io.remote_addr()
    }
}

forward_io!(TcpIo);

impl fmt::Debug for TcpIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpIo")
            .field("remote_addr", &self.io.remote_addr())
            .finish()
    }
}
