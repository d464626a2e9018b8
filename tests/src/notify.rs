//! Notification fixtures: a webhook channel with its subscription, stored through the database.

use certkeep_api_types::notification::{
    NotificationEvent, SubscriptionScope, WebhookFormat, WebhookSettings,
};
use certkeep_server::app::AppState;
use certkeep_server::db::Db;
use certkeep_server::db::notify::{Channel, ChannelSettings, Delivery, NewSubscription};
use uuid::Uuid;

/// A standard webhook channel `name` (to `https://<name>.hooks.test/certkeep`) and a subscription
/// of the same name sending it `events` in `scope` (of `account_id` or `domain_patterns`),
/// without digest; the channel.
pub async fn webhook_subscription(
    state: &AppState,
    name: &str,
    events: &[NotificationEvent],
    scope: SubscriptionScope,
    account_id: Option<Uuid>,
    domain_patterns: &[String],
) -> Channel {
    let now = certkeep_server::now();
    let settings = ChannelSettings::Webhook(WebhookSettings {
        url: format!("https://{name}.hooks.test/certkeep"),
        format: WebhookFormat::Standard,
        timeout_secs: 5,
        ca_file: None,
    });
    let channel = state
        .db
        .insert_channel(&state.secrets, name, &settings, None, now)
        .await
        .unwrap();
    state
        .db
        .insert_subscription(
            &NewSubscription {
                name,
                channel_id: channel.id,
                events,
                scope,
                account_id,
                domain_patterns,
                agent_id: None,
                digest: false,
                digest_when_empty: false,
            },
            now,
        )
        .await
        .unwrap();
    channel
}

/// Routes every stored event to its channels now (as the delivery task would) and returns the
/// deliveries, newest first: what each subscription was sent.
pub async fn routed_deliveries(db: &Db) -> Vec<Delivery> {
    db.fan_out(100, certkeep_server::now()).await.unwrap();
    db.deliveries(None, 100).await.unwrap()
}
