//! Built PFX files kept in memory, so that an agent pulling the same version again (each sync
//! after a failed install, several hosts behind one agent identity, a benchmark) costs no
//! PKCS#12 build.
//!
//! One slot per (agent, version). A slot remembers what its PFX was built with: a tag of the
//! agent's sealed CCS password (SHA-256 of the age ciphertext, which is fresh at every change,
//! so never the password or anything derived from it alone) and the encryption mode. A lookup
//! with another tag or mode drops the slot, so a changed password or mode is never answered
//! with the old file, and no agent is ever given a file from another agent's slot. A version
//! never changes once stored, so the (agent, version) key needs no other invalidation; a new
//! version is a new key, and the old slots age out.
//!
//! Bounded by entries and bytes (`[pfx_cache]`), least recently used evicted first. The bytes
//! are wiped when a slot is dropped (evicted, replaced or stale): they are encrypted with the
//! agent's password, but still key material.

use std::sync::{Mutex, PoisonError};

use certkeep_api_types::pfx;
use hashlink::LinkedHashMap;
use zeroize::Zeroizing;

use crate::api::error::ApiError;
use crate::app::AppState;
use crate::config::PfxCacheConfig;
use crate::db::pfx::PfxSource;
use crate::model::{AgentId, PfxEncryption, VersionId};

/// What a PFX was built from besides its version: the agent's password (as a tag) and mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BuiltWith {
    /// SHA-256 of the agent's sealed CCS password (`db::pfx::PfxSource::password_tag`).
    password_tag: [u8; 32],
    /// The agent's PFX encryption mode.
    mode: PfxEncryption,
}

/// One cached PFX.
struct Slot {
    built_with: BuiltWith,
    pfx: Zeroizing<Vec<u8>>,
}

/// The slots, least recently used first, and their total size.
#[derive(Default)]
struct Slots {
    map: LinkedHashMap<(AgentId, VersionId), Slot>,
    bytes: usize,
}

impl Slots {
    fn remove(&mut self, key: &(AgentId, VersionId)) {
        if let Some(slot) = self.map.remove(key) {
            self.bytes -= slot.pfx.len();
        }
    }
}

/// Built PFX files by (agent, version), bounded by entries and bytes.
pub(super) struct PfxCache {
    slots: Mutex<Slots>,
    max_entries: usize,
    max_bytes: usize,
}

