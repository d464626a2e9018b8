//! The one door through which an agent's identity enters: the mTLS leaf certificate, mapped to
//! its agent row and checked against the database on every request (revocation is immediate).

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
    pub agent: Agent,
    /// Serial of the client certificate it presented: the current one, or the previous one
    /// while a renewal has not reached the agent.
    pub serial: String,
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
        let (id, serial) = parse_leaf(leaf).ok_or(ApiError::Unauthorized)?;
        let agent = match state.db.agent(id).await {
            Ok(agent) => agent,
            Err(crate::db::Error::NotFound) => return Err(ApiError::Unauthorized),
            Err(e) => return Err(e.into()),
        };
        let current = agent.cert_serial.as_deref() == Some(serial.as_str());
        let previous = agent.previous_cert_serial.as_deref() == Some(serial.as_str());
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
