//! Notifications from a durable outbox. Producers write an event row in the transaction of the
//! change that causes it ([`crate::db::notify::Outbox`], events built by [`events`]). A
//! supervised delivery task routes new events to one delivery per matching channel, claims due
//! deliveries with a lease, sends each (SMTP through [`smtp`], signed webhooks through
//! [`webhook`]) and records every attempt; a delivery is marked delivered only on the receiver's
//! 2xx or 250, otherwise retried with capped exponential back-off until the dead-letter age.
//! A process killed mid-send leaves its claimed deliveries to be taken over when their lease
//! ends (a rare duplicate carries the same `webhook-id`). A scan task raises
//! `certificate.expiring` and `agent.stale` and enqueues the daily digests ([`scan`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::db::notify::{Attempt, Channel, ChannelSettings, ClaimedDelivery};
use crate::domain::notify as rules;
use crate::now;
use certkeep_api_types::notification::NotificationPayload;

pub mod events;
pub mod render;
pub mod scan;
pub mod smtp;
pub mod webhook;

/// Events routed per transaction.
const FAN_OUT_BATCH: i64 = 100;

/// What the receiver answered to one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// HTTP 2xx, or SMTP 250.
    pub delivered: bool,
    /// HTTP status or SMTP reply code, when the receiver answered.
    pub code: Option<u16>,
    /// The answer (shortened), or why the receiver was not reached.
    pub reply: String,
}

impl Outcome {
    fn unreached(reply: impl Into<String>) -> Self {
        Self {
            delivered: false,
            code: None,
            reply: reply.into(),
        }
    }
}

/// Sends `payload` to `channel` once, opening the channel's secret for this send only.
pub async fn send(state: &AppState, channel: &Channel, payload: &NotificationPayload) -> Outcome {
    let secret = match state.db.channel_secret(&state.secrets, channel.id).await {
        Ok(s) => s,
        Err(e) => return Outcome::unreached(format!("cannot open the channel's secret: {e}")),
    };
    match &channel.settings {
        ChannelSettings::Smtp(settings) => {
            let password = match secret.as_ref().map(|s| std::str::from_utf8(s)) {
                Some(Err(_)) => return Outcome::unreached("the stored SMTP password is not UTF-8"),
                Some(Ok(p)) => Some(p),
                None => None,
            };
            smtp::send(settings, password, payload).await
        }
        ChannelSettings::Webhook(settings) => {
            let Some(secret) = secret else {
                return Outcome::unreached("the webhook channel has no signing secret");
            };
            let key = std::str::from_utf8(&secret)
                .map_err(|_| "the stored signing secret is not UTF-8".to_owned())
                .and_then(webhook::secret_key);
            match key {
                Ok(key) => webhook::send(settings, &key, payload, now()).await,
                Err(e) => Outcome::unreached(e),
            }
        }
    }
}

/// State of one notifier.
struct Shared {
    state: AppState,
    /// This process's lease owner id.
    owner: String,
}

/// What a task of the notifier does.
#[derive(Debug, Clone, Copy)]
enum Role {
    Deliver,
    Scan,
}

