//! `api_tokens`: bearer tokens, stored only as SHA-256 hashes.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Db, Result, from_json, on_pool, to_json};
use crate::model::{ApiToken, Scope, TokenId};

/// What is needed to store a token. `hash` is SHA-256 of the secret.
pub struct NewToken<'a> {
    pub name: &'a str,
    pub hash: &'a [u8],
    pub scopes: &'a [Scope],
    pub domain_patterns: &'a [String],
    pub expires_at: Option<OffsetDateTime>,
    pub created_by: Option<&'a str>,
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: Uuid,
    name: String,
    scopes: String,
    domain_patterns: String,
    expires_at: Option<OffsetDateTime>,
    revoked_at: Option<OffsetDateTime>,
    last_used_at: Option<OffsetDateTime>,
    created_by: Option<String>,
    created_at: OffsetDateTime,
}

impl TokenRow {
    fn into_model(self) -> Result<ApiToken> {
        Ok(ApiToken {
            id: TokenId(self.id),
            scopes: from_json("scopes", &self.scopes)?,
            domain_patterns: from_json("domain_patterns", &self.domain_patterns)?,
            name: self.name,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            last_used_at: self.last_used_at,
            created_by: self.created_by,
            created_at: self.created_at,
        })
    }
}

/// `SELECT <every model column> FROM api_tokens <tail>`.
macro_rules! select_tokens {
    ($tail:literal) => {
        concat!(
            "SELECT id, name, scopes, domain_patterns, expires_at, revoked_at, last_used_at, created_by, created_at FROM api_tokens ",
            $tail
        )
    };
}

impl Db {
    /// Stores a token hash.
    pub async fn insert_token(&self, new: &NewToken<'_>, now: OffsetDateTime) -> Result<ApiToken> {
        const Q: &str = "INSERT INTO api_tokens (id, name, token_hash, scopes, domain_patterns, expires_at, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        let id = TokenId::new();
        on_pool!(self, p => sqlx::query(Q)
            .bind(id.0)
            .bind(new.name)
            .bind(new.hash)
            .bind(to_json(&new.scopes))
            .bind(to_json(&new.domain_patterns))
            .bind(new.expires_at)
            .bind(new.created_by)
            .bind(now)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        self.token(id).await
    }

    /// One token by id.
    pub async fn token(&self, id: TokenId) -> Result<ApiToken> {
        const Q: &str = select_tokens!("WHERE id = $1");
        let row: TokenRow = on_pool!(self, p => sqlx::query_as(Q).bind(id.0).fetch_one(p).await)?;
        row.into_model()
    }

    /// The token whose secret hashes to `hash`, whatever its state (callers check expiry and
    /// revocation).
    pub async fn token_by_hash(&self, hash: &[u8]) -> Result<ApiToken> {
        const Q: &str = select_tokens!("WHERE token_hash = $1");
        let row: TokenRow = on_pool!(self, p => sqlx::query_as(Q).bind(hash).fetch_one(p).await)?;
        row.into_model()
    }

    /// Every token, newest first.
    pub async fn list_tokens(&self) -> Result<Vec<ApiToken>> {
        const Q: &str = select_tokens!("ORDER BY created_at DESC");
        let rows: Vec<TokenRow> = on_pool!(self, p => sqlx::query_as(Q).fetch_all(p).await)?;
        rows.into_iter().map(TokenRow::into_model).collect()
    }

    /// Revokes a token; revoking twice keeps the first time.
    pub async fn revoke_token(&self, id: TokenId, now: OffsetDateTime) -> Result<()> {
        const Q: &str = "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1";
        let done = on_pool!(self, p => sqlx::query(Q).bind(id.0).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        if done == 0 {
            return Err(super::Error::NotFound);
        }
        Ok(())
    }

    /// Records that a token was used.
    pub async fn touch_token(&self, id: TokenId, now: OffsetDateTime) -> Result<()> {
        const Q: &str = "UPDATE api_tokens SET last_used_at = $2 WHERE id = $1";
        on_pool!(self, p => sqlx::query(Q).bind(id.0).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }
}
