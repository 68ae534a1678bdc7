//! In-memory connections, for driving the pool without sockets.

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::DuplexStream;

use crate::connect::{Connection, SocketHandle};

/// The client end of an in-memory connection (`tokio::io::duplex`) as an IO the pool
/// accepts, for a connector of your own behind [`PoolLayer`](crate::PoolLayer): serve
/// the other end with an in-process server, and the pool runs with no socket at all,
/// so tests under paused tokio time stay deterministic. There is no socket to look at:
/// the pre-reuse check passes such connections unchecked, and a failed request on one
/// counts as [`ResponseStarted`](crate::Progress::ResponseStarted).
///
/// ```
/// use closefirst::lab::DuplexIo;
/// let (client_end, server_end) = DuplexIo::pair(64 * 1024);
/// # let _ = (client_end, server_end);
/// ```
#[derive(Debug)]
pub struct DuplexIo(TokioIo<DuplexStream>);

impl DuplexIo {
    /// Wraps the client end of a duplex stream.
    pub fn new(stream: DuplexStream) -> Self {
        DuplexIo(TokioIo::new(stream))
    }

    /// A new in-memory connection buffering up to `max_buf_size` bytes each way: the
    /// client end for the pool, and the server end to serve.
    pub fn pair(max_buf_size: usize) -> (DuplexIo, DuplexStream) {
        let (client, server) = tokio::io::duplex(max_buf_size);
        (DuplexIo::new(client), server)
    }
}

impl hyper::rt::Read for DuplexIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for DuplexIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Connection for DuplexIo {
    fn socket(&self) -> Option<SocketHandle> {
        None
    }
}
