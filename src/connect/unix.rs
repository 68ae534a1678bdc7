//! [`UnixConnector`]: sends every request to one Unix domain socket, whatever the
//! URI's host, as a local app server behind a proxy is reached.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use tokio::net::UnixStream;

use crate::error::Error;
use crate::io::UnixIo;

/// A connector that opens every connection on one Unix domain socket (`AF_UNIX`,
/// stream): the URI still gives the `Host` header, the request target and the pool's
/// key, but not where to connect. Made for you by
/// [`Builder::unix_socket`](crate::Builder::unix_socket); use it directly with
/// [`PoolLayer`](crate::PoolLayer) to compose it with a connector of your own.
///
/// The pre-reuse peek and the classification of failed requests work as on TCP. The
/// TCP options (`tcp_keepalive`, `tcp_nodelay`, `tcp_user_timeout`) do not apply to
/// a Unix socket, and [`ConnectionInfo`](crate::ConnectionInfo) reports no remote
/// address and no socket options for it.
#[derive(Clone, Debug)]
pub struct UnixConnector {
    path: Arc<Path>,
}

impl UnixConnector {
    /// Connects to the socket at `path`.
    pub fn new(path: impl Into<PathBuf>) -> UnixConnector {
        UnixConnector {
            path: Arc::from(path.into()),
        }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) async fn connect(self) -> Result<UnixIo, Error> {
        match UnixStream::connect(&self.path).await {
            Ok(stream) => Ok(UnixIo::new(stream)),
            Err(e) => Err(Error::connect(
                format!("the Unix socket {}", self.path.display()),
                e,
            )),
        }
    }
}

impl tower::Service<Uri> for UnixConnector {
    type Response = UnixIo;
    type Error = Error;
    type Future = UnixConnecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> UnixConnecting {
        UnixConnecting {
            inner: Box::pin(self.clone().connect()),
        }
    }
}

/// The future returned by [`UnixConnector`]'s `Service::call`.
pub struct UnixConnecting {
    inner: Pin<Box<dyn Future<Output = Result<UnixIo, Error>> + Send>>,
}

impl Future for UnixConnecting {
    type Output = Result<UnixIo, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for UnixConnecting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixConnecting").finish_non_exhaustive()
    }
}
