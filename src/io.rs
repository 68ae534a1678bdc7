//! The IO type the built-in connector produces: a tokio `TcpStream` shared between
//! hyper's connection task and the pool, counting the bytes that cross it.
//!
//! Sharing matters for two reasons. The pool peeks at an idle connection's socket
//! before reusing it, and must never do so after the socket was closed and its file
//! descriptor handed to another socket: an `Arc` keeps the descriptor alive for as
//! long as either side holds it. And the byte counters tell how far a failed request
//! got (nothing written, written with no response, response started), which is what
//! decides whether it may be sent again.

use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::connect::SocketOptions;

struct Shared {
    stream: TcpStream,
    remote_addr: Option<SocketAddr>,
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

/// What a non-blocking peek at an idle connection's socket found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Nothing to read: the connection is open and quiet, as an idle one should be.
    Alive,
    /// The server sent FIN.
    Closed,
    /// The socket reported an error (a RST from the server, most often).
    Error(io::ErrorKind),
    /// The server sent bytes on an idle connection (for instance a `408` before closing).
    UnexpectedBytes,
}

impl Liveness {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Liveness::Alive => "alive",
            Liveness::Closed => "closed by the server (FIN)",
            Liveness::Error(io::ErrorKind::ConnectionReset) => "reset by the server (RST)",
            Liveness::Error(_) => "socket error",
            Liveness::UnexpectedBytes => "server sent bytes while idle",
        }
    }
}

impl TcpIo {
    /// Wraps a connected stream. The socket options reported by
    /// [`SocketHandle::socket_options`] are read from the kernel here.
    pub fn new(stream: TcpStream) -> TcpIo {
        let remote_addr = stream.peer_addr().ok();
        let options = SocketOptions::read_from(&SockRef::from(&stream));
        TcpIo {
            shared: Arc::new(Shared {
                stream,
                remote_addr,
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

    /// The socket options as the kernel reported them when the connection was opened.
    pub fn socket_options(&self) -> SocketOptions {
        self.shared.options
    }

    /// Reads the socket options from the kernel now (one `getsockopt` per option).
    pub fn read_socket_options(&self) -> SocketOptions {
        SocketOptions::read_from(&SockRef::from(&self.shared.stream))
    }

    /// Bytes read from the socket so far.
    pub fn bytes_read(&self) -> u64 {
        self.shared.bytes_read.load(Ordering::Acquire)
    }

    /// Bytes the kernel accepted for sending so far.
    pub fn bytes_written(&self) -> u64 {
        self.shared.bytes_written.load(Ordering::Acquire)
    }

    /// One non-blocking `recv(MSG_PEEK)` (the socket is in non-blocking mode, so it
    /// cannot wait). No allocation: one byte on the stack is enough to tell the cases
    /// apart, and nothing is consumed.
    pub(crate) fn peek(&self) -> Liveness {
        let mut byte = [MaybeUninit::<u8>::uninit(); 1];
        let sock = SockRef::from(&self.shared.stream);
        loop {
            return match sock.peek(&mut byte) {
                Ok(0) => Liveness::Closed,
                Ok(_) => Liveness::UnexpectedBytes,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Liveness::Alive,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Liveness::Error(e.kind()),
            };
        }
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
            let result = shared.stream.try_io(Interest::READABLE, || {
                SockRef::from(&shared.stream).recv(dst)
            });
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts allocations made on the current thread, so that tests running in
    /// parallel on other threads do not disturb the count.
    struct CountingAllocator;

    thread_local! {
        static ALLOCATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    // Test-only: forwards to the system allocator and counts.
    #[allow(unsafe_code)]
    unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
        unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
            // SAFETY: forwarded unchanged to the system allocator.
            unsafe { std::alloc::System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
            // SAFETY: forwarded unchanged to the system allocator.
            unsafe { std::alloc::System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static GLOBAL: CountingAllocator = CountingAllocator;

    fn allocations() -> usize {
        ALLOCATIONS.with(|n| n.get())
    }

    async fn pair() -> (SocketHandle, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (TcpIo::new(client.unwrap()).handle(), accepted.unwrap().0)
    }

    /// Peeks until the socket is no longer quiet (the peer's bytes or FIN take a
    /// moment to arrive, even on loopback); gives up after about a second.
    async fn first_change(handle: &SocketHandle) -> Liveness {
        for _ in 0..1000 {
            let found = handle.peek();
            if found != Liveness::Alive {
                return found;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        Liveness::Alive
    }

    #[tokio::test(flavor = "current_thread")]
    async fn peek_tells_alive_fin_and_stray_bytes_apart_without_allocating() {
        let (handle, server) = pair().await;
        let before = allocations();
        let alive = handle.peek();
        assert_eq!(allocations(), before, "the peek allocated");
        assert_eq!(alive, Liveness::Alive);

        server.try_write(b"x").unwrap();
        assert_eq!(first_change(&handle).await, Liveness::UnexpectedBytes);

        let (handle, server) = pair().await;
        drop(server);
        assert_eq!(first_change(&handle).await, Liveness::Closed);
        // A peek consumes nothing: asking again gives the same answer.
        assert_eq!(handle.peek(), Liveness::Closed);
    }
}
