//! A fault-injecting, TLS-terminating reverse proxy in front of Pebble, emulating how Sectigo
//! and its gateways misbehave (see docs/CA-BEHAVIOUR.md, "Emulation harness"). It preserves
//! `Host` (and sends `X-Forwarded-Proto: https`) so Pebble's URLs point back at the proxy, never
//! re-signs a request, and can delay, hold, answer by itself, reset connections, cut bodies
//! short and rewrite (unsigned) responses, down to replacing a downloaded certificate with one
//! of its own (a hostile CA). Rules are set per test through the in-process handle, and
//! requests are counted by kind as they arrive and as they reach Pebble. It also adds what
//! Debian's Pebble 2.4 lacks: a `renewalInfo` endpoint (RFC 9773) whose window and
//! `Retry-After` the test sets, advertised in the directory, with `replaces` reflected in new
//! orders and recorded for the test.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Frame, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

use crate::pebble::TestPki;

/// What a request is, from Pebble's URL layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Directory,
    Nonce,
    NewAccount,
    NewOrder,
    Order,
    Authz,
    Challenge,
    Finalize,
    Certificate,
    Revoke,
    /// `renewalInfo` (RFC 9773), answered by the proxy itself (see [`Proxy::serve_renewal_info`]).
    RenewalInfo,
    Other,
}

impl Kind {
    fn of(path: &str) -> Kind {
        let prefixes = [
            ("/dir", Kind::Directory),
            ("/nonce-plz", Kind::Nonce),
            ("/sign-me-up", Kind::NewAccount),
            ("/order-plz", Kind::NewOrder),
            ("/my-order/", Kind::Order),
            ("/finalize-order/", Kind::Finalize),
            ("/authZ/", Kind::Authz),
            ("/chalZ/", Kind::Challenge),
            ("/certZ/", Kind::Certificate),
            ("/revoke-cert", Kind::Revoke),
            (RENEWAL_INFO_PATH, Kind::RenewalInfo),
        ];
        prefixes
            .iter()
            .find(|(p, _)| path.starts_with(p))
            .map_or(Kind::Other, |(_, k)| *k)
    }
}

/// Path of the proxy's own `renewalInfo` endpoint (Debian's Pebble 2.4 has none).
const RENEWAL_INFO_PATH: &str = "/renewal-info/";

/// What the proxy's `renewalInfo` endpoint answers for every certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalInfo {
    /// The suggested window, RFC 3339.
    pub start: String,
    pub end: String,
    /// `Retry-After`, seconds.
    pub retry_after_secs: u64,
    /// Whether new orders reflect their `replaces` (RFC 9773 says they must; a CA that does
    /// not is emulated with `false`).
    pub reflect_replaces: bool,
}

/// Where a connection is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// After forwarding, before any byte of the response.
    BeforeResponse,
    /// After sending the response headers, before the body.
    AfterHeaders,
    /// Half-way through the body.
    MidBody,
}

/// Rewrites an upstream JSON response; returns whether it applied (only then does the rule
/// count down).
pub type Rewriter = Arc<dyn Fn(&mut serde_json::Value, &mut HeaderMap) -> bool + Send + Sync>;

/// Replaces an upstream response body: given that body and the CSR of the last finalize the
/// proxy saw (DER), returns the new body.
pub type Substitution = Arc<dyn Fn(&[u8], Option<&[u8]>) -> Bytes + Send + Sync>;

/// What a rule does with a matching request.
#[derive(Clone)]
pub enum Action {
    /// Answer without forwarding.
    Respond {
        status: u16,
        content_type: &'static str,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Answer `400 badNonce` without forwarding, with a fresh Pebble nonce or none.
    BadNonce { with_nonce: bool },
    /// Wait, then forward.
    Delay(Duration),
    /// Wait until the hold is released, then forward (or answer 503 without forwarding).
    Hold(Hold),
    /// Forward, then wait before answering.
    DelayResponse(Duration),
    /// Forward, then hold the response until released (answered 503 when not forwarded).
    HoldResponse(Hold),
    /// Forward, then drop the connection at `Cut`.
    Reset(Cut),
    /// Forward, then rewrite the JSON response.
    Rewrite(Rewriter),
    /// Forward, then replace the response body.
    Substitute(Substitution),
}

/// A request gate opened by the test.
#[derive(Clone)]
pub struct Hold {
    tx: Arc<watch::Sender<Option<bool>>>,
}

impl Hold {
    /// A closed hold.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(None).0),
        }
    }

    /// Releases held requests: forwarded when `forward`, else answered 503 without forwarding.
    pub fn release(&self, forward: bool) {
        self.tx.send_replace(Some(forward));
    }

    async fn wait(&self) -> bool {
        let mut rx = self.tx.subscribe();
        loop {
            if let Some(forward) = *rx.borrow_and_update() {
                return forward;
            }
            if rx.changed().await.is_err() {
                return false;
            }
        }
    }
}

