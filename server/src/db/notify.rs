//! The notification outbox and its configuration: `notification_events` (written in the caller's
//! transaction through [`Outbox::enqueue_event`]), `notification_deliveries` (one per event and
//! channel, claimed with a lease: `FOR UPDATE SKIP LOCKED` on PostgreSQL, `BEGIN IMMEDIATE` on
//! SQLite), `notification_attempts` (every attempt with the receiver's answer), and the channels,
//! subscriptions and mutes that route events. Channel secrets are sealed, bound to
//! `notification_channels.secret_enc:<id>`.

use certkeep_api_types::notification::{
    ChannelKind, DeliveryState, NotificationEvent, NotificationPayload, SmtpSettings,
    SubscriptionScope, WebhookSettings,
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::BeginWrite as _;
use super::agents::one_row;
use super::{Db, Error, Pool, Result, from_json, on_pool, to_json};
use crate::domain::notify::{self as rules, EventSubject, Mute, Subscription};
use crate::secrets::{Binding, SecretBytes, Secrets};

/// An event to put in the outbox.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// What routing looks at.
    pub subject: EventSubject,
    /// Only this subscription's channel hears it (digests).
    pub subscription_id: Option<Uuid>,
    /// At most one event is stored per key (e.g. `expiring:<version>:<days>`).
    pub dedupe_key: Option<String>,
    /// What the channels receive; its `id` is the event's id.
    pub payload: NotificationPayload,
}

const INSERT_EVENT: &str = "INSERT INTO notification_events (id, kind, certificate_id, account_id, agent_id, dns_names, subscription_id, dedupe_key, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING";

/// Writes an event into the outbox on a connection that is inside the caller's transaction, so
/// the event exists exactly when the state change that causes it commits:
/// `tx.enqueue_event(&event).await?` in any `on_pool!` arm.
pub(crate) trait Outbox {
    /// Stores `event`; `false` when an event with its dedupe key already exists.
    async fn enqueue_event(&mut self, event: &NewEvent) -> sqlx::Result<bool>;
}

macro_rules! impl_outbox {
    ($($conn:ty),+) => {$(
        impl Outbox for $conn {
            async fn enqueue_event(&mut self, event: &NewEvent) -> sqlx::Result<bool> {
                let p = &event.payload;
                let n = sqlx::query(INSERT_EVENT)
                    .bind(p.id)
                    .bind(p.kind.as_str())
                    .bind(event.subject.certificate_id)
                    .bind(event.subject.account_id)
                    .bind(event.subject.agent_id)
                    .bind(to_json(&event.subject.dns_names))
                    .bind(event.subscription_id)
                    .bind(event.dedupe_key.as_deref())
                    .bind(serde_json::to_string(p).unwrap_or_default())
                    .bind(p.occurred_at)
                    .execute(&mut *self)
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }
        }
    )+};
}
impl_outbox!(sqlx::PgConnection, sqlx::SqliteConnection);

/// Where a channel's secret is sealed.
fn secret_binding(id: Uuid) -> Binding {
    Binding::new("notification_channels", "secret_enc", id)
}

/// A channel's settings, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelSettings {
    Smtp(SmtpSettings),
    Webhook(WebhookSettings),
}

impl ChannelSettings {
    pub fn kind(&self) -> ChannelKind {
        match self {
            Self::Smtp(_) => ChannelKind::Smtp,
            Self::Webhook(_) => ChannelKind::Webhook,
        }
    }
}

/// A stored channel (its secret stays sealed; see [`Db::channel_secret`]).
#[derive(Debug, Clone)]
pub struct Channel {
    pub id: Uuid,
    pub name: String,
    pub settings: ChannelSettings,
    pub has_secret: bool,
    pub created_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct ChannelRow {
    id: Uuid,
    name: String,
    kind: String,
    settings: String,
    has_secret: bool,
    created_at: OffsetDateTime,
}

impl ChannelRow {
    fn into_model(self) -> Result<Channel> {
        let kind: ChannelKind = self.kind.parse().map_err(Error::Corrupt)?;
        let settings = match kind {
            ChannelKind::Smtp => ChannelSettings::Smtp(from_json("settings", &self.settings)?),
            ChannelKind::Webhook => {
                ChannelSettings::Webhook(from_json("settings", &self.settings)?)
            }
        };
        Ok(Channel {
            id: self.id,
            name: self.name,
            settings,
            has_secret: self.has_secret,
            created_at: self.created_at,
        })
    }
}

macro_rules! select_channels {
    ($tail:literal) => {
        concat!(
            "SELECT id, name, kind, settings, secret_enc IS NOT NULL AS has_secret, created_at FROM notification_channels ",
            $tail
        )
    };
}

/// A subscription to store.
pub struct NewSubscription<'a> {
    pub name: &'a str,
    pub channel_id: Uuid,
    pub events: &'a [NotificationEvent],
    pub scope: SubscriptionScope,
    pub account_id: Option<Uuid>,
    pub domain_patterns: &'a [String],
    pub agent_id: Option<Uuid>,
    pub digest: bool,
    pub digest_when_empty: bool,
}

