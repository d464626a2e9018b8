//! Notifications: `/api/v1/notification-channels` (mail and webhook channels; their secrets
//! are write-only), `/api/v1/subscriptions` (which events reach which channel),
//! `/api/v1/notification-mutes` (silence one certificate for a while) and
//! `/api/v1/notifications` (every delivery with its outcome).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use certkeep_api_types::notification::{
    ChannelResponse, ChannelTestResponse, CreateChannelRequest, CreateMuteRequest,
    CreateSubscriptionRequest, CreatedChannelResponse, DeliveryResponse, DeliveryState,
    MuteResponse, SmtpSettings, SubscriptionResponse, SubscriptionScope, WebhookSettings,
};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::{ADMIN, Auth, OPERATE, READ};
use super::error::ApiError;
use super::extract::{AppJson, AppPath, AppQuery};
use super::{lookup, validate};
use crate::app::AppState;
use crate::db::notify::{Channel, ChannelSettings, Delivery, NewSubscription};
use crate::domain::notify::{Mute, Subscription};
use crate::notify::{self, events, smtp, webhook};

/// Routes of this resource.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_channels, create_channel))
        .routes(routes!(delete_channel))
        .routes(routes!(test_channel))
        .routes(routes!(list_subscriptions, create_subscription))
        .routes(routes!(delete_subscription))
        .routes(routes!(list_mutes, create_mute))
        .routes(routes!(delete_mute))
        .routes(routes!(list_notifications))
}

fn channel_response(c: Channel) -> ChannelResponse {
    let (smtp, webhook) = match c.settings.clone() {
        ChannelSettings::Smtp(s) => (Some(s), None),
        ChannelSettings::Webhook(w) => (None, Some(w)),
    };
    ChannelResponse {
        id: c.id,
        name: c.name,
        kind: c.settings.kind(),
        smtp,
        webhook,
        has_secret: c.has_secret,
        created_at: c.created_at,
    }
}

fn subscription_response(s: Subscription) -> SubscriptionResponse {
    SubscriptionResponse {
        id: s.id,
        name: s.name,
        channel_id: s.channel_id,
        events: s.events,
        scope: s.scope,
        account_id: s.account_id,
        domain_patterns: s.domain_patterns,
        agent_id: s.agent_id,
        digest: s.digest,
        digest_when_empty: s.digest_when_empty,
        created_at: s.created_at,
    }
}

fn mute_response(m: Mute) -> MuteResponse {
    MuteResponse {
        id: m.id,
        certificate_id: m.certificate_id,
        events: m.events,
        until: m.until,
        reason: m.reason,
        created_by: m.created_by,
        created_at: m.created_at,
    }
}

fn delivery_response(d: Delivery) -> DeliveryResponse {
    DeliveryResponse {
        id: d.id,
        channel_id: d.channel_id,
        channel_name: d.channel_name,
        state: d.state,
        attempts: d.attempts,
        last_code: d.last_code,
        last_reply: d.last_reply,
        next_attempt_at: d.next_attempt_at,
        delivered_at: d.delivered_at,
        created_at: d.created_at,
        event: d.payload,
    }
}

/// The channel named by `key` (id or name).
async fn find_channel(state: &AppState, key: &str) -> Result<Channel, ApiError> {
    Ok(match Uuid::parse_str(key) {
        Ok(id) => state.db.channel(id).await?,
        Err(_) => state.db.channel_by_name(key).await?,
    })
}

fn check_ca_file(field: &str, path: Option<&String>) -> Result<(), ApiError> {
    match path {
        Some(p) if std::fs::metadata(p).is_err() => Err(ApiError::field(
            field,
            format!("`{p}` cannot be read by the server"),
        )),
        _ => Ok(()),
    }
}

fn check_smtp(s: &SmtpSettings, secret: Option<&str>) -> Result<(), ApiError> {
    if s.host.is_empty() || s.host.len() > 253 || s.host.contains(char::is_whitespace) {
        return Err(ApiError::field("smtp.host", "a host name is required"));
    }
    if s.to.is_empty() || s.to.len() > 50 {
        return Err(ApiError::field(
            "smtp.to",
            "1 to 50 recipients are required",
        ));
    }
    smtp::check(s).map_err(|e| ApiError::field("smtp", e))?;
    if secret.is_some() != s.username.is_some() {
        return Err(ApiError::field(
            "secret",
            "an SMTP password goes with `smtp.username`, and a username with a password",
        ));
    }
    check_ca_file("smtp.ca_file", s.ca_file.as_ref())
}

