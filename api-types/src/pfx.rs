//! PKCS#12 (PFX) bundles and CCS file names, identical on server and agent (see docs/CCS.md).
//!
//! Builds and opens PFX files and derives file names from a leaf certificate. Knows nothing about
//! HTTP, storage or the file system. Errors never carry the password or key bytes.

use std::fmt;

use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, LocalKeyId, MacAlgorithm,
    Pkcs12Archive, PrivateKey, PrivateKeyChain,
};
use sha2::{Digest, Sha256};
use x509_parser::{
    asn1_rs::{Any, FromDer, Sequence},
    certificate::X509Certificate,
    extensions::GeneralName,
};
use zeroize::Zeroizing;

use crate::agent::PfxEncryption;

/// Iterations for key derivation and MAC in `legacy` mode (docs/CCS.md, "Encryption modes").
const LEGACY_ITERATIONS: u32 = 2048;
/// Friendly name of the key bag.
const KEY_ALIAS: &str = "certkeep";

/// Why a PFX could not be built or opened, or a certificate gives no file names.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PfxError {
    /// PFX passwords must not be empty (docs/CCS.md, "The password").
    #[error("the PFX password is empty")]
    EmptyPassword,
    /// The MAC did not verify: the password differs from the one the file was made with.
    #[error("the PFX does not open with this password (MAC check failed)")]
    WrongPassword,
    /// Without a MAC the password cannot be checked, so the file is refused.
    #[error("the PFX has no MAC, so its password cannot be checked")]
    NoMac,
    /// Not a PKCS#12 file the parser understands.
    #[error("malformed PFX: {0}")]
    Malformed(String),
    /// A certificate could not be parsed.
    #[error("unparsable certificate in the chain")]
    Certificate,
    /// The key is not a PKCS#8 key of a supported type.
    #[error("unparsable or unsupported private key")]
    InvalidKey,
    /// A CCS PFX holds exactly one key.
    #[error("expected exactly one private key in the PFX, found {0}")]
    KeyCount(usize),
    /// No certificate in the bundle has the key's public key.
    #[error("no certificate in the PFX matches its private key")]
    KeyMismatch,
    /// The leaf's issuer is not in the bundle.
    #[error("incomplete chain: the issuer of `{0}` is not in the PFX")]
    IncompleteChain(String),
    /// Nothing to bundle.
    #[error("no certificate given")]
    NoCertificate,
    /// The leaf has no DNS SAN, so it gives no CCS file name.
    #[error("the certificate has no DNS subject alternative name")]
    NoDnsNames,
    /// A DNS SAN that cannot safely become a file name.
    #[error("`{name}` cannot be used as a CCS file name: {reason}")]
    InvalidName {
        /// The SAN as found in the certificate.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A PFX opened with its password and checked: one key, matching leaf, chain present.
pub struct OpenedPfx {
    /// PKCS#8 DER of the private key; wiped on drop.
    pub key_pkcs8_der: Zeroizing<Vec<u8>>,
    /// DER of the leaf certificate.
    pub leaf_der: Vec<u8>,
    /// DER of the intermediates, issuer of the leaf first; self-signed roots left out.
    pub chain_der: Vec<Vec<u8>>,
    /// Lowercase hex SHA-256 of `leaf_der`.
    pub thumbprint: String,
}

impl fmt::Debug for OpenedPfx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedPfx")
            .field("thumbprint", &self.thumbprint)
            .field("chain_len", &self.chain_der.len())
            .finish_non_exhaustive()
    }
}

