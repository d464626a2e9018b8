//! SMTP channel over lettre (tokio, rustls): STARTTLS, implicit TLS, or plain (a relay on the
//! same host, tests), optional AUTH, one mail per event with a plain-text and an HTML part.
//! Delivered only when the server answers 250 to the message.

use std::time::Duration;

use certkeep_api_types::notification::{NotificationPayload, SmtpSettings, SmtpTls};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Outcome, render};

/// How long one SMTP conversation may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Checks the addresses of `settings` (for the API).
pub fn check(settings: &SmtpSettings) -> Result<(), String> {
    settings
        .from
        .parse::<Mailbox>()
        .map_err(|e| format!("from: `{}` is not a mail address: {e}", settings.from))?;
    for to in &settings.to {
        to.parse::<Mailbox>()
            .map_err(|e| format!("to: `{to}` is not a mail address: {e}"))?;
    }
    Ok(())
}

/// The mail for `payload`.
fn message(settings: &SmtpSettings, payload: &NotificationPayload) -> Result<Message, String> {
    let from: Mailbox = settings
        .from
        .parse()
        .map_err(|e| format!("bad from address: {e}"))?;
    let mut builder = Message::builder()
        .from(from)
        .subject(render::subject(payload))
        .message_id(Some(format!("<{}@certkeep>", payload.id)));
    for to in &settings.to {
        builder = builder.to(to.parse().map_err(|e| format!("bad to address: {e}"))?);
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            render::text(payload),
            render::html(payload),
        ))
        .map_err(|e| format!("cannot build the mail: {e}"))
}

fn transport(
    settings: &SmtpSettings,
    password: Option<&str>,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let host = settings.host.as_str();
    let tls = || {
        let mut params = TlsParameters::builder(host.to_owned());
        if let Some(path) = &settings.ca_file {
            let pem =
                std::fs::read(path).map_err(|e| format!("cannot read ca_file {path}: {e}"))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| format!("ca_file {path}: not a PEM certificate: {e}"))?;
            params = params.add_root_certificate(cert);
        }
        params
            .build_rustls()
            .map_err(|e| format!("cannot set up TLS: {e}"))
    };
    let (tls, port) = match settings.tls {
        SmtpTls::Starttls => (Tls::Required(tls()?), 587),
        SmtpTls::Tls => (Tls::Wrapper(tls()?), 465),
        SmtpTls::Plain => (Tls::None, 25),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(settings.port.unwrap_or(port))
        .tls(tls)
        .timeout(Some(TIMEOUT));
    if let (Some(user), Some(password)) = (&settings.username, password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.to_owned()));
    }
    Ok(builder.build())
}

/// Sends the mail for `payload` once.
pub async fn send(
    settings: &SmtpSettings,
    password: Option<&str>,
    payload: &NotificationPayload,
) -> Outcome {
    let (mail, transport) = match (message(settings, payload), transport(settings, password)) {
        (Ok(m), Ok(t)) => (m, t),
        (Err(e), _) | (_, Err(e)) => return Outcome::unreached(e),
    };
    match transport.send(mail).await {
        Ok(response) => {
            let code = u16::from(response.code());
            let text: Vec<&str> = response.message().collect();
            Outcome {
                delivered: code == 250,
                code: Some(code),
                reply: format!("{code} {}", text.join(" "))
                    .chars()
                    .take(300)
                    .collect(),
            }
        }
        Err(e) => Outcome {
            delivered: false,
            code: e.status().map(u16::from),
            reply: format!("SMTP: {e}").chars().take(300).collect(),
        },
    }
}