fn check_webhook(w: &WebhookSettings) -> Result<(), ApiError> {
    let url = reqwest::Url::parse(&w.url)
        .map_err(|_| ApiError::field("webhook.url", "not a valid URL"))?;
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(ApiError::field(
                "webhook.url",
                "must be https:// (http:// only to a loopback address)",
            ));
        }
    }
    if !(1..=60).contains(&w.timeout_secs) {
        return Err(ApiError::field(
            "webhook.timeout_secs",
            "must be between 1 and 60",
        ));
    }
    check_ca_file("webhook.ca_file", w.ca_file.as_ref())
}

/// Create a notification channel (mail or webhook).
///
/// Scope: `admin`. `secret` is the SMTP password or the webhook signing secret (`whsec_...`);
/// it is stored sealed and never returned. A webhook without one gets a generated secret,
/// shown once in `generated_secret`.
#[utoipa::path(post, path = "/notification-channels", tag = "notifications", request_body = CreateChannelRequest, responses(
    (status = 201, description = "Created", body = CreatedChannelResponse),
    (status = 409, description = "A channel with this name exists", body = crate::api::error::Problem),
))]
async fn create_channel(
    State(state): State<AppState>,
    auth: Auth,
    AppJson(req): AppJson<CreateChannelRequest>,
) -> Result<(StatusCode, Json<CreatedChannelResponse>), ApiError> {
    auth.require(ADMIN)?;
    validate::name("name", &req.name)?;
    if let Some(secret) = &req.secret {
        validate::secret("secret", secret)?;
    }
    let mut generated = None;
    let (settings, secret) = match (req.smtp, req.webhook) {
        (Some(s), None) => {
            check_smtp(&s, req.secret.as_deref())?;
            (ChannelSettings::Smtp(s), req.secret)
        }
        (None, Some(w)) => {
            check_webhook(&w)?;
            let secret = match req.secret {
                Some(s) => {
                    webhook::secret_key(&s).map_err(|e| ApiError::field("secret", e))?;
                    s
                }
                None => generated.insert(webhook::new_secret()).clone(),
            };
            (ChannelSettings::Webhook(w), Some(secret))
        }
        _ => {
            return Err(ApiError::field(
                "smtp",
                "give exactly one of `smtp` and `webhook`",
            ));
        }
    };
    let channel = state
        .db
        .insert_channel(
            &state.secrets,
            &req.name,
            &settings,
            secret.as_deref().map(str::as_bytes),
            crate::now(),
        )
        .await?;
    auth.audit_ok(
        &state,
        "notification_channel.create",
        &format!("notification_channel:{}", channel.id),
        &format!("kind={}", settings.kind()),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedChannelResponse {
            channel: channel_response(channel),
            generated_secret: generated,
        }),
    ))
}

/// List notification channels (never their secrets).
///
/// Scope: `admin` or `operator`.
#[utoipa::path(get, path = "/notification-channels", tag = "notifications", responses(
    (status = 200, description = "Every channel, by name", body = Vec<ChannelResponse>),
))]
async fn list_channels(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<Vec<ChannelResponse>>, ApiError> {
    auth.require(OPERATE)?;
    let channels = state.db.channels().await?;
    Ok(Json(channels.into_iter().map(channel_response).collect()))
}

/// Delete a channel with its subscriptions and deliveries.
///
/// Scope: `admin`.
#[utoipa::path(delete, path = "/notification-channels/{channel}", tag = "notifications",
    params(("channel" = String, Path, description = "Channel id or name")),
    responses((status = 204, description = "Deleted")))]
async fn delete_channel(
    State(state): State<AppState>,
    auth: Auth,
    AppPath(key): AppPath<String>,
) -> Result<StatusCode, ApiError> {
    auth.require(ADMIN)?;
    let channel = find_channel(&state, &key).await?;
    state.db.delete_channel(channel.id).await?;
    auth.audit_ok(
        &state,
        "notification_channel.delete",
        &format!("notification_channel:{}", channel.id),
        "",
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send a test message through a channel now and return the receiver's answer.
///
/// Scope: `admin`. Nothing is queued: the answer is the receiver's reply to this one attempt.
#[utoipa::path(post, path = "/notification-channels/{channel}/test", tag = "notifications",
    params(("channel" = String, Path, description = "Channel id or name")),
    responses((status = 200, description = "The receiver's answer (`delivered` false when it refused or was unreachable)", body = ChannelTestResponse)))]
