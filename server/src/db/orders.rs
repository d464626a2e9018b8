//! `orders` and `order_events`: orders are durable jobs; at most one is in flight per
//! certificate (enforced by a partial unique index).

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Db, Error, Result, on_pool};
use crate::model::{
    AccountId, CertificateId, Order, OrderEvent, OrderId, OrderReason,
};

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

/// `SELECT <every model column> FROM orders <tail>`.
macro_rules! select_orders {
    ($tail:literal) => {
        concat!(
            "SELECT id, certificate_id, account_id, reason, state, order_url, (key_enc IS NOT NULL) AS has_key, csr_der, replaces, attempts, next_attempt_at, deadline_at, last_error, lease_owner, lease_expires_at, created_at, updated_at, finished_at FROM orders ",
            $tail
        )
    };
}

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
        const Q: &str = "INSERT INTO orders (id, certificate_id, account_id, reason, state, next_attempt_at, deadline_at, created_at, updated_at) VALUES ($1, $2, $3, $4, 'queued', $5, $6, $5, $5)";
        let id = OrderId::new();
        let inserted = on_pool!(self, p => sqlx::query(Q)
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
                self.add_order_event(id, "queued", reason.as_str(), now).await?;
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
        const Q: &str = select_orders!("WHERE certificate_id = $1 AND state NOT IN ('done', 'failed')");
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
        kind: &str,
        detail: &str,
        now: OffsetDateTime,
    ) -> Result<()> {
        const Q: &str = "INSERT INTO order_events (id, order_id, at, kind, detail) VALUES ($1, $2, $3, $4, $5)";
        on_pool!(self, p => sqlx::query(Q).bind(Uuid::now_v7()).bind(order.0).bind(now).bind(kind).bind(detail).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The history of an order, oldest first.
    pub async fn order_events(&self, order: OrderId) -> Result<Vec<OrderEvent>> {
        const Q: &str = "SELECT order_id, at, kind, detail FROM order_events WHERE order_id = $1 ORDER BY at, id";
        let rows: Vec<(Uuid, OffsetDateTime, String, String)> =
            on_pool!(self, p => sqlx::query_as(Q).bind(order.0).fetch_all(p).await)?;
        Ok(rows
            .into_iter()
            .map(|(o, at, kind, detail)| OrderEvent {
                order_id: OrderId(o),
                at,
                kind,
                detail,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::accounts::NewAccount;
    use crate::db::certificates::NewCertificate;
    use crate::model::{KeyType, OrderState, RenewalPolicy};
    use crate::secrets::Secrets;
    use crate::testkit::TestDb;

    #[tokio::test]
    async fn one_order_in_flight_per_certificate() {
        let secrets = Secrets::generate();
        for t in TestDb::all().await {
            let now = crate::now();
            let acc = t
                .db
                .insert_account(
                    &secrets,
                    &NewAccount {
                        name: "a",
                        directory_url: "https://ca.example/dir",
                        contact: &[],
                        allowed_domains: &["*.example.com".into()],
                        eab_kid: None,
                        eab_hmac: None,
                        extra_roots_pem: None,
                    },
                    now,
                )
                .await
                .unwrap();
            let cert = t
                .db
                .insert_certificate(
                    &NewCertificate {
                        name: "www",
                        dns_names: &["www.example.com".into()],
                        key_type: KeyType::EcdsaP256,
                        account_id: acc.id,
                        policy: RenewalPolicy::default(),
                        created_by: None,
                    },
                    now,
                )
                .await
                .unwrap();
            let deadline = now + time::Duration::days(7);
            let first = t.db.enqueue_order(cert.id, acc.id, OrderReason::New, deadline, now).await.unwrap();
            let second = t.db.enqueue_order(cert.id, acc.id, OrderReason::Manual, deadline, now).await.unwrap();
            assert_eq!(first.id, second.id, "{}", t.backend);
            assert_eq!(first.state, OrderState::Queued);
            assert!(!first.has_key);
            assert_eq!(t.db.orders_for(cert.id).await.unwrap().len(), 1);
            let events = t.db.order_events(first.id).await.unwrap();
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].kind, "queued");
        }
    }
}
