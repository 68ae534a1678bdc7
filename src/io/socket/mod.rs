//! [`SocketIo`], the one socket wrapper under [`TcpIo`](super::TcpIo) and
//! [`UnixIo`](super::UnixIo): a tokio stream shared between hyper's connection and
//! the pool, counting the bytes that cross it, and [`SocketHandle`], the pool's handle.
//!
//! Sharing matters for two reasons. The pool peeks at an idle connection's socket
//! before reusing it, and must never do so after the socket was closed and its file
//! descriptor handed to another socket: an `Arc` keeps the descriptor alive for as
//! long as either side holds it. And the byte counters tell how far a failed request
//! got (nothing written, written with no response, response started), which is what
//! decides whether it may be sent again.
//!
//! The socket is read either by hyper directly (hyper's [`Read`](hyper::rt::Read)) or
//! by a layer such as TLS (tokio's [`AsyncRead`](tokio::io::AsyncRead)); the trait
//! impls are in `traits`. In the second case the socket's own byte count
//! says nothing about what reached hyper (a TLS `close_notify` is bytes on the socket
//! and no response at all), so the layer ([`Wrapped`](super::Wrapped)) counts the
//! plaintext it hands to hyper on the same handle, and that count is the one the
//! classification uses.

use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::info::SocketOptions;
use crate::io::options::PackedOptions;

mod traits;

pub(super) use traits::forward_io;

/// The kernel socket under a connection.
pub(super) enum Stream {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

/// Runs `$body` with `$s` bound to the stream, whichever kind it is: the tokio methods
/// used here have the same names and signatures on both.
macro_rules! with_stream {
    ($stream:expr, $s:ident => $body:expr) => {
        match $stream {
            Stream::Tcp($s) => $body,
            #[cfg(unix)]
            Stream::Unix($s) => $body,
        }
    };
}

impl Stream {
    fn sock_ref(&self) -> SockRef<'_> {
        with_stream!(self, s => SockRef::from(s))
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_stream!(self, s => s.poll_read_ready(cx))
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_stream!(self, s => s.poll_write_ready(cx))
    }

    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        with_stream!(self, s => s.try_io(interest, f))
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        with_stream!(self, s => s.try_write(buf))
    }

    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        with_stream!(self, s => s.try_write_vectored(bufs))
    }
}

struct Shared {
    stream: Stream,
    remote_addr: Option<SocketAddr>,
    local_addr: Option<SocketAddr>,
    /// Packed: the socket record is per connection.
    options: PackedOptions,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    /// Plaintext bytes a layer above the socket handed to hyper.
    delivered: AtomicU64,
    /// Set when a layer that counts `delivered` wraps the socket: from then on, that
    /// count (not the socket's) tells whether a response started.
    layered: AtomicBool,
    /// A read found the peer's end of the stream (a FIN) or an error (a RST): the
    /// server closed, whatever the client did after.
    peer_closed: AtomicBool,
}

/// A socket as the pool uses it; [`TcpIo`](super::TcpIo) and
/// [`UnixIo`](super::UnixIo) are its public faces.
pub(crate) struct SocketIo {
    shared: Arc<Shared>,
}

/// A second handle to a connection's socket, used by the pool to look at an idle
/// connection and to classify failures. The socket stays open while a handle exists,
/// but closing the connection (hyper shutting it down) still sends the FIN.
///
/// Get one from [`TcpIo::handle`](super::TcpIo::handle) or
/// [`UnixIo::handle`](super::UnixIo::handle) before wrapping the IO in TLS or a
/// tunnel, and give it to [`Wrapped::new`](super::Wrapped::new) with the wrapped
/// stream.
#[derive(Clone)]
pub struct SocketHandle {
    shared: Arc<Shared>,
}

impl SocketIo {
    pub(super) fn new(
        stream: Stream,
        remote_addr: Option<SocketAddr>,
        local_addr: Option<SocketAddr>,
        options: SocketOptions,
    ) -> SocketIo {
        SocketIo {
            shared: Arc::new(Shared {
                stream,
                remote_addr,
                local_addr,
                options: PackedOptions::pack(&options),
                bytes_read: AtomicU64::new(0),
                bytes_written: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                layered: AtomicBool::new(false),
                peer_closed: AtomicBool::new(false),
            }),
        }
    }

