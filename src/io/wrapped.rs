//! [`Wrapped`]: a stream layered on a [`TcpIo`](super::TcpIo) or
//! [`UnixIo`](super::UnixIo) (TLS, a tunnel) with the socket's [`SocketHandle`]
//! carried along, so the pool keeps its peek and its classification without a newtype.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::socket::SocketHandle;

pin_project_lite::pin_project! {
    /// A stream layered on a socket the pool can look at, ready to hand to hyper:
    /// implements hyper's `Read` and `Write` and [`Connection`](crate::connect::Connection).
    ///
    /// `S` is anything tokio can read and write, typically a TLS stream (rustls,
    /// native-tls, openssl) over a [`TcpIo`](super::TcpIo). It counts the bytes it
    /// hands to hyper on the handle, so a failed request is classified by what reached
    /// hyper, not by the socket's bytes (a TLS `close_notify` alert is bytes on the
    /// socket and no response); "written" stays the socket's count, any byte on the
    /// wire.
    ///
    /// ```no_run
    /// # async fn f(uri: http::Uri) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// use closefirst::connect::{TcpConnector, Wrapped};
    /// use tower::ServiceExt;
    ///
    /// let tcp = TcpConnector::new().enforce_http(false).oneshot(uri).await?;
    /// let handle = tcp.handle();
    /// let tunnel = tcp; // your TLS handshake or tunnel over `tcp` goes here
    /// let io = Wrapped::new(tunnel, handle);
    /// # let _ = io;
    /// # Ok(())
    /// # }
    /// ```
    pub struct Wrapped<S> {
        #[pin]
        io: TokioIo<Counting<S>>,
    }
}

pin_project_lite::pin_project! {
    /// Counts the bytes `inner` hands up.
    struct Counting<S> {
        #[pin]
        inner: S,
        handle: SocketHandle,
    }
}

impl<S> Wrapped<S> {
    /// Wraps `stream`, layered on the socket behind `handle` (from
    /// [`TcpIo::handle`](super::TcpIo::handle) or [`UnixIo::handle`](super::UnixIo::handle),
    /// taken before the socket went into the layer).
    pub fn new(stream: S, handle: SocketHandle) -> Wrapped<S> {
        handle.mark_layered();
        Wrapped {
            io: TokioIo::new(Counting {
                inner: stream,
                handle,
            }),
        }
    }

    /// The handle to the socket under the layer.
    pub fn handle(&self) -> &SocketHandle {
        &self.io.inner().handle
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.io.inner().inner
    }

    /// The wrapped stream, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io.inner_mut().inner
    }

    /// The wrapped stream, and the handle to the socket under it.
    pub fn into_inner(self) -> (S, SocketHandle) {
        let counting = self.io.into_inner();
        (counting.inner, counting.handle)
    }
}

impl<S: AsyncRead> AsyncRead for Counting<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        ready!(this.inner.poll_read(cx, buf))?;
        this.handle
            .add_delivered(buf.filled().len().saturating_sub(before));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite> AsyncWrite for Counting<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

impl<S: AsyncRead> hyper::rt::Read for Wrapped<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> hyper::rt::Write for Wrapped<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        hyper::rt::Write::poll_write(self.project().io, cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        hyper::rt::Write::poll_write_vectored(self.project().io, cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        hyper::rt::Write::is_write_vectored(&self.io)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        hyper::rt::Write::poll_flush(self.project().io, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        hyper::rt::Write::poll_shutdown(self.project().io, cx)
    }
}

impl<S> fmt::Debug for Wrapped<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wrapped")
            .field("handle", self.handle())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Progress;
    use crate::io::{progress, TcpIo};
    use hyper::rt::{Read, Write};
    use std::future::poll_fn;
    use tokio::io::AsyncWriteExt;

    /// A layer that consumes what the socket brings and hands nothing up: what TLS
    /// does with a `close_notify` alert.
    struct Swallow(TcpIo);

    impl AsyncRead for Swallow {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let mut scratch = [0u8; 64];
            let mut scratch = ReadBuf::new(&mut scratch);
            ready!(AsyncRead::poll_read(
                Pin::new(&mut self.0),
                cx,
                &mut scratch
            ))?;
            // End of stream for the layer above, whatever the socket carried.
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Swallow {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf)
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn bytes_the_layer_keeps_to_itself_are_not_a_response() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (mut server, _) = accepted.unwrap();
        let tcp = TcpIo::new(client.unwrap());
        let handle = tcp.handle();
        let mut io = Wrapped::new(Swallow(tcp), handle.clone());
        let before = handle.mark();

        let n = poll_fn(|cx| Pin::new(&mut io).poll_write(cx, b"GET / HTTP/1.1\r\n\r\n"))
            .await
            .unwrap();
        assert_eq!(n, 18);
        server.write_all(b"alert").await.unwrap();
        let mut buf = [0u8; 16];
        let mut read_buf = hyper::rt::ReadBuf::new(&mut buf);
        poll_fn(|cx| Pin::new(&mut io).poll_read(cx, read_buf.unfilled()))
            .await
            .unwrap();

        assert_eq!(handle.bytes_read(), 5, "the socket carried the alert");
        assert_eq!(handle.bytes_delivered(), 0, "nothing reached hyper");
        assert_eq!(
            progress(Some(before), Some(handle.mark())),
            Progress::WrittenNoResponse
        );
    }
}
