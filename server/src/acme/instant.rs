//! [`Issuer`] on top of instant-acme 0.8.5. An order is opened once per run of its job (from
//! new-order's answer, or from its URL when a job resumes: the `Order` type is not
//! serializable) and kept as an [`IssuerOrder`], so the steps of one run reuse the bodies the
//! CA already returned; every call is still one self-contained operation that the engine may
//! repeat after a transient error.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use instant_acme::{
    Account as AcmeAccount, AccountCredentials, AuthorizationStatus, CertificateIdentifier,
    ChallengeStatus, ChallengeType, ExternalAccountKey, Identifier, NewAccount, NewOrder,
    OrderStatus, RevocationReason, RevocationRequest,
};
use rustls_pki_types::CertificateDer;
use zeroize::Zeroizing;

use super::account::{ClientSettings, Registered};
use super::directory::fetch_directory;
use super::http::{AcmeHttp, Observed, observe, observe_bodies};
use super::{
    AcmeError, CaAuthorization, CaAuthzStatus, CaChallenge, CaOrder, CaOrderStatus, Issuer,
    IssuerOrder, RenewalWindow,
};
use crate::model::Account;

/// Maps an instant-acme error (and what the wire said) to a classified [`AcmeError`].
pub(super) fn from_instant(e: instant_acme::Error, observed: &Observed) -> AcmeError {
    // Say so when the CA asked for a longer wait than certkeep grants.
    let noted = |detail: String| match observed.retry_after {
        Some(d) if observed.retry_after_capped => format!(
            "{detail} (the CA's Retry-After exceeds ca_limits.max_retry_after_secs; looking again after {}s)",
            d.as_secs()
        ),
        _ => detail,
    };
    let transient = |detail: String| AcmeError::Transient {
        detail: noted(detail),
        retry_after: observed.retry_after,
        rate_limited: false,
    };
    match e {
        instant_acme::Error::Other(inner) => match inner.downcast::<AcmeError>() {
            Ok(ours) => *ours,
            Err(other) => transient(format!("ACME exchange failed: {other}")),
        },
        instant_acme::Error::Api(problem) => {
            let kind = problem.r#type.as_deref().unwrap_or("");
            let status = problem.status.or(observed.status).unwrap_or(0);
            let text = problem.to_string();
            if kind.ends_with(":rateLimited") || status == 429 {
                AcmeError::Transient {
                    detail: noted(text),
                    retry_after: observed.retry_after,
                    rate_limited: true,
                }
            } else if kind.ends_with(":badNonce") {
                AcmeError::Transient {
                    detail: text,
                    retry_after: Some(Duration::ZERO),
                    rate_limited: false,
                }
            } else if status >= 500 || kind.ends_with(":serverInternal") {
                transient(text)
            } else {
                AcmeError::Rejected(text)
            }
        }
        instant_acme::Error::Json(e) => {
            transient(format!("the CA answered with unexpected JSON: {e}"))
        }
        instant_acme::Error::Timeout(_) => transient("timed out waiting for the CA".into()),
        other => transient(format!("ACME exchange failed: {other}")),
    }
}

/// Runs one ACME operation with its timeout and classifies its error.
async fn run<T>(
    timeout: Option<Duration>,
    op: impl Future<Output = Result<T, instant_acme::Error>>,
) -> Result<(T, Observed), AcmeError> {
    let (result, observed) = observe(timeout, op).await;
    match result {
        Ok(v) => Ok((v, observed)),
        Err(e) => Err(from_instant(e, &observed)),
    }
}

/// An opened, registered ACME account.
pub(super) struct InstantIssuer {
    account: AcmeAccount,
    renewal_info: bool,
    finalize_timeout: Duration,
}

impl InstantIssuer {
    /// Restores the account from its stored credentials (one directory GET).
    pub(super) async fn open(
        account: &Account,
        credentials_json: &[u8],
        settings: &ClientSettings,
    ) -> Result<Self, AcmeError> {
        let http = AcmeHttp::new(
            &account.directory_url,
            account.extra_roots_pem.as_deref(),
            &settings.http,
        )?;
        let info = fetch_directory(&http, &account.directory_url).await?;
        let credentials: AccountCredentials =
            serde_json::from_slice(credentials_json).map_err(|_| {
                AcmeError::Config(format!(
                    "the stored credentials of ACME account `{}` do not parse",
                    account.name
                ))
            })?;
        let (acme, _) = run(
            None,
            AcmeAccount::builder_with_http(Box::new(http)).from_credentials(credentials),
        )
        .await?;
        Ok(Self {
            account: acme,
            renewal_info: info.renewal_info,
            finalize_timeout: settings.finalize_timeout,
        })
    }

