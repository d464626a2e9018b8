//! Re-encryption of every secret column to a new age identity, in one transaction.

use uuid::Uuid;

use super::{Db, Result, on_pool};
use crate::secrets::{Binding, Secrets};

/// Every sealed column: (table, id column, secret column). Add new secret columns here.
const SECRET_COLUMNS: &[(&str, &str, &str)] = &[
    ("acme_accounts", "id", "eab_hmac_enc"),
    ("acme_accounts", "id", "credentials_enc"),
    ("certificate_versions", "id", "key_enc"),
    ("orders", "id", "key_enc"),
    ("agents", "id", "ccs_password_enc"),
    ("server_keys", "id", "key_enc"),
];

impl Db {
    /// Opens every secret with `old` and seals it again with `new`; returns how many secrets were
    /// re-encrypted. Nothing changes unless all of them succeed.
    pub async fn rekey(&self, old: &Secrets, new: &Secrets) -> Result<usize> {
        let mut count = 0;
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            for (table, id_col, col) in SECRET_COLUMNS {
                let select = format!("SELECT {id_col}, {col} FROM {table} WHERE {col} IS NOT NULL");
                let update = format!("UPDATE {table} SET {col} = $2 WHERE {id_col} = $1");
                let rows: Vec<(Uuid, Vec<u8>)> =
                    sqlx::query_as(sqlx::AssertSqlSafe(select)).fetch_all(&mut *tx).await?;
                for (id, ct) in rows {
                    let binding = Binding::new(table, col, id);
                    let plain = old.open(binding, &ct)?;
                    let sealed = new.seal(binding, &plain)?;
                    sqlx::query(sqlx::AssertSqlSafe(update.clone()))
                        .bind(id)
                        .bind(sealed)
                        .execute(&mut *tx)
                        .await?;
                    count += 1;
                }
            }
            tx.commit().await?;
            Ok::<_, super::Error>(())
        })?;
        Ok(count)
    }
}
