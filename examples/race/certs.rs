//! A throwaway certificate authority for the TLS lab: a self-signed certificate for
//! `localhost` and `127.0.0.1`, the server's rustls configuration with it, and a
//! client configuration that trusts it (and nothing else). Shared by the race
//! example's `--tls` mode and the TLS tests.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A self-signed certificate and its key.
pub(crate) struct TestCert {
    /// The certificate, DER.
    pub(crate) cert: CertificateDer<'static>,
    key: Vec<u8>,
}

impl TestCert {
    /// A new certificate for `localhost` and `127.0.0.1`.
    pub(crate) fn new() -> TestCert {
        let rcgen::CertifiedKey { cert, key_pair } = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("rcgen makes a certificate for valid names");
        TestCert {
            cert: cert.der().clone(),
            key: key_pair.serialize_der(),
        }
    }

    /// The server's configuration: this certificate, TLS 1.2 and 1.3, `ring`.
    pub(crate) fn server_config(&self) -> rustls::ServerConfig {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], key)
            .expect("rcgen's key matches its certificate")
    }

    /// A client configuration trusting this certificate only.
    pub(crate) fn client_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert.clone())
            .expect("rcgen's certificate parses");
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(roots)
            .with_no_client_auth()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