    /// Keeps `order`, as the response that produced it described it, for the rest of a run.
    fn keep(&self, order: instant_acme::Order, observed: &Observed) -> Box<dyn IssuerOrder> {
        let mut order = order;
        let url = order.url().to_owned();
        let view = order_view(&url, order.state(), observed.retry_after);
        Box::new(InstantOrder {
            order,
            view,
            authorizations: None,
            thumbprint: self.account.key_thumbprint().to_owned(),
            finalize_timeout: self.finalize_timeout,
        })
    }
}

/// Registers `account` (see [`super::register`]).
pub(super) async fn register(
    account: &Account,
    eab_hmac: Option<&[u8]>,
    settings: &ClientSettings,
) -> Result<Registered, AcmeError> {
    let url = &account.directory_url;
    let http = AcmeHttp::new(url, account.extra_roots_pem.as_deref(), &settings.http)?;
    let info = fetch_directory(&http, url).await?;
    let eab = match (&account.eab_kid, eab_hmac) {
        (Some(kid), Some(key)) => Some(ExternalAccountKey::new(kid.clone(), key)),
        (None, None) => None,
        _ => {
            return Err(AcmeError::Config(
                "an EAB key id and HMAC key must be given together".into(),
            ));
        }
    };
    if info.external_account_required && eab.is_none() {
        return Err(AcmeError::Config(format!(
            "the ACME server at {url} requires external account binding (externalAccountRequired) but account `{}` has no EAB key id and HMAC key; get them from the CA and create the account with them",
            account.name
        )));
    }
    let contacts: Vec<&str> = account.contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contacts,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (registered, _) = run(None, AcmeAccount::builder_with_http(Box::new(http)).create(&new, url.clone(), eab.as_ref()))
        .await
        .map_err(|e| match e {
            AcmeError::Rejected(text) if text.contains("not awaiting external account binding") => AcmeError::Rejected(format!(
                "{text}; this EAB key id was already bound to another account key: ask the CA for a new EAB (or for EAB reuse)"
            )),
            other => other,
        })?;
    let (acme, credentials) = registered;
    let credentials_json = Zeroizing::new(
        serde_json::to_vec(&credentials)
            .map_err(|e| AcmeError::Internal(format!("serialize account credentials: {e}")))?,
    );
    Ok(Registered {
        credentials_json,
        account_url: acme.id().to_owned(),
    })
}

fn order_view(
    url: &str,
    state: &instant_acme::OrderState,
    retry_after: Option<Duration>,
) -> CaOrder {
    CaOrder {
        url: url.to_owned(),
        status: match state.status {
            OrderStatus::Pending => CaOrderStatus::Pending,
            OrderStatus::Ready => CaOrderStatus::Ready,
            OrderStatus::Processing => CaOrderStatus::Processing,
            OrderStatus::Valid => CaOrderStatus::Valid,
            OrderStatus::Invalid => CaOrderStatus::Invalid,
        },
        error: state.error.as_ref().map(ToString::to_string),
        retry_after,
    }
}

/// The CA's problem document as JSON text (instant-acme's `Problem` is not serialisable).
fn problem_document(problem: &instant_acme::Problem) -> String {
    let subproblems: Vec<String> = problem
        .subproblems
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut doc = serde_json::json!({
        "type": problem.r#type,
        "detail": problem.detail,
        "status": problem.status,
    });
    if !subproblems.is_empty() {
        doc["subproblems"] = subproblems.into();
    }
    doc.to_string()
}

fn challenge_kind(kind: &ChallengeType) -> String {
    match kind {
        ChallengeType::Http01 => "http-01".into(),
        ChallengeType::Dns01 => "dns-01".into(),
        ChallengeType::TlsAlpn01 => "tls-alpn-01".into(),
        ChallengeType::DeviceAttest01 => "device-attest-01".into(),
        ChallengeType::Unknown(other) => other.clone(),
        other => format!("{other:?}"),
    }
}

