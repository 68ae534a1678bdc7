//! Name resolution for the built-in connector: resolvers are `tower::Service`s of
//! [`Name`]s, as in hyper-util.
//!
//! [`TcpConnector`](crate::connect::TcpConnector) is hyper-util's `HttpConnector`
//! underneath, and takes the same resolvers: any `Clone + Send + Sync` service that
//! answers a [`Name`] (the URI's host, never an IP literal: those are not resolved)
//! with an iterator of [`SocketAddr`]s. A resolver written for hyper-util's
//! `HttpConnector::new_with_resolver` plugs in unchanged. Without one, the system
//! resolver (`getaddrinfo` on tokio's blocking pool) is used.
//!
//! The addresses are tried as hyper-util does: happy eyeballs between the first
//! address's family and the other one
//! ([`Builder::happy_eyeballs_timeout`](crate::Builder::happy_eyeballs_timeout)), each
//! family's addresses in the order given, each address with an equal share of the
//! connect timeout. A port in the URI replaces the resolver's ports. Without one, a
//! resolver's non-zero port is kept, so a resolver can point a name at any
//! `host:port`; the scheme's default port counts as none (the pool hands the
//! connector `http://host/` for `http://host:80/`).
//!
//! A resolver's error, or an empty answer, fails the connection with an error for
//! which [`Error::is_connect`](crate::Error::is_connect) is true and that names the
//! host, the port and "resolving"; the resolver's own error is its
//! [`source`](std::error::Error::source).
//!
//! ```
//! use std::convert::Infallible;
//! use std::net::SocketAddr;
//!
//! use bytes::Bytes;
//! use closefirst::dns::Name;
//! use http_body_util::Full;
//!
//! // Every name resolves to a local backend: `http://api.internal/` goes there.
//! let resolver = tower::service_fn(|name: Name| async move {
//!     let backends: Vec<SocketAddr> = match name.as_str() {
//!         "api.internal" => vec![([127, 0, 0, 1], 8080).into()],
//!         _ => Vec::new(),
//!     };
//!     Ok::<_, Infallible>(backends.into_iter())
//! });
//! let client: closefirst::Client<Full<Bytes>> =
//!     closefirst::Client::builder().resolver(resolver).build()?;
//! # let _ = client;
//! # Ok::<(), closefirst::Error>(())
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::vec;

use hyper_util::client::legacy::connect::dns::GaiResolver;
use tower::ServiceExt;

use crate::error::BoxError;

/// A host name to resolve. This is hyper-util's own type
/// (`hyper_util::client::legacy::connect::dns::Name`), so that resolvers written for
/// hyper-util work here. [`Name::as_str`] gives the host, without brackets or port;
/// `"example.com".parse::<Name>()` makes one for a resolver's tests.
#[doc(inline)]
pub use hyper_util::client::legacy::connect::dns::Name;

type Resolving =
    Pin<Box<dyn Future<Output = Result<vec::IntoIter<SocketAddr>, ResolveError>> + Send>>;

/// The resolver the built-in connector hands to hyper-util: the user's service (or the
/// system one) behind one type, so that `TcpConnector` stays a plain, non-generic
/// type the [`Builder`](crate::Builder) can hold.
#[derive(Clone)]
pub(crate) struct Resolver {
    resolve: Arc<dyn Fn(Name) -> Resolving + Send + Sync>,
    custom: bool,
}

impl Resolver {
    /// `getaddrinfo` on tokio's blocking pool, as hyper-util does by default.
    pub(crate) fn system() -> Resolver {
        Resolver {
            custom: false,
            ..Resolver::new(GaiResolver::new())
        }
    }

    pub(crate) fn new<R>(resolver: R) -> Resolver
    where
        R: tower::Service<Name> + Clone + Send + Sync + 'static,
        R::Response: Iterator<Item = SocketAddr>,
        R::Error: Into<BoxError>,
        R::Future: Send + 'static,
    {
        Resolver {
            resolve: Arc::new(move |name: Name| {
                // A clone per lookup, readied inside the future: hyper-util clones the
                // connector per connection and would otherwise call a service it did
                // not poll ready, and the resolver's readiness errors get the name too.
                let resolver = resolver.clone();
                Box::pin(async move {
                    let addrs = match resolver.oneshot(name.clone()).await {
                        Ok(addrs) => addrs.collect::<Vec<_>>(),
                        Err(cause) => return Err(ResolveError::failed(name, cause.into())),
                    };
                    if addrs.is_empty() {
                        return Err(ResolveError::no_address(name));
                    }
                    Ok(addrs.into_iter())
                })
            }),
            custom: true,
        }
    }
}