#[derive(sqlx::FromRow)]
struct SubscriptionRow {
    id: Uuid,
    name: String,
    channel_id: Uuid,
    events: String,
    scope: String,
    account_id: Option<Uuid>,
    domain_patterns: String,
    agent_id: Option<Uuid>,
    digest: bool,
    digest_when_empty: bool,
    digest_last_on: Option<String>,
    created_at: OffsetDateTime,
}

impl SubscriptionRow {
    fn into_model(self) -> Result<Subscription> {
        Ok(Subscription {
            id: self.id,
            name: self.name,
            channel_id: self.channel_id,
            events: from_json("events", &self.events)?,
            scope: self.scope.parse().map_err(Error::Corrupt)?,
            account_id: self.account_id,
            domain_patterns: from_json("domain_patterns", &self.domain_patterns)?,
            agent_id: self.agent_id,
            digest: self.digest,
            digest_when_empty: self.digest_when_empty,
            digest_last_on: self.digest_last_on,
            created_at: self.created_at,
        })
    }
}

const SELECT_SUBSCRIPTIONS: &str = "SELECT id, name, channel_id, events, scope, account_id, domain_patterns, agent_id, digest, digest_when_empty, digest_last_on, created_at FROM notification_subscriptions ORDER BY created_at";

#[derive(sqlx::FromRow)]
struct MuteRow {
    id: Uuid,
    certificate_id: Uuid,
    events: String,
    until: OffsetDateTime,
    reason: String,
    created_by: Option<String>,
    created_at: OffsetDateTime,
}

impl MuteRow {
    fn into_model(self) -> Result<Mute> {
        Ok(Mute {
            id: self.id,
            certificate_id: self.certificate_id,
            events: from_json("events", &self.events)?,
            until: self.until,
            reason: self.reason,
            created_by: self.created_by,
            created_at: self.created_at,
        })
    }
}

const SELECT_MUTES: &str = "SELECT id, certificate_id, events, until, reason, created_by, created_at FROM notification_mutes WHERE until > $1 ORDER BY until";

#[derive(sqlx::FromRow)]
struct UnroutedRow {
    id: Uuid,
    kind: String,
    certificate_id: Option<Uuid>,
    account_id: Option<Uuid>,
    agent_id: Option<Uuid>,
    dns_names: String,
    subscription_id: Option<Uuid>,
}

/// A delivery claimed for sending.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: Uuid,
    /// Attempts before this one.
    pub attempts: i32,
    pub event_created_at: OffsetDateTime,
    pub channel: Channel,
    pub payload: NotificationPayload,
}

/// A delivery with its event and channel name (the API's list).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: Uuid,
    pub channel_id: Uuid,
    pub channel_name: String,
    pub state: DeliveryState,
    pub attempts: i32,
    pub last_code: Option<i32>,
    pub last_reply: Option<String>,
    pub next_attempt_at: OffsetDateTime,
    pub delivered_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub payload: NotificationPayload,
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: Uuid,
    channel_id: Uuid,
    channel_name: String,
    state: String,
    attempts: i32,
    last_code: Option<i32>,
    last_reply: Option<String>,
    next_attempt_at: OffsetDateTime,
    delivered_at: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
    payload: String,
}

impl DeliveryRow {
    fn into_model(self) -> Result<Delivery> {
        Ok(Delivery {
            id: self.id,
            channel_id: self.channel_id,
            channel_name: self.channel_name,
            state: self.state.parse().map_err(Error::Corrupt)?,
            attempts: self.attempts,
            last_code: self.last_code,
            last_reply: self.last_reply,
            next_attempt_at: self.next_attempt_at,
            delivered_at: self.delivered_at,
            created_at: self.created_at,
            payload: from_json("payload", &self.payload)?,
        })
    }
}

/// `SELECT <every delivery column> ... WHERE (<null test of $1> OR d.state = $1)`, newest first.
macro_rules! select_deliveries {
    ($null:literal) => {
        concat!(
            "SELECT d.id, d.channel_id, c.name AS channel_name, d.state, d.attempts, d.last_code, d.last_reply, d.next_attempt_at, d.delivered_at, d.created_at, e.payload FROM notification_deliveries d JOIN notification_channels c ON c.id = d.channel_id JOIN notification_events e ON e.id = d.event_id WHERE (",
            $null,
            " OR d.state = $1) ORDER BY d.created_at DESC, d.id DESC LIMIT $2"
        )
    };
}

