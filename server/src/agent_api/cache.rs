//! The agent listener's in-memory cache: per agent its identity (the agent row) and its
//! manifest (body bytes and ETag, built once and shared), plus a memo of parsed client
//! certificates. A conditional manifest poll answered from it runs no query, no JSON and no
//! hash.
//!
//! Correctness rests on invalidation, never on expiry alone:
//! - every committed write that may change an identity or a manifest reaches
//!   [`AgentChangeSink::changed`]: in-process from the `Db` write functions, and on PostgreSQL
//!   from the triggers of migration 0015 through a LISTEN ([`spawn_listener`]);
//! - a load that began before an invalidation is not stored (the generation check), so a
//!   write racing a load cannot leave the old value behind;
//! - on PostgreSQL the cache is used only while the LISTEN is up, and dropped whole each time
//!   it (re)connects, so notifications missed while it was down do not matter;
//! - every entry expires after `agent_cache.refresh_secs` anyway;
//! - manifests under a rollout guard (a change window, canaries) depend on the clock and on
//!   probe results: they are never cached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderValue;
use tokio_util::sync::CancellationToken;

use crate::config::AgentCacheConfig;
use crate::db::Db;
use crate::db::agent_changes::{AgentChange, AgentChangeSink};
use crate::model::{Agent, AgentId};

/// Pause before listening again after the notification connection failed.
const RELISTEN_AFTER: Duration = Duration::from_secs(1);

/// A manifest as served: the JSON body and its ETag.
pub struct CachedManifest {
    /// The quoted ETag, derived from `body` alone.
    pub etag: HeaderValue,
    /// The serialized manifest.
    pub body: Bytes,
}

/// A snapshot of the cache's size, for `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSize {
    /// Agents cached.
    pub entries: usize,
    /// Approximate bytes held (entries, manifests, memoized certificates).
    pub bytes: usize,
}

/// What the cache may serve about one agent.
struct Entry {
    agent: Arc<Agent>,
    agent_loaded: Instant,
    manifest: Option<(Arc<CachedManifest>, Instant)>,
}

impl Entry {
    /// Approximate bytes held by this entry.
    fn weight(&self) -> usize {
        let agent = &self.agent;
        let strings = agent.name.len()
            + agent.cert_serial.as_ref().map_or(0, String::len)
            + agent.previous_cert_serial.as_ref().map_or(0, String::len)
            + agent.os_name.as_ref().map_or(0, String::len)
            + agent.os_build.as_ref().map_or(0, String::len)
            + agent.agent_version.as_ref().map_or(0, String::len)
            + agent
                .last_report_errors
                .iter()
                .map(String::len)
                .sum::<usize>();
        let manifest = self.manifest.as_ref().map_or(0, |(m, _)| {
            size_of::<CachedManifest>() + m.body.len() + m.etag.len()
        });
        size_of::<(AgentId, Entry)>() + size_of::<Agent>() + strings + manifest
    }
}

#[derive(Default)]
struct Inner {
    /// Bumped by every invalidation; a load stores its result only if it did not move.
    generation: u64,
    agents: HashMap<AgentId, Entry>,
    /// Sum of the agents' [`Entry::weight`].
    agent_bytes: usize,
    /// Client certificate (DER) → what it names. A pure function of the bytes: never stale.
    leaves: HashMap<Box<[u8]>, (AgentId, Arc<str>)>,
    leaf_bytes: usize,
}

impl Inner {
    fn remove(&mut self, id: AgentId) {
        if let Some(old) = self.agents.remove(&id) {
            self.agent_bytes = self.agent_bytes.saturating_sub(old.weight());
        }
    }

    fn put(&mut self, id: AgentId, entry: Entry, max: usize) {
        self.remove(id);
        if self.agents.len() >= max
            && let Some(victim) = self.agents.keys().next().copied()
        {
            self.remove(victim);
        }
        self.agent_bytes += entry.weight();
        self.agents.insert(id, entry);
    }
}

/// The cache, one per server process (held in `AppState`).
pub struct AgentCache {
    refresh: Duration,
    max_entries: usize,
    /// Whether entries may be served and stored: always on SQLite; on PostgreSQL only while
    /// the LISTEN is up.
    live: AtomicBool,
    inner: RwLock<Inner>,
    /// Ends the LISTEN task when the cache is dropped.
    stop: CancellationToken,
}

/// The generation a load started at, to store its result with.
#[derive(Clone, Copy, Debug)]
pub struct Ticket(u64);

impl AgentCache {
    /// A cache for `db` (registered for its change signals). On PostgreSQL it stays unused
    /// until [`spawn_listener`] is LISTENing.
    pub fn new(config: &AgentCacheConfig, db: &Db) -> Arc<Self> {
        let cache = Arc::new(Self {
            refresh: Duration::from_secs(config.refresh_secs),
            max_entries: config.max_entries,
            live: AtomicBool::new(!db.is_shared() && config.max_entries > 0),
            inner: RwLock::default(),
            stop: CancellationToken::new(),
        });
        let weak = Arc::downgrade(&cache);
        db.subscribe_agent_changes(weak);
        cache
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fresh(&self, loaded: Instant) -> bool {
        loaded.elapsed() < self.refresh
    }

    /// The current generation, taken before a load whose result may be stored.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.read().generation)
    }

