//! Typed, layered server configuration: defaults, TOML file, `CERTKEEP_*` environment, flags.
//!
//! Knows nothing about storage or HTTP. Secrets are [`SecretString`]s and may come from `*_FILE`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The effective server configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for the SQLite database, age identity, internal CA certificate and admin token.
    pub data_dir: PathBuf,
    /// PostgreSQL URL (`postgres://...`). Unset: embedded SQLite at `<data_dir>/certkeep.db`.
    #[serde(serialize_with = "redact_opt")]
    pub database_url: Option<SecretString>,
    /// Address of the HTTPS API listener.
    pub api_addr: SocketAddr,
    /// Address of the agent mTLS listener.
    pub agent_addr: SocketAddr,
    /// Apply pending migrations when `serve` starts.
    pub migrate_on_start: bool,
    /// age identity file. Unset: `<data_dir>/age-identity.txt`, created on first start.
    pub age_identity_file: Option<PathBuf>,
    /// PEM certificate chain for the API listener. Unset: issued by the internal CA.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Host names and IP addresses put in the internally issued server certificates.
    pub server_names: Vec<String>,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// Failed authentications allowed per source address per minute before 429.
    pub auth_failures_per_minute: u32,
    /// Issuance engine settings.
    pub engine: EngineConfig,
    /// Agent enrollment settings.
    pub agents: AgentConfig,
    /// Challenge solvers for names the CA has not pre-validated.
    pub solvers: SolversConfig,
    /// Limits on what an ACME CA may make certkeep wait for or read.
    pub ca_limits: CaLimitsConfig,
    /// Heartbeat of serving processes (what `rekey` checks).
    pub liveness: LivenessConfig,
    /// Limits of the listeners against slow or abusive clients, and listener certificates.
    pub listeners: ListenersConfig,
    /// Certificate lifecycle: ARI polling, the domain-validation ledger.
    pub lifecycle: LifecycleConfig,
    /// Notifications: the delivery worker, event thresholds and the daily digest.
    pub notifications: NotificationsConfig,
    /// Deployment to agents: the enroll command line, probes, lagging hosts.
    pub deployment: DeploymentConfig,
    /// The web dashboard under `/ui/` on the API listener.
    pub ui: UiConfig,
    /// The agent listener's in-memory cache of agent identities and manifests.
    pub agent_cache: AgentCacheConfig,
    /// Built PFX files kept in memory by the agent listener.
    pub pfx_cache: PfxCacheConfig,
}

/// The agent listener's cache of identities and manifests (`server/src/agent_api/cache.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentCacheConfig {
    /// Seconds after which a cached entry is reloaded even without a change notification: the
    /// bound on staleness should a notification be missed.
    pub refresh_secs: u64,
    /// Most agents cached at once (identity and manifest); beyond it entries are evicted.
    /// 0 disables the cache.
    pub max_entries: usize,
}

impl Default for AgentCacheConfig {
    fn default() -> Self {
        Self {
            refresh_secs: 60,
            max_entries: 100_000,
        }
    }
}

impl AgentCacheConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=86_400).contains(&self.refresh_secs) {
            return Err(ConfigError::Invalid(
                "agent_cache.refresh_secs must be 1 to 86400".into(),
            ));
        }
        Ok(())
    }
}

/// Built PFX files kept in memory by the agent listener (`agent_api::pfx_cache`), one per
/// agent and certificate version, least recently downloaded evicted first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PfxCacheConfig {
    /// Most PFX files kept; 0 turns the cache off (every download builds its PFX).
    pub max_entries: usize,
    /// Most bytes of PFX files kept.
    pub max_bytes: usize,
}

impl Default for PfxCacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_bytes: 32 * 1024 * 1024,
        }
    }
}

/// The web dashboard (`server/src/ui/`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// Serve the dashboard under `/ui/` on the API listener (`/` redirects there).
    pub enabled: bool,
    /// Seconds a dashboard session may stay unused before it ends.
    pub session_idle_secs: u64,
    /// Seconds a dashboard session lasts at most, however busy.
    pub session_max_secs: u64,
    /// Seconds without a report after which the overview lists an active agent as stale.
    pub agent_stale_secs: u64,
    /// Login with campus SSO (OpenID Connect). Unset: no SSO login.
    pub oidc: Option<crate::oidc::OidcConfig>,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            session_idle_secs: 30 * 60,
            session_max_secs: 12 * 3600,
            agent_stale_secs: 2 * 3600,
            oidc: None,
        }
    }
}

impl UiConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.session_idle_secs == 0 || self.session_idle_secs > self.session_max_secs {
            return Err(ConfigError::Invalid(
                "ui.session_idle_secs must be at least 1 and at most ui.session_max_secs".into(),
            ));
        }
        Ok(())
    }
}

