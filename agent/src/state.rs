//! Local sync state in `<state_dir>/state.json` (manifest ETag, last result) and the lock that
//! keeps two syncs of one agent from running at once.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::fsio::{self, Access};

/// State file name in the state directory.
pub const STATE_FILE: &str = "state.json";
/// Lock file name in the state directory.
const LOCK_FILE: &str = "agent.lock";

/// What the agent remembers between syncs.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncState {
    /// ETag of the last manifest that was fully installed and reported.
    pub etag: Option<Etag>,
    /// Summary of the last sync.
    pub last_sync: Option<LastSync>,
}

/// A manifest ETag, valid only for the agent and target folders it was installed for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Etag {
    /// The `ETag` header.
    pub value: String,
    /// Agent the manifest was for; re-enrolling starts afresh.
    pub agent_id: Uuid,
    /// Folders of its targets; a folder that lost our manifest file starts afresh.
    pub targets: Vec<PathBuf>,
}

/// Summary of one sync, shown by `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastSync {
    /// When it finished.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Everything current and reported.
    pub success: bool,
    /// The server answered 304.
    pub unchanged: bool,
    /// Files holding the manifest's certificate.
    pub installed: usize,
    /// Files that could not be written.
    pub failed: usize,
    /// Dropped files left in place.
    pub kept: usize,
    /// Errors, per file and general.
    pub errors: Vec<String>,
    /// Files in the targets we left alone.
    pub notes: Vec<String>,
    /// The targets of the last manifest, described.
    #[serde(default)]
    pub targets: Vec<String>,
}

impl SyncState {
    /// Reads the state; a missing or unreadable file means a fresh start.
    pub fn load(state_dir: &Path) -> Self {
        let path = state_dir.join(STATE_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "ignoring unreadable state file");
                Self::default()
            }),
            Err(_) => Self::default(),
        }
    }

    /// Writes the state atomically.
    pub fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        let path = state_dir.join(STATE_FILE);
        let json = serde_json::to_vec_pretty(self)?;
        fsio::replace(&path, &json, Access::Shared)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Held while a sync runs; released when dropped or when the process dies.
#[derive(Debug)]
pub struct SyncLock {
    _file: File,
}

/// Takes the agent's lock, failing at once if another sync holds it.
pub fn lock(state_dir: &Path) -> anyhow::Result<SyncLock> {
    let path = state_dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "another certkeep-agent sync is running (lock {})",
            path.display()
        )
    })?;
    Ok(SyncLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        assert!(lock(dir.path()).is_err());
        drop(first);
        lock(dir.path()).unwrap();
    }

    #[test]
    fn state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert!(SyncState::load(dir.path()).etag.is_none());
        let etag = Etag {
            value: "\"abc\"".into(),
            agent_id: Uuid::new_v4(),
            targets: vec![dir.path().to_owned()],
        };
        let state = SyncState {
            etag: Some(etag.clone()),
            last_sync: None,
        };
        state.save(dir.path()).unwrap();
        assert_eq!(SyncState::load(dir.path()).etag, Some(etag));
    }
}
