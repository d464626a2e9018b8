//! The agent's own P-256 key and client certificate: enroll, load, renew.
//!
//! The key is generated here and never leaves the host: `agent-key.pem` is written with mode
//! 0600 on Unix; on Windows the state directory's ACL (SYSTEM and Administrators only, set by
//! `deploy/windows/install-agent.ps1`) protects it.

use std::{fs, path::Path};

use anyhow::{Context, bail, ensure};
use certkeep_api_types::agent::{AGENT_URI_PREFIX, EnrollResponse, RenewRequest};
use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use time::OffsetDateTime;
use uuid::Uuid;
use x509_parser::{extensions::GeneralName, pem::parse_x509_pem};
use zeroize::Zeroizing;

use crate::{
    client::AgentClient,
    fsio::{self, Access},
};

/// Private key file in the state directory (PKCS#8 PEM).
pub const KEY_FILE: &str = "agent-key.pem";
/// Client certificate file in the state directory (PEM).
pub const CERT_FILE: &str = "agent-cert.pem";
/// An enrollment's new key, written before [`CERT_FILE`] and renamed to [`KEY_FILE`] after it,
/// so [`Identity::load`] can finish an enrollment a crash interrupted.
const NEXT_KEY_FILE: &str = "agent-key.next.pem";

/// A loaded, consistent key and certificate.
pub struct Identity {
    key_pem: Zeroizing<String>,
    cert_pem: String,
    /// Agent id from the certificate's `urn:certkeep:agent:<uuid>` SAN.
    pub agent_id: Uuid,
    /// Start of the certificate's validity.
    pub not_before: OffsetDateTime,
    /// End of the certificate's validity.
    pub not_after: OffsetDateTime,
}

impl Identity {
    /// Loads the identity from `state_dir`; says to enroll when there is none.
    ///
    /// Finishes an enrollment that stopped after its certificate was stored (the new key is
    /// still in `agent-key.next.pem`) and drops a new key whose certificate never arrived.
    pub fn load(state_dir: &Path) -> anyhow::Result<Self> {
        let key_path = state_dir.join(KEY_FILE);
        let next_path = state_dir.join(NEXT_KEY_FILE);
        let cert_path = state_dir.join(CERT_FILE);
        if !cert_path.exists() || !(key_path.exists() || next_path.exists()) {
            bail!(
                "this agent is not enrolled ({} has no {KEY_FILE}/{CERT_FILE}); run \
                 `certkeep-agent enroll`",
                state_dir.display()
            );
        }
        let cert_pem = fs::read_to_string(&cert_path)
            .with_context(|| format!("cannot read {}", cert_path.display()))?;
        let unusable = || {
            format!(
                "unusable agent identity in {}; enroll again",
                state_dir.display()
            )
        };
        let read_key = |path: &Path| {
            fs::read_to_string(path)
                .map(Zeroizing::new)
                .with_context(|| format!("cannot read {}", path.display()))
        };
        if next_path.exists() {
            if let Ok(identity) = Self::from_pems(read_key(&next_path)?, cert_pem.clone()) {
                fs::rename(&next_path, &key_path)
                    .with_context(|| format!("cannot rename {}", next_path.display()))?;
                tracing::info!(agent.id = %identity.agent_id, "finished an interrupted enrollment");
                return Ok(identity);
            }
            fs::remove_file(&next_path)
                .with_context(|| format!("cannot remove {}", next_path.display()))?;
        }
        Self::from_pems(read_key(&key_path)?, cert_pem).with_context(unusable)
    }

    /// Checks that the certificate carries an agent id and belongs to the key.
    fn from_pems(key_pem: Zeroizing<String>, cert_pem: String) -> anyhow::Result<Self> {
        let key = KeyPair::from_pem(&key_pem).context("agent key is not a PKCS#8 PEM key")?;
        let (_, pem) =
            parse_x509_pem(cert_pem.as_bytes()).context("agent certificate is not PEM")?;
        let cert = pem
            .parse_x509()
            .context("agent certificate does not parse")?;
        ensure!(
            cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw(),
            "agent certificate does not belong to the agent key"
        );
        let agent_id = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .into_iter()
            .flat_map(|san| &san.value.general_names)
            .find_map(|name| match name {
                GeneralName::URI(uri) => uri.strip_prefix(AGENT_URI_PREFIX),
                _ => None,
            })
            .and_then(|id| Uuid::try_parse(id).ok())
            .context("agent certificate has no urn:certkeep:agent:<uuid> SAN")?;
        let validity = cert.validity();
        Ok(Self {
            agent_id,
            not_before: validity.not_before.to_datetime(),
            not_after: validity.not_after.to_datetime(),
            key_pem,
            cert_pem,
        })
    }

