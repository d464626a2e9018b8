//! The read-only pages. Each calls the API's service functions with the session's caller, so
//! a page shows exactly what the same token would get from the API.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use certkeep_api_types::api::{CertificateResponse, EabBinding, RevocationReason};
use maud::html;
use serde::Deserialize;

use super::UiError;
use super::session::UiUser;
use super::timeline;
use super::view::{self, Nav, badge, csrf, relative, short_hex, when, when_opt};
use crate::api::auth::READ;
use crate::api::error::ApiError;
use crate::api::{accounts, agents, audit, certificates, tokens};
use crate::app::AppState;
use crate::model::{AgentState, CertificateState, KeyType};

/// A list the page shows only when the caller may read it: empty when its scopes forbid it,
/// any other failure stays one.
fn if_allowed<T>(listed: Result<Vec<T>, ApiError>) -> Result<Vec<T>, ApiError> {
    match listed {
        Err(ApiError::OutOfScope(_)) => Ok(Vec::new()),
        other => other,
    }
}

/// Rows of the overview's lists.
const OVERVIEW_ROWS: i64 = 50;

/// What is urgent: counts, what expires without renewal, failing orders, accounts, stale
/// agents, and the expiry timeline. A caller without `reader` rights (an `issuer`) sees only the
/// expiring certificates it may see.
pub(super) async fn overview(
    State(state): State<AppState>,
    user: UiUser,
) -> Result<Response, UiError> {
    let now = crate::now();
    let auth = &user.auth;
    let expiring = certificates::list(
        &state,
        auth,
        &certificates::ListQuery {
            expiring_within: Some("30d".into()),
            limit: Some(OVERVIEW_ROWS),
            ..Default::default()
        },
    )
    .await?;
    let sees_all = auth.require(READ).is_ok();
    let wide = if sees_all {
        let counts = state
            .db
            .certificate_state_counts()
            .await
            .map_err(ApiError::from)?;
        let troubled = state
            .db
            .troubled_orders(
                now - time::Duration::days(30),
                now - time::Duration::hours(1),
                OVERVIEW_ROWS,
            )
            .await
            .map_err(ApiError::from)?;
        let points = state
            .db
            .expiries_between(now, now + time::Duration::days(7 * timeline::WEEKS as i64))
            .await
            .map_err(ApiError::from)?;
        let weeks = timeline::weeks(now, &points);
        let accounts = accounts::list(&state, auth).await?;
        let last_issued = state
            .db
            .accounts_last_issued()
            .await
            .map_err(ApiError::from)?;
        let stale_after = time::Duration::seconds(
            i64::try_from(state.config.ui.agent_stale_secs).unwrap_or(i64::MAX),
        );
        let stale: Vec<_> = agents::list(&state, auth)
            .await?
            .into_iter()
            .filter(|a| a.state == AgentState::Active)
            .filter(|a| a.last_seen_at.is_none_or(|t| now - t > stale_after))
            .collect();
        let cards = html! {
            section.cards {
                @for s in CertificateState::ALL {
                    @let n = counts.iter().find(|(c, _)| c == s).map_or(0, |(_, n)| *n);
                    a.card href=(format!("/ui/certificates?state={s}")) {
                        span.count { (n) }
                        span.label { (s) }
                    }
                }
            }
        };
        Some((
            cards,
            html! {
                section {
                    h2 { "Expiry timeline (next 90 days)" }
                    (timeline::svg(now, &weeks))
                    p.hint { "Certificates whose current version ends in each week; red: its renewal has been failing." }
                }
                section {
                    h2 { "Failed or stuck orders" }
                    @if troubled.is_empty() {
                        p.empty { "None." }
                    } @else {
                        div.scroll { table {
                            thead { tr { th { "Certificate" } th { "State" } th { "Attempts" } th { "Started" } th { "Error from the CA" } } }
                            tbody {
                                @for o in &troubled {
                                    tr {
                                        td { a href=(format!("/ui/certificates/{}", o.certificate_name)) { (o.certificate_name) } }
                                        td { (badge(o.state.as_str())) }
                                        td { (o.attempts) }
                                        td.nowrap { (relative(o.created_at, now)) }
                                        td.error-text { (o.last_error.as_deref().unwrap_or("(no error recorded yet)")) }
                                    }
                                }
                            }
                        } }
                    }
                }
                section {
                    h2 { "ACME accounts" }
                    div.scroll { table {
                        thead { tr { th { "Account" } th { "Directory" } th { "State" } th { "Last issued" } th { "Last error" } } }
                        tbody {
                            @for a in &accounts {
                                tr {
                                    td { (a.name) }
                                    td { code { (a.directory_url) } }
                                    td { (badge(a.state.as_str())) }
                                    td.nowrap { (last_issued.iter().find(|(id, _)| id.0 == a.id).map_or_else(|| "never".to_owned(), |(_, t)| relative(*t, now))) }
                                    td { @if let Some(e) = &a.last_error { span.error-text { (e) } } @else { "—" } }
                                }
                            }
                        }
                    } }
                }
                section {
                    h2 { "Agents not seen recently" }
                    @if stale.is_empty() {
                        p.empty { "Every active agent reported within " (state.config.ui.agent_stale_secs / 60) " minutes." }
                    } @else {
                        ul {
                            @for a in &stale {
                                li { a href="/ui/agents" { (a.name) } ": last seen " (a.last_seen_at.map_or_else(|| "never".to_owned(), |t| relative(t, now))) }
                            }
                        }
                    }
                }
            },
        ))
    } else {
        None
    };
    let (cards, rest) = wide.unzip();
    let body = html! {
        @if let Some(cards) = cards { (cards) }
        section {
            h2 { "Expiring within 30 days" }
            @if expiring.items.is_empty() {
                p.empty { "Nothing expires within 30 days." }
            } @else {
                div.scroll { table {
                    thead { tr { th { "Certificate" } th { "Expires" } th { "State" } th { "Failures" } th { "Why not renewed" } } }
                    tbody {
                        @for c in &expiring.items {
                            tr {
                                td { a href=(format!("/ui/certificates/{}", c.name)) { (c.name) } }
                                td.nowrap { @if let Some(v) = &c.current_version { (relative(v.not_after, now)) } }
                                td { (badge(c.state.as_str())) }
                                td { (c.consecutive_failures) }
                                td { (why_not_renewed(c, now)) }
                            }
                        }
                    }
                } }
            }
        }
        @if let Some(rest) = rest { (rest) }
    };
    Ok(view::page(&user, Nav::Overview, "Overview", body))
}

