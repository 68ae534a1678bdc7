//! The IO traits of [`SocketIo`]: hyper's `Read`/`Write`, for a socket handed to hyper
//! directly, and tokio's `AsyncRead`/`AsyncWrite`, for a layer such as TLS on top of
//! it; and `forward_io!`, which gives the public newtypes ([`TcpIo`](crate::io::TcpIo),
//! [`UnixIo`](crate::io::UnixIo)) the same four by forwarding. Both families read and
//! write through the same counting methods of [`SocketIo`].

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::SocketIo;

// The one reviewed use of `unsafe` in the crate. hyper's read cursor and tokio's
// `ReadBuf` only expose their uninitialized spare capacity through unsafe methods; the
// safe alternative (`initialize_unfilled`) zeroes the whole read buffer on every
// read, because hyper hands a fresh cursor to each call. This is the same thing
// hyper-util's `TokioIo` and tokio's own streams do.
#[allow(unsafe_code)]
impl Read for SocketIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: `recv` only writes initialized bytes into the slice and never
        // de-initializes any, which is what `as_mut` requires of its caller.
        let dst = unsafe { buf.as_mut() };
        let n = ready!(self.poll_recv(cx, dst))?;
        // SAFETY: `recv` returned `n`: the first `n` bytes were written.
        unsafe { buf.advance(n) };
        Poll::Ready(Ok(()))
    }
}

#[allow(unsafe_code)]
impl AsyncRead for SocketIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: `recv` only writes initialized bytes into the slice and never
        // de-initializes any, which is what `unfilled_mut` requires of its caller.
        let dst = unsafe { buf.unfilled_mut() };
        let n = ready!(self.poll_recv(cx, dst))?;
        // SAFETY: `recv` returned `n`: the first `n` unfilled bytes were written.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

// hyper's `Write` is tokio's `AsyncWrite` under another name: one set of bodies.
impl Write for SocketIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(self, cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write_vectored(self, cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        AsyncWrite::is_write_vectored(self)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(self, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(self, cx)
    }
}

impl AsyncWrite for SocketIo {
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
        Poll::Ready(self.shutdown_write())
    }
}

/// Implements hyper's `Read`/`Write` and tokio's `AsyncRead`/`AsyncWrite` for a public
/// newtype around [`SocketIo`] (a field named `io`) by forwarding to it.
macro_rules! forward_io {
    ($ty:ty) => {
        impl hyper::rt::Read for $ty {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: hyper::rt::ReadBufCursor<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                hyper::rt::Read::poll_read(std::pin::Pin::new(&mut self.io), cx, buf)
            }
        }

        impl hyper::rt::Write for $ty {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                hyper::rt::Write::poll_write(std::pin::Pin::new(&mut self.io), cx, buf)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                hyper::rt::Write::poll_write_vectored(std::pin::Pin::new(&mut self.io), cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                hyper::rt::Write::poll_flush(std::pin::Pin::new(&mut self.io), cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                hyper::rt::Write::poll_shutdown(std::pin::Pin::new(&mut self.io), cx)
            }
        }

        impl tokio::io::AsyncRead for $ty {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                tokio::io::AsyncRead::poll_read(std::pin::Pin::new(&mut self.io), cx, buf)
            }
        }

        impl tokio::io::AsyncWrite for $ty {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                tokio::io::AsyncWrite::poll_write(std::pin::Pin::new(&mut self.io), cx, buf)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                tokio::io::AsyncWrite::poll_write_vectored(
                    std::pin::Pin::new(&mut self.io),
                    cx,
                    bufs,
                )
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                tokio::io::AsyncWrite::poll_flush(std::pin::Pin::new(&mut self.io), cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                tokio::io::AsyncWrite::poll_shutdown(std::pin::Pin::new(&mut self.io), cx)
            }
        }
    };
}
pub(in crate::io) use forward_io;
