//! Lifecycle rules: how an edit changes a certificate's names, the key type of a leaf, and the
//! checks of an imported certificate.

use time::OffsetDateTime;
use x509_parser::prelude::FromDer as _;
use zeroize::Zeroizing;

use super::issuance::{LeafInfo, check_leaf_key, parse_chain};
use super::names::{NameError, normalize, normalize_all};
use crate::model::KeyType;

/// The names after an edit: `current` without `remove`, then `add` appended, all normalised
/// and checked as on create (1 to 100, no duplicates). Removing a name the certificate does
/// not carry, or adding one it carries already, is a mistake worth refusing.
pub fn edited_names(
    current: &[String],
    add: &[String],
    remove: &[String],
) -> Result<Vec<String>, EditError> {
    let mut names = current.to_vec();
    for name in remove {
        let n = normalize(name)?;
        let before = names.len();
        names.retain(|c| *c != n);
        if names.len() == before {
            return Err(EditError::NotCarried(n));
        }
    }
    for name in add {
        let n = normalize(name)?;
        if current.contains(&n) {
            return Err(EditError::AlreadyCarried(n));
        }
        names.push(n);
    }
    Ok(normalize_all(&names)?)
}

/// The key type of a leaf's public key, if it is one certkeep orders.
pub fn leaf_key_type(leaf_der: &[u8]) -> Option<KeyType> {
    use x509_parser::public_key::PublicKey;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(leaf_der).ok()?;
    let spki = cert.public_key();
    match spki.parsed().ok()? {
        PublicKey::RSA(rsa) => match rsa.key_size() {
            2048 => Some(KeyType::Rsa2048),
            3072 => Some(KeyType::Rsa3072),
            4096 => Some(KeyType::Rsa4096),
            _ => None,
        },
        PublicKey::EC(_) => {
            let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
            if curve == x509_parser::oid_registry::OID_EC_P256 {
                Some(KeyType::EcdsaP256)
            } else if curve == x509_parser::oid_registry::OID_NIST_EC_P384 {
                Some(KeyType::EcdsaP384)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Checks a certificate brought from elsewhere: `chain_pem` (leaf first) certifies the key
/// `key_pkcs8_der`, every certificate is signed by the next one (the leaf's issuer must be
/// there), the leaf is valid at `now`, carries DNS names and a key type certkeep orders.
/// Returns the leaf, its key type and the key re-encoded as plain PKCS#8 (as certkeep's own
/// keys are, whatever attributes or encoding the file carried).
pub fn check_import(
    chain_pem: &str,
    key_pkcs8_der: &[u8],
    now: OffsetDateTime,
) -> Result<(LeafInfo, KeyType, Zeroizing<Vec<u8>>), String> {
    let key = rcgen::KeyPair::try_from(key_pkcs8_der)
        .map_err(|_| "the private key is not a PKCS#8 RSA or ECDSA key".to_owned())?;
    let key_pkcs8_der = Zeroizing::new(key.serialize_der());
    let leaf = parse_chain(chain_pem)?;
    check_leaf_key(&key_pkcs8_der, &leaf)
        .map_err(|_| "the private key does not belong to the leaf certificate".to_owned())?;
    if leaf.not_after <= now {
        return Err(format!("the certificate expired at {}", leaf.not_after));
    }
    if leaf.not_before > now {
        return Err(format!(
            "the certificate is not valid before {}",
            leaf.not_before
        ));
    }
    if leaf.dns_names.is_empty() {
        return Err("the certificate has no DNS subject alternative name".into());
    }
    let key_type = leaf_key_type(&leaf.leaf_der).ok_or(
        "the certificate's key is not one certkeep orders (RSA 2048/3072/4096, P-256, P-384)",
    )?;
    let ders: Vec<Vec<u8>> = x509_parser::pem::Pem::iter_from_buffer(chain_pem.as_bytes())
        .map(|p| p.map(|p| p.contents))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the chain is not valid PEM: {e}"))?;
    let certs = ders
        .iter()
        .map(|d| x509_parser::certificate::X509Certificate::from_der(d).map(|(_, c)| c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("a certificate of the chain does not parse: {e}"))?;
    if certs.len() < 2 {
        return Err("the chain holds only the leaf: add the issuing CA certificate(s)".into());
    }
    for pair in certs.windows(2) {
        let (cert, issuer) = (&pair[0], &pair[1]);
        if cert.issuer().as_raw() != issuer.subject().as_raw()
            || cert.verify_signature(Some(issuer.public_key())).is_err()
        {
            return Err(format!(
                "the chain does not build: `{}` is not signed by the next certificate `{}`",
                cert.subject(),
                issuer.subject()
            ));
        }
    }
    Ok((leaf, key_type, key_pkcs8_der))
}

/// Whether every active agent assigned a certificate reports only `thumbprint` in all its
/// files for it (so the previous version may be revoked without breaking a site). Each
/// `(agent, file thumbprint)` pair is one reported file of that certificate.
pub fn installed_everywhere(
    active_agents: &[crate::model::AgentId],
    reported: &[(crate::model::AgentId, Option<String>)],
    thumbprint: &str,
) -> bool {
    active_agents.iter().all(|agent| {
        let mut files = reported.iter().filter(|(a, _)| a == agent).peekable();
        files.peek().is_some() && files.all(|(_, t)| t.as_deref() == Some(thumbprint))
    })
}

/// Why an edit of the names is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("`{0}` is not one of the certificate's names")]
    NotCarried(String),
    #[error("`{0}` is already one of the certificate's names")]
    AlreadyCarried(String),
}

#[cfg(test)]
mod tests {
    use certkeep_api_types::pfx::testing::{KeyKind, TestCa};

    use super::*;

    fn pem_chain(ders: &[Vec<u8>]) -> String {
        ders.iter()
            .map(|d| certkeep_api_types::pem::encode("CERTIFICATE", d))
            .collect()
    }

    #[test]
    fn an_import_needs_its_key_a_chain_that_builds_and_time_left() {
        let now = crate::now();
        let ca = TestCa::new();
        let leaf = ca.leaf(&["www.example.edu"], KeyKind::Ecdsa);
        let chain = pem_chain(&leaf.chain_der);
        let (info, key_type, key) = check_import(&chain, &leaf.key_pkcs8_der, now).unwrap();
        assert_eq!(*key, leaf.key_pkcs8_der);
        assert_eq!(info.dns_names, ["www.example.edu"]);
        assert_eq!(key_type, KeyType::EcdsaP256);

        let other = ca.leaf(&["www.example.edu"], KeyKind::Ecdsa);
        let err = check_import(&chain, &other.key_pkcs8_der, now).unwrap_err();
        assert!(err.contains("does not belong"), "{err}");
        let err =
            check_import(&pem_chain(&leaf.chain_der[..1]), &leaf.key_pkcs8_der, now).unwrap_err();
        assert!(err.contains("only the leaf"), "{err}");
        // The intermediate of another CA does not build the chain.
        let foreign = TestCa::new().leaf(&["x.example.edu"], KeyKind::Ecdsa);
        let mixed = pem_chain(&[leaf.chain_der[0].clone(), foreign.chain_der[1].clone()]);
        let err = check_import(&mixed, &leaf.key_pkcs8_der, now).unwrap_err();
        assert!(err.contains("does not build"), "{err}");
        let later = info.not_after + time::Duration::seconds(1);
        let err = check_import(&chain, &leaf.key_pkcs8_der, later).unwrap_err();
        assert!(err.contains("expired"), "{err}");
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn adds_and_removes_normalised_names() {
        let current = names(&["www.example.edu", "example.edu"]);
        assert_eq!(
            edited_names(
                &current,
                &names(&["API.Example.edu."]),
                &names(&["example.edu"])
            ),
            Ok(names(&["www.example.edu", "api.example.edu"]))
        );
        assert_eq!(
            edited_names(&current, &names(&["bücher.example.edu"]), &[]),
            Ok(names(&[
                "www.example.edu",
                "example.edu",
                "xn--bcher-kva.example.edu"
            ]))
        );
    }

    #[test]
    fn the_old_version_waits_for_every_active_agent() {
        use crate::model::AgentId;
        let (a, b) = (AgentId::new(), AgentId::new());
        let new = Some("new".to_owned());
        assert!(
            installed_everywhere(&[], &[], "new"),
            "no agent: nothing to wait for"
        );
        assert!(installed_everywhere(&[a], &[(a, new.clone())], "new"));
        assert!(
            !installed_everywhere(&[a, b], &[(a, new.clone())], "new"),
            "b reported nothing"
        );
        assert!(!installed_everywhere(
            &[a],
            &[(a, new.clone()), (a, Some("old".into()))],
            "new"
        ));
        assert!(
            !installed_everywhere(&[a], &[(a, None)], "new"),
            "a failed file"
        );
    }

    #[test]
    fn refuses_what_does_not_make_sense() {
        let current = names(&["www.example.edu"]);
        assert_eq!(
            edited_names(&current, &[], &names(&["api.example.edu"])),
            Err(EditError::NotCarried("api.example.edu".into()))
        );
        assert_eq!(
            edited_names(&current, &names(&["WWW.example.edu"]), &[]),
            Err(EditError::AlreadyCarried("www.example.edu".into()))
        );
        assert_eq!(
            edited_names(&current, &[], &names(&["www.example.edu"])),
            Err(EditError::Name(NameError::NoNames))
        );
        assert!(matches!(
            edited_names(&current, &names(&["a.example.edu", "a.example.edu"]), &[]),
            Err(EditError::Name(NameError::Duplicate(_)))
        ));
        assert!(matches!(
            edited_names(&current, &names(&["10.0.0.1"]), &[]),
            Err(EditError::Name(NameError::IpAddress(_)))
        ));
    }
}