    /// What the client certificate `der` names, if seen before.
    pub fn leaf(&self, der: &[u8]) -> Option<(AgentId, Arc<str>)> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        self.read().leaves.get(der).cloned()
    }

    /// Remembers what the client certificate `der` names (bounded like the agents).
    pub fn remember_leaf(&self, der: &[u8], id: AgentId, serial: Arc<str>) {
        if !self.live.load(Ordering::Acquire) {
            return;
        }
        let mut inner = self.write();
        if inner.leaves.len() >= self.max_entries {
            inner.leaves.clear();
            inner.leaf_bytes = 0;
        }
        inner.leaf_bytes += der.len() + serial.len() + size_of::<(Box<[u8]>, AgentId)>();
        inner.leaves.insert(der.into(), (id, serial));
    }

    /// The agent row, if cached and fresh.
    pub fn agent(&self, id: AgentId) -> Option<Arc<Agent>> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let inner = self.read();
        let entry = inner.agents.get(&id)?;
        self.fresh(entry.agent_loaded).then(|| entry.agent.clone())
    }

    /// Stores the agent row loaded since `ticket` (not if anything was invalidated since).
    pub fn put_agent(&self, ticket: Ticket, agent: Arc<Agent>) {
        if !self.live.load(Ordering::Acquire) {
            return;
        }
        let mut inner = self.write();
        if inner.generation != ticket.0 {
            return;
        }
        let id = agent.id;
        let entry = Entry {
            agent,
            agent_loaded: Instant::now(),
            manifest: None,
        };
        inner.put(id, entry, self.max_entries);
    }

    /// The agent's manifest, if cached and fresh.
    pub fn manifest(&self, id: AgentId) -> Option<Arc<CachedManifest>> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let inner = self.read();
        let (manifest, loaded) = inner.agents.get(&id)?.manifest.as_ref()?;
        self.fresh(*loaded).then(|| manifest.clone())
    }

    /// Stores the manifest built since `ticket` for the identity `agent`, onto that identity's
    /// entry: not if the entry is gone or holds another row (the identity changed meanwhile).
    pub fn put_manifest(&self, ticket: Ticket, agent: &Arc<Agent>, manifest: Arc<CachedManifest>) {
        if !self.live.load(Ordering::Acquire) {
            return;
        }
        let mut inner = self.write();
        if inner.generation != ticket.0 {
            return;
        }
        let Some(entry) = inner
            .agents
            .get_mut(&agent.id)
            .filter(|e| Arc::ptr_eq(&e.agent, agent))
        else {
            return;
        };
        let before = entry.weight();
        entry.manifest = Some((manifest, Instant::now()));
        let after = entry.weight();
        inner.agent_bytes = inner.agent_bytes + after - before;
    }

    /// Entries and approximate bytes held.
    pub fn size(&self) -> CacheSize {
        let inner = self.read();
        CacheSize {
            entries: inner.agents.len(),
            bytes: inner.agent_bytes + inner.leaf_bytes,
        }
    }

    /// Drops every agent entry (the certificate memo stays: it cannot be stale).
    fn clear(inner: &mut Inner) {
        inner.agents.clear();
        inner.agent_bytes = 0;
    }

    /// The LISTEN is up (`true`: start afresh) or lost (`false`: stop serving entries).
    fn set_live(&self, live: bool) {
        let mut inner = self.write();
        inner.generation += 1;
        Self::clear(&mut inner);
        self.live
            .store(live && self.max_entries > 0, Ordering::Release);
    }
}

impl AgentChangeSink for AgentCache {
    fn changed(&self, change: AgentChange) {
        let mut inner = self.write();
        inner.generation += 1;
        match change {
            AgentChange::Agent(id) => inner.remove(id),
            AgentChange::Manifests => {
                let mut freed = 0;
                for entry in inner.agents.values_mut() {
                    let before = entry.weight();
                    entry.manifest = None;
                    freed += before - entry.weight();
                }
                inner.agent_bytes = inner.agent_bytes.saturating_sub(freed);
            }
            AgentChange::All => Self::clear(&mut inner),
        }
    }
}

impl Drop for AgentCache {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// On PostgreSQL, LISTENs for the change notifications of every server (migration 0015) and
/// applies them to `cache`; the cache is live only while the LISTEN is. Ends when the cache is
/// dropped. Nothing on SQLite.
pub fn spawn_listener(cache: &Arc<AgentCache>, db: Db) {
    if !db.is_shared() || cache.max_entries == 0 {
        return;
    }
    let weak = Arc::downgrade(cache);
    let stop = cache.stop.clone();
    tokio::spawn(async move {
        loop {
            let listened = tokio::select! {
                () = stop.cancelled() => return,
                l = db.listen_agent_changes() => l,
            };
            match listened {
                Ok(Some(mut listener)) => {
                    let Some(cache) = weak.upgrade() else { return };
                    cache.set_live(true);
                    drop(cache);
                    tracing::debug!("agent cache: listening for changes");
                    loop {
                        let next = tokio::select! {
                            () = stop.cancelled() => return,
                            n = listener.recv() => n,
                        };
                        let Some(cache) = weak.upgrade() else { return };
                        match next {
                            Some(change) => cache.changed(change),
                            None => {
                                cache.set_live(false);
                                tracing::warn!(
                                    "agent cache: lost the change notifications; serving from the database until listening again"
                                );
                                break;
                            }
                        }
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "agent cache: cannot listen for changes; serving from the database");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RELISTEN_AFTER) => {}
            }
        }
    });
}
