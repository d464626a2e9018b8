//! What every listener (API, agent, http-01) shares against slow or abusive clients: a TLS
//! handshake timeout, a header read timeout, a cap on open connections, a request timeout and a
//! panic guard; request tracing with a request id (never logging credentials); and the
//! rotation of the listener certificates issued by the internal CA.
//!
//! Limits come from `[listeners]` in the configuration ([`ListenersConfig`]).

use std::any::Any;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_server::accept::{Accept, NoDelayAcceptor};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::api::error::{ApiError, problem_for_bare_errors};
use crate::app::AppState;
use crate::config::ListenersConfig;

/// Longest sleep of the rotation task before it looks at the clock again.
const MAX_NAP: Duration = Duration::from_secs(3600);

/// Delay before retrying a failed re-issue.
const RETRY_AFTER_FAILURE: time::Duration = time::Duration::minutes(1);

/// An acceptor that closes connections beyond a cap: a permit is taken when a connection is
/// accepted and held by its stream until the connection ends.
#[derive(Clone)]
pub struct ConnectionCap<A> {
    inner: A,
    permits: Arc<Semaphore>,
    /// Set while connections are being refused, so a flood logs once, not per connection.
    saturated: Arc<AtomicBool>,
    listener: &'static str,
}

impl<A> ConnectionCap<A> {
    /// At most `max` open connections through `inner` on the listener called `listener`.
    pub fn new(inner: A, max: usize, listener: &'static str) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            saturated: Arc::new(AtomicBool::new(false)),
            listener,
        }
    }
}

/// The future of [`ConnectionCap::accept`].
type CappedAccept<T, S> = Pin<Box<dyn Future<Output = io::Result<(Capped<T>, S)>> + Send>>;

impl<A, I, S> Accept<I, S> for ConnectionCap<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Capped<A::Stream>;
    type Service = A::Service;
    type Future = CappedAccept<A::Stream, A::Service>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            if !self.saturated.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    listener = self.listener,
                    "closing new connections: listeners.max_connections reached"
                );
            }
            drop(stream);
            return Box::pin(std::future::ready(Err(io::Error::other(
                "listeners.max_connections reached",
            ))));
        };
        self.saturated.store(false, Ordering::Relaxed);
        let accepting = self.inner.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = accepting.await?;
            Ok((
                Capped {
                    stream,
                    _permit: permit,
                },
                service,
            ))
        })
    }
}

/// A connection's stream holding its [`ConnectionCap`] permit.
pub struct Capped<T> {
    stream: T,
    _permit: OwnedSemaphorePermit,
}

impl<T: AsyncRead + Unpin> AsyncRead for Capped<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Capped<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// A plain-HTTP listener with its limits (the http-01 responder).
pub type PlainServer = axum_server::Server<SocketAddr, ConnectionCap<NoDelayAcceptor>>;