impl tower::Service<Name> for Resolver {
    type Response = vec::IntoIter<SocketAddr>;
    type Error = ResolveError;
    type Future = Resolving;

    /// Always ready: each lookup readies its own clone of the resolver.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ResolveError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Resolving {
        (self.resolve)(name)
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.custom {
            "Resolver(custom)"
        } else {
            "Resolver(system)"
        })
    }
}

/// Resolving a name failed or gave no address. The connector finds it in hyper-util's
/// error chain to say "resolving" rather than "connecting".
#[derive(Debug)]
pub(crate) struct ResolveError {
    name: Name,
    cause: Option<BoxError>,
}

impl ResolveError {
    fn failed(name: Name, cause: BoxError) -> ResolveError {
        ResolveError {
            name,
            cause: Some(cause),
        }
    }

    fn no_address(name: Name) -> ResolveError {
        ResolveError { name, cause: None }
    }

    /// Whether `error` or one of its sources is a `ResolveError`.
    pub(crate) fn is_in_chain(error: &(dyn StdError + 'static)) -> bool {
        let mut next = Some(error);
        // Error chains are finite in practice; the bound keeps a cyclic one from
        // hanging the connector.
        for _ in 0..MAX_CHAIN {
            match next {
                Some(e) if e.is::<ResolveError>() => return true,
                Some(e) => next = e.source(),
                None => return false,
            }
        }
        false
    }
}

/// How deep [`ResolveError::is_in_chain`] looks.
const MAX_CHAIN: usize = 32;

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cause {
            Some(_) => write!(f, "resolving `{}` failed", self.name),
            None => write!(f, "`{}` resolved to no address", self.name),
        }
    }
}

impl StdError for ResolveError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::io;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn name(host: &str) -> Name {
        host.parse().expect("hyper-util accepts any host string")
    }

    #[tokio::test]
    async fn a_custom_resolver_answers_and_is_readied_per_lookup() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let resolver = Resolver::new(tower::service_fn(move |name: Name| {
            counted.fetch_add(1, Ordering::SeqCst);
            let addr: SocketAddr = ([127, 0, 0, 1], 9).into();
            async move {
                assert_eq!(name.as_str(), "backend.invalid");
                Ok::<_, Infallible>(std::iter::once(addr))
            }
        }));
        for _ in 0..2 {
            let addrs: Vec<_> = resolver
                .clone()
                .oneshot(name("backend.invalid"))
                .await
                .expect("the resolver answers")
                .collect();
            assert_eq!(addrs, [SocketAddr::from(([127, 0, 0, 1], 9))]);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(format!("{resolver:?}"), "Resolver(custom)");
        assert_eq!(format!("{:?}", Resolver::system()), "Resolver(system)");
    }

    #[tokio::test]
    async fn failures_and_empty_answers_name_the_host() {
        let failing = Resolver::new(tower::service_fn(|_: Name| async {
            Err::<std::iter::Empty<SocketAddr>, _>(io::Error::other("no such zone"))
        }));
        let err = failing.oneshot(name("a.invalid")).await.unwrap_err();
        assert_eq!(err.to_string(), "resolving `a.invalid` failed");
        assert_eq!(err.source().unwrap().to_string(), "no such zone");
        assert!(ResolveError::is_in_chain(&err));

        let empty = Resolver::new(tower::service_fn(|_: Name| async {
            Ok::<_, Infallible>(std::iter::empty::<SocketAddr>())
        }));
        let err = empty.oneshot(name("b.invalid")).await.unwrap_err();
        assert_eq!(err.to_string(), "`b.invalid` resolved to no address");
        assert!(err.source().is_none());

        // As hyper-util's `ConnectError` holds it: the cause is the source itself.
        // (`io::Error` would not do: its `source` skips the error it wraps.)
        let wrapped = Wrap(Box::new(err));
        assert!(ResolveError::is_in_chain(&wrapped));
        assert!(!ResolveError::is_in_chain(&Wrap(Box::new(
            io::Error::other("refused")
        ))));
    }

    #[derive(Debug)]
    struct Wrap(BoxError);

    impl fmt::Display for Wrap {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("tcp connect error")
        }
    }

    impl StdError for Wrap {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.0)
        }
    }
}
