//! Revocation of one certificate version through the ACME account that ordered it, with an
//! RFC 5280 reason code. A revoked current version is re-issued unless the certificate is
//! retired.

use std::time::Duration;

use tracing::instrument;

use super::EngineError;
use super::accounts::connect;
use crate::acme::{self, AcmeError};
use crate::app::AppState;
use crate::domain::issuance;
use crate::model::{CertificateVersion, OrderEventKind, OrderReason, VersionId};
use crate::now;
use certkeep_api_types::notification::NotificationEvent;

/// Revokes `version` at its CA with RFC 5280 `reason` (0-6, 8-10), marks it revoked, and queues
/// re-issuance when it was the certificate's current version (unless the certificate is retired).
#[instrument(skip_all, fields(version.id = %version, reason))]
pub async fn revoke_version(
    state: &AppState,
    version: VersionId,
    reason: u8,
) -> Result<(), EngineError> {
    acme::check_revocation_reason(reason)?;
    let db = &state.db;
    let stored = db.version(version).await?;
    let account_id = match stored.order_id {
        Some(order) => db.order(order).await?.account_id,
        None => db.certificate(stored.certificate_id).await?.account_id,
    };
    let account = db.account(account_id).await?;
    let leaf = issuance::parse_chain(&stored.chain_pem).map_err(AcmeError::Internal)?;
    let issuer = connect(state, &account).await?;
    issuer.revoke(&leaf.leaf_der, reason).await?;
    record_revoked(state, &stored, reason, "revoked through certkeep").await?;
    Ok(())
}

/// Records that `stored` is revoked with RFC 5280 `reason` (`how` says who noticed, e.g.
/// `detected: outside, CRL <url>`), and when it is the certificate's current version queues
/// its re-issuance (a new key: re-issues never reuse one) with a `revoked` order event.
pub(super) async fn record_revoked(
    state: &AppState,
    stored: &CertificateVersion,
    reason: u8,
    how: &str,
) -> Result<(), crate::db::Error> {
    let db = &state.db;
    let t = now();
    let version = stored.id;
    let cert = db.certificate(stored.certificate_id).await?;
    let event = crate::notify::events::certificate(
        NotificationEvent::CertificateRevoked,
        &cert,
        &stored.dns_names,
        Some(&format!(
            "serial {}, reason code {reason}, {how}",
            stored.serial
        )),
        Some(format!("revoked:{version}")),
        t,
    );
    db.set_version_revoked(version, reason, &event, t).await?;
    tracing::info!(certificate.serial = %stored.serial, reason, how, "certificate version revoked");
    if cert.current_version_id == Some(version) && db.mark_current_revoked(cert.id, t).await? {
        let deadline = t + Duration::from_secs(state.config.engine.order_deadline_secs);
        let order = db
            .enqueue_order(cert.id, cert.account_id, OrderReason::Reissue, deadline, t)
            .await?;
        db.add_order_event(
            order.id,
            OrderEventKind::Revoked,
            &format!(
                "version {version} (serial {}) revoked with reason {reason} ({how}); re-issuing",
                stored.serial
            ),
            t,
        )
        .await?;
        state.wake.notify_one();
    }
    Ok(())
}
