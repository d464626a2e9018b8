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

/// A CSR for `names` signed with an existing key (PKCS#8 DER): a renewal that reuses the
/// current version's key.
pub(super) async fn csr_for(
    key_pkcs8_der: Zeroizing<Vec<u8>>,
    names: Vec<String>,
) -> Result<KeyAndCsr, AcmeError> {
    tokio::task::spawn_blocking(move || {
        let key = KeyPair::try_from(key_pkcs8_der.as_slice())?;
        let csr_der = csr(&key, names)?;
        Ok(KeyAndCsr {
            key_pkcs8_der,
            csr_der,
        })
    })
    .await
    .map_err(|e| AcmeError::Internal(format!("CSR task failed: {e}")))?
    .map_err(|e: rcgen::Error| AcmeError::Internal(format!("cannot build the CSR: {e}")))
}

fn csr(key: &KeyPair, names: Vec<String>) -> Result<Vec<u8>, rcgen::Error> {
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name = DistinguishedName::new();
    Ok(params.serialize_request(key)?.der().to_vec())
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
    let csr_der = csr(&key, names)?;
    Ok(KeyAndCsr {
        key_pkcs8_der: Zeroizing::new(key.serialize_der()),
        csr_der,
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

    #[tokio::test]
    async fn a_reused_key_signs_a_csr_for_new_names_and_its_type_is_read_from_the_leaf() {
        let first = generate(KeyType::EcdsaP384, vec!["www.example.edu".into()])
            .await
            .unwrap();
        let names = vec!["www.example.edu".to_owned(), "api.example.edu".to_owned()];
        let again = csr_for(first.key_pkcs8_der.clone(), names).await.unwrap();
        assert_eq!(again.key_pkcs8_der, first.key_pkcs8_der);
        let public_key = |csr_der: &[u8]| {
            let (_, csr) =
                x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
                    .unwrap();
            csr.verify_signature().unwrap();
            csr.certification_request_info.subject_pki.raw.to_vec()
        };
        assert_eq!(public_key(&again.csr_der), public_key(&first.csr_der));

        for (kind, expected) in [
            (
                certkeep_api_types::pfx::testing::KeyKind::Ecdsa,
                Some(KeyType::EcdsaP256),
            ),
            (
                certkeep_api_types::pfx::testing::KeyKind::Rsa,
                Some(KeyType::Rsa2048),
            ),
        ] {
            let leaf = certkeep_api_types::pfx::testing::TestCa::new().leaf(&["a.example"], kind);
            assert_eq!(
                crate::domain::lifecycle::leaf_key_type(&leaf.chain_der[0]),
                expected
            );
        }
        assert_eq!(
            crate::domain::lifecycle::leaf_key_type(b"not a certificate"),
            None
        );
    }
}
