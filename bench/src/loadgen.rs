//! The load generator: simulated agents, each with its own client certificate, speaking
//! HTTP/1.1 over rustls to a target (certkeep's agent listener or nginx). Bounded by a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::client::Resumption;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::fleet::AgentKeys;
use crate::{procfs, stats};

/// Path of the manifest on both targets.
pub const MANIFEST_PATH: &str = "/agent/v1/manifest";
/// Longest wait for one request before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One client TLS configuration per simulated agent: trusts only `ca_pem`, presents the agent's
/// certificate, X25519 key exchange (what OpenSSL 3.0 in nginx and rustls both do, so the two
/// targets do the same handshake work), no session resumption (every new connection is a full
/// handshake, like an agent that polls every few minutes), HTTP/1.1.
pub fn client_configs(
    ca_pem: &str,
    agents: &[AgentKeys],
) -> anyhow::Result<Vec<Arc<ClientConfig>>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("CA PEM")?)?;
    }
    let roots = Arc::new(roots);
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let provider = Arc::new(provider);
    agents
        .iter()
        .map(|agent| {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(agent.cert_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .context("agent certificate PEM")?;
            let key =
                PrivateKeyDer::from_pem_slice(agent.key_pem.as_bytes()).context("agent key PEM")?;
            let mut config = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots.clone())
                .with_client_auth_cert(chain, key)?;
            config.resumption = Resumption::disabled();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .collect()
}

/// A server under test.
pub struct Target {
    /// `certkeep` or `nginx`.
    pub name: String,
    pub addr: SocketAddr,
    /// `If-None-Match` value per agent (its current manifest ETag on this target).
    pub etags: Vec<String>,
    /// PFX download paths per agent.
    pub pfx_paths: Vec<Vec<String>>,
    /// Processes whose CPU time is charged to this target.
    pub pids: Vec<u32>,
}

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// (a) A new TCP + TLS connection per conditional manifest request (answered 304).
    Handshake,
    /// (b) Keep-alive connections, conditional manifest requests (304).
    KeepAlive,
    /// (c) Keep-alive connections downloading the agent's PFX files (200).
    Pfx,
}

impl Mode {
    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Handshake => "a: new TLS connection per 304",
            Self::KeepAlive => "b: keep-alive 304",
            Self::Pfx => "c: keep-alive PFX download",
        }
    }

    fn expected(self) -> StatusCode {
        match self {
            Self::Handshake | Self::KeepAlive => StatusCode::NOT_MODIFIED,
            Self::Pfx => StatusCode::OK,
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub target: String,
    pub mode: String,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU time of the target's processes per successful request, in microseconds.
    pub server_cpu_us_per_request: f64,
    /// First error seen, if any.
    pub first_error: Option<String>,
}

/// A response: status, `ETag`, body.
pub struct Answer {
    pub status: StatusCode,
    pub etag: Option<String>,
    pub body: Bytes,
}

/// Opens a TCP + TLS + HTTP/1.1 connection as one agent.
pub async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let tls = TlsConnector::from(config)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .context("TLS handshake")?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// `GET path`, optionally conditional, reading the whole body.
pub async fn get(
    sender: &mut SendRequest<Empty<Bytes>>,
    path: &str,
    etag: Option<&str>,
) -> anyhow::Result<Answer> {
    sender.ready().await?;
    let mut request = Request::get(path).header(header::HOST, "127.0.0.1");
    if let Some(etag) = etag {
        request = request.header(header::IF_NONE_MATCH, etag);
    }
    let response = sender.send_request(request.body(Empty::new())?).await?;
    let status = response.status();
    let etag = response
        .headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Answer { status, etag, body })
}

/// Runs `mode` against `target` with `concurrency` workers for `duration`.
pub async fn measure(
    target: Arc<Target>,
    clients: Arc<Vec<Arc<ClientConfig>>>,
    mode: Mode,
    concurrency: usize,
    duration: Duration,
) -> Sample {
    measure_until(target, clients, mode, concurrency, duration, Arc::default()).await
}

