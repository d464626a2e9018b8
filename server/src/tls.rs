//! rustls configurations for the two listeners: the API (server auth only) and the agent
//! listener (client certificates from the internal CA, checked per route).

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::{self, PemObject as _};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// TLS setup errors.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("PEM in {what}: {reason}")]
    Pem { what: String, reason: String },
}

/// Parses every certificate in a PEM text.
pub fn certs_from_pem(what: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(what, &e))?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: what.into(),
            reason: "no certificate found".into(),
        });
    }
    Ok(certs)
}

/// Parses the first private key in a PEM text.
pub fn key_from_pem(what: &str, pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::Pem {
            what: what.into(),
            reason: "no private key found".into(),
        },
        other => pem_error(what, &other),
    })
}

fn pem_error(what: &str, error: &pem::Error) -> TlsError {
    TlsError::Pem {
        what: what.into(),
        reason: error.to_string(),
    }
}

fn alpn(mut config: rustls::ServerConfig) -> Arc<rustls::ServerConfig> {
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Server-authenticated TLS for the API listener.
pub fn api_config(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            certs_from_pem("server certificate", cert_pem)?,
            key_from_pem("server key", key_pem)?,
        )?;
    Ok(alpn(config))
}

/// TLS for the agent listener: a client certificate is optional at the handshake (enrollment
/// has none) but, when presented, must chain to one of `client_roots_pem`. Routes that need an
/// agent identity demand it themselves.
pub fn agent_config(
    cert_pem: &str,
    key_pem: &str,
    client_roots_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem("agent CA", client_roots_pem)? {
        roots.add(cert)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
    )
    .allow_unauthenticated()
    .build()?;
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs_from_pem("agent listener certificate", cert_pem)?,
            key_from_pem("agent listener key", key_pem)?,
        )?;
    Ok(alpn(config))
}
