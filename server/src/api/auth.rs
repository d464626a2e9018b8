//! Bearer-token authentication, scope checks, the per-address failed-authentication limit, and
//! the audit trail of what an authenticated caller did.
//!
//! Unknown, revoked and expired tokens all get the same 401; a valid token outside its scope gets
//! 403 before any resource is looked up, so neither answer tells which resources exist.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use hashlink::LruCache;

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
/// Scopes that may revoke and retire certificates and manage agents. Acts that let an agent
/// receive private keys also need [`Auth::require_key_delivery`].
pub const OPERATE: &[Scope] = &[Scope::Admin, Scope::Operator];
/// Scopes that may manage ACME accounts, tokens and read the audit log.
pub const ADMIN: &[Scope] = &[Scope::Admin];

/// Fixed window of the failed-authentication limit.
const WINDOW: Duration = Duration::from_secs(60);
/// Most source addresses tracked at once; beyond it the least recently failing one is
/// forgotten, so a spray of addresses cannot grow the map without bound.
pub const MAX_TRACKED_SOURCES: usize = 10_000;
/// `last_used_at` is written at most this often per token.
const TOUCH_EVERY: time::Duration = time::Duration::minutes(1);

/// Counts failed authentications per source address in one-minute windows. Only failures are
/// limited: a valid token is always accepted, whatever else failed from its address.
pub struct AuthLimiter {
    per_minute: u32,
    windows: Mutex<LruCache<Option<IpAddr>, (Instant, u32)>>,
}

impl AuthLimiter {
    /// Allows `per_minute` failures per address per minute, tracking at most
    /// [`MAX_TRACKED_SOURCES`] addresses.
    pub fn new(per_minute: u32) -> Self {
        Self::with_capacity(per_minute, MAX_TRACKED_SOURCES)
    }

