//! Served-certificate probe: a TLS handshake with each probe address of a target, with SNI for
//! each DNS name of each certificate installed there, reading the leaf only. Any certificate is
//! accepted: the probe checks what is served and trusts nothing it sees. The server judges each
//! leaf (serving, stale, wrong, unreachable).

use std::{sync::Arc, time::Duration};

use certkeep_api_types::{
    agent::{Manifest, ProbeResult},
    pfx::thumbprint,
};
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Longest wait for a TCP connection, and again for the TLS handshake.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts every server certificate, checking only the handshake signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn connector() -> TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        });
    match config {
        Ok(config) => TlsConnector::from(Arc::new(config)),
        // The default provider supports the default versions; unreachable in practice.
        Err(e) => unreachable!("aws-lc-rs lacks the default TLS versions: {e}"),
    }
}

/// Why no leaf was read.
enum Failure {
    /// No TCP connection: every other name at this address would fail the same way.
    Connect(String),
    /// Connected, but no handshake for this name.
    Handshake(String),
}

/// The leaf `address` serves for SNI `name`, as a thumbprint.
async fn leaf(connector: &TlsConnector, address: &str, name: &str) -> Result<String, Failure> {
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|e| Failure::Handshake(format!("{name} is not a server name: {e}")))?;
    let tcp = match tokio::time::timeout(TIMEOUT, TcpStream::connect(address)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return Err(Failure::Connect(format!(
                "cannot connect to {address}: {e}"
            )));
        }
        Err(_) => {
            return Err(Failure::Connect(format!(
                "no connection to {address} within {} s",
                TIMEOUT.as_secs()
            )));
        }
    };
    let tls = match tokio::time::timeout(TIMEOUT, connector.connect(server_name, tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Err(Failure::Handshake(format!("TLS handshake failed: {e}"))),
        Err(_) => {
            return Err(Failure::Handshake(format!(
                "no TLS handshake within {} s",
                TIMEOUT.as_secs()
            )));
        }
    };
    let (_, session) = tls.get_ref();
    session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| thumbprint(leaf))
        .ok_or_else(|| Failure::Handshake("the server sent no certificate".into()))
}

/// Probes every target of `manifest` that has probe addresses: each address, each DNS name of
/// each certificate going to that target (wildcard names cannot be sent as SNI and are skipped).
pub(crate) async fn probe(manifest: &Manifest) -> Vec<ProbeResult> {
    let connector = connector();
    let mut results = Vec::new();
    for target in manifest.targets.iter().filter(|t| !t.probe.is_empty()) {
        let entries: Vec<_> = manifest
            .certificates
            .iter()
            .filter(|e| e.targets.contains(&target.name))
            .collect();
        for address in &target.probe {
            let mut down: Option<String> = None;
            for entry in &entries {
                for name in entry.dns_names.iter().filter(|n| !n.starts_with("*.")) {
                    let outcome = match &down {
                        Some(error) => Err(error.clone()),
                        None => match leaf(&connector, address, name).await {
                            Ok(t) => Ok(t),
                            Err(Failure::Connect(e)) => {
                                down = Some(e.clone());
                                Err(e)
                            }
                            Err(Failure::Handshake(e)) => Err(e),
                        },
                    };
                    let (thumbprint, error) = match outcome {
                        Ok(t) => (Some(t), None),
                        Err(e) => (None, Some(e)),
                    };
                    results.push(ProbeResult {
                        certificate_id: entry.certificate_id,
                        target: target.name.clone(),
                        address: address.clone(),
                        name: name.clone(),
                        thumbprint,
                        error,
                    });
                }
            }
        }
    }
    results
}
