//! `certificates`: certificate definitions (names, key type, account, renewal policy, state).

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Db, Result, from_json, on_pool};
use crate::model::{
    AccountId, Certificate, CertificateId, CertificateState, NewAuditEvent, OrderId, OrderReason,
    RenewalPolicy, VersionId,
};

/// Filters and page position for listing certificates. `dns_name` is a normalised A-label.
#[derive(Debug, Clone, Default)]
pub struct CertificateFilter {
    pub state: Option<CertificateState>,
    pub account: Option<AccountId>,
    /// Only certificates whose current version ends at or before this time.
    pub expiring_before: Option<OffsetDateTime>,
    pub dns_name: Option<String>,
    /// Only certificates whose name or a DNS name contains this (lowercase) text.
    pub search: Option<String>,
    /// Start after this id (ids are time-ordered, so pages are stable).
    pub after: Option<CertificateId>,
    pub limit: i64,
}

/// What is needed to define a certificate.
pub struct NewCertificate<'a> {
    pub name: &'a str,
    pub dns_names: &'a [String],
    pub key_type: crate::model::KeyType,
    pub account_id: AccountId,
    pub policy: RenewalPolicy,
    pub created_by: Option<&'a str>,
}

#[derive(sqlx::FromRow)]
pub(super) struct CertificateRow {
    id: Uuid,
    name: String,
    dns_names: String,
    key_type: String,
    account_id: Uuid,
    renew_fraction: Option<f64>,
    renew_days: Option<i32>,
    reuse_key: bool,
    state: String,
    current_version_id: Option<Uuid>,
    renew_after: Option<OffsetDateTime>,
    consecutive_failures: i32,
    last_error: Option<String>,
    created_by: Option<String>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl CertificateRow {
    pub(super) fn into_model(self) -> Result<Certificate> {
        Ok(Certificate {
            id: CertificateId(self.id),
            dns_names: from_json("dns_names", &self.dns_names)?,
            key_type: self.key_type.parse().map_err(super::Error::Corrupt)?,
            account_id: AccountId(self.account_id),
            policy: RenewalPolicy {
                fraction: self.renew_fraction,
                days: self.renew_days,
            },
            reuse_key: self.reuse_key,
            state: self.state.parse().map_err(super::Error::Corrupt)?,
            current_version_id: self.current_version_id.map(VersionId),
            name: self.name,
            renew_after: self.renew_after,
            consecutive_failures: self.consecutive_failures,
            last_error: self.last_error,
            created_by: self.created_by,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// `SELECT <every model column> FROM certificates <tail>`.
macro_rules! select_certificates {
    ($tail:literal) => {
        concat!(
            "SELECT id, name, dns_names, key_type, account_id, renew_fraction, renew_days, reuse_key, state, current_version_id, renew_after, consecutive_failures, last_error, created_by, created_at, updated_at FROM certificates c ",
            $tail
        )
    };
}

/// Inserts the [`NewCertificate`] `$new` as `$id` in state `$state` (a literal) on `$exec`, a
/// pool or transaction of either backend: a new definition here, an import in
/// `lifecycle::import_certificate`.
macro_rules! insert_certificate {
    ($exec:expr, $state:literal, $id:expr, $new:expr, $now:expr) => {
        sqlx::query(concat!(
            "INSERT INTO certificates (id, name, dns_names, key_type, account_id, renew_fraction, renew_days, state, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, '",
            $state,
            "', $8, $9, $9)"
        ))
        .bind($id.0)
        .bind($new.name)
        .bind($crate::db::to_json(&$new.dns_names))
        .bind($new.key_type.as_str())
        .bind($new.account_id.0)
        .bind($new.policy.fraction)
        .bind($new.policy.days)
        .bind($new.created_by)
        .bind($now)
        .execute($exec)
        .await
    };
}
pub(super) use insert_certificate;

/// A new certificate definition with its first order, owned so that it can wait for the audit
/// chain's group commit (see [`Db::create_certificate`]).
#[derive(Debug)]
pub(super) struct Creation {
    pub(super) id: CertificateId,
    pub(super) name: String,
    pub(super) dns_names: Vec<String>,
    pub(super) key_type: crate::model::KeyType,
    pub(super) account_id: AccountId,
    pub(super) policy: RenewalPolicy,
    pub(super) created_by: Option<String>,
    pub(super) order: OrderId,
    pub(super) reason: OrderReason,
    pub(super) deadline: OffsetDateTime,
    pub(super) now: OffsetDateTime,
}

impl Creation {
    /// The borrowed form [`insert_certificate!`] binds.
    pub(super) fn definition(&self) -> NewCertificate<'_> {
        NewCertificate {
            name: &self.name,
            dns_names: &self.dns_names,
            key_type: self.key_type,
            account_id: self.account_id,
            policy: self.policy,
            created_by: self.created_by.as_deref(),
        }
    }

    /// The model of the row [`write_creation!`] stores, as reading it back would return it.
    fn certificate(&self) -> Certificate {
        Certificate {
            id: self.id,
            name: self.name.clone(),
            dns_names: self.dns_names.clone(),
            key_type: self.key_type,
            account_id: self.account_id,
            policy: self.policy,
            reuse_key: false,
            state: CertificateState::Pending,
            current_version_id: None,
            renew_after: None,
            consecutive_failures: 0,
            last_error: None,
            created_by: self.created_by.clone(),
            created_at: self.now,
            updated_at: self.now,
        }
    }
}

/// Writes a [`Creation`] on `$conn` (a connection of either backend, inside a transaction): the
/// certificate in state `pending`, its queued order and the order's `queued` event.
macro_rules! write_creation {
    ($conn:expr, $c:expr) => {{
        let c: &$crate::db::certificates::Creation = $c;
        let new = c.definition();
        $crate::db::certificates::insert_certificate!(&mut *$conn, "pending", c.id, new, c.now)?;
        sqlx::query($crate::db::orders::INSERT_QUEUED_ORDER)
            .bind(c.order.0)
            .bind(c.id.0)
            .bind(c.account_id.0)
            .bind(c.reason.as_str())
            .bind(c.now)
            .bind(c.deadline)
            .execute(&mut *$conn)
            .await?;
        sqlx::query($crate::db::orders::INSERT_ORDER_EVENT)
            .bind(uuid::Uuid::now_v7())
            .bind(c.order.0)
            .bind(c.now)
            .bind($crate::model::OrderEventKind::Queued.as_str())
            .bind(c.reason.as_str())
            .execute(&mut *$conn)
            .await?;
    }};
}
pub(super) use write_creation;

impl Db {
    /// Defines a certificate in state `pending` with its first order queued (`reason`, ending at
    /// `deadline`) and the audit event `audit` builds from the new certificate's and order's ids:
    /// all three in one transaction, which concurrent creates and audit appends share (the audit
    /// chain's group commit). Returns the certificate as stored and the order's id.
    pub async fn create_certificate(
        &self,
        new: &NewCertificate<'_>,
        reason: OrderReason,
        deadline: OffsetDateTime,
        audit: impl FnOnce(CertificateId, OrderId) -> NewAuditEvent,
        now: OffsetDateTime,
    ) -> Result<(Certificate, OrderId)> {
        let creation = Creation {
            id: CertificateId::new(),
            name: new.name.to_owned(),
            dns_names: new.dns_names.to_vec(),
            key_type: new.key_type,
            account_id: new.account_id,
            policy: new.policy,
            created_by: new.created_by.map(str::to_owned),
            order: OrderId::new(),
            reason,
            deadline,
            now: super::audit::micros(now),
        };
        let event = audit(creation.id, creation.order);
        let (certificate, order) = (creation.certificate(), creation.order);
        self.commit_audited(event, Some(creation), now).await?;
        Ok((certificate, order))
    }

    /// Stores a new certificate definition in state `pending`.
    pub async fn insert_certificate(
        &self,
        new: &NewCertificate<'_>,
        now: OffsetDateTime,
    ) -> Result<Certificate> {
        let id = CertificateId::new();
        on_pool!(self, p => insert_certificate!(p, "pending", id, new, now).map(|r| r.rows_affected()))?;
        self.certificate(id).await
    }

    /// One certificate by id.
    pub async fn certificate(&self, id: CertificateId) -> Result<Certificate> {
        const Q: &str = select_certificates!("WHERE id = $1");
        let row: CertificateRow =
            on_pool!(self, p => sqlx::query_as(Q).bind(id.0).fetch_one(p).await)?;
        row.into_model()
    }

    /// One certificate by its unique name.
    pub async fn certificate_by_name(&self, name: &str) -> Result<Certificate> {
        const Q: &str = select_certificates!("WHERE name = $1");
        let row: CertificateRow =
            on_pool!(self, p => sqlx::query_as(Q).bind(name).fetch_one(p).await)?;
        row.into_model()
    }

    /// One page of certificates matching `f`: in id (creation) order, or soonest expiry first
    /// (then id) when `expiring_before` is given, which the `certificates_expiry` index serves
    /// as a range scan. `after` is the last certificate of the previous page in either order.
    pub async fn list_certificates(&self, f: &CertificateFilter) -> Result<Vec<Certificate>> {
        // Both take the same parameters, numbered in order of first use (SQLite's rule).
        const BY_ID: &str = select_certificates!(
            "WHERE ($1 IS NULL OR c.state = $1) AND ($2 IS NULL OR c.account_id = $2) AND ($3 IS NULL OR c.dns_names LIKE $3) AND ($4 IS NULL OR c.id > $4) AND ($5 IS NULL OR c.current_not_after <= $5) AND ($6 IS NULL OR LOWER(c.name) LIKE $6 ESCAPE '\\' OR c.dns_names LIKE $6 ESCAPE '\\') ORDER BY c.id LIMIT $7"
        );
        const BY_EXPIRY: &str = select_certificates!(
            "WHERE ($1 IS NULL OR c.state = $1) AND ($2 IS NULL OR c.account_id = $2) AND ($3 IS NULL OR c.dns_names LIKE $3) AND ($4 IS NULL OR (c.current_not_after, c.id) > (SELECT x.current_not_after, x.id FROM certificates x WHERE x.id = $4)) AND c.current_not_after <= $5 AND ($6 IS NULL OR LOWER(c.name) LIKE $6 ESCAPE '\\' OR c.dns_names LIKE $6 ESCAPE '\\') ORDER BY c.current_not_after, c.id LIMIT $7"
        );
        // Names are stored as a JSON array of normalised names, which never contain `%`, `_` or `"`.
        let name_pattern = f.dns_name.as_ref().map(|n| format!("%\"{n}\"%"));
        // Free text: its own `%`, `_` and `\` match literally.
        let search_pattern = f.search.as_ref().map(|t| {
            let escaped = t
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        let sql = if f.expiring_before.is_some() {
            BY_EXPIRY
        } else {
            BY_ID
        };
        let rows: Vec<CertificateRow> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(f.state.map(CertificateState::as_str))
            .bind(f.account.map(|a| a.0))
            .bind(&name_pattern)
            .bind(f.after.map(|a| a.0))
            .bind(f.expiring_before)
            .bind(&search_pattern)
            .bind(f.limit)
            .fetch_all(p)
            .await)?;
        rows.into_iter().map(CertificateRow::into_model).collect()
    }

    /// Sets the state (and last error) of a certificate.
    pub async fn set_certificate_state(
        &self,
        id: CertificateId,
        state: CertificateState,
        error: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<()> {
        const Q: &str =
            "UPDATE certificates SET state = $2, last_error = $3, updated_at = $4 WHERE id = $1";
        let done = on_pool!(self, p => sqlx::query(Q).bind(id.0).bind(state.as_str()).bind(error).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        if done == 0 {
            return Err(super::Error::NotFound);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::audit::AuditFilter;
    use crate::model::KeyType;
    use crate::testkit::TestDb;

    fn audit_event(id: CertificateId, order: OrderId) -> NewAuditEvent {
        NewAuditEvent {
            actor: "token:test".into(),
            action: "certificate.create".into(),
            subject: format!("certificate:{id}"),
            source: None,
            outcome: "success".into(),
            detail: format!("order={order}"),
        }
    }

    /// Creates certificate `name` under `account` with `dns_name`.
    async fn create(
        db: &Db,
        account: AccountId,
        name: &str,
        dns_name: &str,
    ) -> Result<(Certificate, OrderId)> {
        let now = crate::now();
        db.create_certificate(
            &NewCertificate {
                name,
                dns_names: &[dns_name.to_owned()],
                key_type: KeyType::EcdsaP256,
                account_id: account,
                policy: RenewalPolicy::default(),
                created_by: Some("token:test"),
            },
            OrderReason::New,
            now + time::Duration::days(7),
            audit_event,
            now,
        )
        .await
    }

    /// 200 creates at once, a quarter of them with a name already taken: every accepted one has
    /// its certificate (as answered), its queued order and its audit event; every refused one
    /// left nothing; the chain holds.
    #[tokio::test]
    async fn concurrent_creates_commit_certificate_order_and_audit_together() {
        for t in TestDb::all().await {
            let (account, _) = t.account_and_certificate("seed", "seed.example.com").await;
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..200 {
                let db = t.db.clone();
                tasks.spawn(async move {
                    let name = format!("c{}", i % 150);
                    create(&db, account.id, &name, &format!("{name}.example.com")).await
                });
            }
            let (mut accepted, mut conflicts) = (Vec::new(), 0);
            while let Some(done) = tasks.join_next().await {
                match done.unwrap() {
                    Ok(created) => accepted.push(created),
                    Err(crate::db::Error::Conflict(_)) => conflicts += 1,
                    Err(e) => panic!("{}: a create failed: {e}", t.backend),
                }
            }
            assert_eq!((accepted.len(), conflicts), (150, 50), "{}", t.backend);
            let audit =
                t.db.list_audit(&AuditFilter {
                    limit: 1000,
                    ..AuditFilter::default()
                })
                .await
                .unwrap();
            assert_eq!(audit.len(), 150, "{}", t.backend);
            for (cert, order) in &accepted {
                assert_eq!(
                    format!("{:?}", t.db.certificate(cert.id).await.unwrap()),
                    format!("{cert:?}"),
                    "{}: the answer is the stored row",
                    t.backend
                );
                let orders = t.db.orders_for(cert.id).await.unwrap();
                assert_eq!(orders.len(), 1, "{}", t.backend);
                assert_eq!(orders[0].id, *order);
                assert_eq!(orders[0].state, crate::model::OrderState::Queued);
                let events = t.db.order_events(*order).await.unwrap();
                assert_eq!(events.len(), 1, "{}", t.backend);
                assert_eq!(events[0].kind, crate::model::OrderEventKind::Queued);
                let subject = format!("certificate:{}", cert.id);
                assert_eq!(
                    audit.iter().filter(|e| e.subject == subject).count(),
                    1,
                    "{}",
                    t.backend
                );
            }
            assert_eq!(
                t.db.verify_audit_chain().await.unwrap(),
                Ok(150),
                "{}",
                t.backend
            );
        }
    }

    /// The audit insert fails (a trigger refuses it): the certificate and its order written
    /// before it in the same transaction are gone too, and later creates go on.
    #[tokio::test]
    async fn a_failed_audit_insert_leaves_no_certificate_or_order() {
        for t in TestDb::all().await {
            let (account, _) = t.account_and_certificate("seed", "seed.example.com").await;
            if t.db.is_shared() {
                t.db.execute_raw("CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'injected'; END $$ LANGUAGE plpgsql").await.unwrap();
                t.db.execute_raw("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION refuse_audit()").await.unwrap();
            } else {
                t.db.execute_raw("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'injected'); END").await.unwrap();
            }
            let refused = create(&t.db, account.id, "lost", "lost.example.com").await;
            assert!(refused.is_err(), "{}", t.backend);
            assert!(
                matches!(
                    t.db.certificate_by_name("lost").await,
                    Err(crate::db::Error::NotFound)
                ),
                "{}: the certificate was left behind",
                t.backend
            );
            let orders: i64 = on_pool!(t.db, p => sqlx::query_scalar("SELECT COUNT(*) FROM orders").fetch_one(p).await).unwrap();
            assert_eq!(orders, 0, "{}: an order was left behind", t.backend);
            let drop = if t.db.is_shared() {
                "DROP TRIGGER refuse_audit ON audit_events"
            } else {
                "DROP TRIGGER refuse_audit"
            };
            t.db.execute_raw(drop).await.unwrap();
            create(&t.db, account.id, "kept", "kept.example.com")
                .await
                .unwrap();
            assert_eq!(
                t.db.verify_audit_chain().await.unwrap(),
                Ok(1),
                "{}",
                t.backend
            );
        }
    }
}
