//! Signals, after commit, that a write may have changed an agent's identity or manifest, for
//! the agent listener's cache (`agent_api::cache`). Two paths, both conservative (a spurious
//! signal only costs a rebuild):
//!
//! - in-process: the `Db` write functions that touch what an identity or a manifest is made of
//!   call [`Db::agent_changed`] once their statement or transaction committed, so this server
//!   reads its own writes at once (the only path on SQLite, where one server owns the database);
//! - across servers (PostgreSQL): triggers (migration 0015) `pg_notify` the channel
//!   [`CHANNEL`] from the same transaction; PostgreSQL delivers the notification after the
//!   commit to every server LISTENing through [`Db::listen_agent_changes`]. A trigger cannot be
//!   forgotten by a new write path.

use std::sync::{RwLock, Weak};

use sqlx::postgres::PgListener;
use uuid::Uuid;

use super::{Db, Pool, Result};
use crate::model::AgentId;

/// The PostgreSQL notification channel of migration 0015's triggers.
pub const CHANNEL: &str = "certkeep_agent_cache";

/// What a committed write may have changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentChange {
    /// This agent's row, assignments, targets or assignment targets.
    Agent(AgentId),
    /// A certificate's name or current version: any agent's manifest (identities stand).
    Manifests,
    /// Anything (rollout settings, which decide other agents' holds; a lost notification).
    All,
}

impl AgentChange {
    /// A notification payload of migration 0015: `a:<agent id>` or `*`. Anything else counts
    /// as [`AgentChange::All`].
    pub fn parse(payload: &str) -> Self {
        match payload.split_once(':') {
            Some(("a", id)) => Uuid::parse_str(id).map_or(Self::All, |id| Self::Agent(AgentId(id))),
            _ => Self::All,
        }
    }
}

/// Receives [`AgentChange`]s after the write committed. Called on the writer's task: must not
/// block.
pub trait AgentChangeSink: Send + Sync {
    /// Drops whatever `change` may have made stale.
    fn changed(&self, change: AgentChange);
}

/// The sinks of one `Db` (shared by its clones).
#[derive(Default)]
pub(super) struct AgentChanges {
    sinks: RwLock<Vec<Weak<dyn AgentChangeSink>>>,
}

impl std::fmt::Debug for AgentChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentChanges").finish_non_exhaustive()
    }
}

/// A LISTEN on [`CHANNEL`] over its own PostgreSQL connection.
pub struct AgentChangeListener(PgListener);

impl AgentChangeListener {
    /// The next change; `None` when the connection was lost (notifications may have been
    /// missed: the caller must drop everything and listen again).
    pub async fn recv(&mut self) -> Option<AgentChange> {
        match self.0.try_recv().await {
            Ok(Some(n)) => Some(AgentChange::parse(n.payload())),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "agent cache notifications: connection failed");
                None
            }
        }
    }
}

impl Db {
    /// Registers `sink` for the changes this `Db` (or a clone) writes; dropped sinks are
    /// forgotten.
    pub fn subscribe_agent_changes(&self, sink: Weak<dyn AgentChangeSink>) {
        let mut sinks = self
            .agent_changes
            .sinks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sinks.retain(|s| s.strong_count() > 0);
        sinks.push(sink);
    }

    /// Tells the sinks a write committed that may have changed `change`.
    pub(crate) fn agent_changed(&self, change: AgentChange) {
        let sinks = self
            .agent_changes
            .sinks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for sink in sinks.iter().filter_map(Weak::upgrade) {
            sink.changed(change);
        }
    }

    /// LISTENs on [`CHANNEL`] (PostgreSQL); `None` on SQLite, where only this process writes.
    pub async fn listen_agent_changes(&self) -> Result<Option<AgentChangeListener>> {
        let Pool::Pg(pool) = &self.pool else {
            return Ok(None);
        };
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(AgentChangeListener(listener)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_trigger_payloads() {
        let id = AgentId::new();
        assert_eq!(
            AgentChange::parse(&format!("a:{}", id.0)),
            AgentChange::Agent(id)
        );
        assert_eq!(AgentChange::parse("*"), AgentChange::All);
        assert_eq!(AgentChange::parse("a:not-a-uuid"), AgentChange::All);
        assert_eq!(AgentChange::parse("x"), AgentChange::All);
    }
}
