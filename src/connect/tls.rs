//! HTTPS for the built-in connector (feature `rustls`): the client configuration
//! (the platform's trust roots, or the user's own through
//! [`Builder::tls_config`](crate::Builder::tls_config)), and the handshake over a
//! socket the pool can still peek and count.
//!
//! The TLS stream is handed to hyper inside [`Wrapped`], which counts the plaintext
//! that reaches hyper: a `close_notify` alert in the race window is bytes on the
//! socket but no response, so a GET that met it is still resent.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;

use crate::error::Error;
use crate::io::{SocketHandle, Wrapped};

/// The only protocol the pool speaks; a server that would pick `h2` must not.
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// Where the client's TLS configuration comes from.
#[derive(Clone)]
pub(crate) enum TlsConfig {
    /// The user's own, with ALPN set to `http/1.1`.
    Given(Arc<ClientConfig>),
    /// The platform's trust roots, loaded on the first `https` connection (a client
    /// that never speaks `https` never reads them).
    Platform(Arc<OnceLock<Result<Arc<ClientConfig>, String>>>),
}

impl TlsConfig {
    pub(crate) fn given(mut config: ClientConfig) -> TlsConfig {
        config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
        TlsConfig::Given(Arc::new(config))
    }

    pub(crate) fn platform() -> TlsConfig {
        TlsConfig::Platform(Arc::default())
    }

    fn get(&self) -> Result<Arc<ClientConfig>, String> {
        match self {
            TlsConfig::Given(config) => Ok(Arc::clone(config)),
            TlsConfig::Platform(cell) => cell.get_or_init(platform_config).clone(),
        }
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsConfig::Given(_) => f.write_str("TlsConfig::Given"),
            TlsConfig::Platform(_) => f.write_str("TlsConfig::Platform"),
        }
    }
}

/// rustls with the `ring` provider and the platform's trust roots (read with
/// `rustls-native-certs`: the system's certificate store, or `SSL_CERT_FILE` /
/// `SSL_CERT_DIR`).
fn platform_config() -> Result<Arc<ClientConfig>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(format!(
            "no TLS trust roots could be loaded from the platform ({why}); \
             set SSL_CERT_FILE or give Builder::tls_config a rustls::ClientConfig"
        ));
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("the TLS provider refused its own defaults: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

/// Runs the TLS handshake over `io` for `host` (a DNS name or an IP literal, with or
/// without brackets), and wraps the result so the pool keeps `handle`.
pub(crate) async fn handshake<IO>(
    config: &TlsConfig,
    host: &str,
    port: u16,
    io: IO,
    handle: SocketHandle,
) -> Result<Wrapped<TlsStream<IO>>, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let config = config
        .get()
        .map_err(|why| Error::connect(format!("{host}:{port} (TLS)"), io::Error::other(why)))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(bare.to_owned())
        .map_err(|e| Error::invalid_uri(format!("`{host}` is not a valid TLS server name: {e}")))?;
    match tokio_rustls::TlsConnector::from(config)
        .connect(name, io)
        .await
    {
        Ok(stream) => Ok(Wrapped::new(stream, handle)),
        Err(e) => {
            let what = format!("{host}:{port}");
            Err(if refused_certificate(&e) {
                // The top level says it was the certificate; rustls says why below.
                Error::certificate(what, e)
            } else {
                Error::connect(what, HandshakeError(e))
            })
        }
    }
}

/// Whether a handshake failed because the server's certificate was refused.
fn refused_certificate(error: &io::Error) -> bool {
    error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        })
}

/// A TLS handshake that failed for another reason than the certificate.
#[derive(Debug)]
struct HandshakeError(io::Error);

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The cause (rustls's or the socket's own words) is the source, one level down.
        f.write_str("TLS handshake failed")
    }
}

impl StdError for HandshakeError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.0)
    }
}