    /// Key and certificate PEM concatenated, as the TLS client wants them.
    pub fn client_pem(&self) -> Zeroizing<Vec<u8>> {
        let mut pem = Zeroizing::new(Vec::with_capacity(
            self.key_pem.len() + self.cert_pem.len() + 1,
        ));
        pem.extend_from_slice(self.key_pem.as_bytes());
        pem.push(b'\n');
        pem.extend_from_slice(self.cert_pem.as_bytes());
        pem
    }

    /// Fails with re-enrollment instructions once the certificate has expired.
    pub fn ensure_valid(&self, now: OffsetDateTime) -> anyhow::Result<()> {
        if now >= self.not_after {
            bail!(
                "the certificate of agent {} expired at {}, so it cannot renew itself; get a new \
                 join token from the certkeep server and run `certkeep-agent enroll` again",
                self.agent_id,
                crate::format_time(self.not_after),
            );
        }
        Ok(())
    }

    /// Accepts the server's answer for our key, checking it names `expected` when given.
    fn from_response(
        key_pem: Zeroizing<String>,
        response: EnrollResponse,
        expected: Option<Uuid>,
    ) -> anyhow::Result<Self> {
        let identity = Self::from_pems(key_pem, response.certificate_pem)
            .context("the server returned an unusable certificate")?;
        ensure!(
            identity.agent_id == response.agent_id
                && expected.is_none_or(|id| id == identity.agent_id),
            "the server returned a certificate for another agent"
        );
        Ok(identity)
    }

    /// Stores a new key (owner-only) and its certificate in `state_dir`: the key as
    /// `agent-key.next.pem`, then the certificate, then the key renamed to [`KEY_FILE`]. A crash
    /// at any point leaves a pair [`Identity::load`] can use: the old one, or the new one.
    fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create {}", state_dir.display()))?;
        let next = state_dir.join(NEXT_KEY_FILE);
        fsio::replace(&next, self.key_pem.as_bytes(), Access::Private)
            .with_context(|| format!("cannot write {}", next.display()))?;
        self.save_certificate(state_dir)?;
        let key = state_dir.join(KEY_FILE);
        fs::rename(&next, &key).with_context(|| format!("cannot write {}", key.display()))
    }

    /// Writes the certificate alone. After a renewal the key on disk is already this one, so a
    /// single rename switches to the new certificate: a crash leaves the old, matching pair.
    fn save_certificate(&self, state_dir: &Path) -> anyhow::Result<()> {
        let path = state_dir.join(CERT_FILE);
        fsio::replace(&path, self.cert_pem.as_bytes(), Access::Shared)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// A fresh P-256 key and a CSR for it; the server uses only the public key.
pub fn new_key_and_csr() -> anyhow::Result<(Zeroizing<String>, String)> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("cannot generate a key")?;
    let csr = csr_for(&key)?;
    Ok((Zeroizing::new(key.serialize_pem()), csr))
}

fn csr_for(key: &KeyPair) -> anyhow::Result<String> {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "certkeep-agent");
    Ok(params.serialize_request(key)?.pem()?)
}

/// Stores the identity the enroll endpoint returned for the key in `key_pem`.
pub fn accept_enrollment(
    state_dir: &Path,
    key_pem: Zeroizing<String>,
    response: EnrollResponse,
) -> anyhow::Result<Identity> {
    let identity = Identity::from_response(key_pem, response, None)?;
    identity.save(state_dir)?;
    Ok(identity)
}