/// Deployment to agents.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeploymentConfig {
    /// URL agents reach the agent listener at, put into the enroll command `certkeep agent add`
    /// prints. Unset: `https://<agent_addr>`.
    pub agent_url: Option<String>,
    /// Minutes after an install within which every probed name must serve the current version;
    /// later it counts as lagging.
    pub lagging_minutes: u64,
    /// Seconds between two probes of an agent's targets, sent to agents in the manifest.
    pub probe_interval_secs: u64,
    /// A renewal is installed outside the agent's change window when the version it replaces
    /// expires within this many days.
    pub window_margin_days: u64,
}

impl Default for DeploymentConfig {
    fn default() -> Self {
        Self {
            agent_url: None,
            lagging_minutes: 30,
            probe_interval_secs: 3600,
            window_margin_days: 7,
        }
    }
}

impl DeploymentConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.agent_url
            && !url.starts_with("https://")
        {
            return Err(ConfigError::Invalid(
                "deployment.agent_url must be an https:// URL".into(),
            ));
        }
        if self.lagging_minutes == 0 || !(60..=86_400).contains(&self.probe_interval_secs) {
            return Err(ConfigError::Invalid(
                "deployment.lagging_minutes must be at least 1 and deployment.probe_interval_secs 60 to 86400".into(),
            ));
        }
        Ok(())
    }
}

/// Issuance engine settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Run the issuance and renewal workers in this process.
    pub enabled: bool,
    /// Concurrent order workers.
    pub workers: usize,
    /// Seconds between scans for runnable jobs when idle.
    pub poll_interval_secs: u64,
    /// Seconds a claimed job stays leased before another process may take it over; the
    /// holder renews it every third of this, so a dead process's jobs move within it.
    pub lease_secs: u64,
    /// Overall deadline of one order in seconds (default 7 days).
    pub order_deadline_secs: u64,
    /// Longest single in-process wait on the CA in seconds; longer waits park the job.
    pub max_inline_wait_secs: u64,
    /// Per-request timeout towards the CA in seconds.
    pub request_timeout_secs: u64,
    /// Timeout of the finalize request in seconds.
    pub finalize_timeout_secs: u64,
    /// Requests per second allowed towards one ACME directory.
    pub directory_requests_per_sec: u32,
    /// Default fraction of the lifetime that remains when renewal starts.
    pub renew_fraction: f64,
    /// Seconds between scans for certificates due for renewal or re-issuance.
    pub renewal_scan_secs: u64,
}

/// Notifications (`[notifications]`): the outbox's delivery worker, when events are raised, and
/// the daily digest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    /// Run the delivery worker and the scans in this process.
    pub enabled: bool,
    /// Seconds between looks at the outbox when idle.
    pub worker_interval_secs: u64,
    /// Seconds a claimed delivery stays leased; a process killed mid-send leaves it to another
    /// (or to itself after a restart) once the lease ends. Keep it above the longest send (a
    /// webhook's `timeout_secs`, at most 60; SMTP 30), or a slow send may be repeated.
    pub lease_secs: u64,
    /// Wait after a delivery's first failed attempt, in seconds; it doubles with each further
    /// failure up to `backoff_cap_secs`.
    pub backoff_first_secs: u64,
    /// Longest wait between two attempts of one delivery, in seconds.
    pub backoff_cap_secs: u64,
    /// Seconds after the event after which a delivery that still fails is given up (`failed`).
    pub dead_letter_after_secs: u64,
    /// Days before expiry at which `certificate.expiring` is raised, once per threshold and
    /// version.
    pub expiring_days: Vec<u32>,
    /// Consecutive failed orders after which `certificate.renewal_failed` is raised.
    pub renewal_failed_attempts: u32,
    /// Days of remaining lifetime under which a failing renewal raises
    /// `certificate.renewal_failed` again (once per version).
    pub renewal_failed_lifetime_days: u32,
    /// A CA rate limit (429) asking to wait at least this many seconds raises `account.problem`
    /// (once per account and day); so do `renewal_failed_attempts` transient failures in a row
    /// of one order (a directory unreachable or failing).
    pub account_rate_limited_secs: u64,
    /// How often agents are expected to poll, in seconds (the agent's `interval_secs`).
    pub agent_interval_secs: u64,
    /// An agent is stale when it has not polled for this many expected intervals.
    pub stale_agent_factor: u32,
    /// Seconds between the scans for expiring certificates, stale agents and digests due.
    pub scan_interval_secs: u64,
    /// Local time of the daily digest, `HH:MM`.
    pub digest_time: String,
    /// UTC offset of `digest_time`, e.g. `+01:00`.
    pub digest_utc_offset: String,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            worker_interval_secs: 5,
            lease_secs: 120,
            backoff_first_secs: 5,
            backoff_cap_secs: 3600,
            dead_letter_after_secs: 2 * 24 * 3600,
            expiring_days: vec![14, 7, 3, 1],
            renewal_failed_attempts: 3,
            renewal_failed_lifetime_days: 7,
            account_rate_limited_secs: 3600,
            agent_interval_secs: 900,
            stale_agent_factor: 3,
            scan_interval_secs: 300,
            digest_time: "08:00".into(),
            digest_utc_offset: "+00:00".into(),
        }
    }
}

