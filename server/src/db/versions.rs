//! `certificate_versions`: issued certificates, chain as downloaded, key sealed with age.

use std::collections::HashMap;

use time::OffsetDateTime;
use uuid::Uuid;

use super::BeginWrite as _;
use super::notify::{NewEvent, Outbox as _};
use super::{Db, Result, from_json, on_pool, to_json};
use crate::model::{CertificateId, CertificateVersion, OrderId, VersionId};
use crate::secrets::{Binding, SecretBytes, Secrets};

/// A freshly issued version to store.
pub struct NewVersion<'a> {
    pub id: VersionId,
    pub certificate_id: CertificateId,
    pub order_id: Option<OrderId>,
    pub chain_pem: &'a str,
    pub key_pkcs8_der: &'a [u8],
    pub serial: &'a str,
    pub thumbprint: &'a str,
    pub dns_names: &'a [String],
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct VersionRow {
    id: Uuid,
    certificate_id: Uuid,
    order_id: Option<Uuid>,
    chain_pem: String,
    serial: String,
    thumbprint: String,
    dns_names: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    revoked_at: Option<OffsetDateTime>,
    revocation_reason: Option<i32>,
    created_at: OffsetDateTime,
}

impl VersionRow {
    fn into_model(self) -> Result<CertificateVersion> {
        Ok(CertificateVersion {
            id: VersionId(self.id),
            certificate_id: CertificateId(self.certificate_id),
            order_id: self.order_id.map(OrderId),
            dns_names: from_json("dns_names", &self.dns_names)?,
            chain_pem: self.chain_pem,
            serial: self.serial,
            thumbprint: self.thumbprint,
            not_before: self.not_before,
            not_after: self.not_after,
            revoked_at: self.revoked_at,
            revocation_reason: self.revocation_reason,
            created_at: self.created_at,
        })
    }
}

/// `SELECT <every model column> FROM certificate_versions <tail>`.
macro_rules! select_versions {
    ($tail:literal) => {
        concat!(
            "SELECT id, certificate_id, order_id, chain_pem, serial, thumbprint, dns_names, not_before, not_after, revoked_at, revocation_reason, created_at FROM certificate_versions ",
            $tail
        )
    };
}

/// Inserts one version; see [`insert_version!`].
pub(super) const INSERT_VERSION: &str = "INSERT INTO certificate_versions (id, certificate_id, order_id, chain_pem, key_enc, serial, thumbprint, dns_names, not_before, not_after, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// Runs [`INSERT_VERSION`] for the [`NewVersion`] `$new` (its key already sealed as `$key`) on
/// `$exec`, a transaction of either backend: here, in `orders::complete_order` and in
/// `lifecycle::import_certificate`.
macro_rules! insert_version {
    ($exec:expr, $new:expr, $key:expr, $now:expr) => {
        sqlx::query($crate::db::versions::INSERT_VERSION)
            .bind($new.id.0)
            .bind($new.certificate_id.0)
            .bind($new.order_id.map(|o| o.0))
            .bind($new.chain_pem)
            .bind($key)
            .bind($new.serial)
            .bind($new.thumbprint)
            .bind($crate::db::to_json(&$new.dns_names))
            .bind($new.not_before)
            .bind($new.not_after)
            .bind($now)
            .execute($exec)
            .await
    };
}
pub(super) use insert_version;

/// Where a version's private key is sealed.
pub(crate) fn key_binding(id: VersionId) -> Binding {
    Binding::new("certificate_versions", "key_enc", id.0)
}

