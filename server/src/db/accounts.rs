//! `acme_accounts`: CA endpoints with their EAB and the account credentials they produced.

use time::OffsetDateTime;
use uuid::Uuid;

use super::BeginWrite as _;
use super::notify::{NewEvent, Outbox as _};
use super::{Db, Result, from_json, on_pool, to_json};
use crate::model::{Account, AccountId, AccountState};
use crate::secrets::{Binding, SecretBytes, Secrets};

const TABLE: &str = "acme_accounts";

/// What is needed to create an account row. The EAB HMAC arrives raw and leaves sealed.
pub struct NewAccount<'a> {
    pub name: &'a str,
    pub directory_url: &'a str,
    pub contact: &'a [String],
    pub allowed_domains: &'a [String],
    pub eab_kid: Option<&'a str>,
    pub eab_hmac: Option<&'a [u8]>,
    pub extra_roots_pem: Option<&'a str>,
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    id: Uuid,
    name: String,
    directory_url: String,
    contact: String,
    allowed_domains: String,
    eab_kid: Option<String>,
    eab_hmac_held: bool,
    extra_roots_pem: Option<String>,
    account_url: Option<String>,
    state: String,
    last_error: Option<String>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl AccountRow {
    fn into_model(self) -> Result<Account> {
        Ok(Account {
            id: AccountId(self.id),
            contact: from_json("contact", &self.contact)?,
            allowed_domains: from_json("allowed_domains", &self.allowed_domains)?,
            state: self.state.parse().map_err(super::Error::Corrupt)?,
            name: self.name,
            directory_url: self.directory_url,
            eab_kid: self.eab_kid,
            eab_hmac_held: self.eab_hmac_held,
            extra_roots_pem: self.extra_roots_pem,
            account_url: self.account_url,
            last_error: self.last_error,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// `SELECT <every model column> FROM acme_accounts <tail>`.
macro_rules! select_accounts {
    ($tail:literal) => {
        concat!(
            "SELECT id, name, directory_url, contact, allowed_domains, eab_kid, (eab_hmac_enc IS NOT NULL) AS eab_hmac_held, extra_roots_pem, account_url, state, last_error, created_at, updated_at FROM acme_accounts ",
            $tail
        )
    };
}

fn eab_binding(id: AccountId) -> Binding {
    Binding::new(TABLE, "eab_hmac_enc", id.0)
}

fn credentials_binding(id: AccountId) -> Binding {
    Binding::new(TABLE, "credentials_enc", id.0)
}

impl Db {
    /// Stores a new account in state `pending`, sealing the EAB HMAC.
    pub async fn insert_account(
        &self,
        secrets: &Secrets,
        new: &NewAccount<'_>,
        now: OffsetDateTime,
    ) -> Result<Account> {
        const Q: &str = "INSERT INTO acme_accounts (id, name, directory_url, contact, allowed_domains, eab_kid, eab_hmac_enc, extra_roots_pem, state, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $9)";
        let id = AccountId::new();
        let hmac = new
            .eab_hmac
            .map(|h| secrets.seal(eab_binding(id), h))
            .transpose()?;
        on_pool!(self, p => sqlx::query(Q)
            .bind(id.0)
            .bind(new.name)
            .bind(new.directory_url)
            .bind(to_json(&new.contact))
            .bind(to_json(&new.allowed_domains))
            .bind(new.eab_kid)
            .bind(hmac)
            .bind(new.extra_roots_pem)
            .bind(now)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        self.account(id).await
    }

    /// One account by id.
    pub async fn account(&self, id: AccountId) -> Result<Account> {
        const Q: &str = select_accounts!("WHERE id = $1");
        let row: AccountRow = on_pool!(self, p => sqlx::query_as(Q).bind(id.0).fetch_one(p).await)?;
        row.into_model()
    }

    /// One account by its unique name.
    pub async fn account_by_name(&self, name: &str) -> Result<Account> {
        const Q: &str = select_accounts!("WHERE name = $1");
        let row: AccountRow = on_pool!(self, p => sqlx::query_as(Q).bind(name).fetch_one(p).await)?;
        row.into_model()
    }

    /// Every account, by name.
    pub async fn list_accounts(&self) -> Result<Vec<Account>> {
        const Q: &str = select_accounts!("ORDER BY name");
        let rows: Vec<AccountRow> = on_pool!(self, p => sqlx::query_as(Q).fetch_all(p).await)?;
        rows.into_iter().map(AccountRow::into_model).collect()
    }

    /// The raw EAB HMAC key, if the account has one.
    pub async fn account_eab_hmac(
        &self,
        secrets: &Secrets,
        id: AccountId,
    ) -> Result<Option<SecretBytes>> {
        const Q: &str = "SELECT eab_hmac_enc FROM acme_accounts WHERE id = $1";
        let ct: Option<Vec<u8>> =
            on_pool!(self, p => sqlx::query_scalar(Q).bind(id.0).fetch_one(p).await)?;
        ct.map(|c| secrets.open(eab_binding(id), &c).map_err(Into::into))
            .transpose()
    }

    /// The stored ACME account credentials JSON, once registration succeeded.
    pub async fn account_credentials(
        &self,
        secrets: &Secrets,
        id: AccountId,
    ) -> Result<Option<SecretBytes>> {
        const Q: &str = "SELECT credentials_enc FROM acme_accounts WHERE id = $1";
        let ct: Option<Vec<u8>> =
            on_pool!(self, p => sqlx::query_scalar(Q).bind(id.0).fetch_one(p).await)?;
        ct.map(|c| {
            secrets
                .open(credentials_binding(id), &c)
                .map_err(Into::into)
        })
        .transpose()
    }

    /// Records a successful registration: sealed credentials and account URL, state `valid`.
    /// The EAB HMAC key is deleted: the CA accepts it once, so it is of no further use.
    pub async fn set_account_registered(
        &self,
        secrets: &Secrets,
        id: AccountId,
        credentials_json: &[u8],
        account_url: &str,
        now: OffsetDateTime,
    ) -> Result<()> {
        const Q: &str = "UPDATE acme_accounts SET credentials_enc = $2, account_url = $3, eab_hmac_enc = NULL, state = 'valid', last_error = NULL, updated_at = $4 WHERE id = $1";
        let ct = secrets.seal(credentials_binding(id), credentials_json)?;
        on_pool!(self, p => sqlx::query(Q).bind(id.0).bind(ct).bind(account_url).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Deactivates an account and makes every unfinished order through it due now, so the
    /// engine ends each at once (failed, naming the account) instead of at its parked or retry
    /// time. Returns how many orders were made due.
    pub async fn deactivate_account(&self, id: AccountId, now: OffsetDateTime) -> Result<u64> {
        const ACCOUNT: &str =
            "UPDATE acme_accounts SET state = 'deactivated', updated_at = $2 WHERE id = $1";
        const ORDERS: &str = "UPDATE orders SET next_attempt_at = $2, updated_at = $2 WHERE account_id = $1 AND state NOT IN ('done', 'failed') AND next_attempt_at > $2";
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let n = sqlx::query(ACCOUNT).bind(id.0).bind(now).execute(&mut *tx).await?.rows_affected();
            if n == 0 {
                return Err(super::Error::NotFound);
            }
            let due = sqlx::query(ORDERS).bind(id.0).bind(now).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok(due)
        })
    }

    /// Moves an account to `state`, recording `error` (or clearing it).
    pub async fn set_account_state(
        &self,
        id: AccountId,
        state: AccountState,
        error: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<()> {
        const Q: &str =
            "UPDATE acme_accounts SET state = $2, last_error = $3, updated_at = $4 WHERE id = $1";
        let done = on_pool!(self, p => sqlx::query(Q).bind(id.0).bind(state.as_str()).bind(error).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        if done == 0 {
            return Err(super::Error::NotFound);
        }
        Ok(())
    }

    /// Marks an account `failed` with `error` and raises `event` (`account.problem`) in the
    /// same transaction.
    pub async fn fail_account(
        &self,
        id: AccountId,
        error: &str,
        event: &NewEvent,
        now: OffsetDateTime,
    ) -> Result<()> {
        const Q: &str = "UPDATE acme_accounts SET state = 'failed', last_error = $2, updated_at = $3 WHERE id = $1";
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let done = sqlx::query(Q).bind(id.0).bind(error).bind(now).execute(&mut *tx).await?.rows_affected();
            if done == 0 {
                return Err(super::Error::NotFound);
            }
            tx.enqueue_event(event).await?;
            tx.commit().await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TestDb;

    #[tokio::test]
    async fn account_round_trip_on_every_backend() {
        let secrets = Secrets::generate();
        for t in TestDb::all().await {
            let now = crate::now();
            let acc =
                t.db.insert_account(
                    &secrets,
                    &NewAccount {
                        name: "incommon-rsa",
                        directory_url: "https://acme.example/v2/InCommonRSAOV",
                        contact: &["mailto:pki@example.edu".into()],
                        allowed_domains: &["*.example.edu".into()],
                        eab_kid: Some("kid-1"),
                        eab_hmac: Some(&[7u8; 32]),
                        extra_roots_pem: None,
                    },
                    now,
                )
                .await
                .unwrap();
            assert_eq!(acc.state, AccountState::Pending, "{}", t.backend);
            assert!(acc.eab_hmac_held);
            assert_eq!(acc.allowed_domains, vec!["*.example.edu".to_owned()]);
            let hmac =
                t.db.account_eab_hmac(&secrets, acc.id)
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(&hmac[..], &[7u8; 32]);
            assert!(
                t.db.account_credentials(&secrets, acc.id)
                    .await
                    .unwrap()
                    .is_none()
            );
            t.db.set_account_registered(
                &secrets,
                acc.id,
                b"{\"id\":\"x\"}",
                "https://acme.example/acct/1",
                now,
            )
            .await
            .unwrap();
            let acc = t.db.account_by_name("incommon-rsa").await.unwrap();
            assert_eq!(acc.state, AccountState::Valid);
            assert!(!acc.eab_hmac_held, "{}", t.backend);
            assert!(
                t.db.account_eab_hmac(&secrets, acc.id)
                    .await
                    .unwrap()
                    .is_none(),
                "the EAB HMAC column is NULL once registered ({})",
                t.backend
            );
            assert_eq!(
                acc.account_url.as_deref(),
                Some("https://acme.example/acct/1")
            );
            let dup =
                t.db.insert_account(
                    &secrets,
                    &NewAccount {
                        name: "incommon-rsa",
                        directory_url: "https://x",
                        contact: &[],
                        allowed_domains: &[],
                        eab_kid: None,
                        eab_hmac: None,
                        extra_roots_pem: None,
                    },
                    now,
                )
                .await;
            assert!(
                matches!(dup, Err(super::super::Error::Conflict(_))),
                "{}",
                t.backend
            );
        }
    }
}