impl NotificationsConfig {
    /// The digest's local time and UTC offset.
    pub fn digest_at(&self) -> Result<(time::Time, time::UtcOffset), ConfigError> {
        let t = time::Time::parse(
            &self.digest_time,
            time::macros::format_description!("[hour]:[minute]"),
        )
        .map_err(|_| {
            ConfigError::Invalid("notifications.digest_time must be HH:MM, e.g. 08:00".into())
        })?;
        let offset = time::UtcOffset::parse(
            &self.digest_utc_offset,
            time::macros::format_description!("[offset_hour sign:mandatory]:[offset_minute]"),
        )
        .map_err(|_| {
            ConfigError::Invalid(
                "notifications.digest_utc_offset must be +HH:MM or -HH:MM, e.g. +01:00".into(),
            )
        })?;
        Ok((t, offset))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("worker_interval_secs", self.worker_interval_secs),
            ("lease_secs", self.lease_secs),
            ("backoff_first_secs", self.backoff_first_secs),
            ("backoff_cap_secs", self.backoff_cap_secs),
            ("dead_letter_after_secs", self.dead_letter_after_secs),
            ("agent_interval_secs", self.agent_interval_secs),
            ("account_rate_limited_secs", self.account_rate_limited_secs),
            ("scan_interval_secs", self.scan_interval_secs),
            ("stale_agent_factor", u64::from(self.stale_agent_factor)),
            (
                "renewal_failed_attempts",
                u64::from(self.renewal_failed_attempts),
            ),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!(
                "notifications.{name} must be at least 1"
            )));
        }
        if self.expiring_days.iter().any(|d| !(1..=365).contains(d)) {
            return Err(ConfigError::Invalid(
                "notifications.expiring_days must be days between 1 and 365".into(),
            ));
        }
        self.digest_at().map(|_| ())
    }
}

/// Limits on what an ACME CA may make certkeep wait for or read, so a broken or hostile CA
/// cannot stall issuance or exhaust memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaLimitsConfig {
    /// Longest wait a CA can ask for, in seconds: every `Retry-After` (delay-seconds or
    /// HTTP-date, on polls, errors and 429 pauses) is capped at this; a longer one is re-checked
    /// after this long.
    pub max_retry_after_secs: u64,
    /// Largest response body read from a CA, in bytes; a larger answer is refused.
    pub max_response_bytes: usize,
}

/// Upper bound of `ca_limits.max_retry_after_secs` (7 days).
const MAX_RETRY_AFTER_LIMIT_SECS: u64 = 7 * 24 * 3600;

impl CaLimitsConfig {
    /// [`Self::max_retry_after_secs`] as a duration.
    pub fn max_retry_after(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.max_retry_after_secs)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_RETRY_AFTER_LIMIT_SECS).contains(&self.max_retry_after_secs) {
            return Err(ConfigError::Invalid(format!(
                "ca_limits.max_retry_after_secs must be between 1 and {MAX_RETRY_AFTER_LIMIT_SECS}"
            )));
        }
        if self.max_response_bytes < 4096 {
            return Err(ConfigError::Invalid(
                "ca_limits.max_response_bytes must be at least 4096".into(),
            ));
        }
        Ok(())
    }
}

/// Heartbeat of serving processes in `server_instances`: `rekey` refuses while a process has
/// written one within `stale_secs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LivenessConfig {
    /// Seconds between heartbeats of a serving process.
    pub heartbeat_secs: u64,
    /// Seconds without a heartbeat after which a process counts as dead.
    pub stale_secs: u64,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self {
            heartbeat_secs: 10,
            stale_secs: 30,
        }
    }
}

impl LivenessConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_secs == 0 || self.stale_secs < self.heartbeat_secs.saturating_mul(2) {
            return Err(ConfigError::Invalid(
                "liveness.heartbeat_secs must be at least 1 and liveness.stale_secs at least twice it".into(),
            ));
        }
        Ok(())
    }
}

/// Certificate lifecycle settings: how often the CA's renewal information (ARI) is read and
/// when a lapsing domain validation is reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// Shortest gap between two ARI polls of one certificate, in seconds: a smaller
    /// `Retry-After` is raised to this.
    pub ari_min_poll_secs: u64,
    /// Longest gap between two ARI polls of one certificate, in seconds: a larger (or absurd)
    /// `Retry-After` is lowered to this.
    pub ari_max_poll_secs: u64,
    /// Days before a domain validation lapses that it is reported as lapsing.
    pub validation_warn_days: u32,
    /// Seconds between two CRL checks of one current certificate (a fetched CRL is reused
    /// until its nextUpdate).
    pub crl_check_interval_secs: u64,
    /// Timeout of one CRL download, in seconds.
    pub crl_fetch_timeout_secs: u64,
    /// Largest CRL read, in bytes; a larger one is refused.
    pub crl_max_bytes: usize,
    /// Moves to another account started (ordered) per minute at most.
    pub move_orders_per_minute: u32,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            ari_min_poll_secs: 3600,
            ari_max_poll_secs: 24 * 3600,
            validation_warn_days: 30,
            crl_check_interval_secs: 3600,
            crl_fetch_timeout_secs: 10,
            crl_max_bytes: 10 * 1024 * 1024,
            move_orders_per_minute: 10,
        }
    }
}

