//! [`ServerStream`]: an accepted connection as the origin reads and writes it, over
//! TCP, TLS (feature `rustls`) or a Unix domain socket, and [`Transport`], which of
//! those the origin offers besides plain TCP.

use std::fmt;
use std::io;
#[cfg(unix)]
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What the origin serves besides plain HTTP on TCP.
#[derive(Clone, Default)]
pub(super) struct Transport {
    /// TLS on the TCP listener (then every TCP connection is TLS).
    #[cfg(feature = "rustls")]
    pub(super) tls: Option<tokio_rustls::TlsAcceptor>,
    /// A Unix socket to listen on as well, at this path.
    #[cfg(unix)]
    pub(super) unix: Option<PathBuf>,
}

impl Transport {
    pub(super) fn is_tls(&self) -> bool {
        #[cfg(feature = "rustls")]
        return self.tls.is_some();
        #[cfg(not(feature = "rustls"))]
        false
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("Transport");
        f.field("tls", &self.is_tls());
        #[cfg(unix)]
        f.field("unix", &self.unix);
        f.finish()
    }
}

/// One accepted connection's stream.
pub(super) enum ServerStream {
    Tcp(TcpStream),
    #[cfg(feature = "rustls")]
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

/// Runs `$body` with `$s` bound to the stream, whichever kind it is.
macro_rules! with_stream {
    ($stream:expr, $s:ident => $body:expr) => {
        match $stream {
            ServerStream::Tcp($s) => $body,
            #[cfg(feature = "rustls")]
            ServerStream::Tls($s) => $body,
            #[cfg(unix)]
            ServerStream::Unix($s) => $body,
        }
    };
}

impl ServerStream {
    /// The kernel socket under the stream (for a RST, and socket options).
    pub(super) fn sock_ref(&self) -> SockRef<'_> {
        match self {
            ServerStream::Tcp(s) => SockRef::from(s),
            #[cfg(feature = "rustls")]
            ServerStream::Tls(s) => SockRef::from(s.get_ref().0),
            #[cfg(unix)]
            ServerStream::Unix(s) => SockRef::from(s),
        }
    }
}

impl ServerStream {
    /// Queues a TLS 1.3 `KeyUpdate` (the caller flushes it out). `Ok(false)` when the
    /// stream is not TLS; an error on a TLS 1.2 connection.
    pub(super) fn refresh_tls_keys(&mut self) -> io::Result<bool> {
        match self {
            #[cfg(feature = "rustls")]
            ServerStream::Tls(s) => {
                s.get_mut()
                    .1
                    .refresh_traffic_keys()
                    .map_err(io::Error::other)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        with_stream!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        with_stream!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_stream!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }

    /// Over TLS: a `close_notify` alert, then the FIN.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_stream!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }
}
