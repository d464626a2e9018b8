//! [`AcmeHttp`], the instant-acme [`HttpClient`]: per-request timeouts (a longer one for
//! finalize), the per-directory rate gate, the nonce pool, retries of the safe requests (GET
//! directory, HEAD newNonce) and classification of error responses. Signed POSTs are never
//! retried here. Bodies are bounded by `ca_limits.max_response_bytes`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};

use super::classify::{Class, classify, is_transient_status, problem_type, transport_error};
use super::nonce::{NoncePool, REPLAY_NONCE};
use super::observe::{keep_body, record, timeout_override};
use super::rate_gate::{DEFAULT_RATE_LIMIT_PAUSE, Gate};
use super::retry_after::{RetryAfter, bound_header, retry_after_of};
use crate::acme::AcmeError;

/// Longest wait before re-sending a safe request inside one operation; a CA asking for more
/// ends the operation, and the job is rescheduled without holding a worker.
pub const MAX_INLINE_PAUSE: Duration = Duration::from_secs(5);
/// Attempts for the safe requests (GET, HEAD).
const SAFE_ATTEMPTS: u32 = 4;

/// Settings of the HTTP client towards one directory.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Timeout of one request (headers and body).
    pub timeout: Duration,
    /// Requests per second towards the directory.
    pub requests_per_sec: u32,
    /// Cap of every `Retry-After`.
    pub max_retry_after: Duration,
    /// Largest response body read.
    pub max_response_bytes: usize,
}

/// The instant-acme [`HttpClient`] used for every ACME request.
#[derive(Clone)]
pub struct AcmeHttp {
    client: HyperClient<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    nonces: Arc<NoncePool>,
    gate: Arc<Gate>,
    timeout: Duration,
    max_retry_after: Duration,
    max_response_bytes: usize,
    /// The directory URL, the `directory` label of the request metrics.
    directory: Arc<str>,
}

/// The `outcome` label of one ACME request.
fn request_outcome(result: &Result<(http::response::Parts, Bytes), AcmeError>) -> &'static str {
    match result {
        Ok((parts, _)) if parts.status == StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        Ok((parts, _)) if parts.status.is_success() || parts.status.is_redirection() => "ok",
        Ok((parts, _)) if parts.status.is_client_error() => "client_error",
        Ok(_) => "server_error",
        Err(_) => "transport_error",
    }
}

impl AcmeHttp {
    /// A client trusting the system roots plus `extra_roots_pem`, rate limited per directory.
    pub fn new(
        directory_url: &str,
        extra_roots_pem: Option<&str>,
        settings: &HttpSettings,
    ) -> Result<Self, AcmeError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(pem) = extra_roots_pem {
            let extra = crate::tls::certs_from_pem("extra CA certificates of the account", pem)
                .map_err(|e| AcmeError::Config(e.to_string()))?;
            for cert in extra {
                roots.add(cert).map_err(|e| {
                    AcmeError::Config(format!("extra CA certificate of the account: {e}"))
                })?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| AcmeError::Config(format!("TLS client: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .build();
        Ok(Self {
            client: HyperClient::builder(TokioExecutor::new()).build(connector),
            nonces: Arc::default(),
            gate: Gate::for_directory(directory_url, settings.requests_per_sec),
            timeout: settings.timeout,
            max_retry_after: settings.max_retry_after,
            max_response_bytes: settings.max_response_bytes,
            directory: Arc::from(directory_url),
        })
    }

    /// The rate limiter of this client's directory.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// Sends one request, reads the whole body within the timeout and classifies the answer.
    async fn send_once(
        &self,
        req: Request<BodyWrapper<Bytes>>,
        timeout: Duration,
    ) -> Result<(http::response::Parts, Bytes), AcmeError> {
        let queued = Instant::now();
        self.gate.acquire().await?;
        let started = Instant::now();
        metrics::histogram!(crate::metrics::ACME_RATE_LIMIT_WAIT, "directory" => self.directory.to_string())
            .record(started - queued);
        let url = req.uri().to_string();
        let method = req.method().clone();
        let exchange = async {
            let rsp = self
                .client
                .request(req)
                .await
                .map_err(|e| transport_error(&method, &url, &e))?;
            let (parts, body) = rsp.into_parts();
            let bytes = http_body_util::Limited::new(body, self.max_response_bytes)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        AcmeError::TooLarge {
                            what: format!("{method} {url}"),
                            limit: self.max_response_bytes,
                        }
                    } else {
                        transport_error(&method, &url, e.as_ref())
                    }
                })?
                .to_bytes();
            Ok::<_, AcmeError>((parts, bytes))
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(AcmeError::Transient {
                detail: format!("{method} {url} timed out after {}s", timeout.as_secs()),
                retry_after: None,
                rate_limited: false,
            }),
        };
        metrics::histogram!(crate::metrics::ACME_REQUEST_DURATION, "directory" => self.directory.to_string())
            .record(started.elapsed());
        metrics::counter!(
            crate::metrics::ACME_REQUESTS,
            "directory" => self.directory.to_string(),
            "outcome" => request_outcome(&result)
        )
        .increment(1);
        result
    }

