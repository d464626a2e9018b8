//! `ui_sessions`: dashboard sessions, stored by the SHA-256 of their cookie id.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Db, Result, from_json, on_pool, to_json};
use crate::model::{Scope, TokenId};

/// Who a session acts for, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredOwner {
    /// An API token: the session has the token's scopes while the token lives.
    Token(TokenId),
    /// A single-sign-on identity with the scopes its claims mapped to at login.
    Oidc {
        subject: String,
        display: String,
        scopes: Vec<Scope>,
    },
}

/// A stored session.
#[derive(Debug, Clone)]
pub struct UiSession {
    pub owner: StoredOwner,
    pub csrf_token: String,
    pub created_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
    /// Absolute expiry.
    pub expires_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    csrf_token: String,
    token_id: Option<Uuid>,
    oidc_subject: Option<String>,
    oidc_display: Option<String>,
    oidc_scopes: Option<String>,
    created_at: OffsetDateTime,
    last_seen_at: OffsetDateTime,
    expires_at: OffsetDateTime,
}

impl SessionRow {
    fn into_model(self) -> Result<UiSession> {
        let owner = match (self.token_id, self.oidc_subject, self.oidc_scopes) {
            (Some(id), None, None) => StoredOwner::Token(TokenId(id)),
            (None, Some(subject), Some(scopes)) => StoredOwner::Oidc {
                display: self.oidc_display.unwrap_or_else(|| subject.clone()),
                subject,
                scopes: from_json("oidc_scopes", &scopes)?,
            },
            _ => return Err(super::Error::Corrupt("ui_sessions: no single owner".into())),
        };
        Ok(UiSession {
            owner,
            csrf_token: self.csrf_token,
            created_at: self.created_at,
            last_seen_at: self.last_seen_at,
            expires_at: self.expires_at,
        })
    }
}

impl Db {
    /// Stores a new session under `id_hash`.
    pub async fn insert_ui_session(&self, id_hash: &[u8], session: &UiSession) -> Result<()> {
        const Q: &str = "INSERT INTO ui_sessions (id_hash, csrf_token, token_id, oidc_subject, oidc_display, oidc_scopes, created_at, last_seen_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        let (token, subject, display, scopes) = match &session.owner {
            StoredOwner::Token(id) => (Some(id.0), None, None, None),
            StoredOwner::Oidc {
                subject,
                display,
                scopes,
            } => (None, Some(subject), Some(display), Some(to_json(scopes))),
        };
        on_pool!(self, p => sqlx::query(Q)
            .bind(id_hash)
            .bind(&session.csrf_token)
            .bind(token)
            .bind(subject)
            .bind(display)
            .bind(scopes)
            .bind(session.created_at)
            .bind(session.last_seen_at)
            .bind(session.expires_at)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The session stored under `id_hash`, whatever its age (callers check expiry).
    pub async fn ui_session(&self, id_hash: &[u8]) -> Result<UiSession> {
        const Q: &str = "SELECT csrf_token, token_id, oidc_subject, oidc_display, oidc_scopes, created_at, last_seen_at, expires_at FROM ui_sessions WHERE id_hash = $1";
        let row: SessionRow =
            on_pool!(self, p => sqlx::query_as(Q).bind(id_hash).fetch_one(p).await)?;
        row.into_model()
    }

    /// Records that a session was used (its idle expiry counts from `now`).
    pub async fn touch_ui_session(&self, id_hash: &[u8], now: OffsetDateTime) -> Result<()> {
        const Q: &str = "UPDATE ui_sessions SET last_seen_at = $2 WHERE id_hash = $1";
        on_pool!(self, p => sqlx::query(Q).bind(id_hash).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Ends one session; ending an unknown one is not an error.
    pub async fn delete_ui_session(&self, id_hash: &[u8]) -> Result<()> {
        const Q: &str = "DELETE FROM ui_sessions WHERE id_hash = $1";
        on_pool!(self, p => sqlx::query(Q).bind(id_hash).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Deletes the sessions past their absolute expiry or unused since `idle_before`; how many.
    pub async fn delete_expired_ui_sessions(
        &self,
        now: OffsetDateTime,
        idle_before: OffsetDateTime,
    ) -> Result<u64> {
        const Q: &str = "DELETE FROM ui_sessions WHERE expires_at <= $1 OR last_seen_at < $2";
        let n = on_pool!(self, p => sqlx::query(Q).bind(now).bind(idle_before).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::tokens::NewToken;
    use crate::testkit::TestDb;

    #[tokio::test]
    async fn sessions_round_trip_and_expire() {
        for t in TestDb::all().await {
            let now = crate::now();
            let token =
                t.db.insert_token(
                    &NewToken {
                        name: "ui",
                        hash: &[7; 32],
                        scopes: &[Scope::Reader],
                        domain_patterns: &[],
                        expires_at: None,
                        created_by: None,
                    },
                    now,
                )
                .await
                .unwrap();
            let oidc = StoredOwner::Oidc {
                subject: "alice".into(),
                display: "Alice".into(),
                scopes: vec![Scope::Admin],
            };
            for (hash, owner) in [([1u8; 32], StoredOwner::Token(token.id)), ([2; 32], oidc)] {
                let session = UiSession {
                    owner: owner.clone(),
                    csrf_token: "c".into(),
                    created_at: now,
                    last_seen_at: now,
                    expires_at: now + time::Duration::hours(1),
                };
                t.db.insert_ui_session(&hash, &session).await.unwrap();
                let back = t.db.ui_session(&hash).await.unwrap();
                assert_eq!(back.owner, owner, "{}", t.backend);
            }
            let later = now + time::Duration::minutes(10);
            t.db.touch_ui_session(&[1; 32], later).await.unwrap();
            // Idle since before `now + 5 min`: only the untouched one goes.
            let removed =
                t.db.delete_expired_ui_sessions(now, now + time::Duration::minutes(5))
                    .await
                    .unwrap();
            assert_eq!(removed, 1, "{}", t.backend);
            assert!(t.db.ui_session(&[1; 32]).await.is_ok());
            t.db.delete_ui_session(&[1; 32]).await.unwrap();
            assert!(matches!(
                t.db.ui_session(&[1; 32]).await,
                Err(crate::db::Error::NotFound)
            ));
        }
    }
}