/// Lowercase hex SHA-256 of a certificate's DER: the thumbprint used everywhere in certkeep.
pub fn thumbprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Builds a CCS PFX: the key, the leaf and every intermediate, encrypted per `enc`.
///
/// `chain_der` starts with the leaf. The output is parsed back with [`open_pfx`] before it is
/// returned, because the PKCS#12 dependencies are pre-release.
pub fn build_pfx(
    key_pkcs8_der: &[u8],
    chain_der: &[Vec<u8>],
    password: &str,
    enc: PfxEncryption,
) -> Result<Vec<u8>, PfxError> {
    if password.is_empty() {
        return Err(PfxError::EmptyPassword);
    }
    let leaf = chain_der.first().ok_or(PfxError::NoCertificate)?;
    let certs = chain_der
        .iter()
        .map(|der| Certificate::from_der(der).map_err(|_| PfxError::Certificate))
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKey::from_der(key_pkcs8_der).map_err(|_| PfxError::InvalidKey)?;
    let local_key_id = LocalKeyId(Sha256::digest(leaf).to_vec());
    let mut store = KeyStore::new();
    store.add_entry(
        KEY_ALIAS,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(local_key_id, key, certs)),
    );
    let writer = store.writer(password);
    let writer = match enc {
        PfxEncryption::Legacy => writer
            .encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
            .encryption_iterations(LEGACY_ITERATIONS)
            .mac_algorithm(MacAlgorithm::HmacSha1)
            .mac_iterations(LEGACY_ITERATIONS),
        PfxEncryption::Aes256 => writer
            .encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
            .mac_algorithm(MacAlgorithm::HmacSha256),
    };
    let der = writer
        .write()
        .map_err(|e| PfxError::Malformed(e.to_string()))?;
    let opened = open_pfx(&der, password)?;
    if opened.leaf_der != *leaf {
        return Err(PfxError::KeyMismatch);
    }
    Ok(der)
}

/// Opens a PFX with `password` and checks it: MAC, exactly one key, a leaf with that key, and
/// the leaf's issuer present (unless the leaf is self-issued).
pub fn open_pfx(der: &[u8], password: &str) -> Result<OpenedPfx, PfxError> {
    if password.is_empty() {
        return Err(PfxError::EmptyPassword);
    }
    if !has_mac(der) {
        return Err(PfxError::NoMac);
    }
    let archive = Pkcs12Archive::from_pkcs12(der, password).map_err(|e| match e {
        p12_keystore::error::Error::MacError(_) => PfxError::WrongPassword,
        other => PfxError::Malformed(other.to_string()),
    })?;
    let [key_bag] = archive.keys.as_slice() else {
        return Err(PfxError::KeyCount(archive.keys.len()));
    };
    let key_pkcs8_der = Zeroizing::new(key_bag.key.as_der().to_vec());
    let public_key = rcgen::KeyPair::try_from(key_pkcs8_der.as_slice())
        .map_err(|_| PfxError::InvalidKey)?
        .public_key_raw()
        .to_vec();

    let ders: Vec<&[u8]> = archive.certs.iter().map(|b| b.cert.as_der()).collect();
    let parsed = ders
        .iter()
        .map(|der| parse_cert(der))
        .collect::<Result<Vec<_>, _>>()?;
    let leaf_index = parsed
        .iter()
        .position(|cert| cert.public_key().subject_public_key.data.as_ref() == public_key)
        .ok_or(PfxError::KeyMismatch)?;

    let mut path = vec![leaf_index];
    let mut current = &parsed[leaf_index];
    while !is_self_issued(current) {
        let issuer = parsed.iter().enumerate().position(|(i, c)| {
            !path.contains(&i) && c.subject().as_raw() == current.issuer().as_raw()
        });
        match issuer {
            Some(i) => {
                path.push(i);
                current = &parsed[i];
            }
            None if path.len() == 1 => {
                return Err(PfxError::IncompleteChain(current.subject().to_string()));
            }
            None => break,
        }
    }
    let chain_der = path[1..]
        .iter()
        .filter(|&&i| !is_self_issued(&parsed[i]))
        .map(|&i| ders[i].to_vec())
        .collect();
    let leaf_der = ders[leaf_index].to_vec();
    Ok(OpenedPfx {
        key_pkcs8_der,
        thumbprint: thumbprint(&leaf_der),
        leaf_der,
        chain_der,
    })
}