/// Renews the client certificate for the same key over mTLS and stores it before it is used.
///
/// Keeping the key means a crash can never leave a key and certificate that do not match, and
/// the certificate file is switched by one rename. If the reply is lost or the write fails, the
/// server still accepts the current certificate until the new one is first used, so the next
/// sync simply renews again.
pub async fn renew(
    client: &AgentClient,
    current: &Identity,
    state_dir: &Path,
) -> anyhow::Result<Identity> {
    let key = KeyPair::from_pem(&current.key_pem).context("agent key is not a PKCS#8 PEM key")?;
    let response = client
        .renew(&RenewRequest {
            csr_pem: csr_for(&key)?,
        })
        .await?;
    let identity =
        Identity::from_response(current.key_pem.clone(), response, Some(current.agent_id))?;
    identity.save_certificate(state_dir)?;
    tracing::info!(
        agent.id = %identity.agent_id,
        not_after = crate::format_time(identity.not_after),
        "agent certificate renewed"
    );
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, SanType};
    use time::{Duration, macros::datetime};

    use super::*;

    /// What the server does: sign the CSR's key with the agent URI SAN.
    fn issue(key_pem: &str, agent_id: Uuid) -> EnrollResponse {
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::from_pem(key_pem).unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(
            format!("{AGENT_URI_PREFIX}{agent_id}").try_into().unwrap(),
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = datetime!(2026-01-01 0:00 UTC);
        params.not_after = datetime!(2026-01-31 0:00 UTC);
        let cert = params.signed_by(&key, &ca).unwrap();
        EnrollResponse {
            agent_id,
            certificate_pem: cert.pem(),
            ca_pem: ca.pem(),
            not_after: params.not_after,
        }
    }

    #[test]
    fn enrollment_is_stored_and_loaded_back() {
        let dir = tempfile::tempdir().unwrap();
        let (key_pem, csr) = new_key_and_csr().unwrap();
        assert!(csr.contains("BEGIN CERTIFICATE REQUEST"));
        let id = Uuid::new_v4();
        accept_enrollment(dir.path(), key_pem.clone(), issue(&key_pem, id)).unwrap();
        let loaded = Identity::load(dir.path()).unwrap();
        assert_eq!(loaded.agent_id, id);
        assert_eq!(loaded.not_after, datetime!(2026-01-31 0:00 UTC));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let err = loaded
            .ensure_valid(loaded.not_after + Duration::SECOND)
            .unwrap_err();
        assert!(err.to_string().contains("enroll"), "{err}");
        loaded
            .ensure_valid(loaded.not_after - Duration::SECOND)
            .unwrap();
    }

    #[test]
    fn refuses_a_certificate_for_another_key_or_agent() {
        let (key_pem, _) = new_key_and_csr().unwrap();
        let (other_key, _) = new_key_and_csr().unwrap();
        let id = Uuid::new_v4();
        assert!(Identity::from_response(key_pem.clone(), issue(&other_key, id), None).is_err());
        let mut response = issue(&key_pem, id);
        response.agent_id = Uuid::new_v4();
        assert!(Identity::from_response(key_pem.clone(), response, None).is_err());
        let response = issue(&key_pem, id);
        assert!(Identity::from_response(key_pem, response, Some(Uuid::new_v4())).is_err());
    }

    #[test]
    fn an_interrupted_enrollment_leaves_a_usable_pair() {
        let dir = tempfile::tempdir().unwrap();
        let old_id = Uuid::new_v4();
        let (old_key, _) = new_key_and_csr().unwrap();
        accept_enrollment(dir.path(), old_key.clone(), issue(&old_key, old_id)).unwrap();
        let new_id = Uuid::new_v4();
        let (new_key, _) = new_key_and_csr().unwrap();
        let new_cert = issue(&new_key, new_id).certificate_pem;

        // Stopped before the certificate was stored: the old pair, and the new key is dropped.
        fs::write(dir.path().join(NEXT_KEY_FILE), new_key.as_bytes()).unwrap();
        assert_eq!(Identity::load(dir.path()).unwrap().agent_id, old_id);
        assert!(!dir.path().join(NEXT_KEY_FILE).exists());

        // Stopped after the certificate, before the key: the new pair, and the key is moved.
        fs::write(dir.path().join(NEXT_KEY_FILE), new_key.as_bytes()).unwrap();
        fs::write(dir.path().join(CERT_FILE), &new_cert).unwrap();
        assert_eq!(Identity::load(dir.path()).unwrap().agent_id, new_id);
        assert_eq!(
            fs::read_to_string(dir.path().join(KEY_FILE)).unwrap(),
            *new_key
        );
        assert!(!dir.path().join(NEXT_KEY_FILE).exists());

        // The same on a first enrollment, when there was no key at all.
        let first = tempfile::tempdir().unwrap();
        fs::write(first.path().join(NEXT_KEY_FILE), new_key.as_bytes()).unwrap();
        fs::write(first.path().join(CERT_FILE), &new_cert).unwrap();
        assert_eq!(Identity::load(first.path()).unwrap().agent_id, new_id);
    }

    #[test]
    fn missing_identity_says_enroll() {
        let dir = tempfile::tempdir().unwrap();
        let err = Identity::load(dir.path()).err().unwrap();
        assert!(err.to_string().contains("certkeep-agent enroll"), "{err}");
    }
}