impl Default for Hold {
    fn default() -> Self {
        Self::new()
    }
}

struct Rule {
    kind: Kind,
    /// Applications left; `None` for unlimited.
    remaining: Option<usize>,
    action: Action,
}

type Upstream = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;
type ProxyBody = BoxBody<Bytes, std::io::Error>;

struct Inner {
    upstream: String,
    client: Upstream,
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<HashMap<Kind, usize>>,
    /// Every request as it arrived, in order.
    log: Mutex<Vec<(Instant, Kind)>>,
    forwarded: Mutex<HashMap<Kind, usize>>,
    signatures: Mutex<HashSet<String>>,
    replayed: AtomicUsize,
    /// The CSR (DER) of the last finalize request.
    last_csr: Mutex<Option<Vec<u8>>>,
    /// The proxy's own base URL (`https://127.0.0.1:port`).
    base_url: String,
    /// When set, the directory advertises `renewalInfo` and the proxy answers it.
    renewal_info: Mutex<Option<RenewalInfo>>,
    /// The ARI certificate id asked for by each `renewalInfo` request, in order.
    renewal_info_asked: Mutex<Vec<String>>,
    /// The `replaces` field of each new-order request (`None` when absent), in order.
    replaces: Mutex<Vec<Option<String>>>,
    /// Requests per ACME order (see [`Proxy::per_order`]).
    orders: Mutex<Orders>,
}

/// Which ACME order each URL belongs to, and the requests counted for each order.
#[derive(Default)]
struct Orders {
    /// URL path → index into `counts`.
    owner: HashMap<String, usize>,
    /// Requests by kind, per order in the order of creation.
    counts: Vec<HashMap<Kind, usize>>,
}

impl Orders {
    /// Counts a forwarded request of `kind` at `path` (answered with `location` and `body`)
    /// for its order, and learns the URLs the answer names (authorizations, challenges,
    /// finalize, certificate) as that order's.
    fn count(&mut self, kind: Kind, path: &str, location: Option<&str>, body: &[u8]) {
        let index = if kind == Kind::NewOrder {
            let Some(order) = location.map(url_path) else {
                return;
            };
            self.counts.push(HashMap::new());
            let index = self.counts.len() - 1;
            self.owner.insert(order.to_owned(), index);
            index
        } else {
            match self.owner.get(path) {
                Some(index) => *index,
                None => return,
            }
        };
        *self.counts[index].entry(kind).or_default() += 1;
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
            return;
        };
        let named = json["authorizations"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(
                json["challenges"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| &c["url"]),
            )
            .chain([&json["finalize"], &json["certificate"], &json["url"]])
            .filter_map(serde_json::Value::as_str);
        for url in named {
            self.owner.insert(url_path(url).to_owned(), index);
        }
    }
}

/// The path of `url` (`https://host:port/path` → `/path`); a path stays as it is.
fn url_path(url: &str) -> &str {
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => url,
    }
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    inner: Arc<Inner>,
    /// Port the proxy listens on.
    pub port: u16,
    /// The proxy's directory URL (what the server under test is configured with).
    pub directory_url: String,
    task: tokio::task::JoinHandle<()>,
}

fn full(body: impl Into<Bytes>) -> ProxyBody {
    Full::new(body.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// The answer to a held request that the test discarded: 503, never forwarded.
fn discarded() -> Result<Response<ProxyBody>, std::io::Error> {
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .body(full("held and discarded by the proxy"))
        .map_err(std::io::Error::other)
}

/// A body that sends `data` and then fails, so the client sees a connection cut mid-response.
struct CutBody {
    data: Option<Bytes>,
}

impl hyper::body::Body for CutBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.data.take() {
            Some(data) if !data.is_empty() => Poll::Ready(Some(Ok(Frame::data(data)))),
            _ => Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "cut by the proxy",
            )))),
        }
    }
}