fn parse_challenge_kind(kind: &str) -> ChallengeType {
    match kind {
        "http-01" => ChallengeType::Http01,
        "dns-01" => ChallengeType::Dns01,
        "tls-alpn-01" => ChallengeType::TlsAlpn01,
        "device-attest-01" => ChallengeType::DeviceAttest01,
        other => ChallengeType::Unknown(other.to_owned()),
    }
}

/// The RFC 5280 reason code as instant-acme's enum (7 is unused by RFC 5280).
pub(super) fn revocation_reason(reason: u8) -> Result<RevocationReason, AcmeError> {
    Ok(match reason {
        0 => RevocationReason::Unspecified,
        1 => RevocationReason::KeyCompromise,
        2 => RevocationReason::CaCompromise,
        3 => RevocationReason::AffiliationChanged,
        4 => RevocationReason::Superseded,
        5 => RevocationReason::CessationOfOperation,
        6 => RevocationReason::CertificateHold,
        8 => RevocationReason::RemoveFromCrl,
        9 => RevocationReason::PrivilegeWithdrawn,
        10 => RevocationReason::AaCompromise,
        other => {
            return Err(AcmeError::Config(format!(
                "revocation reason {other} is not an RFC 5280 reason code (0-6 or 8-10)"
            )));
        }
    })
}

/// The `expires` of an authorization body (RFC 3339), if present and well formed.
fn authorization_expires(body: &[u8]) -> Option<time::OffsetDateTime> {
    #[derive(serde::Deserialize)]
    struct Expiring {
        #[serde(default, with = "time::serde::rfc3339::option")]
        expires: Option<time::OffsetDateTime>,
    }
    serde_json::from_slice::<Expiring>(body).ok()?.expires
}

/// The ARI certificate id (`base64url(AKI).base64url(serial)`) of a leaf certificate.
pub fn ari_cert_id(leaf_der: &[u8]) -> Result<String, AcmeError> {
    let der = CertificateDer::from(leaf_der);
    CertificateIdentifier::try_from(&der)
        .map(|id| id.to_string())
        .map_err(AcmeError::Internal)
}

#[async_trait]
impl Issuer for InstantIssuer {
    fn supports_renewal_info(&self) -> bool {
        self.renewal_info
    }

    async fn new_order(
        &self,
        names: &[String],
        replaces: Option<&str>,
    ) -> Result<Box<dyn IssuerOrder>, AcmeError> {
        let identifiers: Vec<Identifier> =
            names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let mut new = NewOrder::new(&identifiers);
        if let Some(id) = replaces {
            if !self.renewal_info {
                return Err(AcmeError::Internal(
                    "`replaces` is only sent when the directory advertises renewalInfo".into(),
                ));
            }
            let (aki, serial) = id.split_once('.').ok_or_else(|| {
                AcmeError::Internal(format!("`{id}` is not an ARI certificate id"))
            })?;
            new = new.replaces(CertificateIdentifier {
                authority_key_identifier: Cow::Borrowed(aki),
                serial: Cow::Borrowed(serial),
            });
        }
        let (order, observed) = match run(None, self.account.new_order(&new)).await {
            // RFC 9773 says a CA that takes `replaces` reflects it; one that does not (its
            // order then has no URL for us) is asked again without it, instead of for ever.
            Err(e) if replaces.is_some() && e.to_string().contains("replaces field mismatch") => {
                tracing::warn!(error = %e, "the CA did not reflect `replaces`; ordering without it");
                run(None, self.account.new_order(&NewOrder::new(&identifiers))).await?
            }
            other => other?,
        };
        Ok(self.keep(order, &observed))
    }

    async fn order(&self, url: &str) -> Result<Box<dyn IssuerOrder>, AcmeError> {
        let (order, observed) = run(None, self.account.order(url.to_owned())).await?;
        Ok(self.keep(order, &observed))
    }