/// CCS file names for a leaf: one `<name>.pfx` per DNS SAN, lower-case, Unicode, `*` as `_`.
///
/// IP and other non-DNS SANs are skipped; duplicates collapse. Fails when a DNS SAN is not a
/// plain DNS name or when there is none.
pub fn ccs_file_names(leaf_der: &[u8]) -> Result<Vec<String>, PfxError> {
    let cert = parse_cert(leaf_der)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| PfxError::Certificate)?;
    ccs_file_names_for(
        san.iter()
            .flat_map(|ext| &ext.value.general_names)
            .filter_map(|general_name| match general_name {
                GeneralName::DNSName(dns) => Some(*dns),
                _ => None,
            }),
    )
}

/// CCS file names for a leaf's DNS SANs, in order (as [`ccs_file_names`] reads them from the
/// certificate); for callers that already hold the SANs.
pub fn ccs_file_names_for<'a>(
    dns_sans: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<String>, PfxError> {
    let mut names: Vec<String> = Vec::new();
    for dns in dns_sans {
        let name = ccs_file_name(dns)?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Err(PfxError::NoDnsNames);
    }
    Ok(names)
}

/// One DNS SAN to its CCS file name, e.g. `*.XN--E1AABXHDADN.XN--P1AI` → `_.мороженое.рф.pfx`.
fn ccs_file_name(dns: &str) -> Result<String, PfxError> {
    let invalid = |reason| PfxError::InvalidName {
        name: dns.to_owned(),
        reason,
    };
    let lower = dns.to_lowercase();
    let (wildcard, base) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let (unicode, result) = idna::domain_to_unicode(base);
    if result.is_err() {
        return Err(invalid("not a valid IDN"));
    }
    if unicode.is_empty() || unicode.split('.').any(str::is_empty) {
        return Err(invalid("empty label"));
    }
    if unicode.chars().any(|c| {
        c.is_control()
            || c.is_whitespace()
            || matches!(c, '\\' | '/' | ':' | '*' | '?' | '"' | '<' | '>' | '|')
    }) {
        return Err(invalid("character not allowed in a host name or file name"));
    }
    let prefix = if wildcard { "_." } else { "" };
    Ok(format!("{prefix}{unicode}.pfx"))
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, PfxError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|_| PfxError::Certificate)
}

fn is_self_issued(cert: &X509Certificate<'_>) -> bool {
    cert.subject().as_raw() == cert.issuer().as_raw()
}

/// `PFX ::= SEQUENCE { version, authSafe, macData OPTIONAL }`: true when macData is present.
///
/// p12-keystore accepts MAC-less files, which would open with any password.
fn has_mac(der: &[u8]) -> bool {
    let Ok((_, pfx)) = Sequence::from_der(der) else {
        return false;
    };
    let mut rest: &[u8] = &pfx.content;
    let mut fields = 0;
    while !rest.is_empty() {
        let Ok((next, _)) = Any::from_der(rest) else {
            return false;
        };
        rest = next;
        fields += 1;
    }
    fields == 3
}

