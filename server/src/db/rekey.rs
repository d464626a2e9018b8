//! Re-encryption of every secret column to a new age identity, in one transaction.
//!
//! A running server keeps sealing with the identity it loaded, so `rekey` refuses while any
//! server process is alive on the database (a fresh `server_instances` heartbeat; on SQLite the
//! caller also holds the database's lock file). Rows written concurrently cannot be skipped:
//! PostgreSQL takes `EXCLUSIVE` locks on `server_instances` and every secret table before
//! reading, so a concurrent writer waits until the new ciphertexts are committed (and a server
//! starting meanwhile registers only afterwards, then finds its identity no longer opens the
//! stored secrets); SQLite's `BEGIN IMMEDIATE` holds the write lock for the whole transaction.

use time::OffsetDateTime;
use uuid::Uuid;

use super::BeginWrite as _;
use super::instances::ServerInstance;
use super::{Db, Error, Result, on_pool};
use crate::secrets::{Binding, Secrets};

/// Every sealed column: (table, id column, secret column). Add new secret columns here.
const SECRET_COLUMNS: &[(&str, &str, &str)] = &[
    ("acme_accounts", "id", "eab_hmac_enc"),
    ("acme_accounts", "id", "credentials_enc"),
    ("certificate_versions", "id", "key_enc"),
    ("orders", "id", "key_enc"),
    ("agents", "id", "ccs_password_enc"),
    ("server_keys", "id", "key_enc"),
    ("tsig_keys", "id", "secret_enc"),
    ("oidc_logins", "id", "pkce_verifier_enc"),
    ("notification_channels", "id", "secret_enc"),
];

/// PostgreSQL: blocks every writer of the instances and secret tables (readers go on) until
/// the transaction ends.
fn lock_statement() -> String {
    let mut tables = vec!["server_instances"];
    for (table, _, _) in SECRET_COLUMNS {
        if !tables.contains(table) {
            tables.push(table);
        }
    }
    format!("LOCK TABLE {} IN EXCLUSIVE MODE", tables.join(", "))
}

