//! Pending OIDC logins (`oidc_logins`): written when a browser is sent to the IdP, taken
//! exactly once by its callback. Rows live minutes; expired ones are swept on every insert.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Db, Result, on_pool};

/// A pending login as stored: the state only as its SHA-256, the PKCE verifier sealed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OidcLogin {
    pub id: Uuid,
    pub state_hash: Vec<u8>,
    pub nonce: String,
    pub pkce_verifier_enc: Vec<u8>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

impl Db {
    /// Stores a pending login, first deleting every expired one, unless `max_pending` are
    /// already pending: then nothing is stored and `false` returned.
    pub async fn insert_oidc_login(&self, login: &OidcLogin, max_pending: i64) -> Result<bool> {
        const SWEEP: &str = "DELETE FROM oidc_logins WHERE expires_at <= $1";
        const Q: &str = "INSERT INTO oidc_logins (id, state_hash, nonce, pkce_verifier_enc, created_at, expires_at) SELECT $1, $2, $3, $4, $5, $6 WHERE (SELECT COUNT(*) FROM oidc_logins) < $7";
        on_pool!(self, p => sqlx::query(SWEEP).bind(login.created_at).execute(p).await.map(|r| r.rows_affected()))?;
        let inserted = on_pool!(self, p => sqlx::query(Q)
            .bind(login.id)
            .bind(&login.state_hash)
            .bind(&login.nonce)
            .bind(&login.pkce_verifier_enc)
            .bind(login.created_at)
            .bind(login.expires_at)
            .bind(max_pending)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(inserted == 1)
    }

    /// Takes (deletes and returns) the pending login whose state hashes to `state_hash`, if
    /// any, expired or not: of two callbacks racing with one state exactly one gets it.
    pub async fn take_oidc_login(&self, state_hash: &[u8]) -> Result<Option<OidcLogin>> {
        const Q: &str = "DELETE FROM oidc_logins WHERE state_hash = $1 RETURNING id, state_hash, nonce, pkce_verifier_enc, created_at, expires_at";
        Ok(
            on_pool!(self, p => sqlx::query_as::<_, OidcLogin>(Q).bind(state_hash).fetch_optional(p).await)?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{Binding, Secrets};

    fn login(state: &[u8], created_at: OffsetDateTime, ttl: time::Duration) -> OidcLogin {
        OidcLogin {
            id: Uuid::now_v7(),
            state_hash: state.to_vec(),
            nonce: "n".into(),
            pkce_verifier_enc: b"sealed".to_vec(),
            created_at,
            expires_at: created_at + ttl,
        }
    }

    #[tokio::test]
    async fn a_login_is_taken_once_and_expired_ones_are_swept() {
        for t in crate::testkit::TestDb::all().await {
            let now = crate::now();
            let old = login(
                b"old",
                now - time::Duration::hours(1),
                time::Duration::minutes(10),
            );
            assert!(t.db.insert_oidc_login(&old, 2).await.unwrap());
            let fresh = login(b"fresh", now, time::Duration::minutes(10));
            assert!(t.db.insert_oidc_login(&fresh, 2).await.unwrap());
            assert!(
                t.db.take_oidc_login(b"old").await.unwrap().is_none(),
                "{}: the expired login was swept by the next insert",
                t.backend
            );
            let taken = t.db.take_oidc_login(b"fresh").await.unwrap().unwrap();
            assert_eq!(
                (taken.id, taken.nonce.as_str()),
                (fresh.id, "n"),
                "{}",
                t.backend
            );
            assert_eq!(taken.pkce_verifier_enc, b"sealed", "{}", t.backend);
            assert!(
                t.db.take_oidc_login(b"fresh").await.unwrap().is_none(),
                "{}: a login is taken once",
                t.backend
            );
        }
    }

    #[tokio::test]
    async fn no_more_than_max_pending_logins_are_stored() {
        for t in crate::testkit::TestDb::all().await {
            let now = crate::now();
            let ttl = time::Duration::minutes(10);
            for state in [b"a", b"b"] {
                assert!(
                    t.db.insert_oidc_login(&login(state, now, ttl), 2)
                        .await
                        .unwrap()
                );
            }
            assert!(
                !t.db
                    .insert_oidc_login(&login(b"c", now, ttl), 2)
                    .await
                    .unwrap(),
                "{}: the third is refused",
                t.backend
            );
            assert!(
                t.db.take_oidc_login(b"c").await.unwrap().is_none(),
                "{}",
                t.backend
            );
            // Once the first two expire, the sweep makes room.
            let later = login(b"d", now + ttl, ttl);
            assert!(
                t.db.insert_oidc_login(&later, 2).await.unwrap(),
                "{}",
                t.backend
            );
        }
    }

    #[tokio::test]
    async fn rekey_re_seals_a_pending_login() {
        for t in crate::testkit::TestDb::all().await {
            let (old, new) = (Secrets::generate(), Secrets::generate());
            let mut pending = login(b"s", crate::now(), time::Duration::minutes(10));
            let binding = Binding::new("oidc_logins", "pkce_verifier_enc", pending.id);
            pending.pkce_verifier_enc = old.seal(binding, b"verifier").unwrap();
            assert!(t.db.insert_oidc_login(&pending, 10).await.unwrap());
            assert_eq!(
                t.db.rekey(&old, &new, crate::now()).await.unwrap(),
                1,
                "{}",
                t.backend
            );
            let taken = t.db.take_oidc_login(b"s").await.unwrap().unwrap();
            assert_eq!(
                &new.open(binding, &taken.pkce_verifier_enc).unwrap()[..],
                b"verifier",
                "{}",
                t.backend
            );
        }
    }
}
