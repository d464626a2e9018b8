//! Bearer-token authentication, scope checks, the per-address failed-authentication limit, and
//! the audit trail of what an authenticated caller did.
//!
//! Unknown, revoked and expired tokens all get the same 401; a valid token outside its scope gets
//! 403 before any resource is looked up, so neither answer tells which resources exist.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::app::AppState;
use crate::bootstrap::token_hash;
use crate::domain::names::all_covered;
use crate::model::{ApiToken, NewAuditEvent, Scope};

/// Scopes that may read accounts and agents, and scrape metrics.
pub const READ: &[Scope] = &[Scope::Admin, Scope::Operator, Scope::Reader];
/// Scopes that may read certificates (an `issuer` sees only its own domains).
pub const CERT_READ: &[Scope] = &[Scope::Admin, Scope::Operator, Scope::Reader, Scope::Issuer];
/// Scopes that may order and renew certificates (an `issuer` only within its domains).
pub const CERT_ISSUE: &[Scope] = &[Scope::Admin, Scope::Operator, Scope::Issuer];
/// Scopes that may revoke and retire certificates and manage agents.
pub const OPERATE: &[Scope] = &[Scope::Admin, Scope::Operator];
/// Scopes that may manage ACME accounts, tokens and read the audit log.
pub const ADMIN: &[Scope] = &[Scope::Admin];

/// Fixed window of the failed-authentication limit.
const WINDOW: Duration = Duration::from_secs(60);
/// Entries kept before expired windows are pruned.
const PRUNE_AT: usize = 10_000;
/// `last_used_at` is written at most this often per token.
const TOUCH_EVERY: time::Duration = time::Duration::minutes(1);

/// Counts failed authentications per source address in one-minute windows.
pub struct AuthLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<Option<IpAddr>, (Instant, u32)>>,
}

impl AuthLimiter {
    /// Allows `per_minute` failures per address per minute.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            windows: Mutex::default(),
        }
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, HashMap<Option<IpAddr>, (Instant, u32)>> {
        // A panic while holding this lock cannot leave the counters inconsistent.
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn is_blocked(&self, source: Option<IpAddr>) -> bool {
        self.windows()
            .get(&source)
            .is_some_and(|(start, n)| start.elapsed() < WINDOW && *n >= self.per_minute)
    }

    fn record_failure(&self, source: Option<IpAddr>) {
        let mut windows = self.windows();
        if windows.len() >= PRUNE_AT {
            windows.retain(|_, (start, _)| start.elapsed() < WINDOW);
        }
        let entry = windows.entry(source).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

/// The caller's source address, when the listener recorded it.
pub fn source_addr(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// An authenticated caller: a valid, unexpired, unrevoked token.
pub struct Auth {
    pub token: ApiToken,
    pub source: Option<IpAddr>,
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let source = source_addr(parts);
        let limiter = parts.extensions.get::<Arc<AuthLimiter>>().cloned();
        if limiter.as_ref().is_some_and(|l| l.is_blocked(source)) {
            return Err(ApiError::TooManyRequests);
        }
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(secret) = presented else {
            return Err(ApiError::Unauthorized);
        };
        let now = crate::now();
        let token = match state.db.token_by_hash(&token_hash(secret)).await {
            Ok(t) if t.revoked_at.is_none() && t.expires_at.is_none_or(|e| e > now) => t,
            Ok(_) | Err(crate::db::Error::NotFound) => {
                if let Some(l) = &limiter {
                    l.record_failure(source);
                }
                tracing::info!(source = ?source, "refused an unknown, revoked or expired API token");
                return Err(ApiError::Unauthorized);
            }
            Err(e) => return Err(e.into()),
        };
        if token.last_used_at.is_none_or(|t| now - t >= TOUCH_EVERY) {
            state.db.touch_token(token.id, now).await?;
        }
        Ok(Auth { token, source })
    }
}

impl Auth {
    /// The audit actor: `token:<id>`.
    pub fn actor(&self) -> String {
        format!("token:{}", self.token.id)
    }

    fn has(&self, scope: Scope) -> bool {
        self.token.scopes.contains(&scope)
    }

    /// Requires one of `allowed` (403 otherwise).
    pub fn require(&self, allowed: &[Scope]) -> Result<(), ApiError> {
        if allowed.iter().any(|s| self.has(*s)) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }

    /// Whether this token sees every certificate (not just its issuer domains).
    fn sees_all_certificates(&self) -> bool {
        [Scope::Admin, Scope::Operator, Scope::Reader]
            .iter()
            .any(|s| self.has(*s))
    }

    /// Whether a certificate with these names is visible; invisible ones are reported as 404.
    pub fn can_see(&self, names: &[String]) -> bool {
        self.sees_all_certificates() || self.issuer_covers(names).is_ok()
    }

    /// Whether this token may order or renew a certificate with these names: admins and
    /// operators always, issuers when every name is within the token's patterns.
    pub fn may_issue(&self, names: &[String]) -> Result<(), ApiError> {
        if self.has(Scope::Admin) || self.has(Scope::Operator) {
            return Ok(());
        }
        self.issuer_covers(names).map_err(|outside| {
            ApiError::OutOfScope(format!(
                "`{outside}` is outside this token's domain patterns"
            ))
        })
    }

    fn issuer_covers(&self, names: &[String]) -> Result<(), String> {
        if !self.has(Scope::Issuer) {
            return Err(names.first().cloned().unwrap_or_default());
        }
        all_covered(&self.token.domain_patterns, names)
    }

    /// Requires the `export` scope for releasing private keys; a refusal is audited.
    pub async fn require_export(&self, state: &AppState, subject: &str) -> Result<(), ApiError> {
        if self.has(Scope::Export) {
            return Ok(());
        }
        self.audit(
            state,
            "certificate.key_release",
            subject,
            "denied",
            "token lacks the export scope",
        )
        .await?;
        Err(ApiError::Forbidden)
    }

    /// Appends an audit event for this caller.
    pub async fn audit(
        &self,
        state: &AppState,
        action: &str,
        subject: &str,
        outcome: &str,
        detail: &str,
    ) -> Result<(), ApiError> {
        let event = NewAuditEvent {
            actor: self.actor(),
            action: action.to_owned(),
            subject: subject.to_owned(),
            source: self.source.map(|ip| ip.to_string()),
            outcome: outcome.to_owned(),
            detail: detail.to_owned(),
        };
        state.db.append_audit(&event, crate::now()).await?;
        Ok(())
    }

    /// Appends a `success` audit event.
    pub async fn audit_ok(
        &self,
        state: &AppState,
        action: &str,
        subject: &str,
        detail: &str,
    ) -> Result<(), ApiError> {
        self.audit(state, action, subject, "success", detail).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_blocks_after_the_allowance_per_address() {
        let limiter = AuthLimiter::new(2);
        let a = Some(IpAddr::from([192, 0, 2, 1]));
        let b = Some(IpAddr::from([192, 0, 2, 2]));
        limiter.record_failure(a);
        assert!(!limiter.is_blocked(a));
        limiter.record_failure(a);
        assert!(limiter.is_blocked(a));
        assert!(!limiter.is_blocked(b));
    }
}