impl Proxy {
    /// Starts a proxy for the Pebble at `upstream_port`, serving TLS with `pki`'s certificate.
    pub async fn start(pki: &TestPki, upstream_port: u16) -> Self {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(pki.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("proxy cert");
        let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).expect("proxy key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("proxy tls config");
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
            roots.add(c.expect("test CA")).expect("add root");
        }
        let client_tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_tls)
            .https_only()
            .enable_http1()
            .build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let inner = Arc::new(Inner {
            upstream: format!("https://127.0.0.1:{upstream_port}"),
            client: Client::builder(TokioExecutor::new()).build(connector),
            rules: Mutex::default(),
            seen: Mutex::default(),
            log: Mutex::default(),
            forwarded: Mutex::default(),
            signatures: Mutex::default(),
            replayed: AtomicUsize::new(0),
            last_csr: Mutex::default(),
            base_url: format!("https://127.0.0.1:{port}"),
            renewal_info: Mutex::default(),
            renewal_info_asked: Mutex::default(),
            replaces: Mutex::default(),
            orders: Mutex::default(),
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let serving = inner.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let inner = serving.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let inner = inner.clone();
                        async move { inner.handle(req).await }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            inner,
            port,
            directory_url: format!("https://127.0.0.1:{port}/dir"),
            task,
        }
    }

    /// Adds a rule applied to the next `times` requests of `kind` (`None`: every one).
    pub fn add(&self, kind: Kind, times: Option<usize>, action: Action) {
        self.inner.rules.lock().expect("rules").push(Rule {
            kind,
            remaining: times,
            action,
        });
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.inner.rules.lock().expect("rules").clear();
    }

    /// Advertises `renewalInfo` in the directory (for clients that read it from now on) and
    /// answers it with `info` for every certificate; `None` stops both.
    pub fn serve_renewal_info(&self, info: Option<RenewalInfo>) {
        *self.inner.renewal_info.lock().expect("ari") = info;
    }

    /// The ARI certificate ids asked for so far, in order.
    pub fn renewal_info_asked(&self) -> Vec<String> {
        self.inner.renewal_info_asked.lock().expect("ari").clone()
    }

    /// The `replaces` field of every new-order request so far (`None` when absent), in order.
    pub fn replaces(&self) -> Vec<Option<String>> {
        self.inner.replaces.lock().expect("replaces").clone()
    }

    /// Requests of `kind` that arrived at the proxy.
    pub fn seen(&self, kind: Kind) -> usize {
        self.inner
            .seen
            .lock()
            .expect("counts")
            .get(&kind)
            .copied()
            .unwrap_or(0)
    }

    /// Requests of each kind that arrived at the proxy so far.
    pub fn seen_by_kind(&self) -> HashMap<Kind, usize> {
        self.inner.seen.lock().expect("counts").clone()
    }

    /// Requests Pebble answered, by kind, for each ACME order in the order they were created:
    /// the new-order request and every request to a URL the CA's answers named as the order's
    /// (the order itself, its authorizations, challenges, finalize and certificate). Nonce,
    /// directory and account requests belong to no order.
    pub fn per_order(&self) -> Vec<HashMap<Kind, usize>> {
        self.inner.orders.lock().expect("orders").counts.clone()
    }

    /// When the first request of `kind` after `after` arrived, from the request log.
    pub fn first_seen_after(&self, kind: Kind, after: Instant) -> Option<Instant> {
        self.inner
            .log
            .lock()
            .expect("log")
            .iter()
            .find(|(at, k)| *k == kind && *at > after)
            .map(|(at, _)| *at)
    }

    /// Requests of `kind` that reached Pebble.
    pub fn forwarded(&self, kind: Kind) -> usize {
        self.inner
            .forwarded
            .lock()
            .expect("counts")
            .get(&kind)
            .copied()
            .unwrap_or(0)
    }