    async fn revoke(&self, leaf_der: &[u8], reason: u8) -> Result<(), AcmeError> {
        let reason = revocation_reason(reason)?;
        let der = CertificateDer::from(leaf_der);
        let request = RevocationRequest {
            certificate: &der,
            reason: Some(reason),
        };
        match run(None, self.account.revoke(&request)).await {
            Ok(_) => Ok(()),
            Err(AcmeError::Rejected(text)) if text.contains("alreadyRevoked") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn renewal_window(&self, cert_id: &str) -> Result<RenewalWindow, AcmeError> {
        let (aki, serial) = cert_id.split_once('.').ok_or_else(|| {
            AcmeError::Internal(format!("`{cert_id}` is not an ARI certificate id"))
        })?;
        let id = CertificateIdentifier {
            authority_key_identifier: Cow::Borrowed(aki),
            serial: Cow::Borrowed(serial),
        };
        let ((info, retry_after), _) = run(None, self.account.renewal_info(&id)).await?;
        Ok(RenewalWindow {
            start: info.suggested_window.start,
            end: info.suggested_window.end,
            retry_after,
        })
    }
}

/// An order opened for one run (see [`IssuerOrder`]).
struct InstantOrder {
    order: instant_acme::Order,
    /// What the CA last said about the order.
    view: CaOrder,
    /// The authorizations of the current order body, once read (with the `expires` that
    /// instant-acme drops); cleared when the order body is replaced.
    authorizations: Option<Vec<CaAuthorization>>,
    /// The account key's thumbprint, for key authorizations.
    thumbprint: String,
    finalize_timeout: Duration,
}

impl InstantOrder {
    /// Takes the order body instant-acme holds now (after a poll or finalize) as the last word.
    fn seen(&mut self, observed: &Observed) -> CaOrder {
        let url = self.view.url.clone();
        self.view = order_view(&url, self.order.state(), observed.retry_after);
        self.authorizations = None;
        self.view.clone()
    }
}

#[async_trait]
impl IssuerOrder for InstantOrder {
    fn view(&self) -> &CaOrder {
        &self.view
    }

    async fn refresh(&mut self) -> Result<CaOrder, AcmeError> {
        let order = &mut self.order;
        let ((), observed) = run(None, async { order.refresh().await.map(|_| ()) }).await?;
        Ok(self.seen(&observed))
    }

    async fn authorizations(&mut self) -> Result<Vec<CaAuthorization>, AcmeError> {
        if let Some(known) = &self.authorizations {
            return Ok(known.clone());
        }
        let thumbprint = &self.thumbprint;
        let order = &mut self.order;
        // instant-acme drops an authorization's `expires`: read it from the bodies.
        let (result, observed, bodies) = observe_bodies(async {
            let mut out = Vec::new();
            let mut stream = order.authorizations();
            while let Some(handle) = stream.next().await {
                let handle = handle?;
                out.push(CaAuthorization {
                    url: handle.url().to_owned(),
                    name: handle.identifier().to_string(),
                    status: match handle.status {
                        AuthorizationStatus::Pending => CaAuthzStatus::Pending,
                        AuthorizationStatus::Valid => CaAuthzStatus::Valid,
                        AuthorizationStatus::Invalid => CaAuthzStatus::Invalid,
                        _ => CaAuthzStatus::Other,
                    },
                    challenges: handle
                        .challenges
                        .iter()
                        .map(|c| CaChallenge {
                            kind: challenge_kind(&c.r#type),
                            url: c.url.clone(),
                            token: c.token.clone(),
                            pending: c.status == ChallengeStatus::Pending,
                            key_authorization: format!("{}.{thumbprint}", c.token),
                            error: c.error.as_ref().map(problem_document),
                        })
                        .collect(),
                    expires: None,
                });
            }
            Ok(out)
        })
        .await;
        let mut authzs = result.map_err(|e| from_instant(e, &observed))?;
        for authz in &mut authzs {
            authz.expires = bodies
                .iter()
                .rev()
                .find(|(url, _)| *url == authz.url)
                .and_then(|(_, body)| authorization_expires(body));
        }
        self.authorizations = Some(authzs.clone());
        Ok(authzs)
    }

    async fn challenge_ready(&mut self, authz_url: &str, kind: &str) -> Result<(), AcmeError> {
        let kind = parse_challenge_kind(kind);
        let order = &mut self.order;
        // The authorizations were read to choose the challenge: no request until the POST.
        let (result, observed) = observe(None, async {
            let mut stream = order.authorizations();
            while let Some(handle) = stream.next().await {
                let mut handle = handle?;
                if handle.url() != authz_url {
                    continue;
                }
                let Some(mut challenge) = handle.challenge(kind.clone()) else {
                    return Err(instant_acme::Error::Str(
                        "the authorization does not offer that challenge type",
                    ));
                };
                return challenge.set_ready().await;
            }
            Err(instant_acme::Error::Str(
                "the order no longer lists that authorization",
            ))
        })
        .await;
        match result {
            Ok(()) => Ok(()),
            // A successful answer whose challenge already carries an error: the CA validated at
            // once and failed. The request was taken; the order turns invalid and the engine
            // reports the challenge's problem from there, as for a later failure.
            Err(instant_acme::Error::Api(_))
                if observed.status.is_some_and(|s| (200..300).contains(&s)) =>
            {
                Ok(())
            }
            Err(e) => Err(from_instant(e, &observed)),
        }
    }

    async fn finalize(&mut self, csr_der: &[u8]) -> Result<CaOrder, AcmeError> {
        let order = &mut self.order;
        let ((), observed) = run(Some(self.finalize_timeout), async {
            // Only an order last seen `ready` (this run's poll or a resumed job's read) is
            // finalized, never one already finalized.
            if order.state().status == OrderStatus::Ready {
                order.finalize_csr(csr_der).await?;
            }
            Ok(())
        })
        .await?;
        Ok(self.seen(&observed))
    }

    async fn certificate(&mut self) -> Result<String, AcmeError> {
        let (chain, observed) = run(None, self.order.certificate()).await?;
        chain.ok_or(AcmeError::Transient {
            detail: "the order is still processing; no certificate yet".into(),
            retry_after: observed.retry_after,
            rate_limited: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_kinds_round_trip_including_unknown_ones() {
        for kind in ["http-01", "dns-01", "tls-alpn-01", "sectigo-email-01"] {
            assert_eq!(challenge_kind(&parse_challenge_kind(kind)), kind);
        }
    }

    #[test]
    fn authorization_expiry_is_read_from_the_body() {
        let at = authorization_expires(
            br#"{"status":"valid","expires":"2026-03-01T12:00:00Z","identifier":{"type":"dns","value":"a.example"}}"#,
        );
        assert_eq!(at, Some(time::macros::datetime!(2026-03-01 12:00 UTC)));
        assert_eq!(authorization_expires(br#"{"status":"pending"}"#), None);
        assert_eq!(authorization_expires(br#"{"expires":"soon"}"#), None);
        assert_eq!(authorization_expires(b"not json"), None);
    }

    #[test]
    fn revocation_reasons_follow_rfc_5280() {
        for ok in [0u8, 1, 4, 5, 9, 10] {
            assert_eq!(revocation_reason(ok).unwrap() as u8, ok);
        }
        for bad in [7u8, 11, 255] {
            assert!(
                revocation_reason(bad)
                    .unwrap_err()
                    .to_string()
                    .contains("RFC 5280")
            );
        }
    }

    #[test]
    fn problems_are_classified() {
        let problem = |json: &str| instant_acme::Error::Api(serde_json::from_str(json).unwrap());
        let seen = Observed {
            status: Some(429),
            retry_after: Some(Duration::from_secs(7)),
            retry_after_capped: false,
        };
        let e = from_instant(
            problem(r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"slow"}"#),
            &seen,
        );
        assert!(
            matches!(e, AcmeError::Transient { rate_limited: true, retry_after: Some(d), .. } if d.as_secs() == 7)
        );
        let e = from_instant(
            problem(r#"{"type":"urn:ietf:params:acme:error:badNonce"}"#),
            &Observed::default(),
        );
        assert_eq!(e.retry_after(), Some(Duration::ZERO));
        let e = from_instant(
            problem(r#"{"type":"urn:ietf:params:acme:error:serverInternal","status":500}"#),
            &Observed::default(),
        );
        assert!(e.is_transient());
        let e = from_instant(
            problem(
                r#"{"type":"urn:ietf:params:acme:error:rejectedIdentifier","detail":"no","status":400}"#,
            ),
            &Observed::default(),
        );
        assert!(
            matches!(e, AcmeError::Rejected(ref t) if t.contains("rejectedIdentifier")),
            "{e}"
        );
    }
}
