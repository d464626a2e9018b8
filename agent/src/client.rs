//! HTTPS client for certkeep's agent listener: trusts only the configured CA, presents the agent
//! certificate (except to enroll), and maps RFC 9457 problem responses to readable errors.
//!
//! Knows the `/agent/v1` protocol; knows nothing about files or installers.

use std::time::Duration;

use certkeep_api_types::agent::{
    ENROLL_PATH, EnrollRequest, EnrollResponse, MANIFEST_PATH, Manifest, PFX_PASSWORD_PATH,
    PROBE_REPORT_PATH, PfxPassword, ProbeReport, RENEW_PATH, REPORT_PATH, RenewRequest, Report,
};
use reqwest::{
    Certificate, Client, Identity, RequestBuilder, Response, StatusCode, Url,
    header::{ETAG, IF_NONE_MATCH},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use zeroize::Zeroizing;

/// Largest PFX download accepted.
const MAX_PFX_BYTES: usize = 1 << 20;
/// Longest response text quoted in an error.
const MAX_ERROR_TEXT: usize = 300;

/// Why a call to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No HTTP answer: DNS, connect, TLS handshake (e.g. untrusted or expired certificate), timeout.
    #[error("cannot reach the certkeep server: {0}")]
    Transport(String),
    /// The server answered with an error status.
    #[error("server refused the request ({status}): {message}")]
    Status {
        /// HTTP status.
        status: StatusCode,
        /// `detail` or `title` of the problem document, else the start of the body.
        message: String,
    },
    /// The answer could not be used.
    #[error("unexpected answer from the server: {0}")]
    Invalid(String),
}

/// Answer to a manifest request.
#[derive(Debug)]
pub enum ManifestFetch {
    /// `304`: nothing changed since the ETag we sent.
    NotModified,
    /// `200`: the current manifest and its ETag.
    Changed {
        /// The manifest.
        manifest: Manifest,
        /// Its `ETag` header, to send back as `If-None-Match`.
        etag: Option<String>,
    },
}

/// Client for one certkeep agent listener.
#[derive(Debug, Clone)]
pub struct AgentClient {
    http: Client,
    server: Url,
}

/// RFC 9457 problem document; only the fields we show.
#[derive(Deserialize)]
struct Problem {
    title: Option<String>,
    detail: Option<String>,
}

impl AgentClient {
    /// A client for `server` trusting only the CA certificates in `ca_pem`.
    ///
    /// `identity_pem` holds the agent's PKCS#8 key and certificate; `None` only to enroll.
    pub fn new(
        server: &Url,
        ca_pem: &[u8],
        identity_pem: Option<&[u8]>,
    ) -> Result<Self, ClientError> {
        let roots = Certificate::from_pem_bundle(ca_pem)
            .map_err(|e| ClientError::Invalid(format!("CA file is not PEM: {e}")))?;
        if roots.is_empty() {
            return Err(ClientError::Invalid("CA file holds no certificate".into()));
        }
        let mut builder = Client::builder()
            .tls_certs_only(roots)
            .https_only(true)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("certkeep-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = identity_pem {
            let identity = Identity::from_pem(pem)
                .map_err(|_| ClientError::Invalid("agent key or certificate unusable".into()))?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Invalid(chain(&e)))?;
        Ok(Self {
            http,
            server: server.clone(),
        })
    }

    /// `POST /agent/v1/enroll` (no client certificate).
    pub async fn enroll(&self, request: &EnrollRequest) -> Result<EnrollResponse, ClientError> {
        self.post_json(ENROLL_PATH, request).await
    }

    /// `POST /agent/v1/renew`.
    pub async fn renew(&self, request: &RenewRequest) -> Result<EnrollResponse, ClientError> {
        self.post_json(RENEW_PATH, request).await
    }

    /// `GET /agent/v1/manifest`, conditional on `etag`.
    pub async fn manifest(&self, etag: Option<&str>) -> Result<ManifestFetch, ClientError> {
        let mut request = self.http.get(self.url(MANIFEST_PATH)?);
        if let Some(etag) = etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let response = send(request).await?;
        if response.status() == StatusCode::NOT_MODIFIED {
            return Ok(ManifestFetch::NotModified);
        }
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let manifest = json(checked(response).await?).await?;
        Ok(ManifestFetch::Changed { manifest, etag })
    }