    /// Signed requests that reached Pebble with a JWS signature already seen (a replay).
    pub fn replayed_jws(&self) -> usize {
        self.inner.replayed.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until `seen(kind) >= n`.
    pub async fn wait_seen(&self, kind: Kind, n: usize, timeout: Duration) {
        let started = Instant::now();
        while self.seen(kind) < n {
            assert!(
                started.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {n} {kind:?} request(s); seen {}",
                self.seen(kind)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn bump(counts: &Mutex<HashMap<Kind, usize>>, kind: Kind) {
    *counts.lock().expect("counts").entry(kind).or_default() += 1;
}

impl Inner {
    fn take_rule(&self, kind: Kind) -> Option<Action> {
        let mut rules = self.rules.lock().expect("rules");
        let rule = rules
            .iter_mut()
            .find(|r| r.kind == kind && r.remaining != Some(0))?;
        if !matches!(rule.action, Action::Rewrite(_)) {
            rule.remaining = rule.remaining.map(|n| n - 1);
        }
        Some(rule.action.clone())
    }

    /// Counts down a rewrite rule that applied.
    fn rewrite_applied(&self, kind: Kind) {
        let mut rules = self.rules.lock().expect("rules");
        if let Some(rule) = rules.iter_mut().find(|r| {
            r.kind == kind && r.remaining != Some(0) && matches!(r.action, Action::Rewrite(_))
        }) {
            rule.remaining = rule.remaining.map(|n| n - 1);
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Result<Response<ProxyBody>, std::io::Error> {
        let kind = Kind::of(req.uri().path());
        bump(&self.seen, kind);
        self.log.lock().expect("log").push((Instant::now(), kind));
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        if kind == Kind::Finalize
            && let Some(csr) = finalize_csr(&body)
        {
            *self.last_csr.lock().expect("csr") = Some(csr);
        }
        let replaces = (kind == Kind::NewOrder).then(|| {
            jws_payload(&body).and_then(|p| {
                p.get("replaces")
                    .and_then(|r| r.as_str())
                    .map(str::to_owned)
            })
        });
        if let Some(r) = &replaces {
            self.replaces.lock().expect("replaces").push(r.clone());
        }
        if kind == Kind::RenewalInfo {
            return self.renewal_info(parts.uri.path());
        }
        let action = self.take_rule(kind);
        match &action {
            Some(Action::Respond {
                status,
                content_type,
                headers,
                body,
            }) => {
                let mut rsp = Response::builder()
                    .status(*status)
                    .header(http::header::CONTENT_TYPE, *content_type);
                for (name, value) in headers {
                    rsp = rsp.header(*name, value);
                }
                return rsp.body(full(body.clone())).map_err(std::io::Error::other);
            }
            Some(Action::BadNonce { with_nonce }) => return self.bad_nonce(*with_nonce).await,
            Some(Action::Delay(d)) => tokio::time::sleep(*d).await,
            Some(Action::Hold(hold)) if !hold.wait().await => return discarded(),
            _ => {}
        }
        let upstream = self.forward(kind, &parts, body).await?;
        let (mut head, mut bytes) = upstream;
        let location = head
            .headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok());
        self.orders
            .lock()
            .expect("orders")
            .count(kind, parts.uri.path(), location, &bytes);
        if kind == Kind::Directory {
            bytes = self.with_renewal_info(&mut head, bytes);
        }
        if let Some(Some(replaces)) = replaces {
            bytes = self.echo_replaces(&mut head, bytes, replaces);
        }
        match action {
            Some(Action::DelayResponse(d)) => tokio::time::sleep(d).await,
            Some(Action::HoldResponse(hold)) if !hold.wait().await => return discarded(),
            Some(Action::Reset(Cut::BeforeResponse)) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "reset by the proxy",
                ));
            }
            Some(Action::Reset(cut)) => {
                let sent = if cut == Cut::MidBody {
                    bytes.slice(..bytes.len() / 2)
                } else {
                    Bytes::new()
                };
                head.headers
                    .insert(http::header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                return Ok(Response::from_parts(
                    head,
                    CutBody { data: Some(sent) }.boxed(),
                ));
            }
            Some(Action::Substitute(substitute)) => {
                let csr = self.last_csr.lock().expect("csr").clone();
                let text = substitute(&bytes, csr.as_deref());
                head.headers.remove(http::header::TRANSFER_ENCODING);
                head.headers
                    .insert(http::header::CONTENT_LENGTH, HeaderValue::from(text.len()));
                return Ok(Response::from_parts(head, full(text)));
            }
            Some(Action::Rewrite(rewrite)) => {
                if let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&bytes)
                    && rewrite(&mut json, &mut head.headers)
                {
                    self.rewrite_applied(kind);
                    let text = json.to_string();
                    head.headers
                        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(text.len()));
                    return Ok(Response::from_parts(head, full(text)));
                }
            }
            _ => {}
        }
        Ok(Response::from_parts(head, full(bytes)))
    }

    /// The directory with `renewalInfo` added while the test serves it.
    fn with_renewal_info(&self, head: &mut http::response::Parts, bytes: Bytes) -> Bytes {
        if self.renewal_info.lock().expect("ari").is_none() {
            return bytes;
        }
        let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return bytes;
        };
        json["renewalInfo"] = format!(
            "{}{}",
            self.base_url,
            RENEWAL_INFO_PATH.trim_end_matches('/')
        )
        .into();
        replace_body(head, json.to_string())
    }

    /// The new order with the `replaces` it was asked with, as an ARI CA answers (Pebble 2.4
    /// drops the field, and instant-acme refuses an order without it), while the test serves
    /// renewal information.
    fn echo_replaces(
        &self,
        head: &mut http::response::Parts,
        bytes: Bytes,
        replaces: String,
    ) -> Bytes {
        let reflect = self
            .renewal_info
            .lock()
            .expect("ari")
            .as_ref()
            .is_some_and(|i| i.reflect_replaces);
        if !reflect {
            return bytes;
        }
        let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return bytes;
        };
        json["replaces"] = replaces.into();
        replace_body(head, json.to_string())
    }

