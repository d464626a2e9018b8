//! Atomic one-time consumption of agent join tokens.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Db, Result, on_pool};
use crate::model::AgentId;

impl Db {
    /// Consumes the join token hashing to `hash` if it is unexpired and its agent is not revoked,
    /// returning the agent. Two enrollments racing with one token: exactly one gets it.
    pub async fn consume_join_token(
        &self,
        hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<AgentId>> {
        const Q: &str = "UPDATE agents SET join_token_hash = NULL, join_token_expires_at = NULL, updated_at = $2 WHERE join_token_hash = $1 AND join_token_expires_at > $2 AND state <> 'revoked' RETURNING id";
        let id: Option<Uuid> = on_pool!(self, p => sqlx::query_scalar(Q).bind(hash).bind(now).fetch_optional(p).await)?;
        Ok(id.map(AgentId))
    }
}