impl PfxCache {
    /// An empty cache with the limits of `config`.
    pub(super) fn new(config: &PfxCacheConfig) -> Self {
        Self {
            slots: Mutex::default(),
            max_entries: config.max_entries,
            max_bytes: config.max_bytes,
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        // A panic while holding the lock leaves the map consistent (no step can panic midway).
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The PFX of `source` (in its mode): a copy of the cached one, else built from the stored
    /// chain, key and password (`pfx::build_pfx`, which opens its output again to check it)
    /// and kept.
    pub(super) async fn pfx(
        &self,
        state: &AppState,
        source: &PfxSource,
    ) -> Result<Vec<u8>, ApiError> {
        let mode = source.mode;
        let with = BuiltWith {
            password_tag: source.password_tag,
            mode,
        };
        if let Some(cached) = self.get(source.agent_id, source.version_id, &with) {
            return Ok(cached);
        }
        let version = state.db.version(source.version_id).await?;
        let chain = super::chain_der(&version.chain_pem)?;
        let key = state
            .db
            .version_key(&state.secrets, source.version_id)
            .await?;
        let password = source.password(&state.secrets)?;
        let built =
            tokio::task::spawn_blocking(move || pfx::build_pfx(&key, &chain, &password, mode))
                .await
                .map_err(|e| ApiError::Internal(e.into()))?
                .map_err(|e| ApiError::Internal(e.into()))?;
        self.insert(source.agent_id, source.version_id, with, &built);
        Ok(built)
    }

    /// A copy of the PFX of `version` built for `agent` exactly `with` this password tag and
    /// mode. A slot built otherwise is dropped (the password or the mode changed).
    fn get(&self, agent: AgentId, version: VersionId, with: &BuiltWith) -> Option<Vec<u8>> {
        let key = (agent, version);
        let mut slots = self.slots();
        let slot = slots.map.to_back(&key)?;
        if slot.built_with == *with {
            return Some(slot.pfx.to_vec());
        }
        slots.remove(&key);
        None
    }

    /// Keeps `pfx`, the PFX of `version` built for `agent` `with` this password tag and mode,
    /// evicting the least recently used slots beyond the limits. A file larger than the byte
    /// limit is not kept.
    fn insert(&self, agent: AgentId, version: VersionId, with: BuiltWith, pfx: &[u8]) {
        if self.max_entries == 0 || pfx.len() > self.max_bytes {
            return;
        }
        let key = (agent, version);
        let mut slots = self.slots();
        slots.remove(&key);
        while slots.map.len() >= self.max_entries || slots.bytes + pfx.len() > self.max_bytes {
            let Some((_, evicted)) = slots.map.pop_front() else {
                break;
            };
            slots.bytes -= evicted.pfx.len();
        }
        slots.bytes += pfx.len();
        slots.map.insert(
            key,
            Slot {
                built_with: with,
                pfx: Zeroizing::new(pfx.to_vec()),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn cache(max_entries: usize, max_bytes: usize) -> PfxCache {
        PfxCache::new(&PfxCacheConfig {
            max_entries,
            max_bytes,
        })
    }

    fn ids() -> (AgentId, VersionId) {
        (AgentId(Uuid::new_v4()), VersionId(Uuid::new_v4()))
    }

    const LEGACY: BuiltWith = BuiltWith {
        password_tag: [1; 32],
        mode: PfxEncryption::Legacy,
    };

    #[test]
    fn answers_only_what_was_built_with_the_same_password_tag_and_mode() {
        let c = cache(10, 1000);
        let (agent, version) = ids();
        c.insert(agent, version, LEGACY, b"pfx-1");
        assert_eq!(
            c.get(agent, version, &LEGACY).as_deref(),
            Some(&b"pfx-1"[..])
        );
        // Another agent, another version: nothing.
        assert_eq!(c.get(ids().0, version, &LEGACY), None);
        assert_eq!(c.get(agent, ids().1, &LEGACY), None);
        // Another mode: nothing, and the stale slot is gone even for the old mode.
        let aes = BuiltWith {
            mode: PfxEncryption::Aes256,
            ..LEGACY
        };
        assert_eq!(c.get(agent, version, &aes), None);
        assert_eq!(c.get(agent, version, &LEGACY), None);
        // Another password: nothing, and the slot is dropped.
        c.insert(agent, version, LEGACY, b"pfx-1");
        let rotated = BuiltWith {
            password_tag: [2; 32],
            ..LEGACY
        };
        assert_eq!(c.get(agent, version, &rotated), None);
        assert_eq!(c.get(agent, version, &LEGACY), None);
        assert_eq!(c.slots().bytes, 0);
    }

    #[test]
    fn evicts_the_least_recently_used_beyond_entries_and_bytes() {
        let c = cache(2, 10);
        let (a, b, d) = (ids(), ids(), ids());
        c.insert(a.0, a.1, LEGACY, b"aaaa");
        c.insert(b.0, b.1, LEGACY, b"bbbb");
        // `a` was used last, so the third entry evicts `b`.
        assert!(c.get(a.0, a.1, &LEGACY).is_some());
        c.insert(d.0, d.1, LEGACY, b"dddd");
        assert!(c.get(b.0, b.1, &LEGACY).is_none());
        assert!(c.get(a.0, a.1, &LEGACY).is_some());
        assert!(c.get(d.0, d.1, &LEGACY).is_some());
        // 8 bytes held; 6 more exceed 10, so the least recently used (`a`) goes.
        c.insert(b.0, b.1, LEGACY, b"bbbbbb");
        assert!(c.get(a.0, a.1, &LEGACY).is_none());
        assert!(c.get(d.0, d.1, &LEGACY).is_some());
        assert_eq!(c.slots().bytes, 10);
        // Replacing a slot counts its bytes once.
        c.insert(b.0, b.1, LEGACY, b"bb");
        assert_eq!(c.slots().bytes, 6);
        // Larger than the whole budget: not kept, nothing evicted.
        c.insert(a.0, a.1, LEGACY, &[0; 11]);
        assert!(c.get(a.0, a.1, &LEGACY).is_none());
        assert_eq!(c.slots().map.len(), 2);
    }

    #[test]
    fn zero_entries_turns_it_off() {
        let c = cache(0, 1000);
        let (agent, version) = ids();
        c.insert(agent, version, LEGACY, b"pfx");
        assert_eq!(c.get(agent, version, &LEGACY), None);
    }
}
