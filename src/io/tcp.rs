//! [`TcpIo`], the IO the built-in connector produces: a tokio `TcpStream` shared
//! between hyper's connection task and the pool, counting the bytes that cross it.
//!
//! Sharing matters for two reasons. The pool peeks at an idle connection's socket
//! before reusing it, and must never do so after the socket was closed and its file
//! descriptor handed to another socket: an `Arc` keeps the descriptor alive for as
//! long as either side holds it. And the byte counters tell how far a failed request
//! got (nothing written, written with no response, response started), which is what
//! decides whether it may be sent again.

use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::info::SocketOptions;

struct Shared {
    stream: TcpStream,
    remote_addr: Option<SocketAddr>,
    local_addr: Option<SocketAddr>,
    options: SocketOptions,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
}

/// A TCP connection as the pool uses it: implements hyper's [`Read`] and [`Write`],
/// counts bytes in both directions, and hands out [`SocketHandle`]s to the same socket.
///
/// Produced by [`TcpConnector`](crate::connect::TcpConnector); a custom connector can
/// wrap its own `TcpStream` with [`TcpIo::new`] to get the pre-reuse check and the
/// request-progress classification.
pub struct TcpIo {
    shared: Arc<Shared>,
}

/// A second handle to a [`TcpIo`]'s socket, used by the pool to look at an idle
/// connection and to classify failures. The socket stays open while a handle exists,
/// but closing the connection (hyper shutting it down) still sends the FIN.
#[derive(Clone)]
pub struct SocketHandle {
    shared: Arc<Shared>,
}

impl TcpIo {
    /// Wraps a connected stream. The socket options reported by
    /// [`SocketHandle::socket_options`] are read from the kernel here.
    pub fn new(stream: TcpStream) -> TcpIo {
        let remote_addr = stream.peer_addr().ok();
        let local_addr = stream.local_addr().ok();
        let options = SocketOptions::read_from(&SockRef::from(&stream));
        TcpIo {
            shared: Arc::new(Shared {
                stream,
                remote_addr,
                local_addr,
                options,
                bytes_read: AtomicU64::new(0),
                bytes_written: AtomicU64::new(0),
            }),
        }
    }

    /// A handle to the same socket.
    pub fn handle(&self) -> SocketHandle {
        SocketHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl SocketHandle {
    /// The peer's address.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.shared.remote_addr
    }

    /// The connection's own (local) address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared.local_addr
    }

    /// The socket options as the kernel reported them when the connection was opened.
    pub fn socket_options(&self) -> SocketOptions {
        self.shared.options
    }

    /// Reads the socket options from the kernel now (one `getsockopt` per option).
    pub fn read_socket_options(&self) -> SocketOptions {
        SocketOptions::read_from(&self.sock_ref())
    }

    /// Bytes read from the socket so far.
    pub fn bytes_read(&self) -> u64 {
        self.shared.bytes_read.load(Ordering::Acquire)
    }

    /// Bytes the kernel accepted for sending so far.
    pub fn bytes_written(&self) -> u64 {
        self.shared.bytes_written.load(Ordering::Acquire)
    }

    /// The socket as socket2 sees it: the peek and the option read-back live in
    /// their own modules, and the stream itself stays private to this one.
    pub(super) fn sock_ref(&self) -> SockRef<'_> {
        SockRef::from(&self.shared.stream)
    }
}

impl fmt::Debug for TcpIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpIo")
            .field("remote_addr", &self.shared.remote_addr)
            .finish()
    }
}

impl fmt::Debug for SocketHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketHandle")
            .field("remote_addr", &self.shared.remote_addr)
            .field("bytes_read", &self.bytes_read())
            .field("bytes_written", &self.bytes_written())
            .finish()
    }
}

/// Whether a read that leaves part of the buffer unfilled shows that the socket's
/// receive queue is empty. True with the edge-triggered selectors mio uses on these
/// systems (epoll, kqueue), where tokio's own streams make the same assumption (the
/// same list of systems as tokio's `PollEvented::poll_read`); false with a
/// level-triggered one, where clearing readiness could miss data.
#[allow(unexpected_cfgs)] // `mio_unsupported_force_poll_poll` is set by users, not Cargo
const SHORT_READ_DRAINS: bool = cfg!(all(
    not(mio_unsupported_force_poll_poll),
    any(
        target_os = "android",
        target_os = "illumos",
        target_os = "linux",
        target_os = "redox",
        target_os = "dragonfly",
        target_os = "freebsd",
        target_os = "ios",
        target_os = "macos",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "tvos",
        target_os = "visionos",
        target_os = "watchos",
    )
));

// The one reviewed use of `unsafe` in the crate. hyper's read cursor only exposes its
// uninitialized spare capacity through `as_mut`/`advance`; the safe alternative
// (`initialize_unfilled`) zeroes the whole read buffer on every read, because hyper
// hands a fresh cursor to each call. This is the same thing hyper-util's `TokioIo`
// does for every hyper user.
#[allow(unsafe_code)]
impl Read for TcpIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let shared = &*self.shared;
        loop {
            ready!(shared.stream.poll_read_ready(cx))?;
            // SAFETY: `recv` only writes initialized bytes into the slice and never
            // de-initializes any, which is what `as_mut` requires of its caller.
            let dst = unsafe { buf.as_mut() };
            let len = dst.len();
            let mut drained = None;
            let result = shared.stream.try_io(Interest::READABLE, || {
                let n = SockRef::from(&shared.stream).recv(dst)?;
                if SHORT_READ_DRAINS && 0 < n && n < len {
                    // The socket is drained: without this, hyper's next read costs a
                    // `recv` that fails with `EAGAIN`, one wasted syscall per response.
                    // Reporting `WouldBlock` is how `try_io` is told to clear the
                    // readiness (only if no newer event arrived meanwhile); the bytes
                    // are returned below.
                    drained = Some(n);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            let result = match drained {
                Some(n) => Ok(n),
                None => result,
            };
            match result {
                Ok(n) => {
                    // SAFETY: `recv` returned `n`: the first `n` bytes were written.
                    unsafe { buf.advance(n) };
                    shared.bytes_read.fetch_add(n as u64, Ordering::AcqRel);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was cleared by `try_io`; wait for the next edge.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl TcpIo {
    /// Waits for write readiness and runs one non-blocking write, counting the bytes
    /// the kernel accepted.
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        let shared = &*self.shared;
        loop {
            ready!(shared.stream.poll_write_ready(cx))?;
            match write(&shared.stream) {
                Ok(n) => {
                    shared.bytes_written.fetch_add(n as u64, Ordering::AcqRel);
                    return Poll::Ready(Ok(n));
                }
                // Readiness was cleared by the failed try; wait for the next edge.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl Write for TcpIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |stream| stream.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |stream| stream.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the kernel; nothing is buffered here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Shut down explicitly rather than rely on the last `Arc` going away: the FIN
        // must leave when hyper closes the connection, even while the pool still holds
        // a handle for a moment.
        match SockRef::from(&self.shared.stream).shutdown(Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}
