//! `challenge_responses`: the challenge responses published for in-flight orders. The engine
//! writes a row before a solver publishes anything and deletes it after the solver removed it,
//! so whatever a crashed run left behind is found and removed by the job that owns it. The
//! http-01 responder reads the key authorizations from here, so any server process can answer.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Db, Result, on_pool};
use crate::model::OrderId;

/// One published challenge response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeResponse {
    pub id: Uuid,
    pub order_id: OrderId,
    /// The identifier, `*.`-prefixed for wildcards.
    pub name: String,
    /// Challenge type (`dns-01`, `http-01`).
    pub kind: String,
    /// The challenge URL at the CA.
    pub url: String,
    pub token: String,
    pub key_authorization: String,
}

/// A response about to be published.
pub struct NewChallengeResponse<'a> {
    pub order_id: OrderId,
    pub name: &'a str,
    pub kind: &'a str,
    pub url: &'a str,
    pub token: &'a str,
    pub key_authorization: &'a str,
}

#[derive(sqlx::FromRow)]
struct ResponseRow {
    id: Uuid,
    order_id: Uuid,
    name: String,
    kind: String,
    url: String,
    token: String,
    key_authorization: String,
}

impl From<ResponseRow> for ChallengeResponse {
    fn from(r: ResponseRow) -> Self {
        ChallengeResponse {
            id: r.id,
            order_id: OrderId(r.order_id),
            name: r.name,
            kind: r.kind,
            url: r.url,
            token: r.token,
            key_authorization: r.key_authorization,
        }
    }
}

impl Db {
    /// Records a response before it is published. Recording the same challenge of the same
    /// order again (a resumed job presenting it once more) keeps the first row.
    pub async fn record_challenge_response(
        &self,
        response: &NewChallengeResponse<'_>,
        now: OffsetDateTime,
    ) -> Result<()> {
        const Q: &str = "INSERT INTO challenge_responses (id, order_id, name, kind, url, token, key_authorization, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (order_id, url) DO NOTHING";
        on_pool!(self, p => sqlx::query(Q)
            .bind(Uuid::now_v7())
            .bind(response.order_id.0)
            .bind(response.name)
            .bind(response.kind)
            .bind(response.url)
            .bind(response.token)
            .bind(response.key_authorization)
            .bind(now)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The responses an order has published, oldest first.
    pub async fn challenge_responses(&self, order: OrderId) -> Result<Vec<ChallengeResponse>> {
        const Q: &str = "SELECT id, order_id, name, kind, url, token, key_authorization FROM challenge_responses WHERE order_id = $1 ORDER BY created_at, id";
        let rows: Vec<ResponseRow> =
            on_pool!(self, p => sqlx::query_as(Q).bind(order.0).fetch_all(p).await)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Forgets a response once it has been removed.
    pub async fn delete_challenge_response(&self, id: Uuid) -> Result<()> {
        const Q: &str = "DELETE FROM challenge_responses WHERE id = $1";
        on_pool!(self, p => sqlx::query(Q).bind(id).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The key authorization to serve for http-01 `token`, if an unfinished order published it.
    pub async fn http01_key_authorization(&self, token: &str) -> Result<Option<String>> {
        const Q: &str = "SELECT c.key_authorization FROM challenge_responses c JOIN orders o ON o.id = c.order_id WHERE c.kind = 'http-01' AND c.token = $1 AND o.state NOT IN ('done', 'failed') LIMIT 1";
        Ok(on_pool!(self, p => sqlx::query_scalar(Q).bind(token).fetch_optional(p).await)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::OrderReason;
    use crate::testkit::TestDb;

    async fn queued_order(t: &TestDb, now: OffsetDateTime) -> OrderId {
        let (account, cert) = t.account_and_certificate("www", "www.example.test").await;
        let db = &t.db;
        let deadline = now + time::Duration::days(1);
        db.enqueue_order(cert.id, account.id, OrderReason::New, deadline, now)
            .await
            .unwrap()
            .id
    }

    #[tokio::test]
    async fn responses_are_recorded_once_served_and_forgotten() {
        for t in TestDb::all().await {
            let now = crate::now();
            let order = queued_order(&t, now).await;
            let new = NewChallengeResponse {
                order_id: order,
                name: "www.example.test",
                kind: "http-01",
                url: "https://ca/chall/1",
                token: "tok-1",
                key_authorization: "tok-1.thumb",
            };
            t.db.record_challenge_response(&new, now).await.unwrap();
            t.db.record_challenge_response(&new, now).await.unwrap();
            let rows = t.db.challenge_responses(order).await.unwrap();
            assert_eq!(rows.len(), 1, "{}", t.backend);
            assert_eq!(rows[0].key_authorization, "tok-1.thumb");
            assert_eq!(
                t.db.http01_key_authorization("tok-1").await.unwrap(),
                Some("tok-1.thumb".into()),
                "{}",
                t.backend
            );
            assert_eq!(t.db.http01_key_authorization("tok-2").await.unwrap(), None);
            t.db.delete_challenge_response(rows[0].id).await.unwrap();
            assert!(t.db.challenge_responses(order).await.unwrap().is_empty());
            assert_eq!(t.db.http01_key_authorization("tok-1").await.unwrap(), None);
        }
    }
}