impl LifecycleConfig {
    /// The CA's `Retry-After` for ARI, clamped to `[ari_min_poll_secs, ari_max_poll_secs]`.
    pub fn ari_poll_after(&self, retry_after: std::time::Duration) -> std::time::Duration {
        retry_after.clamp(
            std::time::Duration::from_secs(self.ari_min_poll_secs),
            std::time::Duration::from_secs(self.ari_max_poll_secs),
        )
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.ari_min_poll_secs == 0 || self.ari_max_poll_secs < self.ari_min_poll_secs {
            return Err(ConfigError::Invalid(
                "lifecycle.ari_min_poll_secs must be at least 1 and lifecycle.ari_max_poll_secs at least lifecycle.ari_min_poll_secs".into(),
            ));
        }
        if self.crl_check_interval_secs == 0
            || self.crl_fetch_timeout_secs == 0
            || self.crl_max_bytes < 1024
        {
            return Err(ConfigError::Invalid(
                "lifecycle.crl_check_interval_secs and crl_fetch_timeout_secs must be at least 1 and lifecycle.crl_max_bytes at least 1024".into(),
            ));
        }
        if self.move_orders_per_minute == 0 {
            return Err(ConfigError::Invalid(
                "lifecycle.move_orders_per_minute must be at least 1".into(),
            ));
        }
        if !(1..=365).contains(&self.validation_warn_days) {
            return Err(ConfigError::Invalid(
                "lifecycle.validation_warn_days must be between 1 and 365".into(),
            ));
        }
        Ok(())
    }
}

impl Default for CaLimitsConfig {
    fn default() -> Self {
        Self {
            max_retry_after_secs: 3600,
            max_response_bytes: 1024 * 1024,
        }
    }
}

/// Agent enrollment settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Lifetime of a join token in hours.
    pub join_token_hours: u64,
    /// Lifetime of an agent client certificate in days.
    pub cert_days: u64,
}

/// Limits of the API, agent and http-01 listeners against slow or abusive clients, and the
/// lifetime of the listener certificates issued by the internal CA.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenersConfig {
    /// Seconds a client has to complete the TLS handshake.
    pub tls_handshake_timeout_secs: u64,
    /// Seconds a client has to send the headers of a request: from the connection's start for
    /// the first one, from the previous response for the next ones.
    pub header_read_timeout_secs: u64,
    /// Seconds one request may take, reading its body included; then 408. Must exceed twice
    /// `engine.request_timeout_secs`: a revocation waits on the CA in its request.
    pub request_timeout_secs: u64,
    /// Open connections per listener; connections beyond it are closed at once.
    pub max_connections: usize,
    /// Refused join tokens allowed per source address per window on the agent listener; after
    /// that its enrollment attempts get 429 until the window ends.
    pub enroll_failures_per_window: u32,
    /// Length of the enrollment window in seconds; denied attempts are audited once per source
    /// per window (the first at once, the rest as one summary when the window ends).
    pub enroll_window_secs: u64,
    /// Lifetime in seconds of the API and agent listener certificates the internal CA issues.
    /// They are re-issued without a restart when a third of it remains.
    pub cert_lifetime_secs: u64,
    /// Seconds between checks of `tls_cert_file` and `tls_key_file`; changed files are reloaded
    /// for new connections without a restart.
    pub cert_file_check_secs: u64,
}

impl Default for ListenersConfig {
    fn default() -> Self {
        Self {
            tls_handshake_timeout_secs: 10,
            header_read_timeout_secs: 10,
            request_timeout_secs: 120,
            max_connections: 1024,
            enroll_failures_per_window: 10,
            enroll_window_secs: 60,
            cert_lifetime_secs: 90 * 24 * 3600,
            cert_file_check_secs: 60,
        }
    }
}

impl ListenersConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let checks = [
            (
                "tls_handshake_timeout_secs",
                self.tls_handshake_timeout_secs,
            ),
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("request_timeout_secs", self.request_timeout_secs),
            ("max_connections", self.max_connections as u64),
            (
                "enroll_failures_per_window",
                u64::from(self.enroll_failures_per_window),
            ),
            ("enroll_window_secs", self.enroll_window_secs),
            ("cert_lifetime_secs", self.cert_lifetime_secs),
            ("cert_file_check_secs", self.cert_file_check_secs),
        ];
        for (key, value) in checks {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "listeners.{key} must be at least 1"
                )));
            }
        }
        if self.cert_lifetime_secs > 825 * 24 * 3600 {
            return Err(ConfigError::Invalid(
                "listeners.cert_lifetime_secs must be at most 825 days".into(),
            ));
        }
        Ok(())
    }
}

