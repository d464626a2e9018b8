//! Storage. Knows SQL for both backends (PostgreSQL and embedded SQLite); knows nothing about
//! HTTP or ACME. One concrete [`Db`] over two pools; statements are shared where the dialects
//! agree and written twice only where they differ. Row types stay private to this module tree.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};

pub mod accounts;
pub mod agent_changes;
pub mod agents;
pub mod audit;
pub mod certificates;
pub mod deployments;
pub mod enrollment;
pub mod instances;
pub mod lifecycle;
pub mod metrics;
pub mod moves;
pub mod notify;
pub mod oidc_logins;
pub mod orders;
pub mod overview;
pub mod pfx;
pub mod rekey;
pub mod rollout;
pub mod served;
pub mod server_keys;
pub mod solvers;
pub mod targets;
pub mod tokens;
pub mod tsig_keys;
pub mod ui_sessions;
pub mod versions;

/// Storage errors. Constraint violations are mapped to domain meaning here.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database: {0}")]
    Sqlx(#[source] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretsError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Another process uses the database (a running server), so the operation is refused.
    #[error("{0}")]
    InUse(String),
    /// The SQLite database's lock file cannot be opened or locked.
    #[error("lock file {path}: {source}")]
    LockFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => Error::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                Error::Conflict(db.constraint().unwrap_or("unique").to_owned())
            }
            other => Error::Sqlx(other),
        }
    }
}

/// Result alias for storage calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The database: PostgreSQL for production, SQLite embedded. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pool: Pool,
    /// The audit chain's group commit.
    audit: std::sync::Arc<audit::GroupCommit>,
    /// Who hears of committed writes that may change an agent's identity or manifest.
    agent_changes: std::sync::Arc<agent_changes::AgentChanges>,
    /// The SQLite lock file, held while any clone of this `Db` lives.
    lock: Option<std::sync::Arc<instances::DataDirLock>>,
    /// Statements run through [`on_pool!`], for tests that bound the queries of a request.
    #[cfg(any(test, feature = "testkit"))]
    statements: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Clone, Debug)]
enum Pool {
    Pg(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` once per backend with `$p` bound to the concrete pool (or transaction).
macro_rules! on_pool {
    ($db:expr, $p:ident => $body:expr) => {{
        $db.count_statement();
        match &$db.pool {
            $crate::db::Pool::Pg($p) => $body,
            $crate::db::Pool::Sqlite($p) => $body,
        }
    }};
}
pub(crate) use on_pool;

/// Opens a transaction that will write. SQLite takes its write lock at `BEGIN IMMEDIATE`, so a
/// transaction that reads before it writes (the audit chain head, a lease) waits for other
/// writers within `busy_timeout` instead of failing with "database is locked" when another
/// connection committed in between; PostgreSQL's plain `BEGIN` already waits on row locks.
pub(crate) trait BeginWrite {
    type Database: sqlx::Database;

    fn begin_write(
        &self,
    ) -> impl Future<Output = sqlx::Result<sqlx::Transaction<'static, Self::Database>>> + Send;
}

impl BeginWrite for PgPool {
    type Database = sqlx::Postgres;

    fn begin_write(
        &self,
    ) -> impl Future<Output = sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>>> + Send {
        self.begin()
    }
}

impl BeginWrite for SqlitePool {
    type Database = sqlx::Sqlite;

    fn begin_write(
        &self,
    ) -> impl Future<Output = sqlx::Result<sqlx::Transaction<'static, sqlx::Sqlite>>> + Send {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

impl Db {
    /// Connects to PostgreSQL at `url`.
    pub async fn connect_postgres(url: &secrecy::SecretString) -> Result<Self> {
        let options = PgConnectOptions::from_str(url.expose_secret())
            .map_err(|_| Error::Corrupt("database_url is not a valid PostgreSQL URL".into()))?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self::from_pool(Pool::Pg(pool)))
    }

    /// Opens (creating if missing) the embedded SQLite database at `path`.
    pub async fn open_sqlite(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        Ok(Self::from_pool(Pool::Sqlite(pool)))
    }

    /// Like [`Db::open_sqlite`], for the only process using the database: takes its lock file
    /// first (see [`instances::DataDirLock`]) and holds it while this `Db` (or a clone) lives.
    pub async fn open_sqlite_exclusive(path: &Path) -> Result<Self> {
        let lock = instances::DataDirLock::acquire(path)?;
        let mut db = Self::open_sqlite(path).await?;
        db.lock = Some(std::sync::Arc::new(lock));
        Ok(db)
    }

    fn from_pool(pool: Pool) -> Self {
        Self {
            pool,
            audit: std::sync::Arc::default(),
            agent_changes: std::sync::Arc::default(),
            lock: None,
            #[cfg(any(test, feature = "testkit"))]
            statements: std::sync::Arc::default(),
        }
    }

    /// Counts one statement (tests only; nothing otherwise).
    #[inline]
    fn count_statement(&self) {
        #[cfg(any(test, feature = "testkit"))]
        self.statements
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many statements this `Db` (and its clones) ran through `on_pool!` so far.
    #[cfg(any(test, feature = "testkit"))]
    pub fn statements_run(&self) -> u64 {
        self.statements.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether several processes may share this database (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.pool, Pool::Pg(_))
    }

    /// Human name of the backend, for logs.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Pg(_) => "postgres",
            Pool::Sqlite(_) => "sqlite",
        }
    }

    /// Applies pending forward-only migrations; returns how many were applied.
    pub async fn migrate(&self) -> Result<usize> {
        let before = self.applied_migrations().await.unwrap_or(0);
        match &self.pool {
            Pool::Pg(p) => PG_MIGRATOR.run(p).await?,
            Pool::Sqlite(p) => SQLITE_MIGRATOR.run(p).await?,
        }
        Ok(self.applied_migrations().await?.saturating_sub(before))
    }

    async fn applied_migrations(&self) -> Result<usize> {
        const Q: &str = "SELECT COUNT(*) FROM _sqlx_migrations WHERE success";
        let n: i64 = on_pool!(self, p => sqlx::query_scalar(Q).fetch_one(p).await)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Checks the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        on_pool!(self, p => p.close().await);
    }
}

/// Encodes a JSON list for a TEXT column.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".into())
}

/// Decodes a JSON TEXT column.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("{column}: {e}")))
}

#[cfg(test)]
mod tests {
    fn names(dir: &str) -> Vec<String> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../migrations")
            .join(dir);
        let mut names: Vec<String> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn both_backends_have_the_same_migrations() {
        let pg = names("postgres");
        assert!(!pg.is_empty());
        assert_eq!(
            pg,
            names("sqlite"),
            "migrations/postgres and migrations/sqlite must list the same files"
        );
    }

    #[tokio::test]
    async fn migrate_is_idempotent() {
        for t in crate::testkit::TestDb::all().await {
            assert_eq!(t.db.migrate().await.unwrap(), 0, "{}", t.backend);
            t.db.ping().await.unwrap();
        }
    }
}