/// Test PKI made with rcgen: root → intermediate → leaf, for this crate's and the agent's tests.
#[cfg(any(test, feature = "test-util"))]
#[allow(
    clippy::expect_used,
    reason = "test helper: a panic is the failure report; `expect` would go unfulfilled under cfg(test)"
)]
pub mod testing {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        PKCS_ECDSA_P256_SHA256, RsaKeySize, SanType,
    };

    /// Key type of a test leaf.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum KeyKind {
        /// ECDSA P-256.
        Ecdsa,
        /// RSA 2048.
        Rsa,
    }

    /// A root and an intermediate CA that issue test leaves.
    pub struct TestCa {
        root_der: Vec<u8>,
        intermediate: CertifiedIssuer<'static, KeyPair>,
    }

    /// A leaf with its key and chain.
    pub struct TestLeaf {
        /// PKCS#8 DER of the leaf key.
        pub key_pkcs8_der: Vec<u8>,
        /// Leaf first, then the intermediate.
        pub chain_der: Vec<Vec<u8>>,
        /// Self-signed root (not part of `chain_der`).
        pub root_der: Vec<u8>,
    }

    impl TestCa {
        /// A new ECDSA root and intermediate.
        pub fn new() -> Self {
            let root = CertifiedIssuer::self_signed(ca_params("certkeep test root"), ecdsa_key())
                .expect("rcgen signs a root");
            let intermediate = CertifiedIssuer::signed_by(
                ca_params("certkeep test intermediate"),
                ecdsa_key(),
                &root,
            )
            .expect("rcgen signs an intermediate");
            Self {
                root_der: root.der().to_vec(),
                intermediate,
            }
        }

        /// A leaf for `names`: DNS names, or IP addresses when they parse as one.
        pub fn leaf(&self, names: &[&str], kind: KeyKind) -> TestLeaf {
            let key = match kind {
                KeyKind::Ecdsa => ecdsa_key(),
                KeyKind::Rsa => {
                    KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)
                        .expect("aws-lc-rs makes RSA keys")
                }
            };
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, names[0]);
            params.subject_alt_names = names
                .iter()
                .map(|n| match n.parse() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName((*n).try_into().expect("ASCII DNS name")),
                })
                .collect();
            let leaf = params
                .signed_by(&key, &self.intermediate)
                .expect("rcgen signs a leaf");
            TestLeaf {
                key_pkcs8_der: key.serialize_der(),
                chain_der: vec![leaf.der().to_vec(), self.intermediate.der().to_vec()],
                root_der: self.root_der.clone(),
            }
        }
    }

    impl Default for TestCa {
        fn default() -> Self {
            Self::new()
        }
    }

    fn ecdsa_key() -> KeyPair {
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("aws-lc-rs makes P-256 keys")
    }

    fn ca_params(cn: &str) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::testing::{KeyKind, TestCa};
    use super::*;

    const PASSWORD: &str = "correct horse";

    #[test]
    fn round_trip_both_modes_and_key_types() {
        let ca = TestCa::new();
        for kind in [KeyKind::Ecdsa, KeyKind::Rsa] {
            let leaf = ca.leaf(&["www.contoso.com"], kind);
            for enc in [PfxEncryption::Legacy, PfxEncryption::Aes256] {
                let der = build_pfx(&leaf.key_pkcs8_der, &leaf.chain_der, PASSWORD, enc).unwrap();
                let opened = open_pfx(&der, PASSWORD).unwrap();
                assert_eq!(opened.leaf_der, leaf.chain_der[0]);
                assert_eq!(opened.chain_der, leaf.chain_der[1..]);
                assert_eq!(*opened.key_pkcs8_der, leaf.key_pkcs8_der);
                assert_eq!(opened.thumbprint, thumbprint(&leaf.chain_der[0]));
                assert_eq!(opened.thumbprint.len(), 64);
            }
        }
    }

    #[test]
    fn openssl_reads_both_modes() {
        let ca = TestCa::new();
        let leaf = ca.leaf(&["www.contoso.com"], KeyKind::Rsa);
        let dir = tempfile::tempdir().unwrap();
        for (enc, extra) in [
            (PfxEncryption::Legacy, Some("-legacy")),
            (PfxEncryption::Legacy, None),
            (PfxEncryption::Aes256, None),
        ] {
            let der = build_pfx(&leaf.key_pkcs8_der, &leaf.chain_der, PASSWORD, enc).unwrap();
            let path = dir.path().join("f.pfx");
            std::fs::write(&path, der).unwrap();
            let pass = format!("pass:{PASSWORD}");
            let mut args = vec!["pkcs12", "-in", path.to_str().unwrap(), "-passin", &pass];
            args.extend(extra);
            for part in ["-nokeys", "-nocerts"] {
                let out = Command::new("openssl")
                    .args(&args)
                    .args([part, "-noenc"])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{enc:?} {extra:?} {part}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let text = String::from_utf8_lossy(&out.stdout);
                let expected = if part == "-nokeys" {
                    "BEGIN CERTIFICATE"
                } else {
                    "BEGIN PRIVATE KEY"
                };
                assert!(text.contains(expected), "{enc:?} {part}: {text}");
            }
        }
    }

    #[test]
    fn wrong_password_is_refused_without_echoing_it() {
        let ca = TestCa::new();
        let leaf = ca.leaf(&["a.example"], KeyKind::Ecdsa);
        for enc in [PfxEncryption::Legacy, PfxEncryption::Aes256] {
            let der = build_pfx(&leaf.key_pkcs8_der, &leaf.chain_der, PASSWORD, enc).unwrap();
            let err = open_pfx(&der, "wrong-pass").unwrap_err();
            assert!(matches!(err, PfxError::WrongPassword), "{err}");
            assert!(!err.to_string().contains("wrong-pass"));
        }
        assert!(matches!(
            build_pfx(
                &leaf.key_pkcs8_der,
                &leaf.chain_der,
                "",
                PfxEncryption::Legacy
            ),
            Err(PfxError::EmptyPassword)
        ));
    }

    #[test]
    fn mismatched_key_is_refused() {
        let ca = TestCa::new();
        let leaf = ca.leaf(&["a.example"], KeyKind::Ecdsa);
        let other = ca.leaf(&["a.example"], KeyKind::Ecdsa);
        let err = build_pfx(
            &other.key_pkcs8_der,
            &leaf.chain_der,
            PASSWORD,
            PfxEncryption::Legacy,
        )
        .unwrap_err();
        assert!(matches!(err, PfxError::KeyMismatch), "{err}");
    }

    #[test]
    fn leaf_without_its_issuer_is_refused() {
        let ca = TestCa::new();
        let leaf = ca.leaf(&["a.example"], KeyKind::Ecdsa);
        let only_leaf = &leaf.chain_der[..1];
        let err = build_pfx(
            &leaf.key_pkcs8_der,
            only_leaf,
            PASSWORD,
            PfxEncryption::Aes256,
        )
        .unwrap_err();
        assert!(matches!(err, PfxError::IncompleteChain(_)), "{err}");
    }

    #[test]
    fn root_in_the_bundle_is_accepted_and_left_out_of_the_chain() {
        let ca = TestCa::new();
        let leaf = ca.leaf(&["a.example"], KeyKind::Ecdsa);
        let mut with_root = leaf.chain_der.clone();
        with_root.push(leaf.root_der.clone());
        let der = build_pfx(
            &leaf.key_pkcs8_der,
            &with_root,
            PASSWORD,
            PfxEncryption::Legacy,
        )
        .unwrap();
        assert_eq!(
            open_pfx(&der, PASSWORD).unwrap().chain_der,
            leaf.chain_der[1..]
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            open_pfx(b"not a pfx", PASSWORD),
            Err(PfxError::NoMac)
        ));
    }

    #[test]
    fn file_names_multi_san_wildcard_idn_and_ip() {
        let ca = TestCa::new();
        let leaf = ca.leaf(
            &[
                "WWW.Contoso.com",
                "*.contoso.com",
                "XN--E1AABXHDADN.xn--p1ai",
                "192.0.2.1",
                "www.contoso.com",
            ],
            KeyKind::Ecdsa,
        );
        assert_eq!(
            ccs_file_names(&leaf.chain_der[0]).unwrap(),
            [
                "www.contoso.com.pfx",
                "_.contoso.com.pfx",
                "мороженое.рф.pfx"
            ]
        );
        // The stored SAN list (lower-cased by the server) gives the same names.
        assert_eq!(
            ccs_file_names_for([
                "www.contoso.com",
                "*.contoso.com",
                "xn--e1aabxhdadn.xn--p1ai",
                "www.contoso.com",
            ])
            .unwrap(),
            ccs_file_names(&leaf.chain_der[0]).unwrap()
        );
        assert!(matches!(ccs_file_names_for([]), Err(PfxError::NoDnsNames)));
    }

    #[test]
    fn file_names_refuse_unsafe_names() {
        for bad in [
            "a..b", "a/b.com", "a\\b.com", "c:.com", "*.*.com", "x.*.com", ".a.com",
        ] {
            assert!(
                matches!(ccs_file_name(bad), Err(PfxError::InvalidName { .. })),
                "{bad} accepted"
            );
        }
        let ca = TestCa::new();
        let ip_only = ca.leaf(&["192.0.2.1"], KeyKind::Ecdsa);
        assert!(matches!(
            ccs_file_names(&ip_only.chain_der[0]),
            Err(PfxError::NoDnsNames)
        ));
    }
}