/// Why an expiring certificate has no newer version: the engine's last error, or its schedule.
fn why_not_renewed(c: &CertificateResponse, now: time::OffsetDateTime) -> maud::Markup {
    match (&c.last_error, c.renew_after) {
        (Some(e), _) => html! { span.error-text { (e) } },
        (None, Some(t)) if t > now => html! { "renewal scheduled " (relative(t, now)) },
        (None, Some(_)) => html! { "renewal due, not started yet" },
        (None, None) => html! { span.error-text { "no renewal scheduled" } },
    }
}

/// The certificate list's query: every field optional, an empty field is no filter.
#[derive(Debug, Default, Deserialize)]
pub(super) struct CertificatesQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    account: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    expiring: String,
    #[serde(default)]
    cursor: String,
}

impl CertificatesQuery {
    /// The query string of this filter with another cursor.
    fn with_cursor(&self, cursor: uuid::Uuid) -> String {
        let pairs = [
            ("q", self.q.as_str()),
            ("account", self.account.as_str()),
            ("state", self.state.as_str()),
            ("expiring", self.expiring.as_str()),
        ];
        let mut out = String::from("?");
        for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
            out.push_str(k);
            out.push('=');
            out.push_str(&urlencode(v));
            out.push('&');
        }
        out.push_str(&format!("cursor={cursor}"));
        out
    }
}

