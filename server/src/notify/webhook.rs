//! Webhook channel: a JSON POST signed per the Standard Webhooks convention: headers
//! `webhook-id` (the event id, stable across retries so receivers drop duplicates),
//! `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`
//! (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`) with the channel's `whsec_...` secret.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use certkeep_api_types::notification::{NotificationPayload, WebhookFormat, WebhookSettings};
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;

use super::{Outcome, render};

/// Prefix of a Standard Webhooks secret.
const PREFIX: &str = "whsec_";

/// Longest receiver answer kept, in characters.
const REPLY_CHARS: usize = 300;

/// A new signing secret: `whsec_` and the base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("{PREFIX}{}", STANDARD.encode(key))
}

/// The key bytes of a `whsec_...` secret (24 to 64 bytes).
pub fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret
        .strip_prefix(PREFIX)
        .ok_or("a webhook secret starts with `whsec_`")?;
    let key = STANDARD
        .decode(b64)
        .map_err(|_| "a webhook secret is `whsec_` followed by base64")?;
    if !(24..=64).contains(&key.len()) {
        return Err("a webhook secret holds 24 to 64 bytes".into());
    }
    Ok(key)
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this never fails; an empty signature would never verify.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The body for `format`.
pub fn body(format: WebhookFormat, payload: &NotificationPayload) -> Vec<u8> {
    match format {
        WebhookFormat::Standard => serde_json::to_vec(payload),
        WebhookFormat::Slack => {
            serde_json::to_vec(&serde_json::json!({ "text": render::chat(payload) }))
        }
    }
    .unwrap_or_default()
}

/// POSTs `payload` once; delivered only on a 2xx answer. Redirects are not followed.
pub async fn send(
    settings: &WebhookSettings,
    key: &[u8],
    payload: &NotificationPayload,
    now: time::OffsetDateTime,
) -> Outcome {
    let client = match client(settings) {
        Ok(c) => c,
        Err(e) => return Outcome::unreached(e),
    };
    let body = body(settings.format, payload);
    let id = payload.id.to_string();
    let timestamp = now.unix_timestamp();
    let sent = client
        .post(&settings.url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature(key, &id, timestamp, &body))
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            Outcome {
                delivered: status.is_success(),
                code: Some(status.as_u16()),
                reply: shorten(&format!("HTTP {status} {text}")),
            }
        }
        Err(e) => Outcome::unreached(format!("cannot reach the webhook: {e}")),
    }
}

/// Most distinct webhook clients kept (one per timeout and CA bundle in use).
const MAX_CLIENTS: usize = 64;

/// What a webhook client is built from: the timeout in seconds and the CA bundle's bytes.
type ClientKey = (u64, Option<Vec<u8>>);

/// The client for `settings`, built once per (timeout, CA bundle) and reused: building one
/// loads and parses the system's root certificates, tens of milliseconds that would otherwise
/// be paid by every delivery. The CA file is read each time, so a replaced bundle takes effect.
fn client(settings: &WebhookSettings) -> Result<reqwest::Client, String> {
    static CLIENTS: LazyLock<Mutex<HashMap<ClientKey, reqwest::Client>>> =
        LazyLock::new(Mutex::default);
    let timeout = settings.timeout_secs.clamp(1, 60);
    let pem = match &settings.ca_file {
        Some(path) => {
            Some(std::fs::read(path).map_err(|e| format!("cannot read ca_file {path}: {e}"))?)
        }
        None => None,
    };
    let key = (timeout, pem);
    let mut clients = CLIENTS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(client) = clients.get(&key) {
        return Ok(client.clone());
    }
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(timeout))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("certkeep/", env!("CARGO_PKG_VERSION")));
    if let (Some(path), Some(pem)) = (&settings.ca_file, &key.1) {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("ca_file {path}: not a PEM certificate: {e}"))?;
        builder = builder.tls_certs_merge(certs);
    }
    let client = builder
        .build()
        .map_err(|e| format!("cannot set up the webhook client: {e}"))?;
    if clients.len() >= MAX_CLIENTS {
        clients.clear();
    }
    clients.insert(key, client.clone());
    Ok(client)
}

fn shorten(s: &str) -> String {
    s.trim().chars().take(REPLY_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_are_generated_and_checked() {
        let s = new_secret();
        assert_eq!(secret_key(&s).unwrap().len(), 32);
        assert!(secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(secret_key("whsec_c2hvcnQ=").is_err());
    }
}
