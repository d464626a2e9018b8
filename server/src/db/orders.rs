//! `orders` and `order_events`: orders are durable jobs; at most one is in flight per
//! certificate (enforced by a partial unique index). Jobs are claimed with a row lease
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite has one process), and every write of a job
//! in progress is fenced by the lease owner, so a process that lost its lease writes nothing.
//! Completing or failing a job updates its certificate in the same transaction.

use time::OffsetDateTime;
use uuid::Uuid;

use super::BeginWrite as _;
use super::notify::{NewEvent, Outbox as _};
use super::versions::{NewVersion, insert_version, key_binding};
use super::{Db, Error, Result, on_pool};
use crate::model::{
    AccountId, CertificateId, CertificateState, Order, OrderEvent, OrderEventKind, OrderId,
    OrderReason, OrderState,
};
use crate::secrets::{Binding, SecretBytes, Secrets};

/// Where an order's private key is sealed.
fn order_key_binding(id: OrderId) -> Binding {
    Binding::new("orders", "key_enc", id.0)
}

/// A certificate whose renewal (or re-issuance) is due.
#[derive(Debug, Clone)]
pub struct DueRenewal {
    pub certificate_id: CertificateId,
    pub account_id: AccountId,
    pub state: CertificateState,
}

/// How a failed order leaves its certificate.
#[derive(Debug, Clone)]
pub struct OrderFailure<'a> {
    pub error: &'a str,
    pub certificate_state: CertificateState,
    /// When the scheduler tries again (renewals); `None` leaves it to an operator.
    pub retry_at: Option<OffsetDateTime>,
    /// The `certificate.renewal_failed` to raise with the failure, if one is due.
    pub event: Option<NewEvent>,
}

#[derive(sqlx::FromRow)]
pub(super) struct OrderRow {
    id: Uuid,
    certificate_id: Uuid,
    account_id: Uuid,
    reason: String,
    state: String,
    order_url: Option<String>,
    has_key: bool,
    csr_der: Option<Vec<u8>>,
    replaces: Option<String>,
    attempts: i32,
    next_attempt_at: OffsetDateTime,
    deadline_at: OffsetDateTime,
    last_error: Option<String>,
    lease_owner: Option<String>,
    lease_expires_at: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    finished_at: Option<OffsetDateTime>,
}

impl OrderRow {
    pub(super) fn into_model(self) -> Result<Order> {
        Ok(Order {
            id: OrderId(self.id),
            certificate_id: CertificateId(self.certificate_id),
            account_id: AccountId(self.account_id),
            reason: self.reason.parse().map_err(Error::Corrupt)?,
            state: self.state.parse().map_err(Error::Corrupt)?,
            order_url: self.order_url,
            has_key: self.has_key,
            csr_der: self.csr_der,
            replaces: self.replaces,
            attempts: self.attempts,
            next_attempt_at: self.next_attempt_at,
            deadline_at: self.deadline_at,
            last_error: self.last_error,
            lease_owner: self.lease_owner,
            lease_expires_at: self.lease_expires_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
        })
    }
}

/// Every model column of `orders`, for `SELECT` and `RETURNING`.
macro_rules! order_columns {
    () => {
        "id, certificate_id, account_id, reason, state, order_url, (key_enc IS NOT NULL) AS has_key, csr_der, replaces, attempts, next_attempt_at, deadline_at, last_error, lease_owner, lease_expires_at, created_at, updated_at, finished_at"
    };
}

/// `SELECT <every model column> FROM orders <tail>`.
macro_rules! select_orders {
    ($tail:literal) => {
        concat!("SELECT ", order_columns!(), " FROM orders ", $tail)
    };
}

/// Inserts a queued order: `$1` id, `$2` certificate, `$3` account, `$4` reason, `$5` now,
/// `$6` deadline.
pub(super) const INSERT_QUEUED_ORDER: &str = "INSERT INTO orders (id, certificate_id, account_id, reason, state, next_attempt_at, deadline_at, created_at, updated_at) VALUES ($1, $2, $3, $4, 'queued', $5, $6, $5, $5)";

/// Inserts a step of an order's history: `$1` id, `$2` order, `$3` at, `$4` kind, `$5` detail.
pub(super) const INSERT_ORDER_EVENT: &str =
    "INSERT INTO order_events (id, order_id, at, kind, detail) VALUES ($1, $2, $3, $4, $5)";