    /// One exchange with retries for the safe methods, returning a response for instant-acme.
    async fn exchange(
        self,
        req: Request<BodyWrapper<Bytes>>,
        timeout: Duration,
    ) -> Result<BytesResponse, AcmeError> {
        let new_nonce = req.method() == Method::HEAD;
        if new_nonce && let Some(nonce) = self.nonces.take() {
            let mut parts = http::Response::new(()).into_parts().0;
            parts.headers.insert(REPLAY_NONCE, nonce);
            metrics::counter!(crate::metrics::ACME_NONCES_REUSED).increment(1);
            return Ok(BytesResponse {
                parts,
                body: Box::new(Bytes::new()),
            });
        }
        let safe = req.method() == Method::GET || new_nonce;
        let (template, body) = req.into_parts();
        let url = template.uri.to_string();
        let mut body = Some(body);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut builder = Request::builder()
                .method(template.method.clone())
                .uri(template.uri.clone());
            for (name, value) in &template.headers {
                builder = builder.header(name, value);
            }
            let req = builder
                .body(body.take().unwrap_or_default())
                .map_err(|e| AcmeError::Internal(format!("build request: {e}")))?;
            let outcome = self.send_once(req, timeout).await;
            let retry_in = match &outcome {
                Ok((parts, _)) if is_transient_status(parts.status) => {
                    retry_after_of(&parts.headers, self.max_retry_after).map(|r| r.delay)
                }
                Err(e) if e.is_transient() => e.retry_after(),
                _ => None,
            };
            // A rate limit or a paused directory is not waited out here: the job is
            // rescheduled, so the worker is free for other directories.
            let transient = match &outcome {
                Ok((parts, _)) => {
                    is_transient_status(parts.status)
                        && parts.status != StatusCode::TOO_MANY_REQUESTS
                }
                Err(e) => {
                    e.is_transient()
                        && !matches!(
                            e,
                            AcmeError::Transient {
                                rate_limited: true,
                                ..
                            }
                        )
                }
            };
            if let Ok((parts, _)) = &outcome {
                if parts.status == StatusCode::TOO_MANY_REQUESTS {
                    self.gate.pause(
                        retry_in
                            .unwrap_or(DEFAULT_RATE_LIMIT_PAUSE)
                            .min(self.max_retry_after),
                    );
                }
                if is_transient_status(parts.status) {
                    metrics::counter!(crate::metrics::ACME_TRANSIENT_RESPONSES, "status" => parts.status.as_u16().to_string()).increment(1);
                    tracing::warn!(http.status = parts.status.as_u16(), acme.url = %url, retry_after_s = retry_in.map(|d| d.as_secs()), "transient answer from the ACME server");
                }
            }
            let wait = retry_in.unwrap_or(Duration::from_millis(500 << attempt));
            if safe && transient && attempt < SAFE_ATTEMPTS && wait <= MAX_INLINE_PAUSE {
                tracing::info!(acme.url = %url, attempt, wait_ms = wait.as_millis() as u64, "retrying a safe ACME request");
                tokio::time::sleep(wait).await;
                continue;
            }
            let (mut parts, bytes) = match outcome {
                Ok(ok) => ok,
                Err(e) => {
                    record(
                        None,
                        e.retry_after().map(|delay| RetryAfter {
                            delay,
                            capped: false,
                        }),
                    );
                    return Err(e);
                }
            };
            if !new_nonce && let Some(nonce) = parts.headers.remove(REPLAY_NONCE) {
                self.nonces.put(nonce);
            }
            let retry_after = retry_after_of(&parts.headers, self.max_retry_after);
            if let Some(r) = retry_after.filter(|r| r.capped) {
                tracing::warn!(acme.url = %url, cap_s = r.delay.as_secs(), "the CA's Retry-After exceeds ca_limits.max_retry_after_secs; capped");
            }
            record(Some(parts.status.as_u16()), retry_after);
            bound_header(&mut parts.headers);
            let content_type = parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let bytes = match classify(parts.status, content_type.as_deref(), &bytes, &url) {
                Class::Success => {
                    keep_body(&url, &bytes);
                    bytes
                }
                Class::Problem { .. } => {
                    if problem_type(&bytes).is_some_and(|t| t.ends_with(":badNonce")) {
                        metrics::counter!(crate::metrics::ACME_BAD_NONCES).increment(1);
                    }
                    bytes
                }
                Class::Synthetic { body, .. } => {
                    parts.headers.insert(
                        CONTENT_TYPE,
                        http::HeaderValue::from_static("application/problem+json"),
                    );
                    Bytes::from(body)
                }
            };
            return Ok(BytesResponse {
                parts,
                body: Box::new(bytes),
            });
        }
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let timeout = timeout_override().unwrap_or(self.timeout);
        let this = self.clone();
        Box::pin(async move {
            this.exchange(req, timeout)
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))
        })
    }
}