async fn test_channel(
    State(state): State<AppState>,
    auth: Auth,
    AppPath(key): AppPath<String>,
) -> Result<Json<ChannelTestResponse>, ApiError> {
    auth.require(ADMIN)?;
    let channel = find_channel(&state, &key).await?;
    let outcome = notify::send(&state, &channel, &events::test(&channel.name, crate::now())).await;
    auth.audit_ok(
        &state,
        "notification_channel.test",
        &format!("notification_channel:{}", channel.id),
        &format!("delivered={}", outcome.delivered),
    )
    .await?;
    Ok(Json(ChannelTestResponse {
        delivered: outcome.delivered,
        code: outcome.code,
        reply: outcome.reply,
    }))
}

/// Subscribe a channel to event kinds within a scope (everything, an account, domain patterns
/// such as `*.med.example.edu`, or an agent), optionally with a daily digest.
///
/// Scope: `admin` or `operator`.
#[utoipa::path(post, path = "/subscriptions", tag = "notifications", request_body = CreateSubscriptionRequest, responses(
    (status = 201, description = "Created", body = SubscriptionResponse),
    (status = 409, description = "A subscription with this name exists", body = crate::api::error::Problem),
))]
async fn create_subscription(
    State(state): State<AppState>,
    auth: Auth,
    AppJson(req): AppJson<CreateSubscriptionRequest>,
) -> Result<(StatusCode, Json<SubscriptionResponse>), ApiError> {
    auth.require(OPERATE)?;
    validate::name("name", &req.name)?;
    if req.events.is_empty() && !req.digest {
        return Err(ApiError::field(
            "events",
            "list at least one event kind, or ask for a digest",
        ));
    }
    if req.events.len() > 20 {
        return Err(ApiError::field("events", "at most 20 event kinds"));
    }
    if let Some(k) = req.events.iter().find(|k| !k.is_routed()) {
        return Err(ApiError::field(
            "events",
            format!("`{k}` is not routed by subscriptions"),
        ));
    }
    let mut events = req.events.clone();
    events.sort_by_key(|k| k.as_str());
    events.dedup();
    let channel = find_channel(&state, &req.channel)
        .await
        .map_err(|_| ApiError::field("channel", format!("no channel `{}`", req.channel)))?;
    let mut account_id = None;
    let mut agent_id = None;
    let mut patterns = Vec::new();
    let extra = |field: &str| {
        ApiError::field(
            field,
            format!("`{field}` does not apply to scope `{}`", req.scope),
        )
    };
    match req.scope {
        SubscriptionScope::All => {}
        SubscriptionScope::Account => {
            let key = req
                .account
                .as_deref()
                .ok_or_else(|| ApiError::field("account", "scope `account` needs `account`"))?;
            let account = lookup::find_account(&state, key)
                .await
                .map_err(|_| ApiError::field("account", format!("no account `{key}`")))?;
            account_id = Some(account.id.0);
        }
        SubscriptionScope::Agent => {
            let key = req
                .agent
                .as_deref()
                .ok_or_else(|| ApiError::field("agent", "scope `agent` needs `agent`"))?;
            let agent = lookup::find_agent(&state, key)
                .await
                .map_err(|_| ApiError::field("agent", format!("no agent `{key}`")))?;
            agent_id = Some(agent.id.0);
        }
        SubscriptionScope::Domains => {
            patterns = validate::patterns("domain_patterns", &req.domain_patterns)?;
            if patterns.is_empty() {
                return Err(ApiError::field(
                    "domain_patterns",
                    "scope `domains` needs at least one pattern",
                ));
            }
        }
    }
    if req.scope != SubscriptionScope::Account && req.account.is_some() {
        return Err(extra("account"));
    }
    if req.scope != SubscriptionScope::Agent && req.agent.is_some() {
        return Err(extra("agent"));
    }
    if req.scope != SubscriptionScope::Domains && !req.domain_patterns.is_empty() {
        return Err(extra("domain_patterns"));
    }
    let sub = state
        .db
        .insert_subscription(
            &NewSubscription {
                name: &req.name,
                channel_id: channel.id,
                events: &events,
                scope: req.scope,
                account_id,
                domain_patterns: &patterns,
                agent_id,
                digest: req.digest,
                digest_when_empty: req.digest_when_empty,
            },
            crate::now(),
        )
        .await?;
    auth.audit_ok(
        &state,
        "subscription.create",
        &format!("subscription:{}", sub.id),
        &format!("channel={} scope={}", channel.name, req.scope),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(subscription_response(sub))))
}