/// The outcome of one attempt.
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    /// The receiver accepted it (2xx / 250).
    pub delivered: bool,
    /// HTTP status or SMTP reply code.
    pub code: Option<i32>,
    /// The receiver's answer, shortened, or why it was not reached.
    pub reply: &'a str,
    /// When to try again; `None` after a failure gives the delivery up.
    pub next_attempt_at: Option<OffsetDateTime>,
}

/// A certificate's current version near its end (scans and digests).
#[derive(Debug, Clone)]
pub struct ExpiringVersion {
    pub certificate_id: Uuid,
    pub certificate_name: String,
    pub account_id: Uuid,
    pub version_id: Uuid,
    pub dns_names: Vec<String>,
    pub not_after: OffsetDateTime,
}

/// A certificate whose orders fail (digests).
#[derive(Debug, Clone)]
pub struct FailingCertificate {
    pub certificate_id: Uuid,
    pub certificate_name: String,
    pub account_id: Uuid,
    pub dns_names: Vec<String>,
    pub last_error: Option<String>,
}

/// An active agent that has not polled lately.
#[derive(Debug, Clone)]
pub struct StaleAgent {
    pub agent_id: Uuid,
    pub agent_name: String,
    pub last_seen_at: OffsetDateTime,
}

impl Db {
    /// Stores `event` in a transaction of its own (events not tied to another write: scans,
    /// digests). `false` when its dedupe key was already used.
    pub async fn enqueue_event(&self, event: &NewEvent) -> Result<bool> {
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let stored = tx.enqueue_event(event).await?;
            tx.commit().await?;
            Ok(stored)
        })
    }

    // ------------------------------------------------------------ channels

    /// Stores a channel, sealing `secret`.
    pub async fn insert_channel(
        &self,
        secrets: &Secrets,
        name: &str,
        settings: &ChannelSettings,
        secret: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> Result<Channel> {
        const Q: &str = "INSERT INTO notification_channels (id, name, kind, settings, secret_enc, created_at) VALUES ($1, $2, $3, $4, $5, $6)";
        let id = Uuid::now_v7();
        let sealed = secret
            .map(|s| secrets.seal(secret_binding(id), s))
            .transpose()?;
        let json = match settings {
            ChannelSettings::Smtp(s) => to_json(s),
            ChannelSettings::Webhook(w) => to_json(w),
        };
        on_pool!(self, p => sqlx::query(Q)
            .bind(id)
            .bind(name)
            .bind(settings.kind().as_str())
            .bind(json)
            .bind(sealed)
            .bind(now)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        self.channel(id).await
    }

    /// One channel by id.
    pub async fn channel(&self, id: Uuid) -> Result<Channel> {
        const Q: &str = select_channels!("WHERE id = $1");
        let row: ChannelRow = on_pool!(self, p => sqlx::query_as(Q).bind(id).fetch_one(p).await)?;
        row.into_model()
    }

    /// One channel by name.
    pub async fn channel_by_name(&self, name: &str) -> Result<Channel> {
        const Q: &str = select_channels!("WHERE name = $1");
        let row: ChannelRow = on_pool!(self, p => sqlx::query_as(Q).bind(name).fetch_one(p).await)?;
        row.into_model()
    }

    /// Every channel, by name.
    pub async fn channels(&self) -> Result<Vec<Channel>> {
        const Q: &str = select_channels!("ORDER BY name");
        let rows: Vec<ChannelRow> = on_pool!(self, p => sqlx::query_as(Q).fetch_all(p).await)?;
        rows.into_iter().map(ChannelRow::into_model).collect()
    }

    /// Deletes a channel with its subscriptions and deliveries.
    pub async fn delete_channel(&self, id: Uuid) -> Result<()> {
        self.delete_by_id("DELETE FROM notification_channels WHERE id = $1", id)
            .await
    }

    /// A channel's secret (SMTP password, webhook signing secret), if one is stored.
    pub async fn channel_secret(&self, secrets: &Secrets, id: Uuid) -> Result<Option<SecretBytes>> {
        const Q: &str = "SELECT secret_enc FROM notification_channels WHERE id = $1";
        let ct: Option<Vec<u8>> =
            on_pool!(self, p => sqlx::query_scalar(Q).bind(id).fetch_one(p).await)?;
        Ok(ct
            .map(|ct| secrets.open(secret_binding(id), &ct))
            .transpose()?)
    }

    // ------------------------------------------------------------ subscriptions and mutes

    /// Stores a subscription.
    pub async fn insert_subscription(
        &self,
        new: &NewSubscription<'_>,
        now: OffsetDateTime,
    ) -> Result<Subscription> {
        const Q: &str = "INSERT INTO notification_subscriptions (id, name, channel_id, events, scope, account_id, domain_patterns, agent_id, digest, digest_when_empty, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
        let id = Uuid::now_v7();
        on_pool!(self, p => sqlx::query(Q)
            .bind(id)
            .bind(new.name)
            .bind(new.channel_id)
            .bind(to_json(&new.events))
            .bind(new.scope.as_str())
            .bind(new.account_id)
            .bind(to_json(&new.domain_patterns))
            .bind(new.agent_id)
            .bind(new.digest)
            .bind(new.digest_when_empty)
            .bind(now)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        self.subscriptions()
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or(Error::NotFound)
    }

    /// Every subscription, oldest first.
    pub async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        let rows: Vec<SubscriptionRow> =
            on_pool!(self, p => sqlx::query_as(SELECT_SUBSCRIPTIONS).fetch_all(p).await)?;
        rows.into_iter().map(SubscriptionRow::into_model).collect()
    }

    /// Deletes a subscription.
    pub async fn delete_subscription(&self, id: Uuid) -> Result<()> {
        self.delete_by_id("DELETE FROM notification_subscriptions WHERE id = $1", id)
            .await
    }

    /// Marks the digest of `subscription` sent for local day `day` (`YYYY-MM-DD`); `false` when
    /// it already was (by this or another server), so each day's digest is enqueued once.
    pub async fn take_digest_day(&self, subscription: Uuid, day: &str) -> Result<bool> {
        const Q: &str = "UPDATE notification_subscriptions SET digest_last_on = $2 WHERE id = $1 AND (digest_last_on IS NULL OR digest_last_on < $2)";
        let n = on_pool!(self, p => sqlx::query(Q).bind(subscription).bind(day).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Mutes events about a certificate until `until`.
    pub async fn insert_mute(
        &self,
        certificate: Uuid,
        events: &[NotificationEvent],
        until: OffsetDateTime,
        reason: &str,
        created_by: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Mute> {
        const Q: &str = "INSERT INTO notification_mutes (id, certificate_id, events, until, reason, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
        let id = Uuid::now_v7();
        on_pool!(self, p => sqlx::query(Q).bind(id).bind(certificate).bind(to_json(&events)).bind(until).bind(reason).bind(created_by).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(Mute {
            id,
            certificate_id: certificate,
            events: events.to_vec(),
            until,
            reason: reason.to_owned(),
            created_by: created_by.map(str::to_owned),
            created_at: now,
        })
    }

    /// Mutes still in force at `now`.
    pub async fn mutes(&self, now: OffsetDateTime) -> Result<Vec<Mute>> {
        let rows: Vec<MuteRow> =
            on_pool!(self, p => sqlx::query_as(SELECT_MUTES).bind(now).fetch_all(p).await)?;
        rows.into_iter().map(MuteRow::into_model).collect()
    }

    /// Ends a mute.
    pub async fn delete_mute(&self, id: Uuid) -> Result<()> {
        self.delete_by_id("DELETE FROM notification_mutes WHERE id = $1", id)
            .await
    }

    /// Runs `q` (a `DELETE … WHERE id = $1`); `NotFound` when it removed no row.
    async fn delete_by_id(&self, q: &'static str, id: Uuid) -> Result<()> {
        one_row(
            on_pool!(self, p => sqlx::query(q).bind(id).execute(p).await.map(|r| r.rows_affected()))?,
        )
    }

    // ------------------------------------------------------------ the outbox

    /// Routes up to `limit` new events: one delivery per matching channel (once per channel,
    /// whoever fans out: the pair is unique), then marks them routed, in one transaction. Events
    /// another server is routing are skipped. Returns how many events were routed.
    pub async fn fan_out(&self, limit: i64, now: OffsetDateTime) -> Result<usize> {
        const PG: &str = "SELECT id, kind, certificate_id, account_id, agent_id, dns_names, subscription_id FROM notification_events WHERE fanned_out_at IS NULL ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED";
        const SQLITE: &str = "SELECT id, kind, certificate_id, account_id, agent_id, dns_names, subscription_id FROM notification_events WHERE fanned_out_at IS NULL ORDER BY created_at LIMIT $1";
        const DELIVERY: &str = "INSERT INTO notification_deliveries (id, event_id, channel_id, state, attempts, next_attempt_at, created_at) VALUES ($1, $2, $3, 'pending', 0, $4, $4) ON CONFLICT DO NOTHING";
        const DONE: &str = "UPDATE notification_events SET fanned_out_at = $2 WHERE id = $1";
        let select = match self.pool {
            Pool::Pg(_) => PG,
            Pool::Sqlite(_) => SQLITE,
        };
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let events: Vec<UnroutedRow> = sqlx::query_as(select).bind(limit).fetch_all(&mut *tx).await?;
            if events.is_empty() {
                return Ok(0);
            }
            let subscriptions: Vec<SubscriptionRow> = sqlx::query_as(SELECT_SUBSCRIPTIONS).fetch_all(&mut *tx).await?;
            let subscriptions = subscriptions.into_iter().map(SubscriptionRow::into_model).collect::<Result<Vec<_>>>()?;
            let mutes: Vec<MuteRow> = sqlx::query_as(SELECT_MUTES).bind(now).fetch_all(&mut *tx).await?;
            let mutes = mutes.into_iter().map(MuteRow::into_model).collect::<Result<Vec<_>>>()?;
            for e in &events {
                let kind: NotificationEvent = e.kind.parse().map_err(Error::Corrupt)?;
                let channels = match e.subscription_id {
                    Some(only) => subscriptions.iter().filter(|s| s.id == only).map(|s| s.channel_id).collect(),
                    None => {
                        let subject = EventSubject {
                            certificate_id: e.certificate_id,
                            account_id: e.account_id,
                            agent_id: e.agent_id,
                            dns_names: from_json("dns_names", &e.dns_names)?,
                        };
                        rules::channels_for(&subscriptions, &mutes, kind, &subject, now)
                    }
                };
                for channel in channels {
                    sqlx::query(DELIVERY).bind(Uuid::now_v7()).bind(e.id).bind(channel).bind(now).execute(&mut *tx).await?;
                }
                sqlx::query(DONE).bind(e.id).bind(now).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(events.len())
        })
    }

    /// Claims the most overdue delivery due at `now` for `owner` until `lease_until`, with its
    /// channel and event.
    pub async fn claim_delivery(
        &self,
        owner: &str,
        lease_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<ClaimedDelivery>> {
        const PG: &str = "UPDATE notification_deliveries SET lease_owner = $1, lease_expires_at = $2 WHERE id = (SELECT id FROM notification_deliveries WHERE state IN ('pending', 'retrying') AND next_attempt_at <= $3 AND (lease_expires_at IS NULL OR lease_expires_at < $3) ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id, attempts, event_id, channel_id";
        const SQLITE: &str = "UPDATE notification_deliveries SET lease_owner = $1, lease_expires_at = $2 WHERE id = (SELECT id FROM notification_deliveries WHERE state IN ('pending', 'retrying') AND next_attempt_at <= $3 AND (lease_expires_at IS NULL OR lease_expires_at < $3) ORDER BY next_attempt_at LIMIT 1) RETURNING id, attempts, event_id, channel_id";
        const EVENT: &str = "SELECT payload, created_at FROM notification_events WHERE id = $1";
        let claim = match self.pool {
            Pool::Pg(_) => PG,
            Pool::Sqlite(_) => SQLITE,
        };
        let claimed: Option<(Uuid, i32, Uuid, Uuid)> = on_pool!(self, p => sqlx::query_as(claim).bind(owner).bind(lease_until).bind(now).fetch_optional(p).await)?;
        let Some((id, attempts, event, channel)) = claimed else {
            return Ok(None);
        };
        let (payload, event_created_at): (String, OffsetDateTime) =
            on_pool!(self, p => sqlx::query_as(EVENT).bind(event).fetch_one(p).await)?;
        Ok(Some(ClaimedDelivery {
            id,
            attempts,
            event_created_at,
            channel: self.channel(channel).await?,
            payload: from_json("payload", &payload)?,
        }))
    }

    /// Records one attempt of a delivery `owner` holds, and releases it: delivered, retrying
    /// at `next_attempt_at`, or failed for good. `false` when the lease was lost (another
    /// process took the delivery over; its own attempt will be recorded).
    pub async fn record_attempt(
        &self,
        id: Uuid,
        owner: &str,
        attempt: &Attempt<'_>,
        now: OffsetDateTime,
    ) -> Result<bool> {
        const UPDATE: &str = "UPDATE notification_deliveries SET state = $3, attempts = attempts + 1, next_attempt_at = COALESCE($4, next_attempt_at), last_code = $5, last_reply = $6, delivered_at = $7, lease_owner = NULL, lease_expires_at = NULL WHERE id = $1 AND lease_owner = $2 AND state IN ('pending', 'retrying') RETURNING attempts";
        const INSERT: &str = "INSERT INTO notification_attempts (delivery_id, attempt, at, delivered, code, reply, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
        let state = match (attempt.delivered, attempt.next_attempt_at) {
            (true, _) => DeliveryState::Delivered,
            (false, Some(_)) => DeliveryState::Retrying,
            (false, None) => DeliveryState::Failed,
        };
        let next = attempt.next_attempt_at.filter(|_| !attempt.delivered);
        let delivered_at = attempt.delivered.then_some(now);
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let n: Option<i32> = sqlx::query_scalar(UPDATE)
                .bind(id)
                .bind(owner)
                .bind(state.as_str())
                .bind(next)
                .bind(attempt.code)
                .bind(attempt.reply)
                .bind(delivered_at)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(n) = n else {
                return Ok(false);
            };
            sqlx::query(INSERT).bind(id).bind(n).bind(now).bind(attempt.delivered).bind(attempt.code).bind(attempt.reply).bind(next).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Releases every delivery lease `owner` holds (clean shutdown).
    pub async fn release_delivery_leases(&self, owner: &str) -> Result<u64> {
        const Q: &str = "UPDATE notification_deliveries SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = $1";
        Ok(
            on_pool!(self, p => sqlx::query(Q).bind(owner).execute(p).await.map(|r| r.rows_affected()))?,
        )
    }

    /// Deliveries, newest first, optionally in one state.
    pub async fn deliveries(
        &self,
        state: Option<DeliveryState>,
        limit: i64,
    ) -> Result<Vec<Delivery>> {
        // PostgreSQL needs the parameter's type where it only meets NULL.
        const PG: &str = select_deliveries!("$1::text IS NULL");
        const SQLITE: &str = select_deliveries!("$1 IS NULL");
        let state = state.map(DeliveryState::as_str);
        let sql = match self.pool {
            Pool::Pg(_) => PG,
            Pool::Sqlite(_) => SQLITE,
        };
        let rows: Vec<DeliveryRow> =
            on_pool!(self, p => sqlx::query_as(sql).bind(state).bind(limit).fetch_all(p).await)?;
        rows.into_iter().map(DeliveryRow::into_model).collect()
    }

    /// When the oldest event still waiting for a delivery (or for routing) happened.
    pub async fn oldest_undelivered(&self) -> Result<Option<OffsetDateTime>> {
        const Q: &str = "SELECT e.created_at FROM notification_events e WHERE e.fanned_out_at IS NULL OR EXISTS (SELECT 1 FROM notification_deliveries d WHERE d.event_id = e.id AND d.state IN ('pending', 'retrying')) ORDER BY e.created_at LIMIT 1";
        Ok(on_pool!(self, p => sqlx::query_scalar(Q).fetch_optional(p).await)?)
    }

    /// When the next delivery is due, for the worker's idle sleep.
    pub async fn next_delivery_due(&self) -> Result<Option<OffsetDateTime>> {
        const Q: &str = "SELECT next_attempt_at FROM notification_deliveries WHERE state IN ('pending', 'retrying') ORDER BY next_attempt_at LIMIT 1";
        Ok(on_pool!(self, p => sqlx::query_scalar(Q).fetch_optional(p).await)?)
    }

    // ------------------------------------------------------------ what the scans read

    /// Current, unrevoked versions of certificates not retired that end within `(now, until]`.
    pub async fn versions_ending(
        &self,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Vec<ExpiringVersion>> {
        const Q: &str = "SELECT c.id, c.name, c.account_id, v.id, v.dns_names, v.not_after FROM certificates c JOIN certificate_versions v ON v.id = c.current_version_id WHERE c.state <> 'retired' AND v.revoked_at IS NULL AND v.not_after > $1 AND v.not_after <= $2 ORDER BY v.not_after";
        type Row = (Uuid, String, Uuid, Uuid, String, OffsetDateTime);
        let rows: Vec<Row> =
            on_pool!(self, p => sqlx::query_as(Q).bind(now).bind(until).fetch_all(p).await)?;
        rows.into_iter()
            .map(|(c, name, a, v, names, not_after)| {
                Ok(ExpiringVersion {
                    certificate_id: c,
                    certificate_name: name,
                    account_id: a,
                    version_id: v,
                    dns_names: from_json("dns_names", &names)?,
                    not_after,
                })
            })
            .collect()
    }

    /// Certificates whose orders fail (state `failing` or `failed`).
    pub async fn failing_certificates(&self) -> Result<Vec<FailingCertificate>> {
        const Q: &str = "SELECT id, name, account_id, dns_names, last_error FROM certificates WHERE state IN ('failing', 'failed') ORDER BY name";
        type Row = (Uuid, String, Uuid, String, Option<String>);
        let rows: Vec<Row> = on_pool!(self, p => sqlx::query_as(Q).fetch_all(p).await)?;
        rows.into_iter()
            .map(|(c, name, a, names, last_error)| {
                Ok(FailingCertificate {
                    certificate_id: c,
                    certificate_name: name,
                    account_id: a,
                    dns_names: from_json("dns_names", &names)?,
                    last_error,
                })
            })
            .collect()
    }

    /// Active agents last seen before `seen_before`.
    pub async fn stale_agents(&self, seen_before: OffsetDateTime) -> Result<Vec<StaleAgent>> {
        const Q: &str = "SELECT id, name, last_seen_at FROM agents WHERE state = 'active' AND last_seen_at IS NOT NULL AND last_seen_at < $1 ORDER BY name";
        let rows: Vec<(Uuid, String, OffsetDateTime)> =
            on_pool!(self, p => sqlx::query_as(Q).bind(seen_before).fetch_all(p).await)?;
        Ok(rows
            .into_iter()
            .map(|(agent_id, agent_name, last_seen_at)| StaleAgent {
                agent_id,
                agent_name,
                last_seen_at,
            })
            .collect())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use certkeep_api_types::notification::WebhookFormat;

    use super::*;
    use crate::testkit::TestDb;

    /// A routed test event (for storage tests of callers that take one).
    pub(crate) fn event() -> NewEvent {
        NewEvent {
            subject: EventSubject::default(),
            subscription_id: None,
            dedupe_key: None,
            payload: crate::notify::events::test("t", crate::now()),
        }
    }

    fn webhook(url: &str) -> ChannelSettings {
        ChannelSettings::Webhook(WebhookSettings {
            url: url.into(),
            format: WebhookFormat::Standard,
            timeout_secs: 5,
            ca_file: None,
        })
    }

    async fn subscribe(t: &TestDb, name: &str, channel: Uuid, patterns: &[String]) {
        t.db.insert_subscription(
            &NewSubscription {
                name,
                channel_id: channel,
                events: &[NotificationEvent::CertificateRenewalFailed],
                scope: SubscriptionScope::Domains,
                account_id: None,
                domain_patterns: patterns,
                agent_id: None,
                digest: false,
                digest_when_empty: false,
            },
            crate::now(),
        )
        .await
        .unwrap();
    }

    fn failed_for(name: &str, kind: NotificationEvent) -> NewEvent {
        let mut e = event();
        e.payload.kind = kind;
        e.subject.dns_names = vec![name.to_owned()];
        e
    }

    #[tokio::test]
    async fn channel_secrets_are_sealed_to_their_row_and_never_listed() {
        for t in TestDb::all().await {
            let secrets = Secrets::generate();
            let now = crate::now();
            let c =
                t.db.insert_channel(
                    &secrets,
                    "hook",
                    &webhook("https://h.example/x"),
                    Some(b"whsec_top"),
                    now,
                )
                .await
                .unwrap();
            assert!(c.has_secret);
            assert_eq!(t.db.channel_by_name("hook").await.unwrap().id, c.id);
            let opened = t.db.channel_secret(&secrets, c.id).await.unwrap().unwrap();
            assert_eq!(&opened[..], b"whsec_top");
            let other = Secrets::generate();
            assert!(
                t.db.channel_secret(&other, c.id).await.is_err(),
                "{}",
                t.backend
            );
            assert!(
                !t.raw_contents().windows(9).any(|w| w == b"whsec_top"),
                "the secret is stored sealed ({})",
                t.backend
            );
        }
    }

    #[tokio::test]
    async fn events_route_once_per_matching_channel_and_a_dedupe_key_stores_once() {
        for t in TestDb::all().await {
            let secrets = Secrets::generate();
            let now = crate::now();
            let med =
                t.db.insert_channel(&secrets, "med", &webhook("https://m.example/"), None, now)
                    .await
                    .unwrap();
            let law =
                t.db.insert_channel(&secrets, "law", &webhook("https://l.example/"), None, now)
                    .await
                    .unwrap();
            subscribe(&t, "med-a", med.id, &["*.med.example.edu".into()]).await;
            subscribe(&t, "med-b", med.id, &["www.med.example.edu".into()]).await;
            subscribe(&t, "law", law.id, &["*.law.example.edu".into()]).await;
            let kind = NotificationEvent::CertificateRenewalFailed;
            assert!(
                t.db.enqueue_event(&failed_for("www.med.example.edu", kind))
                    .await
                    .unwrap()
            );
            assert!(
                t.db.enqueue_event(&failed_for(
                    "www.med.example.edu",
                    NotificationEvent::CertificateIssued
                ))
                .await
                .unwrap()
            );
            let mut keyed = failed_for("x.law.example.edu", kind);
            keyed.dedupe_key = Some("k".into());
            assert!(t.db.enqueue_event(&keyed).await.unwrap());
            keyed.payload.id = Uuid::now_v7();
            assert!(!t.db.enqueue_event(&keyed).await.unwrap(), "{}", t.backend);
            assert_eq!(t.db.fan_out(100, now).await.unwrap(), 3);
            assert_eq!(t.db.fan_out(100, now).await.unwrap(), 0, "routed once");
            let all = t.db.deliveries(None, 100).await.unwrap();
            let to = |c: Uuid| all.iter().filter(|d| d.channel_id == c).count();
            assert_eq!(
                (to(med.id), to(law.id), all.len()),
                (1, 1, 2),
                "{}",
                t.backend
            );
            assert!(all.iter().all(|d| d.state == DeliveryState::Pending));
            assert!(t.db.oldest_undelivered().await.unwrap().is_some());
        }
    }

    #[tokio::test]
    async fn a_claimed_delivery_is_leased_fenced_and_recorded_with_every_attempt() {
        for t in TestDb::all().await {
            let secrets = Secrets::generate();
            let now = crate::now();
            let c =
                t.db.insert_channel(&secrets, "med", &webhook("https://m.example/"), None, now)
                    .await
                    .unwrap();
            subscribe(&t, "med", c.id, &["*.example.edu".into()]).await;
            let kind = NotificationEvent::CertificateRenewalFailed;
            t.db.enqueue_event(&failed_for("a.example.edu", kind))
                .await
                .unwrap();
            t.db.fan_out(10, now).await.unwrap();
            let lease = now + time::Duration::seconds(30);
            let d = t.db.claim_delivery("a", lease, now).await.unwrap().unwrap();
            assert_eq!((d.attempts, d.channel.id), (0, c.id));
            assert!(
                t.db.claim_delivery("b", lease, now)
                    .await
                    .unwrap()
                    .is_none(),
                "leased ({})",
                t.backend
            );
            let retry = Attempt {
                delivered: false,
                code: Some(500),
                reply: "HTTP 500",
                next_attempt_at: Some(now),
            };
            assert!(
                !t.db.record_attempt(d.id, "b", &retry, now).await.unwrap(),
                "fenced by the lease"
            );
            assert!(t.db.record_attempt(d.id, "a", &retry, now).await.unwrap());
            let after = lease + time::Duration::seconds(1);
            // A crashed holder: its lease ends and another process takes the delivery over.
            let again =
                t.db.claim_delivery("a", now + time::Duration::seconds(1), now)
                    .await
                    .unwrap()
                    .unwrap();
            let taken =
                t.db.claim_delivery("b", after + time::Duration::seconds(30), after)
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!((again.id, taken.id, taken.attempts), (d.id, d.id, 1));
            let ok = Attempt {
                delivered: true,
                code: Some(204),
                reply: "HTTP 204",
                next_attempt_at: None,
            };
            assert!(
                !t.db.record_attempt(d.id, "a", &ok, after).await.unwrap(),
                "the old holder is fenced"
            );
            assert!(t.db.record_attempt(d.id, "b", &ok, after).await.unwrap());
            let list =
                t.db.deliveries(Some(DeliveryState::Delivered), 10)
                    .await
                    .unwrap();
            assert_eq!(list.len(), 1, "{}", t.backend);
            assert_eq!((list[0].attempts, list[0].last_code), (2, Some(204)));
            assert!(
                t.db.deliveries(Some(DeliveryState::Failed), 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
            assert!(
                t.db.claim_delivery("c", after + time::Duration::hours(1), after)
                    .await
                    .unwrap()
                    .is_none(),
                "delivered is final"
            );
            assert_eq!(t.db.oldest_undelivered().await.unwrap(), None);
        }
    }

    #[tokio::test]
    async fn a_given_up_delivery_is_failed_and_never_claimed_again() {
        for t in TestDb::all().await {
            let secrets = Secrets::generate();
            let now = crate::now();
            let c =
                t.db.insert_channel(&secrets, "med", &webhook("https://m.example/"), None, now)
                    .await
                    .unwrap();
            subscribe(&t, "med", c.id, &["*.example.edu".into()]).await;
            t.db.enqueue_event(&failed_for(
                "a.example.edu",
                NotificationEvent::CertificateRenewalFailed,
            ))
            .await
            .unwrap();
            t.db.fan_out(10, now).await.unwrap();
            let d =
                t.db.claim_delivery("a", now + time::Duration::seconds(30), now)
                    .await
                    .unwrap()
                    .unwrap();
            let dead = Attempt {
                delivered: false,
                code: None,
                reply: "connection refused",
                next_attempt_at: None,
            };
            assert!(t.db.record_attempt(d.id, "a", &dead, now).await.unwrap());
            let failed =
                t.db.deliveries(Some(DeliveryState::Failed), 10)
                    .await
                    .unwrap();
            assert_eq!(failed.len(), 1, "{}", t.backend);
            assert_eq!(failed[0].last_reply.as_deref(), Some("connection refused"));
            assert!(
                t.db.claim_delivery(
                    "a",
                    now + time::Duration::days(9),
                    now + time::Duration::days(8)
                )
                .await
                .unwrap()
                .is_none()
            );
        }
    }

    #[tokio::test]
    async fn an_event_in_a_rolled_back_transaction_never_exists() {
        for t in TestDb::all().await {
            let e = event();
            on_pool!(t.db, p => {
                let mut tx = p.begin_write().await.unwrap();
                assert!(tx.enqueue_event(&e).await.unwrap());
                tx.rollback().await.unwrap();
            });
            assert_eq!(
                t.db.oldest_undelivered().await.unwrap(),
                None,
                "{}",
                t.backend
            );
            on_pool!(t.db, p => {
                let mut tx = p.begin_write().await.unwrap();
                assert!(tx.enqueue_event(&e).await.unwrap());
                tx.commit().await.unwrap();
            });
            assert!(t.db.oldest_undelivered().await.unwrap().is_some());
        }
    }
}