    /// The answer of the proxy's `renewalInfo` endpoint (404 while the test serves none).
    fn renewal_info(&self, path: &str) -> Result<Response<ProxyBody>, std::io::Error> {
        let id = path.trim_start_matches(RENEWAL_INFO_PATH).to_owned();
        self.renewal_info_asked.lock().expect("ari").push(id);
        let info = self.renewal_info.lock().expect("ari").clone();
        let Some(info) = info else {
            return Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(full("no renewal information"))
                .map_err(std::io::Error::other);
        };
        let body = serde_json::json!({
            "suggestedWindow": { "start": info.start, "end": info.end },
        });
        Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::RETRY_AFTER, info.retry_after_secs.to_string())
            .body(full(body.to_string()))
            .map_err(std::io::Error::other)
    }

    async fn forward(
        &self,
        kind: Kind,
        parts: &http::request::Parts,
        body: Bytes,
    ) -> Result<(http::response::Parts, Bytes), std::io::Error> {
        if parts.method == http::Method::POST
            && let Some(sig) = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v.get("signature")
                        .and_then(|s| s.as_str())
                        .map(str::to_owned)
                })
            && !self.signatures.lock().expect("sigs").insert(sig)
        {
            self.replayed.fetch_add(1, Ordering::SeqCst);
        }
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = Request::builder()
            .method(parts.method.clone())
            .uri(format!("{}{path}", self.upstream));
        for (name, value) in &parts.headers {
            req = req.header(name, value);
        }
        if let Some(authority) = parts.uri.authority()
            && !parts.headers.contains_key(http::header::HOST)
        {
            req = req.header(http::header::HOST, authority.as_str());
        }
        let req = req
            .header("X-Forwarded-Proto", "https")
            .body(Full::new(body))
            .map_err(std::io::Error::other)?;
        bump(&self.forwarded, kind);
        let rsp = self
            .client
            .request(req)
            .await
            .map_err(std::io::Error::other)?;
        let (head, body) = rsp.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        Ok((head, bytes))
    }

    async fn bad_nonce(&self, with_nonce: bool) -> Result<Response<ProxyBody>, std::io::Error> {
        let mut rsp = Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .header(http::header::CONTENT_TYPE, "application/problem+json");
        if with_nonce {
            let req = Request::builder()
                .method(http::Method::HEAD)
                .uri(format!("{}/nonce-plz", self.upstream))
                .body(Full::new(Bytes::new()))
                .map_err(std::io::Error::other)?;
            let fresh = self
                .client
                .request(req)
                .await
                .map_err(std::io::Error::other)?;
            if let Some(nonce) = fresh.headers().get("Replay-Nonce") {
                rsp = rsp.header("Replay-Nonce", nonce.clone());
            }
        }
        rsp.body(full(
            r#"{"type":"urn:ietf:params:acme:error:badNonce","detail":"JWS has an invalid anti-replay nonce (injected by the test proxy)","status":400}"#,
        ))
        .map_err(std::io::Error::other)
    }
}

/// `text` as the new body of a response whose head is `head` (length fixed up).
fn replace_body(head: &mut http::response::Parts, text: String) -> Bytes {
    head.headers.remove(http::header::TRANSFER_ENCODING);
    head.headers
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    Bytes::from(text)
}

/// The decoded JSON payload of a JWS request body.
fn jws_payload(body: &[u8]) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jws: serde_json::Value = serde_json::from_slice(body).ok()?;
    let payload = b64.decode(jws.get("payload")?.as_str()?).ok()?;
    serde_json::from_slice(&payload).ok()
}

