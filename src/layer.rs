//! [`PoolLayer`]: the pool as a `tower::Layer` over any connector.

use std::fmt;
use std::marker::PhantomData;

use http::Uri;

use crate::body::Body;
use crate::client::Client;
use crate::config::PoolConfig;
use crate::connect::Connection;
use crate::error::BoxError;
use crate::retry::Policy;

/// Turns a connector (a `tower::Service<http::Uri>` whose response is a hyper IO
/// implementing [`Connection`]) into a [`Client`], so the pool works over connectors of
/// your own: TLS, a proxy tunnel, a test transport.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Empty;
/// use tower::Layer;
///
/// let layer = closefirst::PoolLayer::<Empty<Bytes>>::new(closefirst::Client::builder())?;
/// let connector = closefirst::connect::TcpConnector::new();
/// let client = layer.layer(connector);
/// # let _ = client;
/// # Ok::<(), closefirst::Error>(())
/// ```
pub struct PoolLayer<B> {
    config: PoolConfig,
    retry: Policy,
    _body: PhantomData<fn() -> B>,
}

impl<B> PoolLayer<B> {
    pub(crate) fn from_parts(config: PoolConfig, retry: Policy) -> Self {
        PoolLayer {
            config,
            retry,
            _body: PhantomData,
        }
    }
}

impl<B, C, IO> tower::Layer<C> for PoolLayer<B>
where
    B: Body,
    C: tower::Service<Uri, Response = IO> + Clone + Send + Sync + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
    IO: hyper::rt::Read + hyper::rt::Write + Connection + Send + Unpin + 'static,
{
    type Service = Client<B>;

    fn layer(&self, connector: C) -> Client<B> {
        Client::with_connector(self.config.clone(), self.retry.clone(), connector)
    }
}

impl<B> Clone for PoolLayer<B> {
    fn clone(&self) -> Self {
        PoolLayer::from_parts(self.config.clone(), self.retry.clone())
    }
}

impl<B> fmt::Debug for PoolLayer<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolLayer")
            .field("config", &self.config)
            .finish()
    }
}
