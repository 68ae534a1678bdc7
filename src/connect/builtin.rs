//! The connector [`Builder::build`](crate::Builder::build) uses: TCP for `http`, TCP and
//! TLS for `https` (feature `rustls`), or one Unix domain socket for every request
//! ([`Builder::unix_socket`](crate::Builder::unix_socket)), all as one IO type.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use tower::ServiceExt;

use super::{Connection, TcpConnector};
use crate::error::Error;
use crate::io::{SocketHandle, TcpIo};

#[cfg(feature = "rustls")]
use super::tls::{self, TlsConfig};
#[cfg(unix)]
use super::UnixConnector;
#[cfg(unix)]
use crate::io::UnixIo;
#[cfg(feature = "rustls")]
use crate::io::Wrapped;
#[cfg(feature = "rustls")]
use tokio_rustls::client::TlsStream;

/// TCP or a Unix socket underneath, TLS on top when the scheme is `https`.
#[derive(Clone, Debug)]
pub(crate) struct BuiltinConnector {
    tcp: TcpConnector,
    #[cfg(unix)]
    unix: Option<UnixConnector>,
    #[cfg(feature = "rustls")]
    tls: TlsConfig,
}

impl BuiltinConnector {
    pub(crate) fn new(tcp: TcpConnector) -> BuiltinConnector {
        BuiltinConnector {
            // With TLS built in, `https` is this connector's to refuse or serve.
            #[cfg(feature = "rustls")]
            tcp: tcp.enforce_http(false),
            #[cfg(not(feature = "rustls"))]
            tcp,
            #[cfg(unix)]
            unix: None,
            #[cfg(feature = "rustls")]
            tls: TlsConfig::platform(),
        }
    }

    #[cfg(unix)]
    pub(crate) fn unix(mut self, unix: Option<UnixConnector>) -> BuiltinConnector {
        self.unix = unix;
        self
    }

    #[cfg(feature = "rustls")]
    pub(crate) fn tls(mut self, tls: TlsConfig) -> BuiltinConnector {
        self.tls = tls;
        self
    }

    async fn connect(self, uri: Uri) -> Result<BuiltinIo, Error> {
        let https = uri.scheme_str() == Some("https");
        #[cfg(unix)]
        if let Some(unix) = self.unix {
            let io = unix.connect().await?;
            if !https {
                return Ok(BuiltinIo::Unix(io));
            }
            #[cfg(feature = "rustls")]
            {
                let (host, port) = crate::origin::host_and_port(&uri)?;
                let handle = io.handle();
                let tls = tls::handshake(&self.tls, host, port, io, handle).await?;
                return Ok(BuiltinIo::UnixTls(Box::new(tls)));
            }
            #[cfg(not(feature = "rustls"))]
            return Err(no_tls(&uri));
        }
        if !https {
            return Ok(BuiltinIo::Tcp(self.tcp.oneshot(uri).await?));
        }
        #[cfg(feature = "rustls")]
        {
            let (host, port) = crate::origin::host_and_port(&uri)?;
            let host = host.to_owned();
            let io = self.tcp.oneshot(uri).await?;
            let handle = io.handle();
            let tls = tls::handshake(&self.tls, &host, port, io, handle).await?;
            Ok(BuiltinIo::Tls(Box::new(tls)))
        }
        #[cfg(not(feature = "rustls"))]
        {
            // The TCP connector refuses `https` with its own clear message.
            Ok(BuiltinIo::Tcp(self.tcp.oneshot(uri).await?))
        }
    }
}

#[cfg(all(unix, not(feature = "rustls")))]
fn no_tls(uri: &Uri) -> Error {
    Error::invalid_uri(format!(
        "`{uri}`: `https` needs the `rustls` feature of closefirst \
         (or PoolLayer with a TLS connector of your own)"
    ))
}

impl tower::Service<Uri> for BuiltinConnector {
    type Response = BuiltinIo;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<BuiltinIo, Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

/// The IO of any connection the built-in connector opens.
///
/// The TLS kinds are boxed: a rustls session is about a kilobyte, and hyper keeps the
/// IO inline in each connection's state, so unboxed every plain connection would carry
/// that much unused room.
pub(crate) enum BuiltinIo {
    Tcp(TcpIo),
    #[cfg(feature = "rustls")]
    Tls(Box<Wrapped<TlsStream<TcpIo>>>),
    #[cfg(unix)]
    Unix(UnixIo),
    #[cfg(all(unix, feature = "rustls"))]
    UnixTls(Box<Wrapped<TlsStream<UnixIo>>>),
}

impl BuiltinIo {
    /// The socket under the connection, whichever kind it is: unlike
    /// [`Connection::socket`], never missing, since the built-in connector opens every
    /// socket itself.
    pub(crate) fn handle(&self) -> SocketHandle {
        match self {
            BuiltinIo::Tcp(io) => io.handle(),
            #[cfg(feature = "rustls")]
            BuiltinIo::Tls(io) => io.handle().clone(),
            #[cfg(unix)]
            BuiltinIo::Unix(io) => io.handle(),
            #[cfg(all(unix, feature = "rustls"))]
            BuiltinIo::UnixTls(io) => io.handle().clone(),
        }
    }
}

/// Runs `$body` with `$io` bound to the connection's IO, whichever kind it is (each is
/// `Unpin`).
macro_rules! with_io {
    ($self:expr, $io:ident => $body:expr) => {
        match $self {
            BuiltinIo::Tcp($io) => $body,
            #[cfg(feature = "rustls")]
            BuiltinIo::Tls($io) => $body,
            #[cfg(unix)]
            BuiltinIo::Unix($io) => $body,
            #[cfg(all(unix, feature = "rustls"))]
            BuiltinIo::UnixTls($io) => $body,
        }
    };
}

impl Connection for BuiltinIo {
    fn socket(&self) -> Option<SocketHandle> {
        with_io!(self, io => io.socket())
    }
}

impl Read for BuiltinIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        with_io!(self.get_mut(), io => Pin::new(io).poll_read(cx, buf))
    }
}

impl Write for BuiltinIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        with_io!(self.get_mut(), io => Write::poll_write(Pin::new(io), cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        with_io!(self.get_mut(), io => Write::poll_write_vectored(Pin::new(io), cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        with_io!(self, io => Write::is_write_vectored(io))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_io!(self.get_mut(), io => Write::poll_flush(Pin::new(io), cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_io!(self.get_mut(), io => Write::poll_shutdown(Pin::new(io), cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_io_is_two_words_whatever_the_features() {
        // hyper keeps the IO inline in every connection's state: a TLS session kept
        // inline would make each plain connection a kilobyte larger.
        assert!(std::mem::size_of::<BuiltinIo>() <= 2 * std::mem::size_of::<usize>());
    }
}