    /// `GET {download_path}`: the PFX bytes, as built by the server.
    pub async fn download(&self, download_path: &str) -> Result<Vec<u8>, ClientError> {
        let response = checked(send(self.http.get(self.url(download_path)?)).await?).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Transport(chain(&e)))?;
        if bytes.len() > MAX_PFX_BYTES {
            return Err(ClientError::Invalid(format!(
                "PFX of {} bytes is too large",
                bytes.len()
            )));
        }
        Ok(bytes.to_vec())
    }

    /// `GET /agent/v1/pfx-password`: the password the server encrypts this agent's PFX
    /// downloads with (the CCS password IIS is configured with).
    pub async fn pfx_password(&self) -> Result<Zeroizing<String>, ClientError> {
        let response = checked(send(self.http.get(self.url(PFX_PASSWORD_PATH)?)).await?).await?;
        let body: PfxPassword = json(response).await?;
        Ok(Zeroizing::new(body.password))
    }

    /// `POST /agent/v1/probe-report`.
    pub async fn probe_report(&self, report: &ProbeReport) -> Result<(), ClientError> {
        let request = self.http.post(self.url(PROBE_REPORT_PATH)?).json(report);
        checked(send(request).await?).await.map(drop)
    }

    /// `POST /agent/v1/report`.
    pub async fn report(&self, report: &Report) -> Result<(), ClientError> {
        let request = self.http.post(self.url(REPORT_PATH)?).json(report);
        checked(send(request).await?).await.map(drop)
    }

    async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        let request = self.http.post(self.url(path)?).json(body);
        json(checked(send(request).await?).await?).await
    }

    /// Joins a server-relative path; refuses anything that would leave the configured server.
    fn url(&self, path: &str) -> Result<Url, ClientError> {
        if !path.starts_with('/') || path.starts_with("//") || path.contains('\\') {
            return Err(ClientError::Invalid(format!("refusing path {path:?}")));
        }
        self.server
            .join(path)
            .map_err(|e| ClientError::Invalid(format!("bad path {path:?}: {e}")))
    }
}

async fn send(request: RequestBuilder) -> Result<Response, ClientError> {
    request
        .send()
        .await
        .map_err(|e| ClientError::Transport(chain(&e)))
}

/// Passes 2xx responses through; turns others into [`ClientError::Status`].
async fn checked(response: Response) -> Result<Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    let message = match serde_json::from_str::<Problem>(&text) {
        Ok(Problem {
            detail: Some(text), ..
        })
        | Ok(Problem {
            title: Some(text), ..
        }) => text,
        _ => text.chars().take(MAX_ERROR_TEXT).collect(),
    };
    Err(ClientError::Status { status, message })
}

async fn json<T: DeserializeOwned>(response: Response) -> Result<T, ClientError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ClientError::Transport(chain(&e)))?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Invalid(e.to_string()))
}

/// An error with its causes, e.g. `error sending request: invalid peer certificate: Expired`.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use certkeep_api_types::pfx::testing::{KeyKind, TestCa};

    use super::*;

    fn client() -> AgentClient {
        let leaf = TestCa::new().leaf(&["ca.test"], KeyKind::Ecdsa);
        let ca_pem = certkeep_api_types::pem::encode("CERTIFICATE", &leaf.root_der);
        let server = Url::parse("https://certkeep.test:8444").unwrap();
        AgentClient::new(&server, ca_pem.as_bytes(), None).unwrap()
    }

    #[test]
    fn paths_stay_on_the_configured_server() {
        let client = client();
        assert_eq!(
            client.url("/agent/v1/certificates/x/pfx").unwrap().as_str(),
            "https://certkeep.test:8444/agent/v1/certificates/x/pfx"
        );
        for bad in [
            "https://evil.test/x",
            "//evil.test/x",
            "relative",
            "/\\evil.test",
        ] {
            assert!(client.url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_a_ca_file_without_certificates() {
        let server = Url::parse("https://certkeep.test").unwrap();
        assert!(AgentClient::new(&server, b"", None).is_err());
    }
}