/// [`measure`] that also ends early once `stop` is set.
pub async fn measure_until(
    target: Arc<Target>,
    clients: Arc<Vec<Arc<ClientConfig>>>,
    mode: Mode,
    concurrency: usize,
    duration: Duration,
    stop: Arc<AtomicBool>,
) -> Sample {
    let ticks_before = procfs::total_cpu_ticks(&target.pids);
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let target = target.clone();
        let clients = clients.clone();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            worker(&target, &clients, mode, w, concurrency, deadline, &stop).await
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for w in workers {
        match w.await {
            Ok(result) => {
                latencies.extend(result.latencies_us);
                errors += result.errors;
                first_error = first_error.or(result.first_error);
            }
            Err(e) => {
                errors += 1;
                first_error = first_error.or(Some(format!("worker panicked: {e}")));
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let ticks = procfs::total_cpu_ticks(&target.pids).saturating_sub(ticks_before);
    latencies.sort_unstable();
    let requests = latencies.len() as u64;
    let cpu_us = ticks as f64 / procfs::ticks_per_second() * 1e6;
    Sample {
        target: target.name.clone(),
        mode: mode.name().to_owned(),
        requests,
        errors,
        seconds,
        per_second: requests as f64 / seconds,
        p50_ms: f64::from(stats::quantile(&latencies, 0.50)) / 1000.0,
        p99_ms: f64::from(stats::quantile(&latencies, 0.99)) / 1000.0,
        server_cpu_us_per_request: if requests == 0 {
            0.0
        } else {
            cpu_us / requests as f64
        },
        first_error,
    }
}

struct WorkerResult {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

async fn worker(
    target: &Target,
    clients: &[Arc<ClientConfig>],
    mode: Mode,
    index: usize,
    concurrency: usize,
    deadline: Instant,
    stop: &AtomicBool,
) -> WorkerResult {
    let running = || Instant::now() < deadline && !stop.load(Ordering::Relaxed);
    let mut out = WorkerResult {
        latencies_us: Vec::with_capacity(4096),
        errors: 0,
        first_error: None,
    };
    let agents = clients.len();
    match mode {
        Mode::Handshake => {
            let mut k = index;
            while running() {
                let agent = k % agents;
                k += concurrency;
                let t0 = Instant::now();
                let attempt = async {
                    let mut sender = connect(target.addr, clients[agent].clone()).await?;
                    let answer =
                        get(&mut sender, MANIFEST_PATH, Some(&target.etags[agent])).await?;
                    check(&answer, mode)
                };
                match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
                    Ok(Ok(())) => out.latencies_us.push(micros(t0)),
                    Ok(Err(e)) => fail(&mut out, e),
                    Err(_) => fail(&mut out, anyhow::anyhow!("timed out")),
                }
            }
        }
        Mode::KeepAlive | Mode::Pfx => {
            let agent = index % agents;
            let mut sender = None;
            let mut k = 0;
            while running() {
                let s = match sender.as_mut() {
                    Some(s) => s,
                    None => match connect(target.addr, clients[agent].clone()).await {
                        Ok(s) => sender.insert(s),
                        Err(e) => {
                            fail(&mut out, e);
                            continue;
                        }
                    },
                };
                let (path, etag) = match mode {
                    Mode::Pfx => {
                        let paths = &target.pfx_paths[agent];
                        k += 1;
                        (paths[k % paths.len()].as_str(), None)
                    }
                    _ => (MANIFEST_PATH, Some(target.etags[agent].as_str())),
                };
                let t0 = Instant::now();
                match tokio::time::timeout(REQUEST_TIMEOUT, get(s, path, etag)).await {
                    Ok(Ok(answer)) => match check(&answer, mode) {
                        Ok(()) => out.latencies_us.push(micros(t0)),
                        Err(e) => fail(&mut out, e),
                    },
                    Ok(Err(e)) => {
                        fail(&mut out, e);
                        sender = None;
                    }
                    Err(_) => {
                        fail(&mut out, anyhow::anyhow!("timed out"));
                        sender = None;
                    }
                }
            }
        }
    }
    out
}

fn fail(out: &mut WorkerResult, e: anyhow::Error) {
    out.errors += 1;
    if out.first_error.is_none() {
        out.first_error = Some(format!("{e:#}"));
    }
}

fn check(answer: &Answer, mode: Mode) -> anyhow::Result<()> {
    if answer.status != mode.expected() {
        bail!(
            "status {} (expected {}): {}",
            answer.status,
            mode.expected(),
            String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)])
        );
    }
    if mode == Mode::Pfx && answer.body.is_empty() {
        bail!("empty PFX");
    }
    Ok(())
}

fn micros(t0: Instant) -> u32 {
    u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX)
}