/// The CSR (DER) in a finalize request: the JWS payload's `csr`, base64url.
fn finalize_csr(body: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let payload = jws_payload(body)?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.get("csr")?.as_str()?)
        .ok()
}

/// Whose public key a substituted leaf certifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKey {
    /// The key of the last finalized CSR (the key certkeep holds).
    FromCsr,
    /// A fresh key nobody holds.
    Fresh,
}

/// A substitution of a certificate download (as a hostile CA would): a chain from a CA of the
/// proxy's own whose leaf has `names` as DNS SANs and the public key `key`.
pub fn substitute_leaf(names: &[&str], key: LeafKey) -> Action {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    Action::Substitute(Arc::new(move |_, csr| {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let params = rcgen::CertificateParams::new(names.clone()).expect("leaf params");
        let leaf = match key {
            LeafKey::FromCsr => {
                let der = rustls_pki_types::CertificateSigningRequestDer::from(
                    csr.expect("a finalize was seen before the download"),
                );
                let csr = rcgen::CertificateSigningRequestParams::from_der(&der).expect("CSR");
                params.signed_by(&csr.public_key, &issuer)
            }
            LeafKey::Fresh => params.signed_by(&rcgen::KeyPair::generate().expect("key"), &issuer),
        }
        .expect("leaf");
        Bytes::from(format!("{}{}", leaf.pem(), ca.pem()))
    }))
}

/// A rewrite that reports a `valid` or `processing` order as `processing` (without its
/// `certificate` URL) with `Retry-After: retry_after_secs`.
pub fn still_processing(retry_after_secs: u64) -> Action {
    Action::Rewrite(Arc::new(move |json, headers| {
        let status = json.get("status").and_then(|s| s.as_str()).unwrap_or("");
        if status != "valid" && status != "processing" {
            return false;
        }
        json["status"] = "processing".into();
        if let Some(obj) = json.as_object_mut() {
            obj.remove("certificate");
        }
        headers.insert(
            http::header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs),
        );
        true
    }))
}

/// A rewrite that turns a `processing` or `valid` order `invalid` with a CA error.
pub fn turns_invalid(problem_type: &str, detail: &str) -> Action {
    let error = serde_json::json!({ "type": problem_type, "detail": detail, "status": 400 });
    Action::Rewrite(Arc::new(move |json, _| {
        let status = json.get("status").and_then(|s| s.as_str()).unwrap_or("");
        if status != "valid" && status != "processing" {
            return false;
        }
        json["status"] = "invalid".into();
        json["error"] = error.clone();
        if let Some(obj) = json.as_object_mut() {
            obj.remove("certificate");
        }
        true
    }))
}

/// A rewrite that renames every challenge type of an authorization (e.g. `sectigo-email-01`).
pub fn rename_challenges(to: &'static str) -> Action {
    Action::Rewrite(Arc::new(move |json, _| {
        let Some(challenges) = json.get_mut("challenges").and_then(|c| c.as_array_mut()) else {
            return false;
        };
        for c in challenges {
            c["type"] = to.into();
        }
        true
    }))
}

/// `503 Service Unavailable` with `Retry-After` and a problem document.
pub fn unavailable(retry_after_secs: u64) -> Action {
    Action::Respond {
        status: 503,
        content_type: "application/problem+json",
        headers: vec![("Retry-After", retry_after_secs.to_string())],
        body: r#"{"type":"urn:ietf:params:acme:error:serverInternal","detail":"maintenance (injected)","status":503}"#
            .into(),
    }
}

/// An nginx- or Apache-style HTML error page with `status`.
pub fn html_error(status: u16) -> Action {
    let body = match status {
        500 => "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\"><html><head><title>500 Internal Server Error</title></head><body><h1>Internal Server Error</h1><hr><address>Apache Server</address></body></html>".to_owned(),
        s => format!("<html>\r\n<head><title>{s} Gateway Error</title></head>\r\n<body>\r\n<center><h1>{s} Gateway Error</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"),
    };
    Action::Respond {
        status,
        content_type: "text/html",
        headers: Vec::new(),
        body,
    }
}

/// `429 rateLimited` with `Retry-After`.
pub fn rate_limited(retry_after_secs: u64) -> Action {
    Action::Respond {
        status: 429,
        content_type: "application/problem+json",
        headers: vec![("Retry-After", retry_after_secs.to_string())],
        body: r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many new orders (injected)","status":429}"#.into(),
    }
}