impl Db {
    /// Opens every secret with `old` and seals it again with `new`; returns how many secrets were
    /// re-encrypted. Nothing changes unless all of them succeed. Refuses with [`Error::InUse`]
    /// while a server process has written a heartbeat after `alive_since`; rows of processes
    /// silent since then are removed (such a process, should it wake up, stops).
    pub async fn rekey(
        &self,
        old: &Secrets,
        new: &Secrets,
        alive_since: OffsetDateTime,
    ) -> Result<usize> {
        // $2: this process holds the database's lock file, so every row is left over from a
        // process that died.
        const ALIVE: &str = "SELECT id, host, pid, started_at, heartbeat_at FROM server_instances WHERE heartbeat_at > $1 AND NOT $2 ORDER BY heartbeat_at DESC";
        const DEAD: &str = "DELETE FROM server_instances WHERE heartbeat_at <= $1 OR $2";
        let exclusive = self.is_exclusive();
        let mut count = 0;
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            if self.is_shared() {
                sqlx::query(sqlx::AssertSqlSafe(lock_statement())).execute(&mut *tx).await?;
            }
            let alive: Vec<ServerInstance> = sqlx::query_as(ALIVE).bind(alive_since).bind(exclusive).fetch_all(&mut *tx).await?;
            if !alive.is_empty() {
                let list: Vec<String> = alive.iter().map(ToString::to_string).collect();
                return Err(Error::InUse(format!(
                    "refusing to rekey: {} server process(es) are running on this database and seal with the current identity: {}; stop them first",
                    alive.len(),
                    list.join(", ")
                )));
            }
            sqlx::query(DEAD).bind(alive_since).bind(exclusive).execute(&mut *tx).await?;
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
            Ok::<_, Error>(())
        })?;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

    use super::*;
    use crate::db::accounts::NewAccount;
    use crate::db::certificates::NewCertificate;
    use crate::db::versions::NewVersion;
    use crate::model::{Account, KeyType, RenewalPolicy, VersionId};
    use crate::testkit::TestDb;

    /// Every textual form a leaked secret could take in a dump.
    fn encodings(secret: &[u8]) -> Vec<Vec<u8>> {
        vec![
            secret.to_vec(),
            hex::encode(secret).into_bytes(),
            hex::encode_upper(secret).into_bytes(),
            STANDARD.encode(secret).into_bytes(),
            STANDARD_NO_PAD.encode(secret).into_bytes(),
            URL_SAFE.encode(secret).into_bytes(),
            URL_SAFE_NO_PAD.encode(secret).into_bytes(),
        ]
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    struct Stored {
        account: Account,
        version: VersionId,
        hmac: Vec<u8>,
        key_der: Vec<u8>,
    }

    async fn store_secrets(t: &TestDb, secrets: &Secrets) -> Stored {
        let now = crate::now();
        let hmac: [u8; 64] = rand::random();
        let account =
            t.db.insert_account(
                secrets,
                &NewAccount {
                    name: "sectigo-ov",
                    directory_url: "https://acme.sectigo.com/v2/OV",
                    contact: &[],
                    allowed_domains: &["*.example.edu".into()],
                    eab_kid: Some("kid"),
                    eab_hmac: Some(&hmac),
                    extra_roots_pem: None,
                },
                now,
            )
            .await
            .unwrap();
        let cert =
            t.db.insert_certificate(
                &NewCertificate {
                    name: "www",
                    dns_names: &["www.example.edu".into()],
                    key_type: KeyType::EcdsaP256,
                    account_id: account.id,
                    policy: RenewalPolicy::default(),
                    created_by: None,
                },
                now,
            )
            .await
            .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let issued = rcgen::CertificateParams::new(vec!["www.example.edu".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let key_der = key.serialize_der();
        let version = VersionId::new();
        t.db.insert_version(
            secrets,
            &NewVersion {
                id: version,
                certificate_id: cert.id,
                order_id: None,
                chain_pem: &issued.pem(),
                key_pkcs8_der: &key_der,
                serial: "01",
                thumbprint: "00",
                dns_names: &["www.example.edu".into()],
                not_before: now,
                not_after: now + time::Duration::days(90),
            },
            now,
        )
        .await
        .unwrap();
        Stored {
            account,
            version,
            hmac: hmac.to_vec(),
            key_der,
        }
    }

    #[tokio::test]
    async fn no_secret_is_readable_at_rest_on_any_backend() {
        let secrets = Secrets::generate();
        let backends = TestDb::all().await;
        for t in &backends {
            let s = store_secrets(t, &secrets).await;
            // The secrets really are stored: they come back through the age identity.
            let hmac =
                t.db.account_eab_hmac(&secrets, s.account.id)
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(&hmac[..], &s.hmac[..]);
            assert_eq!(
                &t.db.version_key(&secrets, s.version).await.unwrap()[..],
                &s.key_der[..]
            );
            let raw = t.raw_contents();
            assert!(
                contains(&raw, b"sectigo-ov"),
                "{}: dump does not hold the data at all",
                t.backend
            );
            for secret in [&s.hmac, &s.key_der] {
                for form in encodings(secret) {
                    assert!(
                        !contains(&raw, &form),
                        "{}: a secret is readable at rest",
                        t.backend
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn rekey_moves_every_secret_to_the_new_identity() {
        for t in TestDb::all().await {
            let old = Secrets::generate();
            let new = Secrets::generate();
            let s = store_secrets(&t, &old).await;
            let hook = crate::db::notify::ChannelSettings::Webhook(
                certkeep_api_types::notification::WebhookSettings {
                    url: "https://hooks.example.edu/".into(),
                    format: certkeep_api_types::notification::WebhookFormat::Standard,
                    timeout_secs: 5,
                    ca_file: None,
                },
            );
            let channel =
                t.db.insert_channel(&old, "hook", &hook, Some(b"whsec_x"), crate::now())
                    .await
                    .unwrap();
            let n = t.db.rekey(&old, &new, crate::now()).await.unwrap();
            assert_eq!(n, 3, "{}", t.backend);
            assert_eq!(
                &t.db
                    .channel_secret(&new, channel.id)
                    .await
                    .unwrap()
                    .unwrap()[..],
                b"whsec_x"
            );
            assert!(t.db.version_key(&old, s.version).await.is_err());
            assert_eq!(
                &t.db.version_key(&new, s.version).await.unwrap()[..],
                &s.key_der[..]
            );
            let hmac =
                t.db.account_eab_hmac(&new, s.account.id)
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(&hmac[..], &s.hmac[..]);
        }
    }

    #[tokio::test]
    async fn failed_rekey_changes_nothing() {
        for t in TestDb::all().await {
            let old = Secrets::generate();
            let s = store_secrets(&t, &old).await;
            // A ciphertext moved into another row cannot be opened: rekey must abort whole.
            on_pool!(t.db, p => sqlx::query("UPDATE acme_accounts SET credentials_enc = eab_hmac_enc").execute(p).await.map(|r| r.rows_affected())).unwrap();
            let new = Secrets::generate();
            let err =
                t.db.rekey(&old, &new, crate::now())
                    .await
                    .unwrap_err()
                    .to_string();
            assert!(err.contains("another row or column"), "{err}");
            assert_eq!(
                &t.db.version_key(&old, s.version).await.unwrap()[..],
                &s.key_der[..]
            );
            let hmac =
                t.db.account_eab_hmac(&old, s.account.id)
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(&hmac[..], &s.hmac[..]);
        }
    }

    fn instance(host: &str, pid: i64, heartbeat_at: OffsetDateTime) -> ServerInstance {
        ServerInstance {
            id: Uuid::new_v4(),
            host: host.into(),
            pid,
            started_at: heartbeat_at,
            heartbeat_at,
        }
    }

    #[tokio::test]
    async fn rekey_refuses_while_a_server_is_alive_and_works_after_it_stopped() {
        for t in TestDb::all().await {
            let (old, new) = (Secrets::generate(), Secrets::generate());
            let s = store_secrets(&t, &old).await;
            let now = crate::now();
            let alive_since = now - time::Duration::seconds(30);
            let alive = instance("web-1", 7, now);
            t.db.register_instance(&alive).await.unwrap();
            t.db.register_instance(&instance("web-2", 8, now - time::Duration::minutes(5)))
                .await
                .unwrap();
            let err = t.db.rekey(&old, &new, alive_since).await.unwrap_err();
            let message = err.to_string();
            assert!(matches!(err, Error::InUse(_)), "{}: {message}", t.backend);
            assert!(
                message.contains("1 server process") && message.contains("pid 7 on web-1"),
                "{message}"
            );
            assert_eq!(
                &t.db.version_key(&old, s.version).await.unwrap()[..],
                &s.key_der[..],
                "{}: nothing re-encrypted",
                t.backend
            );
            assert_eq!(
                t.db.instances().await.unwrap().len(),
                2,
                "refused: nothing removed"
            );

            t.db.deregister_instance(alive.id).await.unwrap();
            assert_eq!(t.db.rekey(&old, &new, alive_since).await.unwrap(), 2);
            assert_eq!(
                &t.db.version_key(&new, s.version).await.unwrap()[..],
                &s.key_der[..]
            );
            assert!(
                t.db.instances().await.unwrap().is_empty(),
                "{}: the dead process's row is removed",
                t.backend
            );
        }
    }

    #[tokio::test]
    async fn a_secret_written_while_rekey_runs_is_re_encrypted_too() {
        let Some(t) = TestDb::postgres().await else {
            return;
        };
        let (old, new) = (Secrets::generate(), Secrets::generate());
        store_secrets(&t, &old).await;
        let super::super::Pool::Pg(pool) = &t.db.pool else {
            unreachable!("a PostgreSQL test database")
        };
        // A writer (say a server's API call) has inserted a secret sealed to the old identity
        // but not committed yet when rekey starts.
        let now = crate::now();
        let id = Uuid::now_v7();
        let sealed = old
            .seal(Binding::new("tsig_keys", "secret_enc", id), b"tsig secret")
            .unwrap();
        let mut writer = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO tsig_keys (id, key_name, secret_enc, created_at) VALUES ($1, 'late.', $2, $3)")
            .bind(id)
            .bind(sealed)
            .bind(now)
            .execute(&mut *writer)
            .await
            .unwrap();
        let rekey = tokio::spawn({
            let (db, old, new) = (t.db.clone(), old.clone(), new.clone());
            async move {
                db.rekey(&old, &new, now - time::Duration::seconds(30))
                    .await
            }
        });
        // Rekey either waits for the writer's lock or (unguarded) has already finished.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let waiting: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM pg_locks WHERE NOT granted")
                    .fetch_one(pool)
                    .await
                    .unwrap();
            if waiting > 0 || rekey.is_finished() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "rekey neither waited nor finished"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        writer.commit().await.unwrap();
        assert_eq!(
            rekey.await.unwrap().unwrap(),
            3,
            "the late row was re-encrypted"
        );
        assert_eq!(
            &t.db.tsig_key(&new, "late.").await.unwrap().unwrap()[..],
            b"tsig secret"
        );
    }
}
