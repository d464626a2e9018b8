//! The HTTP client under instant-acme: per-request timeouts (a longer one for finalize), a
//! per-directory rate limiter that a 429 pauses as a whole, retries of the safe requests (GET
//! directory, HEAD newNonce), and classification of error responses. A non-JSON error body (an
//! nginx or Apache page) becomes a synthetic problem document that keeps the status, so the
//! engine can tell a transient 502 from a refusal. Signed POSTs are never retried here.
//! Whatever the CA sends is bounded: `Retry-After` is capped at `ca_limits.max_retry_after_secs`
//! and bodies at `ca_limits.max_response_bytes`.
//!
//! Knows HTTP and TLS; knows nothing about orders or storage. Never logs bodies.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};

use super::AcmeError;

/// Longest wait before re-sending a safe request inside one operation; a CA asking for more
/// ends the operation, and the job is rescheduled without holding a worker.
pub const MAX_INLINE_PAUSE: Duration = Duration::from_secs(5);
/// Attempts for the safe requests (GET, HEAD).
const SAFE_ATTEMPTS: u32 = 4;
/// Pause of a whole directory after a 429 without `Retry-After`.
const DEFAULT_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(60);

tokio::task_local! {
    /// Per-operation context: an optional timeout override and what the responses said.
    static CALL: CallContext;
}

/// What one ACME operation observed on the wire (the last response wins).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// HTTP status of the last response, if one arrived.
    pub status: Option<u16>,
    /// `Retry-After` of the last response, as a delay from when it arrived (capped).
    pub retry_after: Option<Duration>,
    /// Whether that `Retry-After` asked for more than the cap.
    pub retry_after_capped: bool,
}

struct CallContext {
    timeout: Option<Duration>,
    observed: Arc<Mutex<Observed>>,
}

/// Runs `op` with `timeout` (if given) for each request and returns what the responses said.
pub async fn observe<T>(timeout: Option<Duration>, op: impl Future<Output = T>) -> (T, Observed) {
    let observed = Arc::new(Mutex::new(Observed::default()));
    let ctx = CallContext {
        timeout,
        observed: observed.clone(),
    };
    let out = CALL.scope(ctx, op).await;
    let seen = observed.lock().map(|o| o.clone()).unwrap_or_default();
    (out, seen)
}

fn record(status: Option<u16>, retry_after: Option<RetryAfter>) {
    let _ = CALL.try_with(|c| {
        if let Ok(mut o) = c.observed.lock() {
            *o = Observed {
                status,
                retry_after: retry_after.map(|r| r.delay),
                retry_after_capped: retry_after.is_some_and(|r| r.capped),
            };
        }
    });
}

/// A `Retry-After` delay, capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter {
    /// The delay from when the response arrived, at most the cap.
    pub delay: Duration,
    /// Whether the CA asked for more than the cap.
    pub capped: bool,
}

/// Parses `Retry-After` (delay-seconds or HTTP-date) into a delay from `now`, capped at `max`
/// (a CA can ask for any number of seconds or a date centuries away).
pub fn parse_retry_after(value: &str, now: SystemTime, max: Duration) -> Option<RetryAfter> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let asked = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(RetryAfter {
        delay: asked.min(max),
        capped: asked > max,
    })
}

fn retry_after_of(headers: &HeaderMap, max: Duration) -> Option<RetryAfter> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now(), max))
}

/// How a response is treated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// Success or redirect: passed through.
    Success,
    /// An error with a JSON problem body: passed through for instant-acme to parse.
    Problem { transient: bool },
    /// An error without a JSON body: replaced by this synthetic problem document.
    Synthetic { transient: bool, body: String },
}

