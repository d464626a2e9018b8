//! The forms that change state. Each goes through [`CsrfForm`] (same origin, the session's CSRF
//! token), then the API's own service function with the session's caller, so the scope check
//! and the audit event are the API's; success redirects to the certificate's page.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use certkeep_api_types::api::{
    CreateCertificateRequest, RevocationReason, RevokeCertificateRequest,
};
use serde::Deserialize;

use super::session::CsrfForm;
use super::{Empty, UiError};
use crate::api::agents;
use crate::api::certificates;
use crate::api::error::ApiError;
use crate::app::AppState;
use crate::model::KeyType;

fn to_certificate(name: &str) -> Response {
    Redirect::to(&format!("/ui/certificates/{name}")).into_response()
}

#[derive(Deserialize)]
pub(super) struct NewCertificate {
    name: String,
    /// One name per line (or separated by commas or spaces).
    dns_names: String,
    account: String,
    key_type: KeyType,
}

/// Defines a certificate and orders it.
pub(super) async fn create(
    State(state): State<AppState>,
    form: CsrfForm<NewCertificate>,
) -> Result<Response, UiError> {
    let f = form.fields;
    let req = CreateCertificateRequest {
        name: f.name.trim().to_owned(),
        dns_names: f
            .dns_names
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect(),
        account: f.account.trim().to_owned(),
        key_type: Some(f.key_type),
        renew_fraction: None,
        renew_days: None,
    };
    let created = certificates::create(&state, &form.user.auth, &req).await?;
    Ok(to_certificate(&created.name))
}

/// Renews now.
pub(super) async fn renew(
    State(state): State<AppState>,
    Path(name): Path<String>,
    form: CsrfForm<Empty>,
) -> Result<Response, UiError> {
    certificates::renew(&state, &form.user.auth, &name).await?;
    Ok(to_certificate(&name))
}

/// Retires.
pub(super) async fn retire(
    State(state): State<AppState>,
    Path(name): Path<String>,
    form: CsrfForm<Empty>,
) -> Result<Response, UiError> {
    certificates::retire(&state, &form.user.auth, &name).await?;
    Ok(to_certificate(&name))
}

#[derive(Deserialize)]
pub(super) struct Revoke {
    reason: RevocationReason,
    /// The certificate's name, typed by the user.
    #[serde(default)]
    confirm: String,
}

/// Revokes the current version, once the user typed the certificate's name.
pub(super) async fn revoke(
    State(state): State<AppState>,
    Path(name): Path<String>,
    form: CsrfForm<Revoke>,
) -> Result<Response, UiError> {
    if form.fields.confirm.trim() != name {
        return Err(ApiError::field(
            "confirm",
            format!("type the certificate's name `{name}` to confirm the revocation"),
        )
        .into());
    }
    let req = RevokeCertificateRequest {
        reason: form.fields.reason,
        version_id: None,
    };
    certificates::revoke(&state, &form.user.auth, &name, &req).await?;
    Ok(to_certificate(&name))
}

#[derive(Deserialize)]
pub(super) struct AgentField {
    agent: String,
}

/// Assigns the certificate to an agent.
pub(super) async fn assign(
    State(state): State<AppState>,
    Path(name): Path<String>,
    form: CsrfForm<AgentField>,
) -> Result<Response, UiError> {
    agents::assign(&state, &form.user.auth, &form.fields.agent, &name, None).await?;
    Ok(to_certificate(&name))
}

/// Unassigns the certificate from an agent.
pub(super) async fn unassign(
    State(state): State<AppState>,
    Path(name): Path<String>,
    form: CsrfForm<AgentField>,
) -> Result<Response, UiError> {
    agents::unassign(&state, &form.user.auth, &form.fields.agent, &name).await?;
    Ok(to_certificate(&name))
}
