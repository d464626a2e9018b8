//! Revocation done outside certkeep (in the CA's portal, by the CA), read from each current
//! certificate's CRL distribution point every `lifecycle.crl_check_interval_secs`. A CRL is
//! downloaded with a timeout and a size limit and kept in memory until its `nextUpdate`; it is
//! trusted only when its signature verifies against the leaf's issuer in the stored chain (a
//! CRL that does not is ignored with a warning). A listed serial is the one detection hook
//! [`revoked_outside`]: the version is marked revoked with the CRL's reason code and the
//! certificate re-issued at once under a new key, the order history saying `detected: outside`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

use super::Shared;
use crate::db::lifecycle::DueVersion;
use crate::domain::revocation::{CrlVerdict, check_crl, crl_urls};
use crate::model::CertificateVersion;
use crate::now;

/// Most certificates checked per scan.
const BATCH: i64 = 200;

/// A downloaded CRL and until when it is used.
type Cached = (Arc<Vec<u8>>, OffsetDateTime);

/// CRLs downloaded by this process, by URL, each kept until its `nextUpdate`.
#[derive(Default)]
pub(super) struct CrlCache {
    crls: Mutex<HashMap<String, Cached>>,
}

impl CrlCache {
    fn get(&self, url: &str, now: OffsetDateTime) -> Option<Arc<Vec<u8>>> {
        let crls = self
            .crls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        crls.get(url)
            .filter(|(_, until)| *until > now)
            .map(|(der, _)| der.clone())
    }

    fn put(&self, url: &str, der: Arc<Vec<u8>>, until: OffsetDateTime) {
        self.crls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(url.to_owned(), (der, until));
    }
}

/// Checks every current certificate whose CRL check is due.
pub(super) async fn check_due(shared: &Shared) -> Result<(), crate::db::Error> {
    let db = &shared.state.db;
    let every = Duration::from_secs(shared.state.config.lifecycle.crl_check_interval_secs);
    for due in db.revocation_checks_due(now(), BATCH).await? {
        check(shared, due).await?;
        let t = now();
        db.record_revocation_check(due.version_id, t, t + every)
            .await?;
    }
    Ok(())
}

/// Checks one version against the CRLs its leaf names; the first one that verifies decides.
async fn check(shared: &Shared, due: DueVersion) -> Result<(), crate::db::Error> {
    let version = shared.state.db.version(due.version_id).await?;
    let ders: Vec<Vec<u8>> = x509_parser::pem::Pem::iter_from_buffer(version.chain_pem.as_bytes())
        .filter_map(Result::ok)
        .map(|p| p.contents)
        .collect();
    let (Some(leaf), Some(issuer)) = (ders.first(), ders.get(1)) else {
        return Ok(());
    };
    for url in crl_urls(leaf) {
        let crl = match fetch(shared, &url).await {
            Ok(crl) => crl,
            Err(e) => {
                tracing::warn!(certificate.id = %due.certificate_id, crl.url = %url, error = %e, "cannot fetch the CRL");
                continue;
            }
        };
        match check_crl(&crl, issuer, leaf) {
            Ok(CrlVerdict {
                revoked,
                next_update,
            }) => {
                if let Some(until) = next_update {
                    shared.crls.put(&url, crl, until);
                }
                if let Some(reason) = revoked {
                    revoked_outside(shared, &version, reason, &url).await?;
                }
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(certificate.id = %due.certificate_id, crl.url = %url, error = %e, "CRL ignored: not trusted");
            }
        }
    }
    Ok(())
}

/// A revocation certkeep did not make: the version is marked revoked with the CRL's `reason`
/// and its certificate re-issued under a new key; the order history records `detected:
/// outside` (the hook of the `certificate.revoked` event).
async fn revoked_outside(
    shared: &Shared,
    version: &CertificateVersion,
    reason: u8,
    url: &str,
) -> Result<(), crate::db::Error> {
    tracing::warn!(certificate.id = %version.certificate_id, certificate.serial = %version.serial, reason, crl.url = %url, "the current certificate was revoked outside certkeep; re-issuing");
    super::revoke::record_revoked(
        &shared.state,
        version,
        reason,
        &format!("detected: outside, CRL {url}"),
    )
    .await
}

/// The CRL at `url`: from the cache while its `nextUpdate` has not passed, else downloaded
/// (timeout and size limit of `[lifecycle]`).
async fn fetch(shared: &Shared, url: &str) -> Result<Arc<Vec<u8>>, String> {
    if let Some(cached) = shared.crls.get(url, now()) {
        return Ok(cached);
    }
    let config = &shared.state.config.lifecycle;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(config.crl_fetch_timeout_secs))
        .build()
        .map_err(|e| e.to_string())?;
    let mut resp = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > config.crl_max_bytes {
            return Err(format!(
                "the CRL is larger than lifecycle.crl_max_bytes ({})",
                config.crl_max_bytes
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Arc::new(body))
}