/// Whether a status is worth retrying later (rate limits and server errors).
pub fn is_transient_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// Classifies a response from its status, `Content-Type` and body.
pub fn classify(status: StatusCode, content_type: Option<&str>, body: &[u8], url: &str) -> Class {
    if status.is_success() || status.is_redirection() || status.is_informational() {
        return Class::Success;
    }
    let transient = is_transient_status(status);
    let json_type = content_type.is_some_and(|ct| ct.contains("json"));
    if json_type && serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v.is_object()) {
        return Class::Problem { transient };
    }
    let kind = match status {
        StatusCode::TOO_MANY_REQUESTS => "rateLimited",
        s if s.is_server_error() => "serverInternal",
        _ => "malformed",
    };
    let what = content_type.map_or_else(
        || "no content type".to_owned(),
        |ct| ct.split(';').next().unwrap_or(ct).trim().to_owned(),
    );
    let detail = format!("HTTP {status} from {url} with a non-JSON body ({what})");
    let body = serde_json::json!({
        "type": format!("urn:ietf:params:acme:error:{kind}"),
        "detail": detail,
        "status": status.as_u16(),
    })
    .to_string();
    Class::Synthetic { transient, body }
}

/// A per-directory token bucket that a 429 pauses as a whole. Shared by every account and
/// worker of this process that talks to the same directory URL.
#[derive(Debug)]
pub struct Gate {
    per_sec: f64,
    state: Mutex<GateState>,
}

#[derive(Debug)]
struct GateState {
    tokens: f64,
    refilled: Instant,
    paused_until: Option<Instant>,
}

/// Why a request cannot be sent yet.
#[derive(Debug)]
enum Wait {
    /// The directory is paused after a 429 for this long.
    Paused(Duration),
    /// The next token of the bucket arrives in this long.
    Token(Duration),
}

static GATES: LazyLock<Mutex<HashMap<String, Arc<Gate>>>> = LazyLock::new(Mutex::default);

impl Gate {
    /// The gate of `directory_url`, created with `per_sec` requests per second on first use.
    pub fn for_directory(directory_url: &str, per_sec: u32) -> Arc<Gate> {
        let mut gates = GATES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        gates
            .entry(directory_url.to_owned())
            .or_insert_with(|| Arc::new(Gate::new(per_sec)))
            .clone()
    }

    fn new(per_sec: u32) -> Self {
        let per_sec = f64::from(per_sec.max(1));
        Self {
            per_sec,
            state: Mutex::new(GateState {
                tokens: per_sec,
                refilled: Instant::now(),
                paused_until: None,
            }),
        }
    }

    /// Pauses the whole directory for `pause` (a 429 answer; callers cap it, and a pause that
    /// `Instant` cannot represent becomes the default pause).
    pub fn pause(&self, pause: Duration) {
        let now = Instant::now();
        let until = now
            .checked_add(pause)
            .unwrap_or(now + DEFAULT_RATE_LIMIT_PAUSE);
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.paused_until = Some(s.paused_until.map_or(until, |p| p.max(until)));
    }

    /// How long until this directory is no longer paused.
    pub fn paused_for(&self) -> Duration {
        let s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.paused_until.map_or(Duration::ZERO, |p| {
            p.saturating_duration_since(Instant::now())
        })
    }

    /// Takes a token, or says how long to wait for one.
    fn try_take(&self) -> Result<(), Wait> {
        let now = Instant::now();
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = s.paused_until {
            if p > now {
                return Err(Wait::Paused(p - now));
            }
            s.paused_until = None;
        }
        let elapsed = now.saturating_duration_since(s.refilled).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.per_sec).min(self.per_sec);
        s.refilled = now;
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            Ok(())
        } else {
            Err(Wait::Token(Duration::from_secs_f64(
                (1.0 - s.tokens) / self.per_sec,
            )))
        }
    }

    /// Waits for a token. A paused directory is an error instead, so the job is rescheduled
    /// for the end of the pause rather than holding a worker that other directories need.
    pub async fn acquire(&self) -> Result<(), AcmeError> {
        loop {
            match self.try_take() {
                Ok(()) => return Ok(()),
                Err(Wait::Paused(wait)) => {
                    return Err(AcmeError::Transient {
                        detail: format!(
                            "the ACME endpoint is paused for {}s after a rate limit (HTTP 429)",
                            wait.as_secs().max(1)
                        ),
                        retry_after: Some(wait),
                        rate_limited: true,
                    });
                }
                Err(Wait::Token(wait)) => tokio::time::sleep(wait).await,
            }
        }
    }
}

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