    fn with_capacity(per_minute: u32, capacity: usize) -> Self {
        Self {
            per_minute,
            windows: Mutex::new(LruCache::new(capacity.max(1))),
        }
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, LruCache<Option<IpAddr>, (Instant, u32)>> {
        // A panic while holding this lock cannot leave the counters inconsistent.
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one failure from `source`; whether the address is now over its allowance.
    pub fn record_failure(&self, source: Option<IpAddr>) -> bool {
        let mut windows = self.windows();
        let fresh = (Instant::now(), 1);
        let count = match windows.get_mut(&source) {
            Some(entry) if entry.0.elapsed() < WINDOW => {
                entry.1 = entry.1.saturating_add(1);
                entry.1
            }
            Some(entry) => {
                *entry = fresh;
                1
            }
            None => {
                windows.insert(source, fresh);
                1
            }
        };
        count > self.per_minute
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.windows().len()
    }
}

/// The caller's source address, when the listener recorded it.
pub fn source_addr(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// An authenticated caller, from a bearer token or from a dashboard session (`ui/session.rs`):
/// who it is for the audit log, what it may do, and where it connects from. Every scope check
/// and audit event of the API and the dashboard goes through this one type.
pub struct Auth {
    /// The audit actor: `token:<id>` for a token (also in a dashboard session it opened),
    /// `oidc:<subject>` for a single-sign-on session.
    pub actor: String,
    /// What the caller may do.
    pub scopes: Vec<Scope>,
    /// The names an `issuer` may order.
    pub domain_patterns: Vec<String>,
    /// The caller's address, when the listener recorded it.
    pub source: Option<IpAddr>,
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let source = source_addr(parts);
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
        let limiter = parts.extensions.get::<Arc<AuthLimiter>>();
        let token = authenticate_token(state, secret, source, limiter.map(Arc::as_ref)).await?;
        Ok(Auth::for_token(&token, source))
    }
}

/// Whether `token` may authenticate at `now`: not revoked, not expired.
pub fn token_is_live(token: &ApiToken, now: time::OffsetDateTime) -> bool {
    token.revoked_at.is_none() && token.expires_at.is_none_or(|e| e > now)
}

/// The live token whose secret is `secret`, its use recorded. Unknown, revoked and expired
/// tokens count as one failure of `source` in `limiter` (429 once over the allowance, 401
/// before). Used by the bearer header and by the dashboard's token login alike.
pub async fn authenticate_token(
    state: &AppState,
    secret: &str,
    source: Option<IpAddr>,
    limiter: Option<&AuthLimiter>,
) -> Result<ApiToken, ApiError> {
    let now = crate::now();
    // The token is checked before the limit, so failures of others never lock it out.
    let token = match state.db.token_by_hash(&token_hash(secret)).await {
        Ok(t) if token_is_live(&t, now) => t,
        Ok(_) | Err(crate::db::Error::NotFound) => {
            if limiter.is_some_and(|l| l.record_failure(source)) {
                return Err(ApiError::TooManyRequests);
            }
            tracing::info!(source = ?source, "refused an unknown, revoked or expired API token");
            return Err(ApiError::Unauthorized);
        }
        Err(e) => return Err(e.into()),
    };
    if token.last_used_at.is_none_or(|t| now - t >= TOUCH_EVERY) {
        state.db.touch_token(token.id, now).await?;
    }
    Ok(token)
}

impl Auth {
    /// The caller a token makes: actor `token:<id>`, the token's scopes and patterns.
    pub fn for_token(token: &ApiToken, source: Option<IpAddr>) -> Self {
        Auth {
            actor: format!("token:{}", token.id),
            scopes: token.scopes.clone(),
            domain_patterns: token.domain_patterns.clone(),
            source,
        }
    }

    /// The audit actor.
    pub fn actor(&self) -> String {
        self.actor.clone()
    }

    /// Whether the caller holds `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Requires one of `allowed` (403 otherwise).
    pub fn require(&self, allowed: &[Scope]) -> Result<(), ApiError> {
        if allowed.iter().any(|s| self.has(*s)) {
            Ok(())
        } else {
            let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
            Err(ApiError::OutOfScope(format!(
                "this needs one of the scopes: {}",
                names.join(", ")
            )))
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
        all_covered(&self.domain_patterns, names)
    }

    /// Requires the `export` scope for releasing private keys; a refusal is audited.
    pub async fn require_export(&self, state: &AppState, subject: &str) -> Result<(), ApiError> {
        if self.has(Scope::Export) {
            return Ok(());
        }
        self.refuse_key_release(
            state,
            "certificate.key_release",
            subject,
            "downloading a private key needs the `export` scope".into(),
        )
        .await
    }

    /// Requires `admin`, or `export` on top of the scope the endpoint needs, for an act that
    /// lets an agent receive private keys (`what`): creating an agent, issuing a join token,
    /// assigning a certificate, setting a CCS password. A refusal is audited as `action`.
    pub async fn require_key_delivery(
        &self,
        state: &AppState,
        action: &str,
        subject: &str,
        what: &str,
    ) -> Result<(), ApiError> {
        if self.has(Scope::Admin) || self.has(Scope::Export) {
            return Ok(());
        }
        self.refuse_key_release(
            state,
            action,
            subject,
            format!("{what} lets private keys reach an agent host: it needs the `export` scope (or `admin`)"),
        )
        .await
    }

    /// Audits a refused key release and answers 403 with `why`.
    async fn refuse_key_release(
        &self,
        state: &AppState,
        action: &str,
        subject: &str,
        why: String,
    ) -> Result<(), ApiError> {
        self.audit(
            state,
            action,
            subject,
            "denied",
            "token lacks the export scope",
        )
        .await?;
        Err(ApiError::OutOfScope(why))
    }

    /// An audit event of this caller, for [`Auth::audit`] or a write that records its own.
    pub fn event(&self, action: &str, subject: &str, outcome: &str, detail: &str) -> NewAuditEvent {
        NewAuditEvent {
            actor: self.actor(),
            action: action.to_owned(),
            subject: subject.to_owned(),
            source: self.source.map(|ip| ip.to_string()),
            outcome: outcome.to_owned(),
            detail: detail.to_owned(),
        }
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
        let event = self.event(action, subject, outcome, detail);
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
        assert!(!limiter.record_failure(a));
        assert!(!limiter.record_failure(a));
        assert!(
            limiter.record_failure(a),
            "the third failure is over the allowance"
        );
        assert!(!limiter.record_failure(b));
    }

    #[test]
    fn limiter_tracks_at_most_its_capacity() {
        let limiter = AuthLimiter::with_capacity(1, 64);
        for i in 0..1000u32 {
            limiter.record_failure(Some(IpAddr::from(i.to_be_bytes())));
            assert!(limiter.len() <= 64, "{} entries after {i}", limiter.len());
        }
        assert_eq!(limiter.len(), 64);
        // The most recent addresses are the ones still counted.
        assert!(limiter.record_failure(Some(IpAddr::from(999u32.to_be_bytes()))));
    }

    #[test]
    fn the_default_limiter_is_bounded() {
        let limiter = AuthLimiter::new(5);
        for i in 0..(MAX_TRACKED_SOURCES as u32 + 500) {
            limiter.record_failure(Some(IpAddr::from(i.to_be_bytes())));
        }
        assert_eq!(limiter.len(), MAX_TRACKED_SOURCES);
    }
}
