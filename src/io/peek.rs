//! [`Liveness`]: what one non-blocking `recv(MSG_PEEK)` at an idle connection's socket
//! found. The pool's checkout asks [`SocketHandle::peek`] just before reusing a
//! connection and discards it unless the answer is [`Liveness::Alive`].

use std::io;
use std::mem::MaybeUninit;

use super::socket::SocketHandle;

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

impl SocketHandle {
    /// One non-blocking `recv(MSG_PEEK)` (the socket is in non-blocking mode, so it
    /// cannot wait). No allocation: one byte on the stack is enough to tell the cases
    /// apart, and nothing is consumed.
    pub(crate) fn peek(&self) -> Liveness {
        let mut byte = [MaybeUninit::<u8>::uninit(); 1];
        let sock = self.sock_ref();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::TcpIo;
    use tokio::net::TcpStream;

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
