//! `certkeep rekey`: re-encrypts every stored secret to a new age identity, on the database
//! directly. Refused while a server runs on it.

use std::path::Path;

use anyhow::Context as _;
use certkeep_server::{bootstrap, now};

use crate::serve::ServerArgs;

/// Re-encrypts in one transaction and tells the operator what to change before the next start.
pub(crate) async fn rekey(args: &ServerArgs, new_identity: &Path) -> anyhow::Result<()> {
    let config = args.load()?;
    let old = bootstrap::load_secrets(&config)?;
    let new = certkeep_server::secrets::Secrets::load(new_identity)?;
    // On SQLite this takes the lock file a running server holds: refused while one runs.
    let db = bootstrap::open_db_exclusive(&config).await?;
    let alive_since = now() - std::time::Duration::from_secs(config.liveness.stale_secs);
    let count = db
        .rekey(&old, &new, alive_since)
        .await
        .context("re-encrypt secrets")?;
    println!(
        "re-encrypted {count} secrets to {}. Now point age_identity_file at {} (or move it to {}) before the next start, and keep the old identity until backups made with it expire.",
        new.recipient(),
        new_identity.display(),
        config.identity_path().display()
    );
    Ok(())
}
