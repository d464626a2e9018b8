//! The admin CLI's HTTP client: bearer token, TLS trusting the given CA, and the mapping of
//! answers to exit codes (3 for API refusals, 4 for server and network errors). Also the one
//! reader of secrets from files or stdin.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use certkeep_api_types::api::Problem;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

/// Why a command failed, and so its exit code.
#[derive(Debug)]
pub(crate) enum CliError {
    /// The command ran, but the answer is negative (chain broken, issuance failed): exit 1.
    Failed(String),
    /// Bad flags or unreadable local input: exit 2.
    Usage(String),
    /// The API refused (4xx): exit 3.
    Refused(String),
    /// Server error (5xx) or no answer: exit 4.
    Server(String),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for CliError {}

impl CliError {
    /// The process exit code.
    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Failed(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Refused(_) => 3,
            CliError::Server(_) => 4,
        })
    }

    /// The message printed on stderr.
    pub(crate) fn message(&self) -> &str {
        match self {
            CliError::Failed(m)
            | CliError::Usage(m)
            | CliError::Refused(m)
            | CliError::Server(m) => m,
        }
    }
}

/// Reads a secret from `path`, or from stdin when `path` is `-`; one trailing newline is dropped.
pub(crate) fn read_secret(path: &Path) -> Result<Zeroizing<String>, CliError> {
    let text = if path == Path::new("-") {
        let mut buf = Zeroizing::new(String::new());
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf)
            .map_err(|e| CliError::Usage(format!("cannot read stdin: {e}")))?;
        buf
    } else {
        Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?,
        )
    };
    let trimmed = text.strip_suffix('\n').unwrap_or(&text);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(CliError::Usage(format!("{} is empty", path.display())));
    }
    Ok(Zeroizing::new(trimmed.to_owned()))
}

/// An authenticated connection to the API.
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: Zeroizing<String>,
}

impl Client {
    /// Builds a client for `server`, trusting `ca_file` (else the system roots).
    pub(crate) fn new(
        server: &str,
        token: Option<Zeroizing<String>>,
        token_file: Option<&PathBuf>,
        ca_file: Option<&PathBuf>,
    ) -> Result<Self, CliError> {
        let token = match (token_file, token) {
            (Some(file), _) => read_secret(file)?,
            (None, Some(t)) if !t.trim().is_empty() => Zeroizing::new(t.trim().to_owned()),
            _ => {
                return Err(CliError::Usage(
                    "no API token: set CERTKEEP_TOKEN or pass --token-file FILE".into(),
                ));
            }
        };
        let mut builder = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .user_agent(concat!("certkeep-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                CliError::Usage(format!("{}: not a PEM certificate: {e}", path.display()))
            })?;
            builder = builder.tls_certs_only(certs);
        }
        let http = builder
            .build()
            .map_err(|e| CliError::Usage(format!("cannot set up TLS: {e}")))?;
        Ok(Self {
            http,
            base: format!("{}/api/v1", server.trim_end_matches('/')),
            token,
        })
    }

    /// Sends a request and returns the successful response; errors carry the problem detail.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<reqwest::Response, CliError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.as_str());
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            CliError::Server(format!("cannot reach {}: {}", self.base, error_chain(&e)))
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let message = match serde_json::from_str::<Problem>(&text) {
            Ok(p) => {
                let mut m = format!("{} ({})", p.title, p.status);
                if let Some(d) = p.detail {
                    m.push_str(&format!(": {d}"));
                }
                if let Some(f) = p.field {
                    m.push_str(&format!(" [field: {f}]"));
                }
                m
            }
            Err(_) => format!(
                "HTTP {status}: {}",
                text.chars().take(200).collect::<String>()
            ),
        };
        Err(if status.is_client_error() {
            CliError::Refused(message)
        } else {
            CliError::Server(message)
        })
    }

    /// Sends a request and decodes the JSON answer, also as a raw value for `--output json`.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<(T, serde_json::Value), CliError> {
        let resp = self.send(method, path, body).await?;
        let value: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| CliError::Server(format!("unreadable answer: {e}")))?;
        let typed = serde_json::from_value(value.clone())
            .map_err(|e| CliError::Server(format!("unexpected answer: {e}")))?;
        Ok((typed, value))
    }

    /// GET and decode.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<(T, serde_json::Value), CliError> {
        self.json(Method::GET, path, None::<&()>).await
    }

    /// POSTs an action without a body (renew, retire, revoke, ...) and decodes the answer.
    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<(T, serde_json::Value), CliError> {
        self.json(Method::POST, path, None::<&()>).await
    }

    /// Sends a request whose answer has no body (204).
    pub(crate) async fn no_content(
        &self,
        method: Method,
        path: &str,
    ) -> Result<StatusCode, CliError> {
        Ok(self.send(method, path, None::<&()>).await?.status())
    }
}

/// A reqwest error with its causes, which carry the useful part (DNS, TLS, refused).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// Percent-encodes a path segment or query value.
pub(crate) fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
