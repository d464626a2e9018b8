//! `server_keys`: named server-wide key pairs (the internal CA), private keys sealed with age.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Db, Result, on_pool};
use crate::secrets::{Binding, SecretBytes, Secrets};

/// A stored key pair: certificate in clear, private key opened on load.
pub struct ServerKey {
    pub cert_pem: String,
    pub key_der: SecretBytes,
}

fn binding(id: Uuid) -> Binding {
    Binding::new("server_keys", "key_enc", id)
}

impl Db {
    /// Loads the key pair called `name`, if present.
    pub async fn server_key(&self, secrets: &Secrets, name: &str) -> Result<Option<ServerKey>> {
        const Q: &str = "SELECT id, cert_pem, key_enc FROM server_keys WHERE name = $1";
        let row: Option<(Uuid, String, Vec<u8>)> =
            on_pool!(self, p => sqlx::query_as(Q).bind(name).fetch_optional(p).await)?;
        row.map(|(id, cert_pem, ct)| {
            Ok(ServerKey {
                cert_pem,
                key_der: secrets.open(binding(id), &ct)?,
            })
        })
        .transpose()
    }

    /// Stores `name` unless it exists; returns whether this call stored it (several servers
    /// may race to create the internal CA: the first wins, the others load it).
    pub async fn insert_server_key(
        &self,
        secrets: &Secrets,
        name: &str,
        cert_pem: &str,
        key_der: &[u8],
        now: OffsetDateTime,
    ) -> Result<bool> {
        const Q: &str = "INSERT INTO server_keys (name, id, cert_pem, key_enc, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING";
        let id = Uuid::now_v7();
        let ct = secrets.seal(binding(id), key_der)?;
        let done = on_pool!(self, p => sqlx::query(Q).bind(name).bind(id).bind(cert_pem).bind(ct).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }
}