impl Db {
    /// Stores a version and makes it the certificate's current one, in one transaction.
    pub async fn insert_version(
        &self,
        secrets: &Secrets,
        new: &NewVersion<'_>,
        now: OffsetDateTime,
    ) -> Result<CertificateVersion> {
        const CURRENT: &str = "UPDATE certificates SET current_version_id = $2, current_not_after = $4, updated_at = $3 WHERE id = $1";
        let key = secrets.seal(key_binding(new.id), new.key_pkcs8_der)?;
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            insert_version!(&mut *tx, new, key, now)?;
            sqlx::query(CURRENT).bind(new.certificate_id.0).bind(new.id.0).bind(now).bind(new.not_after).execute(&mut *tx).await?;
            tx.commit().await
        })?;
        self.agent_changed(super::agent_changes::AgentChange::Manifests);
        self.version(new.id).await
    }

    /// One version by id.
    pub async fn version(&self, id: VersionId) -> Result<CertificateVersion> {
        const Q: &str = select_versions!("WHERE id = $1");
        let row: VersionRow = on_pool!(self, p => sqlx::query_as(Q).bind(id.0).fetch_one(p).await)?;
        row.into_model()
    }

    /// The current version of each of `certificates` that has one, by certificate: one query
    /// however many ids (a page of the certificate list loads its versions with it). Ids with
    /// no current version, and unknown ids, are absent from the map.
    pub async fn current_versions(
        &self,
        certificates: &[CertificateId],
    ) -> Result<HashMap<CertificateId, CertificateVersion>> {
        // The ids travel as one JSON array of hex UUIDs: Postgres casts them to `uuid`, SQLite
        // (which stores ids as 16-byte blobs) decodes them with `unhex`.
        const PG: &str = select_versions!(
            "WHERE id IN (SELECT c.current_version_id FROM certificates c WHERE c.id IN (SELECT j.value::uuid FROM json_array_elements_text($1::json) j))"
        );
        const SQLITE: &str = select_versions!(
            "WHERE id IN (SELECT c.current_version_id FROM certificates c WHERE c.id IN (SELECT unhex(j.value) FROM json_each($1) j))"
        );
        if certificates.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<String> = certificates
            .iter()
            .map(|c| c.0.simple().to_string())
            .collect();
        let ids = to_json(&ids);
        let sql = match self.pool {
            super::Pool::Pg(_) => PG,
            super::Pool::Sqlite(_) => SQLITE,
        };
        let rows: Vec<VersionRow> =
            on_pool!(self, p => sqlx::query_as(sql).bind(&ids).fetch_all(p).await)?;
        rows.into_iter()
            .map(|r| r.into_model().map(|v| (v.certificate_id, v)))
            .collect()
    }

    /// Every version of a certificate, newest first.
    pub async fn versions(&self, certificate: CertificateId) -> Result<Vec<CertificateVersion>> {
        const Q: &str = select_versions!("WHERE certificate_id = $1 ORDER BY created_at DESC");
        let rows: Vec<VersionRow> =
            on_pool!(self, p => sqlx::query_as(Q).bind(certificate.0).fetch_all(p).await)?;
        rows.into_iter().map(VersionRow::into_model).collect()
    }

    /// Marks a version revoked with its RFC 5280 reason code; `event` (`certificate.revoked`)
    /// enters the outbox in the same transaction.
    pub async fn set_version_revoked(
        &self,
        id: VersionId,
        reason: u8,
        event: &NewEvent,
        now: OffsetDateTime,
    ) -> Result<()> {
        const Q: &str =
            "UPDATE certificate_versions SET revoked_at = $2, revocation_reason = $3 WHERE id = $1";
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let n = sqlx::query(Q).bind(id.0).bind(now).bind(i32::from(reason)).execute(&mut *tx).await?.rows_affected();
            if n == 0 {
                return Err(super::Error::NotFound);
            }
            tx.enqueue_event(event).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// A certificate whose current version was revoked: state `revoked` and due for
    /// re-issuance now, unless retired. Returns whether it is to be re-issued.
    pub async fn mark_current_revoked(
        &self,
        certificate: CertificateId,
        now: OffsetDateTime,
    ) -> Result<bool> {
        const Q: &str = "UPDATE certificates SET state = 'revoked', renew_after = $2, updated_at = $2 WHERE id = $1 AND state <> 'retired'";
        let n = on_pool!(self, p => sqlx::query(Q).bind(certificate.0).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// The PKCS#8 private key of a version. Callers audit every release.
    pub async fn version_key(&self, secrets: &Secrets, id: VersionId) -> Result<SecretBytes> {
        const Q: &str = "SELECT key_enc FROM certificate_versions WHERE id = $1";
        let ct: Vec<u8> = on_pool!(self, p => sqlx::query_scalar(Q).bind(id.0).fetch_one(p).await)?;
        Ok(secrets.open(key_binding(id), &ct)?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use certkeep_api_types::pfx::testing::{KeyKind, TestCa};

    use super::*;
    use crate::testkit::{TestDb, store_test_version};

    /// The batched lookup returns exactly what one `version()` per certificate returns.
    async fn current_versions_match_the_per_row_lookup(t: TestDb) {
        let secrets = Secrets::generate();
        let ca = TestCa::new();
        let mut ids = Vec::new();
        for (i, issued) in [2, 0, 1, 1].into_iter().enumerate() {
            let name = format!("c{i}");
            let (_, cert) = t
                .account_and_certificate(&name, &format!("{name}.example.com"))
                .await;
            for _ in 0..issued {
                let leaf = ca.leaf(&[&format!("{name}.example.com")], KeyKind::Ecdsa);
                store_test_version(&t.db, &secrets, cert.id, &leaf, time::Duration::days(30))
                    .await
                    .unwrap();
            }
            ids.push(cert.id);
        }
        // An unknown id is simply absent.
        ids.push(CertificateId(Uuid::new_v4()));
        // `CertificateVersion` has no `PartialEq`: compare every field through `Debug`.
        let batched: BTreeMap<CertificateId, String> =
            t.db.current_versions(&ids)
                .await
                .unwrap()
                .into_iter()
                .map(|(id, v)| (id, format!("{v:?}")))
                .collect();
        let mut expected = BTreeMap::new();
        for id in &ids {
            let Ok(cert) = t.db.certificate(*id).await else {
                continue;
            };
            if let Some(v) = cert.current_version_id {
                expected.insert(*id, format!("{:?}", t.db.version(v).await.unwrap()));
            }
        }
        assert_eq!(expected.len(), 3, "{}", t.backend);
        assert_eq!(batched, expected, "{}", t.backend);
        assert!(t.db.current_versions(&[]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn current_versions_match_the_per_row_lookup_sqlite() {
        current_versions_match_the_per_row_lookup(TestDb::sqlite().await).await;
    }

    #[tokio::test]
    async fn current_versions_match_the_per_row_lookup_postgres() {
        if let Some(t) = TestDb::postgres().await {
            current_versions_match_the_per_row_lookup(t).await;
        }
    }
}