/// Challenge solvers. The most specific pattern matching a name picks its solver; wildcard
/// names only accept dns-01. Names no solver covers must be pre-validated at the CA.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SolversConfig {
    /// Timeout of one DNS request (update or query) in seconds.
    pub dns_timeout_secs: u64,
    /// Seconds to wait until every authoritative server of the zone answers a new TXT record.
    pub dns_propagation_timeout_secs: u64,
    /// dns-01 through RFC 2136 dynamic updates signed with TSIG, one entry per DNS suffix.
    pub dns01: Vec<Dns01Config>,
    /// http-01 through the central responder. Unset: no http-01.
    pub http01: Option<Http01Config>,
}

/// One dns-01 solver: RFC 2136 updates to one primary server, signed with one TSIG key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns01Config {
    /// Names answered: this suffix and every name below it, wildcards included.
    pub suffix: String,
    /// Primary server accepting the updates, `ip:port`.
    pub server: SocketAddr,
    /// TSIG key name, as configured on the server.
    pub key_name: String,
    /// TSIG algorithm.
    #[serde(default)]
    pub algorithm: TsigAlgorithm,
    /// File holding the TSIG secret, base64 (as in BIND's `secret "..."`). Read at start.
    /// Unset: the secret stored sealed in the database under `key_name` with
    /// `certkeep dns-key import`.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Zone to update. Unset: found with an SOA query to `server`.
    #[serde(default)]
    pub zone: Option<String>,
    /// Port on which the zone's authoritative servers (its NS records) are asked for the new
    /// record before the CA is told to validate.
    #[serde(default = "default_dns_port")]
    pub nameserver_port: u16,
}

/// TSIG MAC algorithms (RFC 8945).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TsigAlgorithm {
    #[default]
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl TsigAlgorithm {
    /// The name as in the configuration and in BIND (`hmac-sha256`).
    pub fn name(self) -> &'static str {
        match self {
            TsigAlgorithm::HmacSha256 => "hmac-sha256",
            TsigAlgorithm::HmacSha384 => "hmac-sha384",
            TsigAlgorithm::HmacSha512 => "hmac-sha512",
        }
    }
}

/// The http-01 central responder.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http01Config {
    /// Plain-HTTP listener serving `/.well-known/acme-challenge/<token>` (the CA connects to
    /// port 80 of each name; forward that path here). Unset: this process does not listen and
    /// another server process sharing the database answers.
    #[serde(default)]
    pub addr: Option<SocketAddr>,
    /// Domain patterns answered with http-01 (`www.example.edu`, `*.example.edu`).
    pub patterns: Vec<String>,
}

fn default_dns_port() -> u16 {
    53
}

impl Default for SolversConfig {
    fn default() -> Self {
        Self {
            dns_timeout_secs: 5,
            dns_propagation_timeout_secs: 120,
            dns01: Vec::new(),
            http01: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("certkeep-data"),
            database_url: None,
            api_addr: SocketAddr::from(([127, 0, 0, 1], 8443)),
            agent_addr: SocketAddr::from(([127, 0, 0, 1], 8444)),
            migrate_on_start: true,
            age_identity_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            server_names: vec!["localhost".into(), "127.0.0.1".into()],
            max_body_bytes: 1024 * 1024,
            auth_failures_per_minute: 30,
            engine: EngineConfig::default(),
            agents: AgentConfig::default(),
            solvers: SolversConfig::default(),
            ca_limits: CaLimitsConfig::default(),
            liveness: LivenessConfig::default(),
            listeners: ListenersConfig::default(),
            ui: UiConfig::default(),
            deployment: DeploymentConfig::default(),
            notifications: NotificationsConfig::default(),
            lifecycle: LifecycleConfig::default(),
            agent_cache: AgentCacheConfig::default(),
            pfx_cache: PfxCacheConfig::default(),
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            workers: 8,
            poll_interval_secs: 5,
            lease_secs: 30,
            order_deadline_secs: 7 * 24 * 3600,
            max_inline_wait_secs: 120,
            request_timeout_secs: 30,
            finalize_timeout_secs: 180,
            directory_requests_per_sec: 20,
            renew_fraction: 1.0 / 3.0,
            renewal_scan_secs: 60,
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            join_token_hours: 24,
            cert_days: 30,
        }
    }
}

/// Configuration errors, each naming what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Prefix of every environment variable of the server and its CLI.
const ENV_PREFIX: &str = "CERTKEEP_";

