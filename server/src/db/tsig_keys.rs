//! `tsig_keys`: TSIG secrets of the dns-01 solvers, sealed with age and bound to their row.

use time::OffsetDateTime;
use uuid::Uuid;

use super::BeginWrite as _;
use super::{Db, Result, on_pool};
use crate::secrets::{Binding, SecretBytes, Secrets};

fn binding(id: Uuid) -> Binding {
    Binding::new("tsig_keys", "secret_enc", id)
}

impl Db {
    /// Stores (or replaces) the secret of TSIG key `key_name`, sealed.
    pub async fn store_tsig_key(
        &self,
        secrets: &Secrets,
        key_name: &str,
        secret: &[u8],
        now: OffsetDateTime,
    ) -> Result<()> {
        const DELETE: &str = "DELETE FROM tsig_keys WHERE key_name = $1";
        const INSERT: &str =
            "INSERT INTO tsig_keys (id, key_name, secret_enc, created_at) VALUES ($1, $2, $3, $4)";
        let id = Uuid::now_v7();
        let sealed = secrets.seal(binding(id), secret)?;
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(DELETE).bind(key_name).execute(&mut *tx).await?;
            sqlx::query(INSERT)
                .bind(id)
                .bind(key_name)
                .bind(&sealed)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        })?;
        Ok(())
    }

    /// The stored secret of TSIG key `key_name`, if any.
    pub async fn tsig_key(&self, secrets: &Secrets, key_name: &str) -> Result<Option<SecretBytes>> {
        const Q: &str = "SELECT id, secret_enc FROM tsig_keys WHERE key_name = $1";
        let row: Option<(Uuid, Vec<u8>)> =
            on_pool!(self, p => sqlx::query_as(Q).bind(key_name).fetch_optional(p).await)?;
        row.map(|(id, ct)| secrets.open(binding(id), &ct).map_err(Into::into))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use crate::secrets::Secrets;
    use crate::testkit::TestDb;

    #[tokio::test]
    async fn stored_sealed_replaced_and_absent_from_the_dump() {
        let secrets = Secrets::generate();
        for t in TestDb::all().await {
            let now = crate::now();
            assert!(
                t.db.tsig_key(&secrets, "certkeep.")
                    .await
                    .unwrap()
                    .is_none()
            );
            t.db.store_tsig_key(
                &secrets,
                "certkeep.",
                b"c2VjcmV0LW9uZS1zZWNyZXQtb25lLXNlY3JldA==",
                now,
            )
            .await
            .unwrap();
            t.db.store_tsig_key(
                &secrets,
                "certkeep.",
                b"bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy1zZWNy",
                now,
            )
            .await
            .unwrap();
            let got = t.db.tsig_key(&secrets, "certkeep.").await.unwrap().unwrap();
            assert_eq!(
                &got[..],
                b"bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy1zZWNy",
                "{}",
                t.backend
            );
            let raw = t.raw_contents();
            assert!(
                !raw.windows(20).any(|w| w == b"bmV3LXNlY3JldC1uZXct"),
                "{}: the TSIG secret is readable at rest",
                t.backend
            );
        }
    }
}
