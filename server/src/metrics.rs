//! Prometheus metrics at `/metrics`.
//!
//! Counters and histograms (renewal failures, order duration per directory, ACME requests by
//! outcome) are recorded by the engine through the `metrics` facade under the names below, into
//! one recorder installed once per process. Gauges derived from the database (expiry, renewal
//! due, jobs waiting, agents) are computed at scrape time, so no series outlives its row.

use std::fmt::Write as _;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use time::OffsetDateTime;

use crate::app::AppState;
use crate::domain::deployments::deployment_state;
use certkeep_api_types::api::DeploymentState;

/// Counter: renewals that failed, label `certificate`.
pub const RENEWAL_FAILURES: &str = "certkeep_renewal_failures_total";
/// Histogram (seconds): order duration from queue to issued, label `directory`.
pub const ORDER_DURATION: &str = "certkeep_order_duration_seconds";
/// Counter: requests to ACME directories, labels `directory` and `outcome`.
pub const ACME_REQUESTS: &str = "certkeep_acme_requests_total";
/// Counter: `HEAD newNonce` requests answered from the nonce pool without a round trip.
pub const ACME_NONCES_REUSED: &str = "certkeep_acme_nonces_reused_total";
/// Counter: `badNonce` problems from ACME directories.
pub const ACME_BAD_NONCES: &str = "certkeep_acme_bad_nonce_total";
/// Counter: transient answers (429, 5xx) from ACME directories, label `status`.
pub const ACME_TRANSIENT_RESPONSES: &str = "certkeep_acme_transient_responses_total";
/// Histogram (seconds): one HTTP exchange with an ACME directory, label `directory`.
pub const ACME_REQUEST_DURATION: &str = "certkeep_acme_request_duration_seconds";
/// Histogram (seconds): waits for the per-directory request budget, label `directory`.
pub const ACME_RATE_LIMIT_WAIT: &str = "certkeep_acme_rate_limit_wait_seconds";
/// Histogram (seconds): in-process waits before polling the CA again, label `directory`.
pub const ACME_POLL_WAIT: &str = "certkeep_acme_poll_wait_seconds";
/// Histogram (seconds): generating a certificate key and its CSR, label `key_type`.
pub const KEY_GENERATION: &str = "certkeep_key_generation_seconds";

/// Counter: notification delivery attempts, labels `channel` (kind: `smtp`, `webhook`) and
/// `outcome` (`delivered`, `retrying`, `failed`).
pub const NOTIFICATION_DELIVERIES: &str = "certkeep_notification_deliveries_total";
/// Gauge (seconds, at scrape): age of the oldest event not yet delivered everywhere.
pub const NOTIFICATION_OLDEST_UNDELIVERED: &str =
    "certkeep_notification_oldest_undelivered_age_seconds";

/// Buckets of [`ORDER_DURATION`]: seconds to a day, since orders may wait on validation.
const ORDER_BUCKETS: &[f64] = &[1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0];
/// Buckets of the short histograms (requests, waits, key generation): 1 ms to a minute.
const SHORT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// The short histograms.
const SHORT: [&str; 4] = [
    ACME_REQUEST_DURATION,
    ACME_RATE_LIMIT_WAIT,
    ACME_POLL_WAIT,
    KEY_GENERATION,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder on first call and returns its handle; `None` when another
/// recorder was installed first (then only the database gauges are exported).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(ORDER_DURATION.into()), ORDER_BUCKETS)
                .ok()?;
            for name in SHORT {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(name.into()), SHORT_BUCKETS)
                    .ok()?;
            }
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            metrics::describe_counter!(RENEWAL_FAILURES, "Renewals that failed");
            metrics::describe_counter!(
                NOTIFICATION_DELIVERIES,
                "Notification delivery attempts by channel kind and outcome"
            );
            metrics::describe_histogram!(
                ORDER_DURATION,
                metrics::Unit::Seconds,
                "Order duration from queue to issued, per directory"
            );
            for (name, help) in [
                (ACME_REQUESTS, "Requests to ACME directories by outcome"),
                (
                    ACME_NONCES_REUSED,
                    "newNonce requests answered from the nonce pool",
                ),
                (ACME_BAD_NONCES, "badNonce problems from ACME directories"),
                (
                    ACME_TRANSIENT_RESPONSES,
                    "Transient answers (429, 5xx) from ACME directories, by status",
                ),
            ] {
                metrics::describe_counter!(name, help);
            }
            for (name, help) in [
                (
                    ACME_REQUEST_DURATION,
                    "One HTTP exchange with an ACME directory",
                ),
                (
                    ACME_RATE_LIMIT_WAIT,
                    "Waits for the per-directory request budget",
                ),
                (
                    ACME_POLL_WAIT,
                    "In-process waits before polling the CA again",
                ),
                (KEY_GENERATION, "Generating a certificate key and its CSR"),
            ] {
                metrics::describe_histogram!(name, metrics::Unit::Seconds, help);
            }
            Some(handle)
        })
        .as_ref()
}