    pub(super) fn handle(&self) -> SocketHandle {
        SocketHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    pub(super) fn remote_addr(&self) -> Option<SocketAddr> {
        self.shared.remote_addr
    }
}

impl SocketHandle {
    /// The peer's address (`None` for a Unix domain socket).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.shared.remote_addr
    }

    /// The connection's own (local) address; `None` on a Unix socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared.local_addr
    }

    /// The socket options as the kernel reported them when the connection was opened
    /// (all `None` on a Unix domain socket, where the TCP options do not apply).
    pub fn socket_options(&self) -> SocketOptions {
        self.shared.options.unpack()
    }

    /// Reads the socket options from the kernel now (one `getsockopt` per option; none
    /// on a Unix domain socket).
    pub fn read_socket_options(&self) -> SocketOptions {
        match &self.shared.stream {
            Stream::Tcp(_) => SocketOptions::read_from(&self.sock_ref()),
            #[cfg(unix)]
            Stream::Unix(_) => SocketOptions::default(),
        }
    }

    /// Whether a read found the peer's FIN or an error (a RST) on the socket.
    pub(crate) fn peer_closed(&self) -> bool {
        self.shared.peer_closed.load(Ordering::Acquire)
    }

    /// Bytes read from the socket so far (with TLS: encrypted bytes, records and
    /// alerts included).
    pub fn bytes_read(&self) -> u64 {
        self.shared.bytes_read.load(Ordering::Acquire)
    }

    /// Bytes the kernel accepted for sending so far.
    pub fn bytes_written(&self) -> u64 {
        self.shared.bytes_written.load(Ordering::Acquire)
    }

    /// Bytes that reached hyper so far: the plaintext a [`Wrapped`](super::Wrapped)
    /// layer (TLS, a tunnel) handed up, or, with no layer, the bytes read from the
    /// socket. A failed request whose response had not started is told apart by this
    /// count.
    pub fn bytes_delivered(&self) -> u64 {
        if self.shared.layered.load(Ordering::Acquire) {
            self.shared.delivered.load(Ordering::Acquire)
        } else {
            self.bytes_read()
        }
    }

    /// From now on a layer above the socket counts what it hands to hyper.
    pub(super) fn mark_layered(&self) {
        self.shared.layered.store(true, Ordering::Release);
    }

    pub(super) fn add_delivered(&self, n: usize) {
        self.shared.delivered.fetch_add(n as u64, Ordering::AcqRel);
    }

    /// The socket as socket2 sees it: the peek and the option read-back live in
    /// their own modules, and the stream itself stays private to this one.
    pub(super) fn sock_ref(&self) -> SockRef<'_> {
        self.shared.stream.sock_ref()
    }
}

impl fmt::Debug for SocketHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketHandle")
            .field("remote_addr", &self.shared.remote_addr)
            .field("bytes_read", &self.bytes_read())
            .field("bytes_written", &self.bytes_written())
            .field("bytes_delivered", &self.bytes_delivered())
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

impl SocketIo {
    /// Waits for read readiness and runs one non-blocking `recv` into `dst`, counting
    /// the bytes read.
    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        dst: &mut [MaybeUninit<u8>],
    ) -> Poll<io::Result<usize>> {
        let shared = &*self.shared;
        let len = dst.len();
        loop {
            ready!(shared.stream.poll_read_ready(cx))?;
            let mut drained = None;
            let result = shared.stream.try_io(Interest::READABLE, || {
                let n = shared.stream.sock_ref().recv(dst)?;
                if SHORT_READ_DRAINS && 0 < n && n < len {
                    // The socket is drained: without this, the next read costs a
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
                    shared.bytes_read.fetch_add(n as u64, Ordering::AcqRel);
                    if n == 0 && len > 0 {
                        shared.peer_closed.store(true, Ordering::Release);
                    }
                    return Poll::Ready(Ok(n));
                }
                // Readiness was cleared by `try_io`; wait for the next edge.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    shared.peer_closed.store(true, Ordering::Release);
                    return Poll::Ready(Err(e));
                }
            }
        }
    }

    /// Waits for write readiness and runs one non-blocking write, counting the bytes
    /// the kernel accepted.
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&Stream) -> io::Result<usize>,
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

    fn shutdown_write(&self) -> io::Result<()> {
        // Shut down explicitly rather than rely on the last `Arc` going away: the FIN
        // must leave when the connection is closed, even while the pool still holds a
        // handle for a moment.
        match self.shared.stream.sock_ref().shutdown(Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
            _ => Ok(()),
        }
    }
}
