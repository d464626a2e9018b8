//! Issuance decisions: scope checks, how long to wait on the CA and whether to wait inline or
//! park the job, retry back-off, what a downloaded chain says and whether it is the
//! certificate that was asked for. Pure: time is a parameter.

use std::collections::BTreeSet;
use std::time::Duration;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::domain::names;
use crate::model::{Certificate, CertificateState};

/// Longest retry back-off when the CA gives no `Retry-After`.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// First poll delay when the CA gives no `Retry-After`.
const FIRST_POLL: Duration = Duration::from_millis(250);
/// Longest poll delay without `Retry-After`.
const MAX_POLL: Duration = Duration::from_secs(30);

/// Refuses names outside the account's allowed patterns, naming the first one.
pub fn check_scope(account: &str, patterns: &[String], names: &[String]) -> Result<(), String> {
    names::all_covered(patterns, names).map_err(|outside| {
        format!(
            "`{outside}` is outside the allowed domains of ACME account `{account}` ({})",
            patterns.join(", ")
        )
    })
}

/// What to do while the CA is busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Sleep this long in the worker, then look again.
    Inline(Duration),
    /// Release the worker and resume the job at this time.
    Park(OffsetDateTime),
    /// The order's deadline has passed.
    Expired,
}

/// Decides how to wait `delay` given the inline limit and the order's deadline. A wait that
/// runs past the deadline parks until the deadline, where one last look decides.
pub fn wait_decision(
    now: OffsetDateTime,
    delay: Duration,
    max_inline: Duration,
    deadline: OffsetDateTime,
) -> Wait {
    if now >= deadline {
        return Wait::Expired;
    }
    let at = match after(now, delay) {
        Some(at) if at < deadline => at,
        _ => return Wait::Park(deadline),
    };
    if delay <= max_inline {
        Wait::Inline(delay)
    } else {
        Wait::Park(at)
    }
}

/// `now + delay`, or `None` when that is past what a date can hold.
pub fn after(now: OffsetDateTime, delay: Duration) -> Option<OffsetDateTime> {
    now.checked_add(time::Duration::try_from(delay).ok()?)
}

/// Delay before the next look at an order: the CA's `Retry-After` (capped at `max_wait`); else
/// none for the first look of a wait (a CA that validates or issues at once is not waited
/// for), then back-off from [`FIRST_POLL`].
pub fn poll_delay(retry_after: Option<Duration>, polls: u32, max_wait: Duration) -> Duration {
    match retry_after {
        Some(d) => d.min(max_wait),
        None if polls == 0 => Duration::ZERO,
        None => FIRST_POLL
            .saturating_mul(1u32 << (polls - 1).min(16))
            .min(MAX_POLL),
    }
}

/// Delay before retrying a job after a transient error: the CA's `Retry-After` (capped at
/// `max_wait`), else 1 s, 2 s, 4 s ... up to [`MAX_BACKOFF`].
pub fn retry_delay(attempts: i32, retry_after: Option<Duration>, max_wait: Duration) -> Duration {
    match retry_after {
        Some(d) => d.min(max_wait),
        None => Duration::from_secs(1u64 << attempts.clamp(0, 12)).min(MAX_BACKOFF),
    }
}

/// The state a certificate shows while an order for it runs.
pub fn state_while_ordering(cert: &Certificate) -> CertificateState {
    match (cert.current_version_id, cert.state) {
        (_, CertificateState::Failing) => CertificateState::Failing,
        (None, _) => CertificateState::Issuing,
        (Some(_), _) => CertificateState::Renewing,
    }
}

/// The state a certificate shows after its order failed: a certificate that still has a
/// version keeps serving it but is visibly `failing`; one that never had a version `failed`.
pub fn state_after_failure(cert: &Certificate) -> CertificateState {
    match cert.current_version_id {
        Some(_) => CertificateState::Failing,
        None => CertificateState::Failed,
    }
}

