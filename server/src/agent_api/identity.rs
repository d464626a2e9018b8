//! The one door through which an agent's identity enters: the mTLS leaf certificate, mapped to
//! its agent row and checked on every request. The row comes from the agent cache, which every
//! committed change of an identity (revocation, re-enrollment, renewal, PFX settings)
//! invalidates before the change is acknowledged on this server, and within the notification
//! latency on the other servers of one PostgreSQL database (`cache.rs`).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum_server::tls::TlsInfo;
use certkeep_api_types::agent::AGENT_URI_PREFIX;
use uuid::Uuid;
use x509_parser::extensions::GeneralName;

use crate::api::error::ApiError;
use crate::app::AppState;
use crate::model::{Agent, AgentId, AgentState};

/// An authenticated, active agent.
pub struct AgentIdentity {
    pub id: AgentId,
    /// Its row as cached: the identity columns are current; what the agent reports about
    /// itself (`last_seen_at`, `os_*`) may be up to `agent_cache.refresh_secs` old.
    pub agent: Arc<Agent>,
    /// Serial of the client certificate it presented: the current one, or the previous one
    /// while a renewal has not reached the agent.
    pub serial: Arc<str>,
}

/// Agent id and serial from a client certificate issued by the internal CA.
fn parse_leaf(der: &[u8]) -> Option<(AgentId, String)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let id = san.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(uri) => uri
            .strip_prefix(AGENT_URI_PREFIX)
            .and_then(|s| Uuid::parse_str(s).ok()),
        _ => None,
    })?;
    Some((AgentId(id), hex::encode(cert.raw_serial())))
}

impl FromRequestParts<AppState> for AgentIdentity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let info = parts
            .extensions
            .get::<Arc<TlsInfo>>()
            .ok_or(ApiError::Unauthorized)?;
        let leaf = info
            .peer_certificates
            .first()
            .ok_or(ApiError::Unauthorized)?;
        let cache = &state.agent_cache;
        let (id, serial) = match cache.leaf(leaf) {
            Some(known) => known,
            None => {
                let (id, serial) = parse_leaf(leaf).ok_or(ApiError::Unauthorized)?;
                let serial: Arc<str> = serial.into();
                cache.remember_leaf(leaf, id, serial.clone());
                (id, serial)
            }
        };
        let agent = match cache.agent(id) {
            Some(agent) => agent,
            None => {
                let ticket = cache.ticket();
                let agent = match state.db.agent(id).await {
                    Ok(agent) => Arc::new(agent),
                    Err(crate::db::Error::NotFound) => return Err(ApiError::Unauthorized),
                    Err(e) => return Err(e.into()),
                };
                cache.put_agent(ticket, agent.clone());
                agent
            }
        };
        let current = agent.cert_serial.as_deref() == Some(&*serial);
        let previous = agent.previous_cert_serial.as_deref() == Some(&*serial);
        if agent.state != AgentState::Active || !(current || previous) {
            tracing::warn!(agent.id = %id, "refused a client certificate of a revoked, replaced or unknown agent");
            return Err(ApiError::Unauthorized);
        }
        // The renewed certificate reached the agent: the one it renewed from stops working.
        if current
            && agent.previous_cert_serial.is_some()
            && state
                .db
                .retire_previous_agent_cert(id, &serial, crate::now())
                .await?
        {
            tracing::info!(agent.id = %id, certificate.serial = %serial, "agent uses its renewed client certificate; the previous one is no longer accepted");
        }
        Ok(Self { id, agent, serial })
    }
}
