//! The directory document: fetched once per opened account, used byte for byte as configured,
//! and read for the two things certkeep decides on (EAB required, ARI offered).

use instant_acme::{BodyWrapper, BytesResponse, HttpClient as _};
use serde::Deserialize;

use super::AcmeError;
use super::http::{AcmeHttp, Observed, is_transient_status};
use super::instant::from_instant;

/// What certkeep reads from a directory document itself.
#[derive(Debug, Clone, Copy)]
pub(super) struct DirectoryInfo {
    /// `meta.externalAccountRequired`.
    pub(super) external_account_required: bool,
    /// Whether `renewalInfo` (ARI) is advertised.
    pub(super) renewal_info: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DirectoryDoc {
    new_nonce: Option<String>,
    new_account: Option<String>,
    new_order: Option<String>,
    renewal_info: Option<String>,
    #[serde(default)]
    meta: DirectoryMeta,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DirectoryMeta {
    #[serde(default)]
    external_account_required: bool,
}

/// GETs the directory at `url`, used byte for byte. Anything but a JSON ACME directory is a
/// configuration error naming the URL.
pub(super) async fn fetch_directory(
    http: &AcmeHttp,
    url: &str,
) -> Result<DirectoryInfo, AcmeError> {
    let request = http::Request::builder()
        .uri(url)
        .header(
            http::header::USER_AGENT,
            concat!("certkeep/", env!("CARGO_PKG_VERSION")),
        )
        .body(BodyWrapper::default())
        .map_err(|e| {
            AcmeError::Config(format!("the directory URL `{url}` is not a valid URL: {e}"))
        })?;
    let rsp: BytesResponse = http
        .request(request)
        .await
        .map_err(|e| from_instant(e, &Observed::default()))?;
    let status = rsp.parts.status;
    if status.is_redirection() {
        let to = rsp
            .parts
            .headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?");
        return Err(AcmeError::Config(format!(
            "the directory URL {url} redirects (HTTP {status}) to {to}; configure the ACME directory URL exactly as the CA publishes it"
        )));
    }
    let mut body = rsp.body;
    let bytes = body.into_bytes().await.map_err(|e| AcmeError::Transient {
        detail: format!("reading the directory {url}: {e}"),
        retry_after: None,
        rate_limited: false,
    })?;
    if !status.is_success() {
        let err = format!(
            "the directory URL {url} answered HTTP {status}; check the URL (it is used exactly as configured, nothing is appended)"
        );
        return Err(if is_transient_status(status) {
            AcmeError::Transient {
                detail: err,
                retry_after: None,
                rate_limited: false,
            }
        } else {
            AcmeError::Config(err)
        });
    }
    let doc: DirectoryDoc = serde_json::from_slice(&bytes).map_err(|_| {
        AcmeError::Config(format!(
            "the directory URL {url} did not return an ACME directory (not JSON); check the URL"
        ))
    })?;
    if doc.new_nonce.is_none() || doc.new_account.is_none() || doc.new_order.is_none() {
        return Err(AcmeError::Config(format!(
            "the document at {url} is JSON but not an ACME directory (newNonce, newAccount or newOrder missing)"
        )));
    }
    Ok(DirectoryInfo {
        external_account_required: doc.meta.external_account_required,
        renewal_info: doc.renewal_info.is_some(),
    })
}