/// Variables that share the prefix but are not server settings (named without the prefix, in
/// lowercase): the admin CLI's, the config file's path (a flag's default), the log filter (read
/// before the configuration) and the secret-file variable read by [`secret_files`].
const NOT_SETTINGS: &[&str] = &[
    "server",
    "token",
    "ca_file",
    "config",
    "log",
    "database_url_file",
];

/// Prefixes (without `CERTKEEP_`, lowercase) of the test and benchmark harnesses' variables.
const HARNESS_PREFIXES: &[&str] = &["test_", "bench_"];

/// The `CERTKEEP_*` settings: `CERTKEEP_ENGINE__WORKERS=3` is `engine.workers = 3`.
fn env_settings() -> Env {
    Env::prefixed(ENV_PREFIX)
        .split("__")
        .ignore(NOT_SETTINGS)
        .filter(|key| {
            !HARNESS_PREFIXES
                .iter()
                .any(|p| key.as_str().to_ascii_lowercase().starts_with(p))
        })
}

/// Secrets given as `CERTKEEP_<KEY>_FILE`: the named file's content, trimmed.
fn secret_files() -> Result<Figment, ConfigError> {
    let mut figment = Figment::new();
    if let Some(path) = std::env::var_os("CERTKEEP_DATABASE_URL_FILE") {
        let path = PathBuf::from(path);
        let content = std::fs::read_to_string(&path)
            .map_err(|source| ConfigError::ReadFile { path, source })?;
        figment = figment.merge(Serialized::default("database_url", content.trim()));
    }
    Ok(figment)
}

impl Config {
    /// Loads defaults, then `file` (if any), then the `CERTKEEP_*` environment, then `overrides`.
    pub fn load(file: Option<&Path>, overrides: Figment) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment
            .merge(env_settings())
            .merge(secret_files()?)
            .merge(overrides);
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(describe_figment_error(e)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.database_url {
            let url = url.expose_secret();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError::Invalid(
                    "database_url must start with postgres:// or postgresql:// (leave it unset for the embedded SQLite database)".into(),
                ));
            }
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(ConfigError::Invalid(
                "tls_cert_file and tls_key_file must be set together".into(),
            ));
        }
        if !(0.0 < self.engine.renew_fraction && self.engine.renew_fraction < 1.0) {
            return Err(ConfigError::Invalid(
                "engine.renew_fraction must be between 0 and 1".into(),
            ));
        }
        if self.engine.workers == 0 {
            return Err(ConfigError::Invalid(
                "engine.workers must be at least 1".into(),
            ));
        }
        self.ca_limits.validate()?;
        self.liveness.validate()?;
        self.lifecycle.validate()?;
        self.listeners.validate()?;
        self.deployment.validate()?;
        self.ui.validate()?;
        self.notifications.validate()?;
        self.agent_cache.validate()?;
        if self.listeners.request_timeout_secs <= self.engine.request_timeout_secs.saturating_mul(2)
        {
            return Err(ConfigError::Invalid(
                "listeners.request_timeout_secs must exceed twice engine.request_timeout_secs (a revocation waits on the CA within its request)".into(),
            ));
        }
        if let Some(oidc) = &self.ui.oidc {
            oidc.validate()?;
        }
        self.solvers.validate()
    }

    /// The agent listener's URL as agents reach it (`deployment.agent_url`).
    pub fn agent_url(&self) -> String {
        self.deployment
            .agent_url
            .clone()
            .unwrap_or_else(|| format!("https://{}", self.agent_addr))
    }

    /// The age identity file in use.
    pub fn identity_path(&self) -> PathBuf {
        self.age_identity_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("age-identity.txt"))
    }

    /// The effective configuration as TOML with secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

impl SolversConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.dns_timeout_secs == 0 || self.dns_propagation_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "solvers.dns_timeout_secs and solvers.dns_propagation_timeout_secs must be at least 1".into(),
            ));
        }
        let pattern = |what: &str, p: &str| {
            crate::domain::names::normalize_pattern(p)
                .map_err(|e| ConfigError::Invalid(format!("{what}: {e}")))
        };
        for d in &self.dns01 {
            if pattern("solvers.dns01.suffix", &d.suffix)?.starts_with("*.") {
                return Err(ConfigError::Invalid(format!(
                    "solvers.dns01.suffix `{}` must be a plain DNS name: it covers every name below it",
                    d.suffix
                )));
            }
            if d.key_name.trim().is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "solvers.dns01 for `{}` needs a key_name",
                    d.suffix
                )));
            }
        }
        if let Some(h) = &self.http01 {
            if h.patterns.is_empty() {
                return Err(ConfigError::Invalid(
                    "solvers.http01.patterns must name at least one domain pattern".into(),
                ));
            }
            for p in &h.patterns {
                pattern("solvers.http01.patterns", p)?;
            }
        }
        Ok(())
    }
}

