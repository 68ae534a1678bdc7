//! [`UnixIo`]: a Unix domain stream socket as the pool uses it, with the same peek and
//! byte counts as a TCP connection.

use std::fmt;

use tokio::net::UnixStream;

use super::socket::{forward_io, SocketHandle, SocketIo, Stream};
use crate::info::SocketOptions;

/// A Unix domain socket connection as the pool uses it: the twin of
/// [`TcpIo`](super::TcpIo) for `AF_UNIX` stream sockets. The pre-reuse peek and the
/// request-progress classification work as on TCP; the TCP socket options (keepalive,
/// `TCP_NODELAY`, `TCP_USER_TIMEOUT`) do not apply, and read back as `None`.
///
/// Produced by [`UnixConnector`](crate::connect::UnixConnector).
pub struct UnixIo {
    io: SocketIo,
}

impl UnixIo {
    /// Wraps a connected stream.
    pub fn new(stream: UnixStream) -> UnixIo {
        UnixIo {
            io: SocketIo::new(Stream::Unix(stream), None, None, SocketOptions::default()),
        }
    }

    /// A handle to the same socket.
    pub fn handle(&self) -> SocketHandle {
        self.io.handle()
    }
}

forward_io!(UnixIo);

impl fmt::Debug for UnixIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixIo").finish_non_exhaustive()
    }
}