impl Db {
    /// Queues an order for `certificate` unless one is already in flight, in which case that
    /// one is returned: a certificate never has two orders at once.
    pub async fn enqueue_order(
        &self,
        certificate: CertificateId,
        account: AccountId,
        reason: OrderReason,
        deadline: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Order> {
        let id = OrderId::new();
        let inserted = on_pool!(self, p => sqlx::query(INSERT_QUEUED_ORDER)
            .bind(id.0)
            .bind(certificate.0)
            .bind(account.0)
            .bind(reason.as_str())
            .bind(now)
            .bind(deadline)
            .execute(p)
            .await
            .map(|r| r.rows_affected()));
        match inserted.map_err(Error::from) {
            Ok(_) => {
                self.add_order_event(id, OrderEventKind::Queued, reason.as_str(), now)
                    .await?;
                self.order(id).await
            }
            Err(Error::Conflict(_)) => self.active_order(certificate).await?.ok_or(Error::NotFound),
            Err(e) => Err(e),
        }
    }

    /// One order by id.
    pub async fn order(&self, id: OrderId) -> Result<Order> {
        const Q: &str = select_orders!("WHERE id = $1");
        let row: OrderRow = on_pool!(self, p => sqlx::query_as(Q).bind(id.0).fetch_one(p).await)?;
        row.into_model()
    }

    /// The order in flight for a certificate, if any.
    pub async fn active_order(&self, certificate: CertificateId) -> Result<Option<Order>> {
        const Q: &str =
            select_orders!("WHERE certificate_id = $1 AND state NOT IN ('done', 'failed')");
        let row: Option<OrderRow> =
            on_pool!(self, p => sqlx::query_as(Q).bind(certificate.0).fetch_optional(p).await)?;
        row.map(OrderRow::into_model).transpose()
    }

    /// Every order of a certificate, newest first.
    pub async fn orders_for(&self, certificate: CertificateId) -> Result<Vec<Order>> {
        const Q: &str = select_orders!("WHERE certificate_id = $1 ORDER BY created_at DESC");
        let rows: Vec<OrderRow> =
            on_pool!(self, p => sqlx::query_as(Q).bind(certificate.0).fetch_all(p).await)?;
        rows.into_iter().map(OrderRow::into_model).collect()
    }

    /// Appends a step to an order's history.
    pub async fn add_order_event(
        &self,
        order: OrderId,
        kind: OrderEventKind,
        detail: &str,
        now: OffsetDateTime,
    ) -> Result<()> {
        on_pool!(self, p => sqlx::query(INSERT_ORDER_EVENT).bind(Uuid::now_v7()).bind(order.0).bind(now).bind(kind.as_str()).bind(detail).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The history of an order, oldest first.
    pub async fn order_events(&self, order: OrderId) -> Result<Vec<OrderEvent>> {
        const Q: &str = "SELECT order_id, at, kind, detail FROM order_events WHERE order_id = $1 ORDER BY at, id";
        let rows: Vec<(Uuid, OffsetDateTime, String, String)> =
            on_pool!(self, p => sqlx::query_as(Q).bind(order.0).fetch_all(p).await)?;
        rows.into_iter()
            .map(|(o, at, kind, detail)| {
                Ok(OrderEvent {
                    order_id: OrderId(o),
                    at,
                    kind: kind.parse().map_err(Error::Corrupt)?,
                    detail,
                })
            })
            .collect()
    }
}

impl Db {
    /// Claims the most overdue runnable order for `owner` until `lease_until`: unfinished, due,
    /// and not leased (or its lease expired, so a crashed process's job is taken over).
    pub async fn claim_order(
        &self,
        owner: &str,
        lease_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<Order>> {
        const PG: &str = concat!(
            "UPDATE orders SET lease_owner = $1, lease_expires_at = $2 WHERE id = (SELECT id FROM orders WHERE state NOT IN ('done', 'failed') AND next_attempt_at <= $3 AND (lease_expires_at IS NULL OR lease_expires_at < $3) ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING ",
            order_columns!()
        );
        const SQLITE: &str = concat!(
            "UPDATE orders SET lease_owner = $1, lease_expires_at = $2 WHERE id = (SELECT id FROM orders WHERE state NOT IN ('done', 'failed') AND next_attempt_at <= $3 AND (lease_expires_at IS NULL OR lease_expires_at < $3) ORDER BY next_attempt_at LIMIT 1) RETURNING ",
            order_columns!()
        );
        let row: Option<OrderRow> = match &self.pool {
            super::Pool::Pg(p) => {
                sqlx::query_as(PG)
                    .bind(owner)
                    .bind(lease_until)
                    .bind(now)
                    .fetch_optional(p)
                    .await?
            }
            super::Pool::Sqlite(p) => {
                sqlx::query_as(SQLITE)
                    .bind(owner)
                    .bind(lease_until)
                    .bind(now)
                    .fetch_optional(p)
                    .await?
            }
        };
        row.map(OrderRow::into_model).transpose()
    }

    /// Extends `owner`'s lease; `false` when the lease was lost (or the job ended).
    pub async fn renew_lease(
        &self,
        id: OrderId,
        owner: &str,
        until: OffsetDateTime,
    ) -> Result<bool> {
        const Q: &str = "UPDATE orders SET lease_expires_at = $3 WHERE id = $1 AND lease_owner = $2 AND state NOT IN ('done', 'failed')";
        let n = on_pool!(self, p => sqlx::query(Q).bind(id.0).bind(owner).bind(until).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Releases every lease `owner` holds (clean shutdown), so others may resume at once.
    pub async fn release_leases(&self, owner: &str) -> Result<u64> {
        const Q: &str =
            "UPDATE orders SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = $1";
        Ok(
            on_pool!(self, p => sqlx::query(Q).bind(owner).execute(p).await.map(|r| r.rows_affected()))?,
        )
    }

    /// Releases every lease. Only for the holder of the SQLite database's lock file at start:
    /// no other process can hold a lease, so each one found was left by a process that died.
    pub async fn release_all_leases(&self) -> Result<u64> {
        const Q: &str = "UPDATE orders SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner IS NOT NULL";
        Ok(on_pool!(self, p => sqlx::query(Q).execute(p).await.map(|r| r.rows_affected()))?)
    }

    /// The earliest time an unfinished order may become claimable.
    pub async fn next_order_due(&self) -> Result<Option<OffsetDateTime>> {
        const Q: &str = "SELECT next_attempt_at, lease_expires_at FROM orders WHERE state NOT IN ('done', 'failed') ORDER BY next_attempt_at LIMIT 500";
        let rows: Vec<(OffsetDateTime, Option<OffsetDateTime>)> =
            on_pool!(self, p => sqlx::query_as(Q).fetch_all(p).await)?;
        Ok(rows
            .into_iter()
            .map(|(next, lease)| lease.map_or(next, |l| l.max(next)))
            .min())
    }

    /// Records the CA's order URL (and the ARI id it replaces) the moment the CA created it.
    pub async fn record_order_created(
        &self,
        id: OrderId,
        owner: &str,
        order_url: &str,
        replaces: Option<&str>,
        state: OrderState,
        now: OffsetDateTime,
    ) -> Result<bool> {
        const Q: &str = "UPDATE orders SET order_url = $3, replaces = $4, state = $5, updated_at = $6 WHERE id = $1 AND lease_owner = $2 AND order_url IS NULL";
        let n = on_pool!(self, p => sqlx::query(Q).bind(id.0).bind(owner).bind(order_url).bind(replaces).bind(state.as_str()).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Moves a leased order to `state`.
    pub async fn set_order_state(
        &self,
        id: OrderId,
        owner: &str,
        state: OrderState,
        now: OffsetDateTime,
    ) -> Result<bool> {
        const Q: &str =
            "UPDATE orders SET state = $3, updated_at = $4 WHERE id = $1 AND lease_owner = $2";
        let n = on_pool!(self, p => sqlx::query(Q).bind(id.0).bind(owner).bind(state.as_str()).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Stores the order's private key (sealed) and CSR before finalize. Never replaces a key
    /// already stored: an order is finalized with one key only.
    pub async fn store_order_key(
        &self,
        secrets: &Secrets,
        id: OrderId,
        owner: &str,
        key_pkcs8_der: &[u8],
        csr_der: &[u8],
        now: OffsetDateTime,
    ) -> Result<bool> {
        const Q: &str = "UPDATE orders SET key_enc = $3, csr_der = $4, updated_at = $5 WHERE id = $1 AND lease_owner = $2 AND key_enc IS NULL";
        let sealed = secrets.seal(order_key_binding(id), key_pkcs8_der)?;
        let n = on_pool!(self, p => sqlx::query(Q).bind(id.0).bind(owner).bind(sealed).bind(csr_der).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// The order's PKCS#8 private key.
    pub async fn order_key(&self, secrets: &Secrets, id: OrderId) -> Result<SecretBytes> {
        const Q: &str = "SELECT key_enc FROM orders WHERE id = $1 AND key_enc IS NOT NULL";
        let ct: Vec<u8> = on_pool!(self, p => sqlx::query_scalar(Q).bind(id.0).fetch_one(p).await)?;
        Ok(secrets.open(order_key_binding(id), &ct)?)
    }

    /// Releases a leased order to run again at `at` (a park or a retry), recording `error`.
    pub async fn reschedule_order(
        &self,
        id: OrderId,
        owner: &str,
        at: OffsetDateTime,
        error: Option<&str>,
        count_attempt: bool,
        now: OffsetDateTime,
    ) -> Result<bool> {
        const Q: &str = "UPDATE orders SET next_attempt_at = $3, last_error = $4, attempts = attempts + $5, lease_owner = NULL, lease_expires_at = NULL, updated_at = $6 WHERE id = $1 AND lease_owner = $2";
        let n = on_pool!(self, p => sqlx::query(Q).bind(id.0).bind(owner).bind(at).bind(error).bind(i32::from(count_attempt)).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Fails a leased order and updates its certificate, in one transaction. The order's key is
    /// deleted: a finished order never uses it again.
    pub async fn fail_order(
        &self,
        id: OrderId,
        owner: &str,
        certificate: CertificateId,
        failure: &OrderFailure<'_>,
        now: OffsetDateTime,
    ) -> Result<bool> {
        const ORDER: &str = "UPDATE orders SET state = 'failed', last_error = $3, key_enc = NULL, finished_at = $4, updated_at = $4, lease_owner = NULL, lease_expires_at = NULL WHERE id = $1 AND lease_owner = $2";
        const CERT: &str = "UPDATE certificates SET state = $2, last_error = $3, consecutive_failures = consecutive_failures + 1, renew_after = $4, updated_at = $5 WHERE id = $1 AND state <> 'retired'";
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let n = sqlx::query(ORDER).bind(id.0).bind(owner).bind(failure.error).bind(now).execute(&mut *tx).await?.rows_affected();
            if n != 1 {
                return Ok(false);
            }
            sqlx::query(CERT)
                .bind(certificate.0)
                .bind(failure.certificate_state.as_str())
                .bind(failure.error)
                .bind(failure.retry_at)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            if let Some(event) = &failure.event {
                tx.enqueue_event(event).await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Completes a leased order: stores the version (key sealed), makes it current, marks the
    /// certificate valid with its next renewal time, and ends the order, in one transaction.
    /// The order's own copy of the key is deleted: the version holds it now. `event`
    /// (`certificate.issued` or `renewed`) enters the outbox in the same transaction.
    pub async fn complete_order(
        &self,
        secrets: &Secrets,
        owner: &str,
        version: &NewVersion<'_>,
        event: &NewEvent,
        renew_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        const ORDER: &str = "UPDATE orders SET state = 'done', last_error = NULL, key_enc = NULL, finished_at = $3, updated_at = $3, lease_owner = NULL, lease_expires_at = NULL WHERE id = $1 AND lease_owner = $2";
        const CERT: &str = "UPDATE certificates SET current_version_id = $2, current_not_after = $5, state = CASE WHEN state = 'retired' THEN 'retired' ELSE 'valid' END, renew_after = $3, consecutive_failures = 0, last_error = NULL, updated_at = $4 WHERE id = $1";
        let order = version.order_id.ok_or_else(|| {
            Error::Corrupt("a completed order's version needs its order id".into())
        })?;
        let key = secrets.seal(key_binding(version.id), version.key_pkcs8_der)?;
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let n = sqlx::query(ORDER).bind(order.0).bind(owner).bind(now).execute(&mut *tx).await?.rows_affected();
            if n != 1 {
                return Ok(false);
            }
            insert_version!(&mut *tx, version, &key, now)?;
            sqlx::query(CERT).bind(version.certificate_id.0).bind(version.id.0).bind(renew_after).bind(now).bind(version.not_after).execute(&mut *tx).await?;
            tx.enqueue_event(event).await?;
            tx.commit().await?;
            Ok::<_, Error>(())
        })?;
        self.agent_changed(super::agent_changes::AgentChange::Manifests);
        Ok(true)
    }

    /// Certificates whose renewal time has come (valid, failing, or revoked and waiting for
    /// re-issuance), that have no order in flight and whose account is not deactivated, most
    /// overdue first.
    pub async fn renewals_due(&self, now: OffsetDateTime, limit: i64) -> Result<Vec<DueRenewal>> {
        const Q: &str = "SELECT c.id, c.account_id, c.state FROM certificates c WHERE c.state IN ('valid', 'failing', 'revoked') AND c.renew_after IS NOT NULL AND c.renew_after <= $1 AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.certificate_id = c.id AND o.state NOT IN ('done', 'failed')) AND NOT EXISTS (SELECT 1 FROM acme_accounts a WHERE a.id = c.account_id AND a.state = 'deactivated') ORDER BY c.renew_after LIMIT $2";
        let rows: Vec<(Uuid, Uuid, String)> =
            on_pool!(self, p => sqlx::query_as(Q).bind(now).bind(limit).fetch_all(p).await)?;
        rows.into_iter()
            .map(|(c, a, state)| {
                Ok(DueRenewal {
                    certificate_id: CertificateId(c),
                    account_id: AccountId(a),
                    state: state.parse().map_err(Error::Corrupt)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::OrderState;
    use crate::testkit::TestDb;

    #[tokio::test]
    async fn one_order_in_flight_per_certificate() {
        for t in TestDb::all().await {
            let now = crate::now();
            let (acc, cert) = t.account_and_certificate("www", "www.example.com").await;
            let deadline = now + time::Duration::days(7);
            let first =
                t.db.enqueue_order(cert.id, acc.id, OrderReason::New, deadline, now)
                    .await
                    .unwrap();
            let second =
                t.db.enqueue_order(cert.id, acc.id, OrderReason::Manual, deadline, now)
                    .await
                    .unwrap();
            assert_eq!(first.id, second.id, "{}", t.backend);
            assert_eq!(first.state, OrderState::Queued);
            assert!(!first.has_key);
            assert_eq!(t.db.orders_for(cert.id).await.unwrap().len(), 1);
            let events = t.db.order_events(first.id).await.unwrap();
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].kind, OrderEventKind::Queued);
        }
    }

    #[tokio::test]
    async fn leases_fence_writes_and_are_taken_over_when_expired() {
        let secrets = Secrets::generate();
        for t in TestDb::all().await {
            let now = crate::now();
            let (acc, cert) = t.account_and_certificate("c", "c.example.com").await;
            let order = enqueue_new(&t, acc.id, cert.id, now).await;
            let lease = now + time::Duration::seconds(30);
            let claimed =
                t.db.claim_order("a", lease, now)
                    .await
                    .unwrap()
                    .expect("claimable");
            assert_eq!(claimed.id, order.id, "{}", t.backend);
            assert_eq!(claimed.lease_owner.as_deref(), Some("a"));
            assert!(
                t.db.claim_order("b", lease, now).await.unwrap().is_none(),
                "leased jobs are not claimed twice"
            );
            assert!(
                !t.db
                    .set_order_state(order.id, "b", OrderState::Pending, now)
                    .await
                    .unwrap(),
                "writes are fenced"
            );
            assert!(
                t.db.set_order_state(order.id, "a", OrderState::Pending, now)
                    .await
                    .unwrap()
            );
            assert!(t.db.renew_lease(order.id, "a", lease).await.unwrap());
            assert!(
                t.db.store_order_key(&secrets, order.id, "a", b"key", b"csr", now)
                    .await
                    .unwrap()
            );
            assert!(
                !t.db
                    .store_order_key(&secrets, order.id, "a", b"key2", b"csr2", now)
                    .await
                    .unwrap(),
                "one key per order"
            );
            assert_eq!(
                &t.db.order_key(&secrets, order.id).await.unwrap()[..],
                b"key"
            );
            // "a" crashed: after its lease expires "b" takes the job over and "a" can write nothing.
            let later = lease + time::Duration::seconds(1);
            let taken =
                t.db.claim_order("b", later + time::Duration::seconds(30), later)
                    .await
                    .unwrap()
                    .expect("taken over");
            assert_eq!(taken.state, OrderState::Pending);
            assert!(taken.has_key);
            assert!(!t.db.renew_lease(order.id, "a", later).await.unwrap());
            let parked_until = later + time::Duration::hours(1);
            assert!(
                t.db.reschedule_order(order.id, "b", parked_until, None, false, later)
                    .await
                    .unwrap()
            );
            let due = t.db.next_order_due().await.unwrap().expect("due time");
            assert!(
                (due - parked_until).abs() < time::Duration::milliseconds(1),
                "{due} (PostgreSQL keeps microseconds)"
            );
            assert!(
                t.db.claim_order("b", later, later).await.unwrap().is_none(),
                "parked until later"
            );
            assert_eq!(t.db.release_leases("b").await.unwrap(), 0);
        }
    }

    /// Queues a new order for `cert` due in a day.
    async fn enqueue_new(
        t: &TestDb,
        acc: AccountId,
        cert: CertificateId,
        now: OffsetDateTime,
    ) -> Order {
        t.db.enqueue_order(
            cert,
            acc,
            OrderReason::New,
            now + time::Duration::days(1),
            now,
        )
        .await
        .unwrap()
    }

    /// Queues, claims, keys and completes an order for `cert` (renewal due at `renew_after`).
    async fn complete(
        t: &TestDb,
        secrets: &Secrets,
        acc: AccountId,
        cert: CertificateId,
        renew_after: OffsetDateTime,
    ) -> (OrderId, crate::model::VersionId) {
        let now = crate::now();
        let order = enqueue_new(t, acc, cert, now).await;
        t.db.claim_order("a", now + time::Duration::seconds(30), now)
            .await
            .unwrap()
            .unwrap();
        assert!(
            t.db.store_order_key(secrets, order.id, "a", b"pkcs8", b"csr", now)
                .await
                .unwrap()
        );
        let version = crate::model::VersionId::new();
        let names = vec!["k.example.com".to_owned()];
        assert!(
            t.db.complete_order(
                secrets,
                "a",
                &NewVersion {
                    id: version,
                    certificate_id: cert,
                    order_id: Some(order.id),
                    chain_pem: "chain",
                    key_pkcs8_der: b"pkcs8",
                    serial: "01",
                    thumbprint: "ab",
                    dns_names: &names,
                    not_before: now,
                    not_after: now + time::Duration::days(90),
                },
                &crate::db::notify::tests::event(),
                renew_after,
                now,
            )
            .await
            .unwrap()
        );
        (order.id, version)
    }

    #[tokio::test]
    async fn a_finished_order_keeps_no_key() {
        let secrets = Secrets::generate();
        for t in TestDb::all().await {
            let now = crate::now();
            let deadline = now + time::Duration::days(1);
            let lease = now + time::Duration::seconds(30);
            let (acc, cert) = t.account_and_certificate("k", "k.example.com").await;
            let (done, version) = complete(
                &t,
                &secrets,
                acc.id,
                cert.id,
                now + time::Duration::days(60),
            )
            .await;
            let finished = t.db.order(done).await.unwrap();
            assert_eq!(finished.state, OrderState::Done, "{}", t.backend);
            assert!(
                !finished.has_key,
                "key_enc is NULL once done ({})",
                t.backend
            );
            assert!(matches!(
                t.db.order_key(&secrets, done).await,
                Err(Error::NotFound)
            ));
            assert_eq!(
                &t.db.version_key(&secrets, version).await.unwrap()[..],
                b"pkcs8",
                "the version holds the key"
            );

            let failed =
                t.db.enqueue_order(cert.id, acc.id, OrderReason::Manual, deadline, now)
                    .await
                    .unwrap();
            t.db.claim_order("a", lease, now).await.unwrap().unwrap();
            assert!(
                t.db.store_order_key(&secrets, failed.id, "a", b"pkcs8-2", b"csr", now)
                    .await
                    .unwrap()
            );
            let failure = OrderFailure {
                error: "refused",
                certificate_state: CertificateState::Failing,
                retry_at: None,
                event: None,
            };
            assert!(
                t.db.fail_order(failed.id, "a", cert.id, &failure, now)
                    .await
                    .unwrap()
            );
            let finished = t.db.order(failed.id).await.unwrap();
            assert_eq!(finished.state, OrderState::Failed);
            assert!(
                !finished.has_key,
                "key_enc is NULL once failed ({})",
                t.backend
            );
        }
    }

    #[tokio::test]
    async fn renewals_skip_deactivated_accounts() {
        let secrets = Secrets::generate();
        for t in TestDb::all().await {
            let now = crate::now();
            let (acc, cert) = t.account_and_certificate("r", "r.example.com").await;
            complete(
                &t,
                &secrets,
                acc.id,
                cert.id,
                now - time::Duration::hours(1),
            )
            .await;
            let due = t.db.renewals_due(now, 10).await.unwrap();
            assert_eq!(due.len(), 1, "{}", t.backend);
            assert_eq!(due[0].certificate_id, cert.id);
            assert_eq!(t.db.deactivate_account(acc.id, now).await.unwrap(), 0);
            assert!(
                t.db.renewals_due(now, 10).await.unwrap().is_empty(),
                "nothing is queued through a deactivated account ({})",
                t.backend
            );
        }
    }
}