/// A TLS listener with its limits (API, agent).
pub type TlsServer =
    axum_server::Server<SocketAddr, RustlsAcceptor<ConnectionCap<NoDelayAcceptor>>>;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `listener` served over plain HTTP, `TCP_NODELAY` on every socket (without it a small response
/// on a fresh connection waits for the client's delayed ACK, about 40 ms), with the limits.
pub fn plain_server(
    listener: std::net::TcpListener,
    limits: &ListenersConfig,
    name: &'static str,
) -> io::Result<PlainServer> {
    let server = axum_server::from_tcp(listener)?.acceptor(ConnectionCap::new(
        NoDelayAcceptor::new(),
        limits.max_connections,
        name,
    ));
    Ok(with_timeouts(server, limits))
}

/// `listener` served over TLS with `config` (reloadable), `TCP_NODELAY`, and the limits.
pub fn tls_server(
    listener: std::net::TcpListener,
    config: RustlsConfig,
    limits: &ListenersConfig,
    name: &'static str,
) -> io::Result<TlsServer> {
    let acceptor = RustlsAcceptor::new(config)
        .handshake_timeout(secs(limits.tls_handshake_timeout_secs))
        .acceptor(ConnectionCap::new(
            NoDelayAcceptor::new(),
            limits.max_connections,
            name,
        ));
    Ok(with_timeouts(
        axum_server::from_tcp(listener)?.acceptor(acceptor),
        limits,
    ))
}

/// The header read timeout, for the first request (from the start of the connection, any HTTP
/// version) and for each following HTTP/1 request (hyper's own timer; axum-server disables it).
fn with_timeouts<A>(
    mut server: axum_server::Server<SocketAddr, A>,
    limits: &ListenersConfig,
) -> axum_server::Server<SocketAddr, A> {
    let headers = secs(limits.header_read_timeout_secs);
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(headers);
    server.first_request_timeout(headers)
}

/// The request id header: the client's value when it sends one, else a fresh UUID; echoed on
/// every response.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps a listener's router: a request running longer than `listeners.request_timeout_secs`
/// is answered 408, and a panicking handler 500, both as problem documents. Every request runs
/// in a `request` span carrying its id, and its response is logged with status and latency;
/// credential headers are marked sensitive, and no header is logged.
pub fn harden(router: Router, limits: &ListenersConfig) -> Router {
    router
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            secs(limits.request_timeout_secs),
        ))
        .layer(axum::middleware::map_response(problem_for_bare_errors))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(log_response)
                // A failure is logged once, where it is handled (`ApiError`).
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeRequestUuid))
        .layer(SetSensitiveHeadersLayer::new([
            header::AUTHORIZATION,
            header::PROXY_AUTHORIZATION,
            header::COOKIE,
            header::SET_COOKIE,
        ]))
}

/// Logs a response with its status and latency: at `info`, except a `304 Not Modified`, which
/// is logged at `debug`. A 304 is an agent's poll that changed nothing; every host sends one per
/// poll interval, forever, so at `info` they would be most of the log (and a write per poll)
/// while telling nothing (`CERTKEEP_LOG=info,certkeep_server::listener=debug` shows them).
fn log_response<B>(response: &Response<B>, latency: Duration, _span: &tracing::Span) {
    let status = response.status().as_u16();
    let latency_ms = latency.as_secs_f64() * 1000.0;
    if response.status() == StatusCode::NOT_MODIFIED {
        tracing::debug!(status, latency_ms, "finished processing request");
    } else {
        tracing::info!(status, latency_ms, "finished processing request");
    }
}

/// The span of one request: its id, method and path (not the query, not a header).
fn request_span(request: &Request<Body>) -> tracing::Span {
    let id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        request.id = %id,
        http.method = %request.method(),
        http.path = %request.uri().path(),
    )
}

/// A 500 problem for a panic; the message is logged (through the internal-error path), never
/// returned.
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    ApiError::Internal(anyhow::anyhow!("request handler panicked: {message}")).into_response()
}

/// The configured API certificate files, and their modification times when last read.
struct ApiFiles {
    cert: PathBuf,
    key: PathBuf,
    stamp: Option<(SystemTime, SystemTime)>,
}

impl ApiFiles {
    fn stamp(&self) -> Option<(SystemTime, SystemTime)> {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((modified(&self.cert)?, modified(&self.key)?))
    }

    /// Reads and parses both files.
    fn load(&mut self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        self.stamp = self.stamp();
        let cert = std::fs::read_to_string(&self.cert)
            .with_context(|| format!("read {}", self.cert.display()))?;
        let key = zeroize::Zeroizing::new(
            std::fs::read_to_string(&self.key)
                .with_context(|| format!("read {}", self.key.display()))?,
        );
        Ok(crate::tls::api_config(&cert, &key)?)
    }

    /// Reloads `api` when either file changed since it was last read. A pair that does not
    /// parse (say, the certificate replaced before the key) keeps the old one until the next
    /// change.
    fn reload_if_changed(&mut self, api: &RustlsConfig) {
        if self.stamp() == self.stamp {
            return;
        }
        match self.load() {
            Ok(config) => {
                api.reload_from_config(config);
                tracing::info!(tls_cert_file = %self.cert.display(), "API certificate reloaded");
            }
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "API certificate files changed but do not load; keeping the previous ones"
            ),
        }
    }
}