fn describe_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let path = e.path.join(".");
            let kind = e.kind.to_string();
            if path.is_empty() {
                kind
            } else {
                format!("{kind} (at `{path}`)")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn redact_opt<S: serde::Serializer>(
    value: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => serializer.serialize_some("<redacted>"),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads with exactly these `CERTKEEP_*` variables added to the environment, restored after.
    fn load(
        file: Option<&Path>,
        overrides: Figment,
        env: &[(&str, &str)],
    ) -> Result<Config, ConfigError> {
        let mut loaded = None;
        #[expect(
            clippy::result_large_err,
            reason = "figment's Jail API returns its own error type"
        )]
        figment::Jail::expect_with(|jail| {
            for (key, value) in env {
                jail.set_env(key, value);
            }
            loaded = Some(Config::load(file, overrides));
            Ok(())
        });
        loaded.unwrap()
    }

    #[test]
    fn defaults_are_secure() {
        let c = load(None, Figment::new(), &[]).unwrap();
        assert_eq!(c.api_addr.to_string(), "127.0.0.1:8443");
        assert_eq!(c.agent_addr.to_string(), "127.0.0.1:8444");
        assert!(c.database_url.is_none());
    }

    #[test]
    fn notification_settings_are_checked_by_name() {
        let c = load(
            None,
            Figment::new(),
            &[
                ("CERTKEEP_NOTIFICATIONS__EXPIRING_DAYS", "[30, 7]"),
                ("CERTKEEP_NOTIFICATIONS__DIGEST_UTC_OFFSET", "+01:00"),
            ],
        )
        .unwrap();
        assert_eq!(c.notifications.expiring_days, vec![30, 7]);
        let (at, offset) = c.notifications.digest_at().unwrap();
        assert_eq!((at.hour(), offset.whole_hours()), (8, 1));
        for (key, value, named) in [
            (
                "CERTKEEP_NOTIFICATIONS__LEASE_SECS",
                "0",
                "notifications.lease_secs",
            ),
            (
                "CERTKEEP_NOTIFICATIONS__DIGEST_TIME",
                "8am",
                "notifications.digest_time",
            ),
            (
                "CERTKEEP_NOTIFICATIONS__DIGEST_UTC_OFFSET",
                "CET",
                "notifications.digest_utc_offset",
            ),
            (
                "CERTKEEP_NOTIFICATIONS__EXPIRING_DAYS",
                "[0]",
                "notifications.expiring_days",
            ),
        ] {
            let err = load(None, Figment::new(), &[(key, value)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{key}={value}: {err}");
        }
    }

    #[test]
    fn layers_file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from/file\"\napi_addr = \"127.0.0.1:1\"\n[engine]\nworkers = 3\n",
        )
        .unwrap();
        let c = load(
            Some(&file),
            Figment::from(Serialized::default("agent_addr", "127.0.0.1:3")),
            &[
                ("CERTKEEP_API_ADDR", "127.0.0.1:2"),
                ("CERTKEEP_ENGINE__WORKERS", "4"),
            ],
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert_eq!(c.api_addr.to_string(), "127.0.0.1:2");
        assert_eq!(c.agent_addr.to_string(), "127.0.0.1:3");
        assert_eq!(c.engine.workers, 4);
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "api_adr = \"127.0.0.1:1\"\n").unwrap();
        let err = load(Some(&file), Figment::new(), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("api_adr"), "{err}");
        let err = load(None, Figment::new(), &[("CERTKEEP_DATABASE_URI", "x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("database_uri"), "{err}");
    }

    #[test]
    fn secret_from_file_is_redacted_when_printed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db-url");
        std::fs::write(&file, "postgres://u:hunter2@localhost/db\n").unwrap();
        let c = load(
            None,
            Figment::new(),
            &[("CERTKEEP_DATABASE_URL_FILE", file.to_str().unwrap())],
        )
        .unwrap();
        assert_eq!(
            c.database_url.as_ref().unwrap().expose_secret(),
            "postgres://u:hunter2@localhost/db"
        );
        let printed = c.to_redacted_toml();
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("<redacted>"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn solver_sections_parse_with_defaults_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            r#"
[solvers]
dns_propagation_timeout_secs = 30

[[solvers.dns01]]
suffix = "example.edu"
server = "192.0.2.53:53"
key_name = "certkeep."
secret_file = "/etc/certkeep/tsig.key"

[[solvers.dns01]]
suffix = "lab.example.edu"
server = "192.0.2.54:5353"
key_name = "lab."
algorithm = "hmac-sha512"
secret_file = "/etc/certkeep/lab.key"
zone = "example.edu"
nameserver_port = 5353

[solvers.http01]
addr = "0.0.0.0:8080"
patterns = ["www.example.edu", "*.web.example.edu"]
"#,
        )
        .unwrap();
        let c = load(Some(&file), Figment::new(), &[]).unwrap();
        let s = &c.solvers;
        assert_eq!(
            (s.dns_timeout_secs, s.dns_propagation_timeout_secs),
            (5, 30)
        );
        assert_eq!(s.dns01.len(), 2);
        assert_eq!(s.dns01[0].algorithm, TsigAlgorithm::HmacSha256);
        assert_eq!(s.dns01[0].nameserver_port, 53);
        assert_eq!(s.dns01[1].algorithm, TsigAlgorithm::HmacSha512);
        assert_eq!(s.dns01[1].zone.as_deref(), Some("example.edu"));
        let http = s.http01.as_ref().unwrap();
        assert_eq!(http.addr.unwrap().port(), 8080);
        assert_eq!(http.patterns.len(), 2);
        let printed = c.to_redacted_toml();
        assert!(printed.contains("[[solvers.dns01]]"), "{printed}");

        let defaults = load(None, Figment::new(), &[]).unwrap();
        assert!(defaults.solvers.dns01.is_empty() && defaults.solvers.http01.is_none());

        for (bad, wanted) in [
            (
                "[[solvers.dns01]]\nsuffix = \"*.example.edu\"\nserver = \"192.0.2.53:53\"\nkey_name = \"k.\"\nsecret_file = \"/k\"\n",
                "plain DNS name",
            ),
            (
                "[[solvers.dns01]]\nsuffix = \"example.edu\"\nserver = \"192.0.2.53:53\"\nkey_name = \"k.\"\nsecret = \"c2VjcmV0\"\n",
                "secret",
            ),
            (
                "[[solvers.dns01]]\nsuffix = \"example.edu\"\nserver = \"192.0.2.53:53\"\nkey_name = \"k.\"\nalgorithm = \"hmac-md5\"\nsecret_file = \"/k\"\n",
                "hmac-md5",
            ),
            ("[solvers.http01]\npatterns = []\n", "at least one"),
            (
                "[solvers.http01]\npatterns = [\"exa mple.edu\"]\n",
                "exa mple.edu",
            ),
        ] {
            std::fs::write(&file, bad).unwrap();
            let err = load(Some(&file), Figment::new(), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains(wanted), "{bad}: {err}");
        }
    }

    #[test]
    fn ca_limits_have_safe_defaults_and_bounds() {
        let c = load(None, Figment::new(), &[]).unwrap();
        assert_eq!(c.ca_limits.max_retry_after_secs, 3600);
        assert_eq!(c.ca_limits.max_response_bytes, 1024 * 1024);
        for (key, value, wanted) in [
            (
                "CERTKEEP_CA_LIMITS__MAX_RETRY_AFTER_SECS",
                "0",
                "max_retry_after_secs",
            ),
            (
                "CERTKEEP_CA_LIMITS__MAX_RETRY_AFTER_SECS",
                "18446744073709551615",
                "max_retry_after_secs",
            ),
            (
                "CERTKEEP_CA_LIMITS__MAX_RESPONSE_BYTES",
                "100",
                "max_response_bytes",
            ),
            ("CERTKEEP_CA_LIMITS__MAX_BODY", "1", "max_body"),
        ] {
            let err = load(None, Figment::new(), &[(key, value)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(wanted), "{key}={value}: {err}");
        }
    }

    #[test]
    fn default_leases_and_heartbeats_let_a_dead_servers_work_move_within_30_seconds() {
        let c = load(None, Figment::new(), &[]).unwrap();
        assert!(c.engine.lease_secs <= 30, "{}", c.engine.lease_secs);
        assert_eq!((c.liveness.heartbeat_secs, c.liveness.stale_secs), (10, 30));
        let err = load(
            None,
            Figment::new(),
            &[
                ("CERTKEEP_LIVENESS__HEARTBEAT_SECS", "20"),
                ("CERTKEEP_LIVENESS__STALE_SECS", "30"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("liveness.stale_secs"), "{err}");
    }

    #[test]
    fn log_filter_and_client_variables_are_not_settings() {
        let c = load(
            None,
            Figment::new(),
            &[
                ("CERTKEEP_LOG", "debug,sqlx=warn"),
                ("CERTKEEP_TOKEN", "ck_x"),
                ("CERTKEEP_LISTENERS__MAX_CONNECTIONS", "7"),
            ],
        )
        .unwrap();
        assert_eq!(c.listeners.max_connections, 7);
        let err = load(
            None,
            Figment::new(),
            &[("CERTKEEP_LISTENERS__REQUEST_TIMEOUT_SECS", "0")],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("listeners.request_timeout_secs"), "{err}");
    }

    #[test]
    fn example_file_parses_with_the_default_limits() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/certkeep.example.toml");
        let c = load(Some(&path), Figment::new(), &[]).unwrap();
        assert_eq!(
            toml::to_string(&c.listeners).unwrap(),
            toml::to_string(&ListenersConfig::default()).unwrap()
        );
    }

    #[test]
    fn rejects_non_postgres_url() {
        let err = load(
            None,
            Figment::new(),
            &[("CERTKEEP_DATABASE_URL", "mysql://x")],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("postgres://"), "{err}");
    }
}
