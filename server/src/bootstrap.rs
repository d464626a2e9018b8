//! First start and every start: data directory, age identity, database, migrations, internal
//! CA, `ca.pem` and the first admin token.

use std::path::Path;

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::app::AppState;
use crate::ca::InternalCa;
use crate::config::Config;
use crate::db::Db;
use crate::db::tokens::NewToken;
use crate::model::Scope;
use crate::secrets::Secrets;

/// Length in bytes of the random part of an API token (256 bits).
pub const TOKEN_BYTES: usize = 32;

/// Generates a new API token secret: `ck_` + base64url of 256 random bits.
pub fn new_token_secret() -> zeroize::Zeroizing<String> {
    use base64::Engine as _;
    let bytes: [u8; TOKEN_BYTES] = rand::random();
    zeroize::Zeroizing::new(format!(
        "ck_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// SHA-256 of a token secret, the only form stored.
pub fn token_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Creates the data directory with owner-only permissions if missing.
fn ensure_data_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("create data directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    tracing::info!(path = %dir.display(), "created data directory");
    Ok(())
}

/// Loads (or, on first start, creates) the age identity.
pub fn load_secrets(config: &Config) -> anyhow::Result<Secrets> {
    let path = config.identity_path();
    if config.age_identity_file.is_some() {
        return Secrets::load(&path).context("load the configured age identity");
    }
    ensure_data_dir(&config.data_dir)?;
    let (secrets, created) = Secrets::load_or_create(&path)?;
    if created {
        tracing::warn!(path = %path.display(), "created a new age identity; back it up together with the database");
    }
    Ok(secrets)
}

/// Opens the configured database (PostgreSQL, or SQLite in the data directory).
pub async fn open_db(config: &Config) -> anyhow::Result<Db> {
    open(config, false).await
}

/// Opens the configured database for a process that changes it while running (`serve`,
/// `rekey`): on SQLite it first takes the database's lock file, so it fails at once while
/// another such process runs on the same data directory, and holds it while the `Db` lives.
pub async fn open_db_exclusive(config: &Config) -> anyhow::Result<Db> {
    open(config, true).await
}

async fn open(config: &Config, exclusive: bool) -> anyhow::Result<Db> {
    let db = match &config.database_url {
        Some(url) => Db::connect_postgres(url)
            .await
            .context("connect to PostgreSQL")?,
        None => {
            ensure_data_dir(&config.data_dir)?;
            let path = config.data_dir.join("certkeep.db");
            let db = if exclusive {
                Db::open_sqlite_exclusive(&path).await
            } else {
                Db::open_sqlite(&path).await
            };
            db.with_context(|| format!("open SQLite database {}", path.display()))?
        }
    };
    Ok(db)
}

/// Applies migrations, logging how many ran.
pub async fn migrate(db: &Db) -> anyhow::Result<()> {
    let applied = db.migrate().await.context("apply migrations")?;
    tracing::info!(
        backend = db.backend(),
        applied,
        "database migrations up to date"
    );
    Ok(())
}

/// Builds the application state: identity, database, migrations, CA, first admin token.
pub async fn prepare(config: Config, now: OffsetDateTime) -> anyhow::Result<AppState> {
    ensure_data_dir(&config.data_dir)?;
    let secrets = load_secrets(&config)?;
    let db = open_db_exclusive(&config).await?;
    if config.migrate_on_start {
        migrate(&db).await?;
    }
    let ca = InternalCa::load_or_create(&db, &secrets, now)
        .await
        .context("load or create the internal CA")?;
    crate::fsutil::replace_private(&config.data_dir.join("ca.pem"), ca.cert_pem().as_bytes())
        .context("write ca.pem")?;
    ensure_admin_token(&db, &config.data_dir, now).await?;
    Ok(AppState::new(db, secrets, ca, config))
}

/// On a database without tokens, creates an admin token and writes it once to
/// `<data_dir>/admin-token` (mode 0600). The token itself is never printed or logged.
async fn ensure_admin_token(db: &Db, data_dir: &Path, now: OffsetDateTime) -> anyhow::Result<()> {
    if !db.list_tokens().await?.is_empty() {
        return Ok(());
    }
    let path = data_dir.join("admin-token");
    let secret = new_token_secret();
    crate::fsutil::write_private_new(&path, format!("{}\n", secret.as_str()).as_bytes())
        .with_context(|| format!("write {} (remove a stale file there first)", path.display()))?;
    db.insert_token(
        &NewToken {
            name: "initial admin",
            hash: &token_hash(&secret),
            scopes: &[Scope::Admin, Scope::Export],
            domain_patterns: &[],
            expires_at: None,
            created_by: Some("bootstrap"),
        },
        now,
    )
    .await?;
    tracing::warn!(path = %path.display(), "created the first admin API token; read it from this file");
    println!(
        "certkeep: first admin API token written to {}",
        path.display()
    );
    Ok(())
}
