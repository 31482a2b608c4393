//! The TLS listener's configuration: the server certificate and key, and,
//! with `client_ca`, the client certificates it requires.
//!
//! Client certificates keep anyone who can reach the port from pulling
//! through the mirror's upstream credentials: with `client_ca` set, a
//! handshake without a certificate chained to that bundle fails before any
//! HTTP is read. [`acceptor`] builds everything from the files' bytes, so a
//! reload can build a new acceptor from new files the same way.

use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, TrustFile};

/// What the TLS listener is built from.
#[derive(Clone, Copy)]
pub struct TlsFiles<'a> {
    pub cert: &'a TrustFile,
    pub key: &'a TrustFile,
    /// CA certificates (PEM) client certificates must chain to; `None`
    /// accepts any client without a certificate.
    pub client_ca: Option<&'a TrustFile>,
}

impl<'a> TlsFiles<'a> {
    /// The TLS files of `config`, or `None` for plain HTTP.
    pub fn of(config: &'a Config) -> Option<TlsFiles<'a>> {
        let (cert, key) = config.tls.as_ref()?;
        Some(TlsFiles { cert, key, client_ca: config.client_ca.as_ref() })
    }
}

/// Why a TLS listener cannot be built, naming the config key at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls_cert {0}")]
    Cert(String),
    #[error("tls_key {0}")]
    Key(String),
    #[error("client_ca {0}")]
    ClientCa(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the listener's acceptor: HTTP/2 and HTTP/1.1 by ALPN, and with a
/// `client_ca`, a verified client certificate required of every client.
pub fn acceptor(files: &TlsFiles<'_>) -> Result<TlsAcceptor, TlsError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &files.cert.bytes[..])
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert(format!("{}: {e}", files.cert.name)))?;
    if certs.is_empty() {
        return Err(TlsError::Cert(format!("{} holds no PEM certificate", files.cert.name)));
    }
    let key = rustls_pemfile::private_key(&mut &files.key.bytes[..])
        .map_err(|e| TlsError::Key(format!("{}: {e}", files.key.name)))?
        .ok_or_else(|| TlsError::Key(format!("{} holds no private key", files.key.name)))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match files.client_ca {
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca)?),
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// The verifier for `client_ca`: every certificate in the bundle is a
/// trust anchor, and a client must present a certificate chained to one.
/// Used by `config` too, so `check-config` reports a bad bundle.
pub fn client_verifier(ca: &TrustFile) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let bad = |why: String| TlsError::ClientCa(format!("{}: {why}", ca.name));
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca.bytes[..]) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(format!("a certificate is not a usable CA: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).build().map_err(|e| bad(e.to_string()))
}
