//! A fresh private key and CSR per order, built with rcgen: SANs are the requested names, the
//! subject is empty (OV subject fields come from the CA's records, and an empty `CN=` is refused
//! by some CAs). RSA and P-384 keys are slow enough to run off the async threads.

use rcgen::{CertificateParams, DistinguishedName, KeyPair, RsaKeySize};
use zeroize::Zeroizing;

use crate::acme::AcmeError;
use crate::model::KeyType;

/// A new key (PKCS#8 DER) and the CSR (DER) signed with it.
pub(super) struct KeyAndCsr {
    pub(super) key_pkcs8_der: Zeroizing<Vec<u8>>,
    pub(super) csr_der: Vec<u8>,
}

/// Generates a key of `key_type` and a CSR for `names` on a blocking thread.
pub(super) async fn generate(
    key_type: KeyType,
    names: Vec<String>,
) -> Result<KeyAndCsr, AcmeError> {
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let generated = generate_blocking(key_type, names);
        metrics::histogram!(crate::metrics::KEY_GENERATION, "key_type" => key_type.as_str())
            .record(started.elapsed());
        generated
    })
    .await
    .map_err(|e| AcmeError::Internal(format!("key generation task failed: {e}")))?
    .map_err(|e| AcmeError::Internal(format!("cannot build the key and CSR: {e}")))
}

fn generate_blocking(key_type: KeyType, names: Vec<String>) -> Result<KeyAndCsr, rcgen::Error> {
    let rsa = |size| KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size);
    let key = match key_type {
        KeyType::Rsa2048 => rsa(RsaKeySize::_2048)?,
        KeyType::Rsa3072 => rsa(RsaKeySize::_3072)?,
        KeyType::Rsa4096 => rsa(RsaKeySize::_4096)?,
        KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        KeyType::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?,
    };
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    Ok(KeyAndCsr {
        key_pkcs8_der: Zeroizing::new(key.serialize_der()),
        csr_der: csr.der().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use x509_parser::prelude::FromDer as _;

    use super::*;

    #[tokio::test]
    async fn csr_has_the_names_an_empty_subject_and_the_key_type() {
        let names = vec!["www.example.edu".to_owned(), "*.example.edu".to_owned()];
        for (key_type, oid) in [
            (
                KeyType::EcdsaP256,
                x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY,
            ),
            (
                KeyType::EcdsaP384,
                x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY,
            ),
            (
                KeyType::Rsa2048,
                x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION,
            ),
        ] {
            let out = generate(key_type, names.clone()).await.unwrap();
            let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(
                &out.csr_der,
            )
            .unwrap();
            csr.verify_signature().unwrap();
            let info = &csr.certification_request_info;
            assert_eq!(
                info.subject.iter().count(),
                0,
                "{key_type}: subject must be empty"
            );
            assert_eq!(info.subject_pki.algorithm.algorithm, oid, "{key_type}");
            let sans: Vec<String> = csr
                .requested_extensions()
                .into_iter()
                .flatten()
                .filter_map(|e| match e {
                    x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) => {
                        Some(san)
                    }
                    _ => None,
                })
                .flat_map(|san| san.general_names.iter().map(|n| n.to_string()))
                .collect();
            assert_eq!(
                sans,
                vec![
                    "DNSName(www.example.edu)".to_owned(),
                    "DNSName(*.example.edu)".to_owned()
                ]
            );
            assert!(!out.key_pkcs8_der.is_empty());
        }
    }
}