/// Starts the delivery and scan tasks; a task that panics is started again. They stop when
/// `shutdown` is cancelled, after which the delivery leases held are released.
pub fn spawn(state: AppState, shutdown: CancellationToken) -> JoinHandle<()> {
    let shared = Arc::new(Shared {
        owner: format!(
            "notify-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
        state,
    });
    tokio::spawn(async move {
        tracing::info!(notify.owner = %shared.owner, "notification worker started");
        let mut tasks = JoinSet::new();
        let mut roles = std::collections::HashMap::new();
        let start = |tasks: &mut JoinSet<()>, role: Role| match role {
            Role::Deliver => tasks
                .spawn(deliver_loop(shared.clone(), shutdown.clone()))
                .id(),
            Role::Scan => tasks
                .spawn(scan::run(shared.state.clone(), shutdown.clone()))
                .id(),
        };
        for role in [Role::Deliver, Role::Scan] {
            roles.insert(start(&mut tasks, role), role);
        }
        while let Some(ended) = tasks.join_next_with_id().await {
            let (id, panicked) = match ended {
                Ok((id, ())) => (id, false),
                Err(e) => (e.id(), e.is_panic()),
            };
            if let Some(role) = roles.remove(&id)
                && panicked
                && !shutdown.is_cancelled()
            {
                tracing::error!(task = ?role, "a notification task panicked; starting a new one");
                roles.insert(start(&mut tasks, role), role);
            }
        }
        if let Err(e) = shared.state.db.release_delivery_leases(&shared.owner).await {
            tracing::warn!(error = %e, "cannot release the notification leases");
        }
        tracing::info!("notification worker stopped");
    })
}

/// Routes new events and sends due deliveries until shutdown.
async fn deliver_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let config = &shared.state.config.notifications;
    let interval = Duration::from_secs(config.worker_interval_secs);
    let lease = time::Duration::seconds(i64::try_from(config.lease_secs).unwrap_or(60));
    while !shutdown.is_cancelled() {
        loop {
            match shared.state.db.fan_out(FAN_OUT_BATCH, now()).await {
                Ok(n) if n as i64 == FAN_OUT_BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot route notification events");
                    break;
                }
            }
        }
        while !shutdown.is_cancelled() {
            let t = now();
            match shared
                .state
                .db
                .claim_delivery(&shared.owner, t + lease, t)
                .await
            {
                Ok(Some(d)) => deliver(&shared, d).await,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim a notification delivery");
                    break;
                }
            }
        }
        let idle = match shared.state.db.next_delivery_due().await {
            Ok(Some(at)) => Duration::try_from(at - now()).unwrap_or(Duration::ZERO),
            _ => interval,
        }
        .clamp(Duration::from_millis(50), interval);
        tokio::select! {
            () = tokio::time::sleep(idle) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

/// Sends one claimed delivery and records the attempt.
async fn deliver(shared: &Shared, d: ClaimedDelivery) {
    let config = &shared.state.config.notifications;
    let outcome = send(&shared.state, &d.channel, &d.payload).await;
    let t = now();
    let next = if outcome.delivered {
        None
    } else {
        rules::next_attempt(
            d.event_created_at,
            d.attempts + 1,
            Duration::from_secs(config.backoff_first_secs),
            Duration::from_secs(config.backoff_cap_secs),
            Duration::from_secs(config.dead_letter_after_secs),
            t,
        )
    };
    let label = match (outcome.delivered, next) {
        (true, _) => "delivered",
        (false, Some(_)) => "retrying",
        (false, None) => "failed",
    };
    let attempt = Attempt {
        delivered: outcome.delivered,
        code: outcome.code.map(i32::from),
        reply: &outcome.reply,
        next_attempt_at: next,
    };
    match shared
        .state
        .db
        .record_attempt(d.id, &shared.owner, &attempt, t)
        .await
    {
        Ok(true) => {
            metrics::counter!(crate::metrics::NOTIFICATION_DELIVERIES, "channel" => d.channel.settings.kind().as_str(), "outcome" => label).increment(1);
            if outcome.delivered {
                tracing::info!(delivery.id = %d.id, channel = %d.channel.name, event = %d.payload.kind, "notification delivered");
            } else {
                tracing::warn!(delivery.id = %d.id, channel = %d.channel.name, event = %d.payload.kind, outcome = label, reply = %outcome.reply, "notification not delivered");
            }
        }
        Ok(false) => {
            tracing::warn!(delivery.id = %d.id, "lost the delivery's lease; another process records it")
        }
        Err(e) => {
            tracing::warn!(delivery.id = %d.id, error = %e, "cannot record the delivery attempt; it is retried when its lease ends")
        }
    }
}