/// Percent-encodes a query value.
fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn some(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// Page size of the dashboard's lists.
const PAGE: i64 = 50;

/// Certificates: search by name or SAN, filter by account, state and expiry (soonest first),
/// one page at a time. One query for the page and one for its current versions, as the API.
pub(super) async fn certificates(
    State(state): State<AppState>,
    user: UiUser,
    Query(q): Query<CertificatesQuery>,
) -> Result<Response, UiError> {
    let now = crate::now();
    let cursor = some(&q.cursor)
        .map(|c| {
            c.parse()
                .map_err(|_| ApiError::field("cursor", "not a page cursor"))
        })
        .transpose()?;
    let page = certificates::list(
        &state,
        &user.auth,
        &certificates::ListQuery {
            state: some(&q.state),
            account: some(&q.account),
            expiring_within: some(&q.expiring),
            search: some(&q.q),
            cursor,
            limit: Some(PAGE),
            ..Default::default()
        },
    )
    .await?;
    // The account filter's choices, when this caller may read accounts.
    let accounts = if_allowed(accounts::list(&state, &user.auth).await)?;
    let body = html! {
        form.filters method="get" action="/ui/certificates" {
            input type="search" name="q" value=(q.q) placeholder="name or DNS name" aria-label="Search";
            @if !accounts.is_empty() {
                select name="account" aria-label="Account" {
                    option value="" { "any account" }
                    @for a in &accounts {
                        option value=(a.name) selected[a.name == q.account] { (a.name) }
                    }
                }
            }
            select name="state" aria-label="State" {
                option value="" { "any state" }
                @for s in CertificateState::ALL {
                    option value=(s) selected[s.as_str() == q.state] { (s) }
                }
            }
            select name="expiring" aria-label="Expiring within" {
                option value="" { "any expiry (creation order)" }
                @for (v, label) in [("7d", "expiring within 7 days"), ("30d", "within 30 days"), ("90d", "within 90 days"), ("36500d", "issued, soonest expiry first")] {
                    option value=(v) selected[v == q.expiring] { (label) }
                }
            }
            button type="submit" { "Filter" }
            a.button href="/ui/certificates/new" { "New certificate" }
        }
        @if page.items.is_empty() {
            p.empty { "No certificates match." }
        } @else {
            div.scroll { table {
                thead { tr { th { "Name" } th { "DNS names" } th { "State" } th { "Key" } th { "Expires" } th { "Renewal" } } }
                tbody {
                    @for c in &page.items {
                        tr {
                            td { a href=(format!("/ui/certificates/{}", c.name)) { (c.name) } }
                            td { (c.display_names.join(", ")) }
                            td { (badge(c.state.as_str())) }
                            td { (c.key_type.as_str()) }
                            td { @if let Some(v) = &c.current_version { span title=(when(v.not_after)) { (relative(v.not_after, now)) } } @else { "—" } }
                            td { @if c.consecutive_failures > 0 { span.error-text { (c.consecutive_failures) " failed" } } @else { (c.renew_after.map_or_else(|| "—".to_owned(), |t| relative(t, now))) } }
                        }
                    }
                }
            } }
        }
        @if let Some(next) = page.next_cursor {
            p.pager { a href=(format!("/ui/certificates{}", q.with_cursor(next))) { "Next page →" } }
        }
    };
    Ok(view::page(&user, Nav::Certificates, "Certificates", body))
}

/// The form to define a new certificate.
pub(super) async fn new_certificate(
    State(state): State<AppState>,
    user: UiUser,
) -> Result<Response, UiError> {
    let accounts = if_allowed(accounts::list(&state, &user.auth).await)?;
    let body = html! {
        form.stack method="post" action="/ui/certificates" {
            (csrf(&user))
            label { "Name" input type="text" name="name" required pattern="[A-Za-z0-9][A-Za-z0-9._-]{0,63}"; }
            label { "DNS names (one per line)" textarea name="dns_names" rows="4" required {} }
            label { "ACME account"
                @if accounts.is_empty() {
                    input type="text" name="account" required;
                } @else {
                    select name="account" { @for a in &accounts { option value=(a.name) { (a.name) } } }
                }
            }
            label { "Key type"
                select name="key_type" {
                    @for k in KeyType::ALL { option value=(k) selected[*k == KeyType::EcdsaP256] { (k) } }
                }
            }
            button type="submit" { "Create and order" }
        }
    };
    Ok(view::page(
        &user,
        Nav::Certificates,
        "New certificate",
        body,
    ))
}

/// One certificate: names, key, versions, the order event timeline, per agent issued vs
/// installed, and the actions.
pub(super) async fn certificate(
    State(state): State<AppState>,
    user: UiUser,
    Path(name): Path<String>,
) -> Result<Response, UiError> {
    let now = crate::now();
    let detail = certificates::show(&state, &user.auth, &name).await?;
    let c = &detail.certificate;
    let base = format!("/ui/certificates/{}", c.name);
    // Agents to assign to, when this caller may read them.
    let agents = if_allowed(agents::list(&state, &user.auth).await)?;
    let assignable: Vec<_> = agents
        .iter()
        .filter(|a| a.state != AgentState::Revoked)
        .filter(|a| !detail.deployments.iter().any(|d| d.agent_id == a.id))
        .collect();
    let current_id = c.current_version.as_ref().map(|v| v.id);
    let body = html! {
        dl.facts {
            dt { "State" } dd { (badge(c.state.as_str())) }
            dt { "DNS names" } dd { (c.display_names.join(", ")) }
            dt { "Key type" } dd { (c.key_type.as_str()) }
            dt { "Expires" } dd { @if let Some(v) = &c.current_version { (when(v.not_after)) " (" (relative(v.not_after, now)) ")" } @else { "not issued yet" } }
            dt { "Renewal due" } dd { (when_opt(c.renew_after)) }
            @if let Some(e) = &c.last_error { dt { "Last error" } dd.error-text { (e) } }
            dt { "Created" } dd { (when(c.created_at)) " by " (c.created_by.as_deref().unwrap_or("—")) }
        }
        section.actions {
            h2 { "Actions" }
            @if c.state != CertificateState::Retired {
                form method="post" action=(format!("{base}/renew")) {
                    (csrf(&user))
                    button type="submit" { "Renew now" }
                }
                form method="post" action=(format!("{base}/retire")) {
                    (csrf(&user))
                    button.secondary type="submit" { "Retire" }
                }
            }
            @if c.current_version.as_ref().is_some_and(|v| v.revoked_at.is_none()) {
                form.revoke method="post" action=(format!("{base}/revoke")) {
                    (csrf(&user))
                    label { "Reason"
                        select name="reason" {
                            @for r in [RevocationReason::Unspecified, RevocationReason::KeyCompromise, RevocationReason::AffiliationChanged, RevocationReason::Superseded, RevocationReason::CessationOfOperation] {
                                @let text = serde_json::to_value(r).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
                                option value=(text) { (text) }
                            }
                        }
                    }
                    label {
                        span { "Type " code { (c.name) } " to confirm" }
                        input type="text" name="confirm" required autocomplete="off";
                    }
                    button.danger type="submit" { "Revoke the current version" }
                }
            }
            @if !assignable.is_empty() && c.state != CertificateState::Retired {
                form method="post" action=(format!("{base}/assign")) {
                    (csrf(&user))
                    label { "Assign to agent"
                        select name="agent" { @for a in &assignable { option value=(a.name) { (a.name) } } }
                    }
                    button.secondary type="submit" { "Assign" }
                }
            }
        }
        section {
            h2 { "Agents" }
            @if detail.deployments.is_empty() {
                p.empty { "Not assigned to any agent." }
            } @else {
                div.scroll { table {
                    thead { tr { th { "Agent" } th { "State" } th { "Issued (current)" } th { "Installed files" } th { "Served" } th {} } }
                    tbody {
                        @for d in &detail.deployments {
                            tr {
                                td { (d.agent_name) }
                                td { (badge(d.state.as_str())) }
                                td { @if let Some(t) = &d.current_thumbprint { (short_hex(t)) } @else { "—" } }
                                td {
                                    @for f in &d.files {
                                        div { (f.file_name) ": " (f.status.as_str()) " " @if let Some(t) = &f.thumbprint { (short_hex(t)) } @if let Some(e) = &f.error { " " span.error-text { (e) } } }
                                    }
                                }
                                td {
                                    @if d.served.is_empty() { "not probed" }
                                    @for n in &d.served {
                                        div { (n.name) " @ " (n.address) ": " (badge(n.status.as_str())) @if n.lagging_at.is_some() { " " span.error-text { "lagging" } } @if let Some(e) = &n.error { " " span.error-text { (e) } } }
                                    }
                                }
                                td {
                                    form method="post" action=(format!("{base}/unassign")) {
                                        (csrf(&user))
                                        input type="hidden" name="agent" value=(d.agent_name);
                                        button.secondary type="submit" { "Unassign" }
                                    }
                                }
                            }
                        }
                    }
                } }
            }
        }
        section {
            h2 { "Versions" }
            @if detail.versions.is_empty() {
                p.empty { "No version issued yet." }
            } @else {
                div.scroll { table {
                    thead { tr { th { "Serial" } th { "SHA-256 thumbprint" } th { "Valid from" } th { "Valid until" } th { "Status" } } }
                    tbody {
                        @for v in &detail.versions {
                            tr {
                                td { (short_hex(&v.serial)) }
                                td { (short_hex(&v.thumbprint)) }
                                td { (when(v.not_before)) }
                                td { (when(v.not_after)) }
                                td {
                                    @if let Some(r) = v.revoked_at { span.badge.state-revoked { "revoked" } " " (when(r)) }
                                    @else if Some(v.id) == current_id { span.badge.state-active { "current" } }
                                    @else { "superseded" }
                                }
                            }
                        }
                    }
                } }
            }
        }
        section {
            h2 { "Orders" }
            @for (i, o) in detail.orders.iter().enumerate() {
                details.order open[o.finished_at.is_none() || i == 0] {
                    summary { (badge(o.state.as_str())) " " (o.reason.as_str()) " order, " (when(o.created_at)) @if let Some(e) = &o.last_error { " — " span.error-text { (e) } } }
                    ol.events {
                        @for e in &o.events {
                            li { time { (when(e.at)) } " " strong { (e.kind.as_str()) } @if !e.detail.is_empty() { " — " (e.detail) } }
                        }
                    }
                }
            }
        }
    };
    Ok(view::page(&user, Nav::Certificates, &c.name, body))
}

/// Agents: last seen, version, platform, what each holds vs should hold, install errors.
pub(super) async fn agents(
    State(state): State<AppState>,
    user: UiUser,
) -> Result<Response, UiError> {
    let now = crate::now();
    let list = agents::list(&state, &user.auth).await?;
    let body = html! {
        @if list.is_empty() { p.empty { "No agents." } }
        @else { div.scroll { table {
            thead { tr { th { "Agent" } th { "State" } th { "Last seen" } th { "Version" } th { "Platform" } th { "Certificates (should hold → holds)" } th { "Errors" } } }
            tbody {
                @for a in &list {
                    tr {
                        td { (a.name) }
                        td { (badge(a.state.as_str())) }
                        td { (a.last_seen_at.map_or_else(|| "never".to_owned(), |t| relative(t, now))) }
                        td { (a.agent_version.as_deref().unwrap_or("—")) }
                        td { (a.os_name.as_deref().unwrap_or("—")) " " (a.os_build.as_deref().unwrap_or("")) }
                        td { @for d in &a.certificates { div { a href=(format!("/ui/certificates/{}", d.certificate_name)) { (d.certificate_name) } " " (badge(d.state.as_str())) } } }
                        td.error-text { @for e in &a.last_report_errors { div { (e) } } }
                    }
                }
            }
        } } }
    };
    Ok(view::page(&user, Nav::Agents, "Agents", body))
}

/// ACME accounts; external account binding only as bound or unbound.
pub(super) async fn accounts(
    State(state): State<AppState>,
    user: UiUser,
) -> Result<Response, UiError> {
    let list = accounts::list(&state, &user.auth).await?;
    let body = html! {
        div.scroll { table {
            thead { tr { th { "Account" } th { "Directory" } th { "State" } th { "EAB" } th { "Allowed domains" } th { "Last error" } } }
            tbody {
                @for a in &list {
                    tr {
                        td { (a.name) }
                        td { code { (a.directory_url) } }
                        td { (badge(a.state.as_str())) }
                        td { (match a.eab { EabBinding::None => "none", EabBinding::Pending => "unbound", EabBinding::Bound => "bound" }) }
                        td { (a.allowed_domains.join(", ")) }
                        td { @if let Some(e) = &a.last_error { span.error-text { (e) } } @else { "—" } }
                    }
                }
            }
        } }
    };
    Ok(view::page(&user, Nav::Accounts, "ACME accounts", body))
}

/// API tokens, never their secrets.
pub(super) async fn tokens(
    State(state): State<AppState>,
    user: UiUser,
) -> Result<Response, UiError> {
    let list = tokens::list(&state, &user.auth).await?;
    let body = html! {
        div.scroll { table {
            thead { tr { th { "Name" } th { "Scopes" } th { "Domains" } th { "Expires" } th { "Revoked" } th { "Last used" } th { "Created by" } } }
            tbody {
                @for t in &list {
                    tr {
                        td { (t.name) }
                        td { (t.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")) }
                        td { (t.domain_patterns.join(", ")) }
                        td { (when_opt(t.expires_at)) }
                        td { (when_opt(t.revoked_at)) }
                        td { (when_opt(t.last_used_at)) }
                        td { (t.created_by.as_deref().unwrap_or("—")) }
                    }
                }
            }
        } }
    };
    Ok(view::page(&user, Nav::Tokens, "API tokens", body))
}

#[derive(Deserialize)]
pub(super) struct AuditPage {
    after_seq: Option<i64>,
}

/// The audit log, oldest first, paged, with the result of verifying the whole chain.
pub(super) async fn audit(
    State(state): State<AppState>,
    user: UiUser,
    Query(p): Query<AuditPage>,
) -> Result<Response, UiError> {
    let verified = audit::verify(&state, &user.auth).await?;
    let page = audit::list(
        &state,
        &user.auth,
        audit::AuditQuery {
            after_seq: p.after_seq,
            limit: Some(PAGE),
            ..Default::default()
        },
    )
    .await?;
    let body = html! {
        @if verified.intact {
            p.ok { "Hash chain intact: " (verified.events) " events verified." }
        } @else {
            p.error role="alert" { "Hash chain BROKEN at event " (verified.broken_at.unwrap_or(0)) ": " (verified.reason.as_deref().unwrap_or("")) }
        }
        div.scroll { table {
            thead { tr { th { "#" } th { "When" } th { "Actor" } th { "Action" } th { "Subject" } th { "Outcome" } th { "Detail" } th { "Source" } } }
            tbody {
                @for e in &page.items {
                    tr {
                        td { (e.seq) }
                        td { (when(e.at)) }
                        td { code { (e.actor) } }
                        td { (e.action) }
                        td { code { (e.subject) } }
                        td { (badge(&e.outcome)) }
                        td { (e.detail) }
                        td { (e.source.as_deref().unwrap_or("—")) }
                    }
                }
            }
        } }
        @if let Some(next) = page.next_after_seq {
            p.pager { a href=(format!("/ui/audit?after_seq={next}")) { "Next page →" } }
        }
    };
    Ok(view::page(&user, Nav::Audit, "Audit log", body))
}