/// Appends one gauge family in the Prometheus text format.
fn gauge<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Option<(&'a str, &'a str)>, f64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (label, value) in samples {
        match label {
            Some((key, v)) => {
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = writeln!(out, "{name}{{{key}=\"{v}\"}} {value}");
            }
            None => {
                let _ = writeln!(out, "{name} {value}");
            }
        }
    }
}

fn unix(t: OffsetDateTime) -> f64 {
    t.unix_timestamp() as f64
}

/// The full scrape: recorded metrics, then the database gauges as of `now`.
pub async fn render(state: &AppState, now: OffsetDateTime) -> Result<String, crate::db::Error> {
    let mut out = install().map(PrometheusHandle::render).unwrap_or_default();
    let certs = state.db.certificate_timings().await?;
    gauge(
        &mut out,
        "certkeep_certificate_expiry_timestamp_seconds",
        "End of the current version's validity (Unix time)",
        certs
            .iter()
            .filter_map(|c| Some((Some(("certificate", c.name.as_str())), unix(c.not_after?)))),
    );
    gauge(
        &mut out,
        "certkeep_certificate_renewal_due_timestamp_seconds",
        "When renewal is due (Unix time)",
        certs
            .iter()
            .filter_map(|c| Some((Some(("certificate", c.name.as_str())), unix(c.renew_after?)))),
    );
    gauge(
        &mut out,
        "certkeep_certificate_consecutive_failures",
        "Failed orders since the last success",
        certs.iter().map(|c| {
            (
                Some(("certificate", c.name.as_str())),
                f64::from(c.consecutive_failures),
            )
        }),
    );
    let mut states: Vec<&str> = certs.iter().map(|c| c.state.as_str()).collect();
    states.sort_unstable();
    states.dedup();
    gauge(
        &mut out,
        "certkeep_certificates",
        "Certificates that are not retired, by state",
        states.iter().map(|s| {
            (
                Some(("state", *s)),
                certs.iter().filter(|c| c.state == *s).count() as f64,
            )
        }),
    );
    gauge(
        &mut out,
        "certkeep_jobs_waiting",
        "Orders in flight whose next attempt is due",
        [(None, state.db.jobs_waiting(now).await? as f64)],
    );
    let agents = state.db.list_agents().await?;
    gauge(
        &mut out,
        "certkeep_agent_last_seen_timestamp_seconds",
        "Last report of each agent (Unix time)",
        agents
            .iter()
            .filter_map(|a| Some((Some(("agent", a.name.as_str())), unix(a.last_seen_at?)))),
    );
    let assignments = state.db.assignments(None, None).await?;
    let files = state.db.deployments(None, None).await?;
    let mut stale: Vec<_> = assignments
        .iter()
        .filter(|a| a.agent_state == crate::model::AgentState::Active)
        .filter(|a| {
            let mine: Vec<_> = files
                .iter()
                .filter(|d| d.agent_id == a.agent_id && d.certificate_id == a.certificate_id)
                .collect();
            matches!(
                deployment_state(a.current_thumbprint.as_deref(), &mine),
                DeploymentState::Stale | DeploymentState::Failed
            )
        })
        .map(|a| a.agent_id)
        .collect();
    stale.sort_unstable();
    stale.dedup();
    gauge(
        &mut out,
        "certkeep_agents_serving_stale_version",
        "Active agents holding a non-current version of an assigned certificate",
        [(None, stale.len() as f64)],
    );
    let cache = state.agent_cache.size();
    gauge(
        &mut out,
        "certkeep_agent_cache_entries",
        "Agents whose identity (and manifest) this server holds in memory",
        [(None, cache.entries as f64)],
    );
    gauge(
        &mut out,
        "certkeep_agent_cache_bytes",
        "Approximate bytes held by this server's agent cache",
        [(None, cache.bytes as f64)],
    );
    let oldest = state.db.oldest_undelivered().await?;
    gauge(
        &mut out,
        NOTIFICATION_OLDEST_UNDELIVERED,
        "Age of the oldest notification event not yet delivered to every channel (0: none)",
        [(
            None,
            oldest.map_or(0.0, |at| (now - at).as_seconds_f64().max(0.0)),
        )],
    );
    Ok(out)
}