/// The TLS configurations of the API and agent listeners, kept current without a restart by
/// [`ListenerTls::rotate`]: certificates from the internal CA are re-issued before they expire,
/// a configured API certificate (`tls_cert_file`) is reloaded when its files change.
pub struct ListenerTls {
    /// The API listener's configuration.
    pub api: RustlsConfig,
    /// The agent listener's configuration.
    pub agent: RustlsConfig,
    api_files: Option<ApiFiles>,
    renew_at: OffsetDateTime,
}

impl ListenerTls {
    /// Reads the configured API certificate, if any, and issues the others from the internal CA.
    pub fn new(state: &AppState, now: OffsetDateTime) -> anyhow::Result<Self> {
        let mut api_files = match (&state.config.tls_cert_file, &state.config.tls_key_file) {
            (Some(cert), Some(key)) => Some(ApiFiles {
                cert: cert.clone(),
                key: key.clone(),
                stamp: None,
            }),
            _ => None,
        };
        let file_api = api_files.as_mut().map(ApiFiles::load).transpose()?;
        let issued = issue(state, file_api.is_none(), now)?;
        let api = file_api
            .or(issued.api)
            .context("API listener certificate")?;
        Ok(Self {
            api: RustlsConfig::from_config(api),
            agent: RustlsConfig::from_config(issued.agent),
            api_files,
            renew_at: issued.renew_at,
        })
    }

    /// Re-issues the internal-CA listener certificates each time a third of their lifetime
    /// remains, and reloads configured API certificate files every
    /// `listeners.cert_file_check_secs` when they changed. New handshakes get the new
    /// certificate; open connections keep theirs. Runs until dropped.
    pub async fn rotate(mut self, state: AppState) {
        let check = secs(state.config.listeners.cert_file_check_secs);
        loop {
            let wait = self.renew_at - crate::now();
            if wait.is_positive() {
                let mut nap = wait.unsigned_abs().min(MAX_NAP);
                if self.api_files.is_some() {
                    nap = nap.min(check);
                }
                tokio::time::sleep(nap).await;
                if let Some(files) = &mut self.api_files {
                    files.reload_if_changed(&self.api);
                }
                continue;
            }
            let now = crate::now();
            match issue(&state, self.api_files.is_none(), now) {
                Ok(issued) => {
                    if let Some(api) = issued.api {
                        self.api.reload_from_config(api);
                    }
                    self.agent.reload_from_config(issued.agent);
                    self.renew_at = issued.renew_at;
                    tracing::info!(next_renewal = %issued.renew_at, "listener certificates re-issued");
                }
                Err(e) => {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "cannot re-issue the listener certificates; retrying"
                    );
                    self.renew_at = now + RETRY_AFTER_FAILURE;
                }
            }
        }
    }
}

/// Freshly issued listener configurations.
struct Issued {
    api: Option<Arc<rustls::ServerConfig>>,
    agent: Arc<rustls::ServerConfig>,
    renew_at: OffsetDateTime,
}

/// Issues the agent listener's certificate (and the API's, with `api`), renewed at two thirds
/// of `listeners.cert_lifetime_secs`.
fn issue(state: &AppState, api: bool, now: OffsetDateTime) -> anyhow::Result<Issued> {
    let lifetime_secs = i64::try_from(state.config.listeners.cert_lifetime_secs)
        .context("listeners.cert_lifetime_secs")?;
    let lifetime = time::Duration::seconds(lifetime_secs);
    let names = &state.config.server_names;
    let api = if api {
        let pair = state.ca.issue_server_cert(names, now, lifetime)?;
        Some(crate::tls::api_config(&pair.cert_pem, &pair.key_pem)?)
    } else {
        None
    };
    let pair = state.ca.issue_server_cert(names, now, lifetime)?;
    let agent = crate::tls::agent_config(&pair.cert_pem, &pair.key_pem, state.ca.cert_pem())?;
    Ok(Issued {
        api,
        agent,
        renew_at: now + lifetime * 2 / 3,
    })
}

#[cfg(test)]
mod tests;