/// What certkeep records about a downloaded chain, parsed from its leaf.
#[derive(Debug, Clone)]
pub struct LeafInfo {
    pub leaf_der: Vec<u8>,
    /// The leaf's subjectPublicKey bits (an EC point or a PKCS#1 RSA public key).
    pub public_key: Vec<u8>,
    /// Lowercase hex.
    pub serial: String,
    /// Lowercase hex SHA-256 of the leaf DER.
    pub thumbprint: String,
    pub dns_names: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Certificates in the chain, leaf included.
    pub chain_len: usize,
}

/// Parses a PEM chain (leaf first) as served by the CA.
pub fn parse_chain(chain_pem: &str) -> Result<LeafInfo, String> {
    let pems: Vec<x509_parser::pem::Pem> =
        x509_parser::pem::Pem::iter_from_buffer(chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("the downloaded chain is not valid PEM: {e}"))?;
    let leaf_pem = pems
        .first()
        .ok_or("the downloaded chain holds no certificate")?;
    let leaf = leaf_pem
        .parse_x509()
        .map_err(|e| format!("the downloaded leaf certificate does not parse: {e}"))?;
    let dns_names = leaf
        .subject_alternative_name()
        .map_err(|e| format!("the leaf's subjectAltName does not parse: {e}"))?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        Some(d.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(LeafInfo {
        serial: hex::encode(leaf.raw_serial()),
        thumbprint: hex::encode(Sha256::digest(&leaf_pem.contents)),
        dns_names,
        not_before: leaf.validity().not_before.to_datetime(),
        not_after: leaf.validity().not_after.to_datetime(),
        chain_len: pems.len(),
        public_key: leaf.public_key().subject_public_key.data.to_vec(),
        leaf_der: leaf_pem.contents.clone(),
    })
}

/// Checks that the leaf's DNS names are exactly the requested ones: a missing name breaks the
/// site, and an added one would be installed too (CCS files are named from the SANs).
pub fn check_leaf_names(requested: &[String], leaf: &LeafInfo) -> Result<(), String> {
    let lower = |names: &[String]| -> BTreeSet<String> {
        names.iter().map(|n| n.to_ascii_lowercase()).collect()
    };
    let (wanted, issued) = (lower(requested), lower(&leaf.dns_names));
    let list = |names: Vec<&String>| {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let missing: Vec<&String> = wanted.difference(&issued).collect();
    let added: Vec<&String> = issued.difference(&wanted).collect();
    let problem = match (missing.is_empty(), added.is_empty()) {
        (true, true) => return Ok(()),
        (false, true) => format!("without the requested name(s) {}", list(missing)),
        (true, false) => format!("with name(s) that were not requested: {}", list(added)),
        (false, false) => format!(
            "with name(s) that were not requested: {}, and without the requested name(s) {}",
            list(added),
            list(missing)
        ),
    };
    Err(format!(
        "the CA issued a certificate (serial {}, SHA-256 {}) {problem}; it is not used",
        leaf.serial, leaf.thumbprint
    ))
}

/// Checks that the leaf certifies the public key of `key_pkcs8_der`, the key stored for the
/// order (a CA that returns another key's certificate would make the stored key useless).
pub fn check_leaf_key(key_pkcs8_der: &[u8], leaf: &LeafInfo) -> Result<(), String> {
    let key = rcgen::KeyPair::try_from(key_pkcs8_der)
        .map_err(|e| format!("the order's stored key does not parse: {e}"))?;
    if rcgen::PublicKeyData::der_bytes(&key) == leaf.public_key.as_slice() {
        Ok(())
    } else {
        Err(format!(
            "the CA issued a certificate (serial {}, SHA-256 {}) for a public key that is not the order's key; it is not used",
            leaf.serial, leaf.thumbprint
        ))
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::model::{AccountId, CertificateId, KeyType, RenewalPolicy, VersionId};

    const NOW: OffsetDateTime = datetime!(2026-03-01 12:00 UTC);

    #[test]
    fn scope_names_the_name_outside() {
        let patterns = vec!["*.example.edu".to_owned(), "example.edu".to_owned()];
        assert!(
            check_scope(
                "rsa",
                &patterns,
                &["a.example.edu".into(), "example.edu".into()]
            )
            .is_ok()
        );
        let err = check_scope(
            "rsa",
            &patterns,
            &["a.example.edu".into(), "evil.com".into()],
        )
        .unwrap_err();
        assert!(err.contains("`evil.com`") && err.contains("`rsa`"), "{err}");
    }

    #[test]
    fn waits_inline_park_or_expire() {
        let deadline = NOW + time::Duration::days(7);
        let max = Duration::from_secs(120);
        assert_eq!(
            wait_decision(NOW, Duration::from_secs(15), max, deadline),
            Wait::Inline(Duration::from_secs(15))
        );
        assert_eq!(
            wait_decision(NOW, Duration::from_secs(86_400), max, deadline),
            Wait::Park(NOW + time::Duration::days(1))
        );
        // A wait past the deadline parks until the deadline; at the deadline the order expires.
        let soon = NOW + time::Duration::seconds(30);
        assert_eq!(
            wait_decision(NOW, Duration::from_secs(60), max, soon),
            Wait::Park(soon)
        );
        assert_eq!(
            wait_decision(soon, Duration::from_secs(1), max, soon),
            Wait::Expired
        );
    }

    #[test]
    fn poll_and_retry_delays_honour_retry_after_with_caps() {
        let max = Duration::from_secs(600);
        assert_eq!(
            poll_delay(Some(Duration::from_secs(15)), 9, max),
            Duration::from_secs(15)
        );
        assert_eq!(poll_delay(Some(Duration::from_secs(86_400)), 0, max), max);
        assert_eq!(poll_delay(Some(Duration::MAX), 0, max), max);
        assert_eq!(poll_delay(None, 0, max), Duration::ZERO);
        assert_eq!(poll_delay(None, 1, max), Duration::from_millis(250));
        assert_eq!(poll_delay(None, 4, max), Duration::from_secs(2));
        assert_eq!(poll_delay(None, 40, max), Duration::from_secs(30));
        assert_eq!(retry_delay(0, None, max), Duration::from_secs(1));
        assert_eq!(retry_delay(3, None, max), Duration::from_secs(8));
        assert_eq!(retry_delay(30, None, max), MAX_BACKOFF);
        assert_eq!(retry_delay(3, Some(Duration::ZERO), max), Duration::ZERO);
        assert_eq!(
            retry_delay(3, Some(Duration::from_secs(2)), max),
            Duration::from_secs(2)
        );
        assert_eq!(retry_delay(3, Some(Duration::MAX), max), max);
    }

    #[test]
    fn absurd_delays_park_until_the_deadline_without_overflow() {
        let deadline = NOW + time::Duration::days(7);
        let max = Duration::from_secs(120);
        assert_eq!(
            wait_decision(NOW, Duration::MAX, max, deadline),
            Wait::Park(deadline)
        );
        assert_eq!(
            wait_decision(NOW, Duration::from_secs(u64::MAX), max, deadline),
            Wait::Park(deadline)
        );
        assert_eq!(after(NOW, Duration::MAX), None);
        assert_eq!(
            after(NOW, Duration::from_secs(60)),
            Some(NOW + time::Duration::minutes(1))
        );
    }

    fn cert(version: bool, state: CertificateState) -> Certificate {
        Certificate {
            id: CertificateId::new(),
            name: "www".into(),
            dns_names: vec!["www.example.edu".into()],
            key_type: KeyType::EcdsaP256,
            account_id: AccountId::new(),
            policy: RenewalPolicy::default(),
            reuse_key: false,
            state,
            current_version_id: version.then(VersionId::new),
            renew_after: None,
            consecutive_failures: 0,
            last_error: None,
            created_by: None,
            created_at: NOW,
            updated_at: NOW,
        }
    }

    #[test]
    fn certificate_states_around_orders() {
        assert_eq!(
            state_while_ordering(&cert(false, CertificateState::Pending)),
            CertificateState::Issuing
        );
        assert_eq!(
            state_while_ordering(&cert(true, CertificateState::Valid)),
            CertificateState::Renewing
        );
        assert_eq!(
            state_while_ordering(&cert(true, CertificateState::Failing)),
            CertificateState::Failing
        );
        assert_eq!(
            state_after_failure(&cert(true, CertificateState::Renewing)),
            CertificateState::Failing
        );
        assert_eq!(
            state_after_failure(&cert(false, CertificateState::Issuing)),
            CertificateState::Failed
        );
    }

    /// A CA-signed chain (leaf, CA) for `names` and `key`, as a CA would serve it.
    fn chain_for(names: &[&str], key: &rcgen::KeyPair) -> (String, Vec<u8>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0a, 0xbc]));
        let leaf = params.signed_by(key, &issuer).unwrap();
        (format!("{}{}", leaf.pem(), ca.pem()), leaf.der().to_vec())
    }

    fn requested(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn names_must_be_exactly_the_requested_set() {
        let key = rcgen::KeyPair::generate().unwrap();
        let asked = requested(&["www.example.edu", "example.edu"]);
        // Same set, other order and case: accepted.
        let (chain, _) = chain_for(&["EXAMPLE.edu", "www.example.edu"], &key);
        assert!(check_leaf_names(&asked, &parse_chain(&chain).unwrap()).is_ok());
        // An added name (would become an extra CCS file on IIS).
        let (chain, _) = chain_for(
            &["www.example.edu", "example.edu", "evil.example.com"],
            &key,
        );
        let err = check_leaf_names(&asked, &parse_chain(&chain).unwrap()).unwrap_err();
        assert!(
            err.contains("not requested: `evil.example.com`") && err.contains("serial 0abc"),
            "{err}"
        );
        // A different name in place of a requested one.
        let (chain, _) = chain_for(&["www.example.edu", "other.example.edu"], &key);
        let err = check_leaf_names(&asked, &parse_chain(&chain).unwrap()).unwrap_err();
        assert!(
            err.contains("`other.example.edu`")
                && err.contains("without the requested name(s) `example.edu`"),
            "{err}"
        );
        // A missing name.
        let (chain, _) = chain_for(&["www.example.edu"], &key);
        let err = check_leaf_names(&asked, &parse_chain(&chain).unwrap()).unwrap_err();
        assert!(
            err.contains("without the requested name(s) `example.edu`"),
            "{err}"
        );
    }

    #[test]
    fn the_leaf_must_certify_the_stored_key() {
        let generate = |alg: &'static rcgen::SignatureAlgorithm| {
            if alg == &rcgen::PKCS_RSA_SHA256 {
                rcgen::KeyPair::generate_rsa_for(alg, rcgen::RsaKeySize::_2048).unwrap()
            } else {
                rcgen::KeyPair::generate_for(alg).unwrap()
            }
        };
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_RSA_SHA256,
        ] {
            let key = generate(alg);
            let (chain, _) = chain_for(&["www.example.edu"], &key);
            let leaf = parse_chain(&chain).unwrap();
            check_leaf_key(&key.serialize_der(), &leaf).unwrap();
            let other = generate(alg);
            let err = check_leaf_key(&other.serialize_der(), &leaf).unwrap_err();
            assert!(
                err.contains("not the order's key") && err.contains("serial 0abc"),
                "{err}"
            );
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let (chain, _) = chain_for(&["www.example.edu"], &key);
        let err = check_leaf_key(b"not a key", &parse_chain(&chain).unwrap()).unwrap_err();
        assert!(err.contains("does not parse"), "{err}");
    }

    #[test]
    fn parses_a_chain() {
        let key = rcgen::KeyPair::generate().unwrap();
        let (chain, leaf_der) = chain_for(&["www.example.edu", "*.example.edu"], &key);
        let info = parse_chain(&chain).unwrap();
        assert_eq!(info.serial, "0abc");
        assert_eq!(info.chain_len, 2);
        assert_eq!(
            info.dns_names,
            vec!["www.example.edu".to_owned(), "*.example.edu".to_owned()]
        );
        assert_eq!(info.thumbprint, hex::encode(Sha256::digest(&leaf_der)));
        assert!(parse_chain("no pem here").is_err());
    }
}
