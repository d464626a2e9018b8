//! The internal CA: signs agent client certificates and, unless one is configured, the server's
//! own TLS certificates. Its key lives sealed in `server_keys`; knows nothing about HTTP.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::PrivatePkcs8KeyDer;
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::db::Db;
use crate::model::AgentId;
use crate::secrets::Secrets;

const CA_KEY_NAME: &str = "internal-ca";

/// Errors of the internal CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the certificate signing request is not valid: {0}")]
    BadCsr(String),
    #[error(transparent)]
    Db(#[from] crate::db::Error),
}

/// A certificate with its private key, both PEM.
pub struct IssuedPair {
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
}

/// An agent client certificate.
pub struct AgentCertificate {
    pub cert_pem: String,
    pub serial: String,
    pub not_after: OffsetDateTime,
}

/// The internal CA. Cheap to clone.
#[derive(Clone)]
pub struct InternalCa {
    inner: std::sync::Arc<CaInner>,
}

struct CaInner {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// URI SAN that binds an agent certificate to its agent id.
pub fn agent_uri(id: AgentId) -> String {
    format!("urn:certkeep:agent:{id}")
}

/// A random positive 16-byte serial.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

impl InternalCa {
    /// Checks that `secrets` opens the stored CA key (it does not after `rekey` moved the
    /// database to another identity).
    pub async fn check_identity(db: &Db, secrets: &Secrets) -> Result<(), CaError> {
        db.server_key(secrets, CA_KEY_NAME).await?;
        Ok(())
    }

    /// Loads the CA from the database, creating it on first start.
    pub async fn load_or_create(
        db: &Db,
        secrets: &Secrets,
        now: OffsetDateTime,
    ) -> Result<Self, CaError> {
        if let Some(key) = db.server_key(secrets, CA_KEY_NAME).await? {
            return Self::from_parts(key.cert_pem, &key.key_der);
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "certkeep internal CA");
        dn.push(DnType::OrganizationName, "certkeep");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        let key_der = Zeroizing::new(key.serialize_der());
        if !db
            .insert_server_key(secrets, CA_KEY_NAME, &cert.pem(), &key_der, now)
            .await?
        {
            // Another server created it first: use theirs.
            let stored = db
                .server_key(secrets, CA_KEY_NAME)
                .await?
                .ok_or(crate::db::Error::NotFound)?;
            return Self::from_parts(stored.cert_pem, &stored.key_der);
        }
        Self::from_parts(cert.pem(), &key_der)
    }

    fn from_parts(cert_pem: String, key_der: &[u8]) -> Result<Self, CaError> {
        let key = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(key_der.to_vec()),
            &rcgen::PKCS_ECDSA_P256_SHA256,
        )?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        Ok(Self {
            inner: std::sync::Arc::new(CaInner { cert_pem, issuer }),
        })
    }

    /// The CA certificate (what agents and API clients trust).
    pub fn cert_pem(&self) -> &str {
        &self.inner.cert_pem
    }

    /// Issues a TLS server certificate for `names` (DNS names or IP addresses), valid from an
    /// hour before `now` (clock skew) until `now + lifetime`.
    pub fn issue_server_cert(
        &self,
        names: &[String],
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Result<IssuedPair, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().map_or("certkeep", String::as_str),
        );
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - Duration::hours(1);
        params.not_after = now + lifetime;
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.inner.issuer)?;
        Ok(IssuedPair {
            cert_pem: format!("{}{}", cert.pem(), self.inner.cert_pem),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }

    /// Issues an agent client certificate. Only the CSR's public key is used: subject, SANs,
    /// extensions and validity come from here.
    pub fn issue_agent_cert(
        &self,
        agent: AgentId,
        csr_pem: &str,
        days: u64,
        now: OffsetDateTime,
    ) -> Result<AgentCertificate, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("certkeep agent {agent}"));
        params.subject_alt_names = vec![SanType::URI(agent_uri(agent).try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - Duration::minutes(5);
        let not_after = now + Duration::days(i64::try_from(days).unwrap_or(30));
        params.not_after = not_after;
        let serial = random_serial();
        let serial_hex = hex::encode(serial.to_bytes());
        params.serial_number = Some(serial);
        let cert = params.signed_by(&csr.public_key, &self.inner.issuer)?;
        Ok(AgentCertificate {
            cert_pem: cert.pem(),
            serial: serial_hex,
            not_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TestDb;

    #[tokio::test]
    async fn ca_is_created_once_and_reloaded() {
        let t = TestDb::sqlite().await;
        let secrets = Secrets::generate();
        let now = crate::now();
        let a = InternalCa::load_or_create(&t.db, &secrets, now)
            .await
            .unwrap();
        let b = InternalCa::load_or_create(&t.db, &secrets, now)
            .await
            .unwrap();
        assert_eq!(a.cert_pem(), b.cert_pem());
    }

    #[tokio::test]
    async fn agent_cert_ignores_csr_contents() {
        let t = TestDb::sqlite().await;
        let secrets = Secrets::generate();
        let now = crate::now();
        let ca = InternalCa::load_or_create(&t.db, &secrets, now)
            .await
            .unwrap();
        // A hostile CSR asking to be a CA for some DNS name.
        let key = KeyPair::generate().unwrap();
        let mut req = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        req.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr = req.serialize_request(&key).unwrap().pem().unwrap();
        let agent = AgentId::new();
        let issued = ca.issue_agent_cert(agent, &csr, 30, now).unwrap();
        let der = crate::tls::certs_from_pem("agent cert", &issued.cert_pem).unwrap()[0].clone();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(!cert.is_ca());
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, vec![format!("URI({})", agent_uri(agent))]);
        assert_eq!(hex::encode(cert.raw_serial()), issued.serial);
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
    }
}