/// List subscriptions.
///
/// Scope: `admin`, `operator` or `reader`.
#[utoipa::path(get, path = "/subscriptions", tag = "notifications", responses(
    (status = 200, description = "Every subscription, oldest first", body = Vec<SubscriptionResponse>),
))]
async fn list_subscriptions(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<Vec<SubscriptionResponse>>, ApiError> {
    auth.require(READ)?;
    let subs = state.db.subscriptions().await?;
    Ok(Json(subs.into_iter().map(subscription_response).collect()))
}

/// Delete a subscription.
///
/// Scope: `admin` or `operator`.
#[utoipa::path(delete, path = "/subscriptions/{id}", tag = "notifications",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses((status = 204, description = "Deleted")))]
async fn delete_subscription(
    State(state): State<AppState>,
    auth: Auth,
    AppPath(id): AppPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    auth.require(OPERATE)?;
    state.db.delete_subscription(id).await?;
    auth.audit_ok(
        &state,
        "subscription.delete",
        &format!("subscription:{id}"),
        "",
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Longest mute.
const MAX_MUTE: time::Duration = time::Duration::days(90);

/// Mute events about one certificate until a time (maintenance).
///
/// Scope: `admin` or `operator`.
#[utoipa::path(post, path = "/notification-mutes", tag = "notifications", request_body = CreateMuteRequest, responses(
    (status = 201, description = "Muted", body = MuteResponse),
))]
async fn create_mute(
    State(state): State<AppState>,
    auth: Auth,
    AppJson(req): AppJson<CreateMuteRequest>,
) -> Result<(StatusCode, Json<MuteResponse>), ApiError> {
    auth.require(OPERATE)?;
    validate::label("reason", &req.reason)?;
    let now = crate::now();
    if req.until <= now || req.until > now + MAX_MUTE {
        return Err(ApiError::field(
            "until",
            "must be in the future, at most 90 days ahead",
        ));
    }
    if req.events.len() > 20 {
        return Err(ApiError::field("events", "at most 20 event kinds"));
    }
    let cert = lookup::find_certificate(&state, &req.certificate)
        .await
        .map_err(|_| {
            ApiError::field(
                "certificate",
                format!("no certificate `{}`", req.certificate),
            )
        })?;
    let actor = auth.actor();
    let mute = state
        .db
        .insert_mute(
            cert.id.0,
            &req.events,
            req.until,
            &req.reason,
            Some(&actor),
            now,
        )
        .await?;
    auth.audit_ok(
        &state,
        "notification_mute.create",
        &format!("certificate:{}", cert.id),
        &format!("until={}", req.until),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(mute_response(mute))))
}

/// List mutes still in force.
///
/// Scope: `admin`, `operator` or `reader`.
#[utoipa::path(get, path = "/notification-mutes", tag = "notifications", responses(
    (status = 200, description = "Mutes in force, ending soonest first", body = Vec<MuteResponse>),
))]
async fn list_mutes(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<Vec<MuteResponse>>, ApiError> {
    auth.require(READ)?;
    let mutes = state.db.mutes(crate::now()).await?;
    Ok(Json(mutes.into_iter().map(mute_response).collect()))
}

/// End a mute.
///
/// Scope: `admin` or `operator`.
#[utoipa::path(delete, path = "/notification-mutes/{id}", tag = "notifications",
    params(("id" = Uuid, Path, description = "Mute id")),
    responses((status = 204, description = "Ended")))]
async fn delete_mute(
    State(state): State<AppState>,
    auth: Auth,
    AppPath(id): AppPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    auth.require(OPERATE)?;
    state.db.delete_mute(id).await?;
    auth.audit_ok(
        &state,
        "notification_mute.delete",
        &format!("notification_mute:{id}"),
        "",
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Filter and page of the delivery list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeliveryQuery {
    /// Only deliveries in this state (`failed`: given up).
    state: Option<DeliveryState>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// List notification deliveries with their outcome, newest first.
///
/// Scope: `admin`, `operator` or `reader`.
#[utoipa::path(get, path = "/notifications", tag = "notifications", params(DeliveryQuery), responses(
    (status = 200, description = "Deliveries, newest first", body = Vec<DeliveryResponse>),
))]
async fn list_notifications(
    State(state): State<AppState>,
    auth: Auth,
    AppQuery(q): AppQuery<DeliveryQuery>,
) -> Result<Json<Vec<DeliveryResponse>>, ApiError> {
    auth.require(READ)?;
    let limit = validate::page_limit("limit", q.limit)?;
    let deliveries = state.db.deliveries(q.state, limit).await?;
    Ok(Json(
        deliveries.into_iter().map(delivery_response).collect(),
    ))
}
