//! Certificate imports and edits; `domain_validations` (the ledger of when each account's
//! validation of a name lapses); `revocation_checks` (when each version's CRL is checked);
//! `ari_windows` (the CA's renewal information per version, and when to read it again).

use time::OffsetDateTime;
use uuid::Uuid;

use super::BeginWrite as _;
use super::certificates::{NewCertificate, insert_certificate};
use super::notify::{NewEvent, Outbox as _};
use super::versions::{NewVersion, insert_version, key_binding};
use super::{Db, Result, on_pool, to_json};
use crate::model::{AccountId, Certificate, CertificateId, KeyType, VersionId};
use crate::secrets::Secrets;

/// What the ledger knows about one account's validation of one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainValidation {
    pub account_id: AccountId,
    pub account_name: String,
    /// The authorization's identifier (A-label, `*.`-prefixed for a wildcard).
    pub name: String,
    /// When the CA last showed this validation as valid.
    pub last_valid_at: OffsetDateTime,
    /// When it lapses (the authorization's `expires`).
    pub expires_at: OffsetDateTime,
}

/// Filters of [`Db::domain_validations`].
#[derive(Debug, Clone, Default)]
pub struct DomainFilter {
    pub account: Option<AccountId>,
    /// Only validations lapsing at or before this time.
    pub lapsing_before: Option<OffsetDateTime>,
    pub limit: i64,
}

/// A current certificate version whose renewal information or CRL is due to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueVersion {
    pub certificate_id: CertificateId,
    pub version_id: VersionId,
}

impl From<(Uuid, Uuid)> for DueVersion {
    /// A `(certificate id, current version id)` row.
    fn from((c, v): (Uuid, Uuid)) -> Self {
        DueVersion {
            certificate_id: CertificateId(c),
            version_id: VersionId(v),
        }
    }
}

/// The CA's last answer for one version; `None` window: the directory has no `renewalInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AriPoll {
    pub window: Option<(OffsetDateTime, OffsetDateTime)>,
    pub polled_at: OffsetDateTime,
    pub next_poll_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct ValidationRow {
    account_id: Uuid,
    account_name: String,
    name: String,
    last_valid_at: OffsetDateTime,
    expires_at: OffsetDateTime,
}

impl From<ValidationRow> for DomainValidation {
    fn from(r: ValidationRow) -> Self {
        Self {
            account_id: AccountId(r.account_id),
            account_name: r.account_name,
            name: r.name,
            last_valid_at: r.last_valid_at,
            expires_at: r.expires_at,
        }
    }
}

/// `SELECT` of the ledger with the account's name; `$tail` filters and orders.
macro_rules! select_validations {
    ($tail:literal) => {
        concat!(
            "SELECT d.account_id, a.name AS account_name, d.name, d.last_valid_at, d.expires_at FROM domain_validations d JOIN acme_accounts a ON a.id = d.account_id ",
            $tail
        )
    };
}