/// Most unused nonces kept per client.
const NONCE_POOL: usize = 64;
/// Age after which a kept nonce is no longer handed out (CAs expire them).
const NONCE_MAX_AGE: Duration = Duration::from_secs(60);
/// The `Replay-Nonce` response header.
const REPLAY_NONCE: &str = "replay-nonce";

/// Fresh nonces taken from the CA's responses, each handed out once.
///
/// instant-acme keeps a response's nonce only inside the order object that made the request
/// and asks `HEAD newNonce` whenever it has none, which for certkeep (one order object per
/// step) is before nearly every signed request. Every response's `Replay-Nonce` is moved into
/// this pool instead, and a `HEAD newNonce` is answered from it while it holds one, so each
/// nonce is used exactly once and the round trip is saved. A nonce the CA no longer accepts
/// costs one `badNonce` answer, which carries a fresh nonce that instant-acme retries with.
#[derive(Debug, Default)]
struct NoncePool(Mutex<std::collections::VecDeque<(http::HeaderValue, Instant)>>);

impl NoncePool {
    fn put(&self, nonce: http::HeaderValue) {
        let mut pool = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pool.len() == NONCE_POOL {
            pool.pop_front();
        }
        pool.push_back((nonce, Instant::now()));
    }

    /// The freshest nonce that is not too old.
    fn take(&self) -> Option<http::HeaderValue> {
        let mut pool = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pool.retain(|(_, at)| at.elapsed() < NONCE_MAX_AGE);
        pool.pop_back().map(|(nonce, _)| nonce)
    }
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
            metrics::counter!("certkeep_acme_nonces_reused_total").increment(1);
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
                    metrics::counter!("certkeep_acme_transient_responses_total", "status" => parts.status.as_u16().to_string()).increment(1);
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
            let content_type = parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let bytes = match classify(parts.status, content_type.as_deref(), &bytes, &url) {
                Class::Success => bytes,
                Class::Problem { .. } => {
                    if problem_type(&bytes).is_some_and(|t| t.ends_with(":badNonce")) {
                        metrics::counter!("certkeep_acme_bad_nonce_total").increment(1);
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

fn problem_type(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("type")?
        .as_str()
        .map(str::to_owned)
}

fn transport_error(method: &Method, url: &str, e: &dyn std::error::Error) -> AcmeError {
    let mut detail = format!("{method} {url} failed: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        detail.push_str(&format!(": {s}"));
        source = s.source();
    }
    AcmeError::Transient {
        detail,
        retry_after: None,
        rate_limited: false,
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let timeout = CALL
            .try_with(|c| c.timeout)
            .ok()
            .flatten()
            .unwrap_or(self.timeout);
        let this = self.clone();
        Box::pin(async move {
            this.exchange(req, timeout)
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_pool_hands_out_each_nonce_once_freshest_first() {
        let pool = NoncePool::default();
        assert!(pool.take().is_none());
        for i in 0..NONCE_POOL + 2 {
            pool.put(http::HeaderValue::from_str(&format!("n{i}")).unwrap());
        }
        assert_eq!(pool.take().unwrap(), format!("n{}", NONCE_POOL + 1));
        let mut rest = 0;
        while pool.take().is_some() {
            rest += 1;
        }
        assert_eq!(rest, NONCE_POOL - 1, "bounded, oldest dropped, each once");
    }

    #[test]
    fn retry_after_both_forms_capped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let max = Duration::from_secs(3600);
        let delay = |value: &str| parse_retry_after(value, now, max).map(|r| (r.delay, r.capped));
        assert_eq!(delay(" 120 "), Some((Duration::from_secs(120), false)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(delay(&date), Some((Duration::from_secs(90), false)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(delay(&past), Some((Duration::ZERO, false)));
        assert_eq!(delay("soon"), None);
        assert_eq!(delay(""), None);
        // Absurd values from a broken or hostile CA are capped, never overflow.
        assert_eq!(delay("18446744073709551615"), Some((max, true)));
        assert_eq!(delay("Fri, 31 Dec 9999 23:59:59 GMT"), Some((max, true)));
        assert_eq!(delay("3601"), Some((max, true)));
    }

    #[tokio::test]
    async fn a_huge_pause_neither_panics_nor_holds_the_caller() {
        let gate = Gate::new(1000);
        gate.pause(Duration::from_secs(u64::MAX));
        let err = gate.acquire().await.unwrap_err();
        assert!(
            matches!(err, AcmeError::Transient { rate_limited: true, retry_after: Some(d), .. } if d > Duration::from_secs(50)),
            "{err:?}"
        );
        // A short pause is not slept through either: the job is rescheduled.
        let gate = Gate::new(1000);
        gate.pause(Duration::from_secs(2));
        assert!(gate.acquire().await.unwrap_err().is_transient());
    }

    #[test]
    fn html_error_pages_become_problems_that_keep_the_status() {
        let html = b"<html><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>";
        let Class::Synthetic { transient, body } = classify(
            StatusCode::BAD_GATEWAY,
            Some("text/html"),
            html,
            "https://ca/acme/new-order",
        ) else {
            panic!("not synthetic");
        };
        assert!(transient);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], "urn:ietf:params:acme:error:serverInternal");
        assert_eq!(v["status"], 502);
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains("https://ca/acme/new-order")
        );
        assert!(v["detail"].as_str().unwrap().contains("text/html"));

        let Class::Synthetic { transient, body } =
            classify(StatusCode::TOO_MANY_REQUESTS, None, b"slow down", "u")
        else {
            panic!("not synthetic");
        };
        assert!(transient);
        assert!(body.contains("rateLimited"));

        let Class::Synthetic { transient, body } =
            classify(StatusCode::FORBIDDEN, Some("text/html"), b"<html>", "u")
        else {
            panic!("not synthetic");
        };
        assert!(
            !transient,
            "a 403 page is a configuration problem, not a transient one"
        );
        assert!(body.contains("malformed"));
    }

    #[test]
    fn json_problems_and_successes_pass_through() {
        let problem =
            br#"{"type":"urn:ietf:params:acme:error:badNonce","detail":"x","status":400}"#;
        assert_eq!(
            classify(
                StatusCode::BAD_REQUEST,
                Some("application/problem+json"),
                problem,
                "u"
            ),
            Class::Problem { transient: false }
        );
        assert_eq!(
            classify(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("application/problem+json"),
                problem,
                "u"
            ),
            Class::Problem { transient: true }
        );
        assert_eq!(
            classify(StatusCode::OK, Some("text/html"), b"<html>", "u"),
            Class::Success
        );
        assert_eq!(classify(StatusCode::FOUND, None, b"", "u"), Class::Success);
        // A JSON content type with a broken body is still synthesised.
        assert!(matches!(
            classify(
                StatusCode::INTERNAL_SERVER_ERROR,
                Some("application/json"),
                b"{trunc",
                "u"
            ),
            Class::Synthetic {
                transient: true,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn gate_paces_and_pauses() {
        let gate = Gate::new(1000);
        for _ in 0..10 {
            gate.acquire().await.unwrap();
        }
        gate.pause(Duration::from_secs(3600));
        let err = gate.acquire().await.unwrap_err();
        assert!(err.is_transient());
        assert!(err.retry_after().unwrap() > Duration::from_secs(3500));
        assert!(err.to_string().contains("429"), "{err}");
    }
}