impl Db {
    /// Records that `account`'s authorizations for `names` were valid at `seen_at`, each
    /// lapsing at its `expires`. A later lapse time clears the "lapsing" note, so a renewed
    /// validation is reported again when it next comes close to lapsing.
    pub async fn record_domain_validations(
        &self,
        account: AccountId,
        names: &[(String, OffsetDateTime)],
        seen_at: OffsetDateTime,
    ) -> Result<()> {
        const Q: &str = "INSERT INTO domain_validations (account_id, name, last_valid_at, expires_at) VALUES ($1, $2, $3, $4) ON CONFLICT (account_id, name) DO UPDATE SET last_valid_at = excluded.last_valid_at, expires_at = excluded.expires_at, lapse_noted_at = CASE WHEN excluded.expires_at > domain_validations.expires_at THEN NULL ELSE domain_validations.lapse_noted_at END";
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            for (name, expires) in names {
                sqlx::query(Q)
                    .bind(account.0)
                    .bind(name)
                    .bind(seen_at)
                    .bind(*expires)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// When `account`'s recorded validation of `name` lapses, if the ledger holds one.
    pub async fn domain_validation_expiry(
        &self,
        account: AccountId,
        name: &str,
    ) -> Result<Option<OffsetDateTime>> {
        const Q: &str =
            "SELECT expires_at FROM domain_validations WHERE account_id = $1 AND name = $2";
        Ok(
            on_pool!(self, p => sqlx::query_scalar(Q).bind(account.0).bind(name).fetch_optional(p).await)?,
        )
    }

    /// The ledger, soonest lapse first.
    pub async fn domain_validations(&self, f: &DomainFilter) -> Result<Vec<DomainValidation>> {
        const Q: &str = select_validations!(
            "WHERE ($1 IS NULL OR d.account_id = $1) AND ($2 IS NULL OR d.expires_at <= $2) ORDER BY d.expires_at, a.name, d.name LIMIT $3"
        );
        let rows: Vec<ValidationRow> = on_pool!(self, p => sqlx::query_as(Q)
            .bind(f.account.map(|a| a.0))
            .bind(f.lapsing_before)
            .bind(f.limit)
            .fetch_all(p)
            .await)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The validations lapsing at or before `before` (and not lapsed by `now`) that were not
    /// reported yet, marked reported at `now` and each one's `event` put in the outbox in the
    /// same transaction, so each coming lapse is reported once.
    pub async fn take_lapsing_validations(
        &self,
        before: OffsetDateTime,
        now: OffsetDateTime,
        limit: i64,
        event: impl Fn(&DomainValidation) -> NewEvent,
    ) -> Result<Vec<DomainValidation>> {
        const Q: &str = select_validations!(
            "WHERE d.lapse_noted_at IS NULL AND d.expires_at <= $1 AND d.expires_at > $2 ORDER BY d.expires_at LIMIT $3"
        );
        const NOTE: &str =
            "UPDATE domain_validations SET lapse_noted_at = $3 WHERE account_id = $1 AND name = $2";
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let rows: Vec<ValidationRow> = sqlx::query_as(Q)
                .bind(before)
                .bind(now)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
            let mut taken = Vec::with_capacity(rows.len());
            for r in rows {
                sqlx::query(NOTE).bind(r.account_id).bind(&r.name).bind(now).execute(&mut *tx).await?;
                let v = DomainValidation::from(r);
                tx.enqueue_event(&event(&v)).await?;
                taken.push(v);
            }
            tx.commit().await?;
            Ok(taken)
        })
    }

    /// Current versions of `valid` or `failing` certificates with no order in flight (and an
    /// account not deactivated) whose renewal information was never read or is due again.
    pub async fn ari_polls_due(&self, now: OffsetDateTime, limit: i64) -> Result<Vec<DueVersion>> {
        const Q: &str = "SELECT c.id, c.current_version_id FROM certificates c LEFT JOIN ari_windows w ON w.version_id = c.current_version_id WHERE c.state IN ('valid', 'failing') AND c.current_version_id IS NOT NULL AND (w.version_id IS NULL OR w.next_poll_at <= $1) AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.certificate_id = c.id AND o.state NOT IN ('done', 'failed')) AND NOT EXISTS (SELECT 1 FROM acme_accounts a WHERE a.id = c.account_id AND a.state = 'deactivated') ORDER BY w.next_poll_at IS NOT NULL, w.next_poll_at LIMIT $2";
        let rows: Vec<(Uuid, Uuid)> =
            on_pool!(self, p => sqlx::query_as(Q).bind(now).bind(limit).fetch_all(p).await)?;
        Ok(rows.into_iter().map(DueVersion::from).collect())
    }

    /// Current versions of `valid` or `failing` certificates with no order in flight whose CRL
    /// was never checked or is due again.
    pub async fn revocation_checks_due(
        &self,
        now: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<DueVersion>> {
        const Q: &str = "SELECT c.id, c.current_version_id FROM certificates c LEFT JOIN revocation_checks r ON r.version_id = c.current_version_id WHERE c.state IN ('valid', 'failing') AND c.current_version_id IS NOT NULL AND (r.version_id IS NULL OR r.next_check_at <= $1) AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.certificate_id = c.id AND o.state NOT IN ('done', 'failed')) ORDER BY r.next_check_at IS NOT NULL, r.next_check_at LIMIT $2";
        let rows: Vec<(Uuid, Uuid)> =
            on_pool!(self, p => sqlx::query_as(Q).bind(now).bind(limit).fetch_all(p).await)?;
        Ok(rows.into_iter().map(DueVersion::from).collect())
    }

    /// Records a CRL check of `version` and when the next one is due.
    pub async fn record_revocation_check(
        &self,
        version: VersionId,
        checked_at: OffsetDateTime,
        next_check_at: OffsetDateTime,
    ) -> Result<()> {
        const Q: &str = "INSERT INTO revocation_checks (version_id, checked_at, next_check_at) VALUES ($1, $2, $3) ON CONFLICT (version_id) DO UPDATE SET checked_at = excluded.checked_at, next_check_at = excluded.next_check_at";
        on_pool!(self, p => sqlx::query(Q).bind(version.0).bind(checked_at).bind(next_check_at).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// When `version`'s CRL was last checked, if ever.
    pub async fn revocation_checked_at(
        &self,
        version: VersionId,
    ) -> Result<Option<OffsetDateTime>> {
        const Q: &str = "SELECT checked_at FROM revocation_checks WHERE version_id = $1";
        Ok(on_pool!(self, p => sqlx::query_scalar(Q).bind(version.0).fetch_optional(p).await)?)
    }

    /// The last ARI answer recorded for `version`.
    pub async fn ari_poll(&self, version: VersionId) -> Result<Option<AriPoll>> {
        type Row = (
            Option<OffsetDateTime>,
            Option<OffsetDateTime>,
            OffsetDateTime,
            OffsetDateTime,
        );
        const Q: &str = "SELECT window_start, window_end, polled_at, next_poll_at FROM ari_windows WHERE version_id = $1";
        let row: Option<Row> =
            on_pool!(self, p => sqlx::query_as(Q).bind(version.0).fetch_optional(p).await)?;
        Ok(row.map(|(start, end, polled_at, next_poll_at)| AriPoll {
            window: start.zip(end),
            polled_at,
            next_poll_at,
        }))
    }

    /// Records an ARI answer for `version` and, when `renew_after` is given, moves the
    /// certificate's renewal time to it (only while `version` is still its current one).
    pub async fn record_ari_poll(
        &self,
        certificate: CertificateId,
        version: VersionId,
        poll: &AriPoll,
        renew_after: Option<OffsetDateTime>,
    ) -> Result<()> {
        const UPSERT: &str = "INSERT INTO ari_windows (version_id, window_start, window_end, polled_at, next_poll_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (version_id) DO UPDATE SET window_start = excluded.window_start, window_end = excluded.window_end, polled_at = excluded.polled_at, next_poll_at = excluded.next_poll_at";
        const RENEW: &str = "UPDATE certificates SET renew_after = $3, updated_at = $4 WHERE id = $1 AND current_version_id = $2";
        let (start, end) = poll.window.unzip();
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(UPSERT)
                .bind(version.0)
                .bind(start)
                .bind(end)
                .bind(poll.polled_at)
                .bind(poll.next_poll_at)
                .execute(&mut *tx)
                .await?;
            if let Some(at) = renew_after {
                sqlx::query(RENEW).bind(certificate.0).bind(version.0).bind(at).bind(poll.polled_at).execute(&mut *tx).await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }
}

impl Db {
    /// Stores an imported certificate: its definition (state `valid`), its version (key
    /// sealed) as the current one, and its renewal time, in one transaction. The certificate
    /// gets the id `version.certificate_id`.
    pub async fn import_certificate(
        &self,
        secrets: &Secrets,
        new: &NewCertificate<'_>,
        version: &NewVersion<'_>,
        renew_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Certificate> {
        const CURRENT: &str = "UPDATE certificates SET current_version_id = $2, current_not_after = $3, renew_after = $4 WHERE id = $1";
        let key = secrets.seal(key_binding(version.id), version.key_pkcs8_der)?;
        let id = version.certificate_id;
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            insert_certificate!(&mut *tx, "valid", id, new, now)?;
            insert_version!(&mut *tx, version, &key, now)?;
            sqlx::query(CURRENT).bind(id.0).bind(version.id.0).bind(version.not_after).bind(renew_after).execute(&mut *tx).await?;
            tx.commit().await
        })?;
        self.certificate(id).await
    }

    /// Changes a certificate's names, key type and key reuse (the current version is left
    /// alone: the next order issues the change).
    pub async fn edit_certificate(
        &self,
        id: CertificateId,
        dns_names: &[String],
        key_type: KeyType,
        reuse_key: bool,
        now: OffsetDateTime,
    ) -> Result<()> {
        const Q: &str = "UPDATE certificates SET dns_names = $2, key_type = $3, reuse_key = $4, updated_at = $5 WHERE id = $1";
        let n = on_pool!(self, p => sqlx::query(Q)
            .bind(id.0)
            .bind(to_json(&dns_names))
            .bind(key_type.as_str())
            .bind(reuse_key)
            .bind(now)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        if n == 0 {
            return Err(super::Error::NotFound);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use time::Duration;

    use super::*;
    use crate::testkit::TestDb;

    #[tokio::test]
    async fn the_ledger_keeps_the_latest_lapse_and_reports_each_lapse_once() {
        for t in TestDb::all().await {
            // Whole seconds: PostgreSQL keeps microseconds.
            let now = crate::now().replace_nanosecond(0).unwrap();
            let (acc, _) = t.account_and_certificate("www", "www.example.com").await;
            let soon = now + Duration::days(10);
            let later = now + Duration::days(200);
            t.db.record_domain_validations(
                acc.id,
                &[
                    ("www.example.com".into(), soon),
                    ("api.example.com".into(), later),
                ],
                now,
            )
            .await
            .unwrap();
            let all =
                t.db.domain_validations(&DomainFilter {
                    limit: 10,
                    ..DomainFilter::default()
                })
                .await
                .unwrap();
            assert_eq!(
                all.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
                ["www.example.com", "api.example.com"],
                "{}: soonest lapse first",
                t.backend
            );
            assert_eq!(all[0].account_name, "account-www");
            let lapsing = DomainFilter {
                lapsing_before: Some(now + Duration::days(30)),
                limit: 10,
                ..DomainFilter::default()
            };
            assert_eq!(t.db.domain_validations(&lapsing).await.unwrap().len(), 1);

            let before = now + Duration::days(30);
            let event = |v: &DomainValidation| {
                crate::notify::events::domain_validation_lapsing(
                    v.account_id.0,
                    &v.account_name,
                    &v.name,
                    v.expires_at,
                    now,
                )
            };
            let taken =
                t.db.take_lapsing_validations(before, now, 10, event)
                    .await
                    .unwrap();
            assert_eq!(taken.len(), 1, "{}", t.backend);
            assert_eq!(taken[0].expires_at, soon);
            assert!(
                !t.db.enqueue_event(&event(&taken[0])).await.unwrap(),
                "{}: the domain.validation_lapsing event went to the outbox with the mark",
                t.backend
            );
            assert!(
                t.db.take_lapsing_validations(before, now, 10, event)
                    .await
                    .unwrap()
                    .is_empty(),
                "{}: reported once",
                t.backend
            );
            // Re-validated: a later lapse replaces the old one and is reported again later.
            let renewed = now + Duration::days(20);
            t.db.record_domain_validations(acc.id, &[("www.example.com".into(), renewed)], now)
                .await
                .unwrap();
            let taken =
                t.db.take_lapsing_validations(before, now, 10, event)
                    .await
                    .unwrap();
            assert_eq!(taken.len(), 1, "{}", t.backend);
            assert_eq!(taken[0].expires_at, renewed);
        }
    }

    #[tokio::test]
    async fn ari_polls_are_due_for_new_versions_and_after_next_poll_at() {
        let secrets = Secrets::generate();
        for t in TestDb::all().await {
            // Whole seconds: PostgreSQL keeps microseconds.
            let now = crate::now().replace_nanosecond(0).unwrap();
            let (_, cert) = t.account_and_certificate("www", "www.example.com").await;
            assert!(t.db.ari_polls_due(now, 10).await.unwrap().is_empty());
            let leaf = certkeep_api_types::pfx::testing::TestCa::new().leaf(
                &["www.example.com"],
                certkeep_api_types::pfx::testing::KeyKind::Ecdsa,
            );
            // Stored as the current version of a valid certificate, as issuance leaves it.
            let version = crate::testkit::store_test_version(
                &t.db,
                &secrets,
                cert.id,
                &leaf,
                Duration::days(47),
            )
            .await
            .unwrap();
            t.db.set_certificate_state(cert.id, crate::model::CertificateState::Valid, None, now)
                .await
                .unwrap();
            let due = t.db.ari_polls_due(now, 10).await.unwrap();
            assert_eq!(
                due,
                [DueVersion {
                    certificate_id: cert.id,
                    version_id: version.id
                }],
                "{}",
                t.backend
            );
            let window = (now + Duration::days(30), now + Duration::days(32));
            let poll = AriPoll {
                window: Some(window),
                polled_at: now,
                next_poll_at: now + Duration::hours(6),
            };
            let at = now + Duration::days(31);
            t.db.record_ari_poll(cert.id, version.id, &poll, Some(at))
                .await
                .unwrap();
            assert!(t.db.ari_polls_due(now, 10).await.unwrap().is_empty());
            assert_eq!(
                t.db.ari_polls_due(now + Duration::hours(7), 10)
                    .await
                    .unwrap()
                    .len(),
                1
            );
            assert_eq!(t.db.ari_poll(version.id).await.unwrap(), Some(poll));
            assert_eq!(
                t.db.certificate(cert.id).await.unwrap().renew_after,
                Some(at)
            );
        }
    }
}
