//! One run of one order job, from wherever it stopped to the next stop: done, failed, parked or
//! retried. Every step is persisted before the network call that depends on it (order URL
//! before authorizations, key and CSR before finalize), and a resumed job re-reads the order
//! from the CA instead of trusting its own memory, so a crash at any point resumes the same
//! order and never finalizes twice or with a second key. Within one run the order is opened
//! once ([`IssuerOrder`]) and the CA's answers are reused: no step re-reads it by URL.

use std::sync::Arc;
use std::time::Duration;

use crate::acme::{
    AcmeError, CaAuthorization, CaAuthzStatus, CaChallenge, CaOrder, CaOrderStatus, Issuer,
    IssuerOrder, ari_cert_id,
};
use crate::db::solvers::NewChallengeResponse;
use crate::db::versions::NewVersion;
use crate::domain::issuance::{self, LeafInfo, Wait};
use crate::domain::renewal;
use crate::engine::{EngineError, Shared};
use crate::model::{
    Account, Certificate, CertificateState, Order, OrderEventKind, OrderId, OrderReason,
    OrderState, VersionId,
};
use crate::now;
use certkeep_api_types::notification::NotificationEvent;

/// How a run ended when it went as planned.
#[derive(Debug)]
pub(super) enum Outcome {
    /// The version is stored and the order is done.
    Done,
    /// Resume at `until` without holding a worker.
    Park {
        until: time::OffsetDateTime,
        why: String,
    },
}

/// Why a run stopped before the order was done or parked.
#[derive(Debug)]
pub(super) enum Stop {
    /// The order failed for good, with an operator-facing message. The only way a run says so.
    Failed(String),
    /// The CA answered with an error or could not be reached: retried when transient, else
    /// the order fails with it.
    Acme(AcmeError),
    /// Storage failed: retried.
    Storage(crate::db::Error),
    /// Another process owns the job now: write nothing more.
    LeaseLost,
}

impl From<AcmeError> for Stop {
    fn from(e: AcmeError) -> Self {
        Stop::Acme(e)
    }
}

impl From<crate::db::Error> for Stop {
    fn from(e: crate::db::Error) -> Self {
        Stop::Storage(e)
    }
}

impl From<EngineError> for Stop {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Acme(e) => Stop::Acme(e),
            EngineError::Storage(e) => Stop::Storage(e),
        }
    }
}

/// A fenced write that affected no row means the lease is gone.
fn fenced(written: bool) -> Result<(), Stop> {
    if written {
        Ok(())
    } else {
        Err(Stop::LeaseLost)
    }
}

fn order_state(status: CaOrderStatus) -> OrderState {
    match status {
        CaOrderStatus::Pending => OrderState::Pending,
        CaOrderStatus::Ready => OrderState::Ready,
        CaOrderStatus::Processing => OrderState::Processing,
        CaOrderStatus::Valid => OrderState::Valid,
        CaOrderStatus::Invalid => OrderState::Failed,
    }
}

/// Everything one run needs.
struct Job<'a> {
    shared: &'a Shared,
    order: Order,
    cert: Certificate,
    account: Account,
    issuer: Arc<dyn Issuer>,
    polls: u32,
    /// Challenges presented in this run (`dns-01 for example.edu`), for the history.
    presented: Vec<String>,
}

/// Runs `order` (leased by this process) until it stops, then removes every challenge response
/// the order has published (in this run or in one that crashed) and not yet removed, unless the
/// lease was lost.
pub(super) async fn run(shared: &Shared, order: Order) -> Result<Outcome, Stop> {
    let id = order.id;
    let outcome = run_job(shared, order).await;
    let last_run = matches!(outcome, Ok(Outcome::Done) | Err(Stop::Failed(_)));
    if !matches!(outcome, Err(Stop::LeaseLost)) {
        remove_responses(shared, id, last_run).await;
    }
    outcome
}

/// Removes the challenge responses `order` published, recording each step in its history.
/// A response whose removal fails stays recorded for the job's next run, unless this was its
/// last run: then it is forgotten (never served again by the http-01 responder) and the
/// history says what to remove by hand.
pub(super) async fn remove_responses(shared: &Shared, order: OrderId, last_run: bool) {
    let db = &shared.state.db;
    let responses = match db.challenge_responses(order).await {
        Ok(responses) => responses,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the order's challenge responses; they are removed when it resumes");
            return;
        }
    };
    for response in responses {
        let challenge = CaChallenge {
            kind: response.kind.clone(),
            url: response.url.clone(),
            token: response.token.clone(),
            pending: false,
            key_authorization: response.key_authorization.clone(),
            error: None,
        };
        let removed = match shared.solvers.for_cleanup(&response.name, &response.kind) {
            Some(solver) => solver.cleanup(&response.name, &challenge).await,
            None => Err(format!(
                "no {} solver is configured for it any more",
                response.kind
            )),
        };
        let (kind, detail, forget) = match removed {
            Ok(detail) => (OrderEventKind::ChallengeCleaned, detail, true),
            Err(e) => {
                tracing::warn!(error = %e, challenge.name = %response.name, "cannot remove a challenge response");
                let then = if last_run {
                    "remove it by hand"
                } else {
                    "retried when the order resumes"
                };
                (
                    OrderEventKind::ChallengeCleanupFailed,
                    format!("{} for {}: {e}; {then}", response.kind, response.name),
                    last_run,
                )
            }
        };
        let recorded = async {
            db.add_order_event(order, kind, &detail, now()).await?;
            if forget {
                db.delete_challenge_response(response.id).await?;
            }
            Ok::<_, crate::db::Error>(())
        };
        if let Err(e) = recorded.await {
            tracing::warn!(error = %e, "cannot record the removal of a challenge response");
        }
    }
}

async fn run_job(shared: &Shared, order: Order) -> Result<Outcome, Stop> {
    let db = &shared.state.db;
    let cert = db.certificate(order.certificate_id).await?;
    if cert.state == CertificateState::Retired {
        return Err(Stop::Failed("the certificate is retired".into()));
    }
    let account = db.account(order.account_id).await?;
    issuance::check_scope(&account.name, &account.allowed_domains, &cert.dns_names)
        .map_err(Stop::Failed)?;
    let issuer = shared.issuer(&account).await?;
    if order.state == OrderState::Queued {
        db.set_certificate_state(
            cert.id,
            issuance::state_while_ordering(&cert),
            cert.last_error.as_deref(),
            now(),
        )
        .await?;
    }
    let mut job = Job {
        shared,
        order,
        cert,
        account,
        issuer,
        polls: 0,
        presented: Vec::new(),
    };
    job.drive().await
}

impl Job<'_> {
    fn owner(&self) -> &str {
        &self.shared.owner
    }

    async fn event(&self, kind: OrderEventKind, detail: &str) -> Result<(), Stop> {
        self.shared
            .state
            .db
            .add_order_event(self.order.id, kind, detail, now())
            .await?;
        Ok(())
    }

    /// Moves the order to `state` (stored, fenced by the lease, then in memory) unless it is
    /// there already; says whether it moved. The one way a run advances the order's state
    /// after the CA order was created.
    async fn advance(&mut self, state: OrderState) -> Result<bool, Stop> {
        if self.order.state == state {
            return Ok(false);
        }
        fenced(
            self.shared
                .state
                .db
                .set_order_state(self.order.id, self.owner(), state, now())
                .await?,
        )?;
        self.order.state = state;
        Ok(true)
    }

    /// Creates the CA order, or re-reads the one already created.
    async fn open(&mut self) -> Result<Box<dyn IssuerOrder>, Stop> {
        if let Some(url) = &self.order.order_url {
            let ca = self.issuer.order(url).await?;
            self.event(
                OrderEventKind::Resumed,
                &format!("order {url} is {:?} at the CA", ca.view().status),
            )
            .await?;
            return Ok(ca);
        }
        if now() >= self.order.deadline_at {
            return Err(Stop::Failed(
                "the order's deadline passed before it could be placed".into(),
            ));
        }
        let replaces = self.replaces().await?;
        let opened = self
            .issuer
            .new_order(&self.cert.dns_names, replaces.as_deref())
            .await?;
        let ca = opened.view();
        let db = &self.shared.state.db;
        fenced(
            db.record_order_created(
                self.order.id,
                self.owner(),
                &ca.url,
                replaces.as_deref(),
                order_state(ca.status),
                now(),
            )
            .await?,
        )?;
        self.order.order_url = Some(ca.url.clone());
        self.event(
            OrderEventKind::Created,
            &format!("order {} is {:?} at the CA", ca.url, ca.status),
        )
        .await?;
        Ok(opened)
    }

    /// The ARI id of the version being renewed, only when the CA advertises `renewalInfo`.
    async fn replaces(&self) -> Result<Option<String>, Stop> {
        let (true, OrderReason::Renewal, Some(current)) = (
            self.issuer.supports_renewal_info(),
            self.order.reason,
            self.cert.current_version_id,
        ) else {
            return Ok(None);
        };
        let version = self.shared.state.db.version(current).await?;
        let leaf = issuance::parse_chain(&version.chain_pem).map_err(AcmeError::Internal)?;
        Ok(ari_cert_id(&leaf.leaf_der).ok())
    }

    /// Follows the CA's order status until the run stops.
    async fn drive(&mut self) -> Result<Outcome, Stop> {
        let mut opened = self.open().await?;
        let order = &mut *opened;
        let mut ca = order.view().clone();
        let mut authorized = false;
        let mut ledgered = false;
        let mut removed = false;
        loop {
            if ca.status != CaOrderStatus::Pending && !removed {
                // Validation is over: remove the responses before the order can be completed,
                // so no stop after completion can leave them behind.
                remove_responses(self.shared, self.order.id, false).await;
                removed = true;
            }
            match ca.status {
                CaOrderStatus::Pending => {
                    if !authorized {
                        self.authorize(order).await?;
                        authorized = true;
                    }
                    if let Some(stop) = self
                        .wait(ca.retry_after, "waiting for the CA to validate")
                        .await?
                    {
                        return Ok(stop);
                    }
                    ca = order.refresh().await?;
                    let validated =
                        !matches!(ca.status, CaOrderStatus::Pending | CaOrderStatus::Invalid);
                    if validated && !self.presented.is_empty() {
                        self.event(
                            OrderEventKind::ChallengesValid,
                            &format!("the CA validated {}", self.presented.join(", ")),
                        )
                        .await?;
                    }
                }
                CaOrderStatus::Ready => {
                    if !ledgered {
                        self.ledger(order).await?;
                        ledgered = true;
                    }
                    // Waiting on processing is a new wait: its back-off starts over.
                    self.polls = 0;
                    ca = self.finalize(order).await?;
                }
                CaOrderStatus::Processing => {
                    if self.advance(OrderState::Processing).await? {
                        let hint = ca
                            .retry_after
                            .map(|d| format!(" (Retry-After {}s)", d.as_secs()))
                            .unwrap_or_default();
                        self.event(
                            OrderEventKind::Processing,
                            &format!("the CA is processing the order{hint}"),
                        )
                        .await?;
                    }
                    if let Some(stop) = self
                        .wait(ca.retry_after, "the CA is still processing")
                        .await?
                    {
                        return Ok(stop);
                    }
                    ca = order.refresh().await?;
                }
                CaOrderStatus::Valid => return self.download(order).await,
                CaOrderStatus::Invalid => return self.invalid(order, ca.error).await,
            }
        }
    }

    /// Every authorization of a `ready` order is valid (solved, reused or pre-validated):
    /// their lapse times go into the domain-validation ledger. The authorizations are read
    /// for that only when this run solved some or the ledger does not know every name's
    /// validation well beyond the warning horizon ([`super::ledger::knows`]).
    async fn ledger(&self, order: &mut dyn IssuerOrder) -> Result<(), Stop> {
        let (shared, account) = (self.shared, self.account.id);
        if self.presented.is_empty()
            && super::ledger::knows(shared, account, &self.cert.dns_names).await?
        {
            return Ok(());
        }
        let authzs = order.authorizations().await?;
        super::ledger::record(shared, account, &authzs).await?;
        Ok(())
    }

    /// Skips valid authorizations untouched and hands pending ones to their solver.
    async fn authorize(&mut self, order: &mut dyn IssuerOrder) -> Result<(), Stop> {
        let authzs = order.authorizations().await?;
        let mut valid = Vec::new();
        for authz in authzs {
            match authz.status {
                CaAuthzStatus::Valid => valid.push(authz.name),
                CaAuthzStatus::Pending => self.solve(order, authz).await?,
                CaAuthzStatus::Invalid | CaAuthzStatus::Other => {
                    return Err(Stop::Failed(format!(
                        "the authorization for {} is not usable ({:?})",
                        authz.name, authz.status
                    )));
                }
            }
        }
        if !valid.is_empty() {
            self.event(
                OrderEventKind::PreValidated,
                &format!("authorizations already valid: {}", valid.join(", ")),
            )
            .await?;
        }
        Ok(())
    }

    /// Answers one pending authorization: picks the solver (most specific pattern; dns-01 only
    /// for wildcards), records the response before it is published, presents it and tells the
    /// CA. Each step goes into the order history.
    async fn solve(
        &mut self,
        order: &mut dyn IssuerOrder,
        authz: CaAuthorization,
    ) -> Result<(), Stop> {
        let name = &authz.name;
        let choice = self
            .shared
            .solvers
            .choose(name, &authz.challenges)
            .map_err(Stop::Failed)?;
        let challenge = &authz.challenges[choice.index];
        let what = format!("{} for {name}", challenge.kind);
        self.event(
            OrderEventKind::ChallengeSolver,
            &format!(
                "{what}: {} (pattern {})",
                choice.solver.describe(),
                choice.pattern
            ),
        )
        .await?;
        self.shared
            .state
            .db
            .record_challenge_response(
                &NewChallengeResponse {
                    order_id: self.order.id,
                    name,
                    kind: &challenge.kind,
                    url: &challenge.url,
                    token: &challenge.token,
                    key_authorization: &challenge.key_authorization,
                },
                now(),
            )
            .await?;
        self.presented.push(what.clone());
        let detail = choice
            .solver
            .present(name, challenge)
            .await
            .map_err(|e| Stop::Failed(format!("{what} could not be presented: {e}")))?;
        self.event(
            OrderEventKind::ChallengePresented,
            &format!("{what}: {detail}"),
        )
        .await?;
        if challenge.pending {
            order.challenge_ready(&authz.url, &challenge.kind).await?;
            self.event(
                OrderEventKind::ChallengeAnswered,
                &format!("{what}: the CA was told to validate"),
            )
            .await?;
        }
        Ok(())
    }

    /// Fails an order the CA marked invalid, with the problem document of each invalid
    /// challenge (each also recorded as a `challenge-invalid` event).
    async fn invalid(
        &self,
        order: &mut dyn IssuerOrder,
        order_error: Option<String>,
    ) -> Result<Outcome, Stop> {
        let mut problems = Vec::new();
        for authz in order.authorizations().await? {
            for challenge in &authz.challenges {
                if let Some(problem) = &challenge.error {
                    let detail = format!("{} for {}: {problem}", challenge.kind, authz.name);
                    self.event(OrderEventKind::ChallengeInvalid, &detail)
                        .await?;
                    problems.push(detail);
                }
            }
        }
        Err(Stop::Failed(if problems.is_empty() {
            format!(
                "the CA marked the order invalid: {}",
                order_error.as_deref().unwrap_or("no error given")
            )
        } else {
            format!(
                "the CA marked the challenge invalid: {}",
                problems.join("; ")
            )
        }))
    }

    /// Finalizes a `ready` order with the stored CSR (made and stored first if there is none).
    async fn finalize(&mut self, order: &mut dyn IssuerOrder) -> Result<CaOrder, Stop> {
        let db = &self.shared.state.db;
        let csr = match &self.order.csr_der {
            Some(csr) if self.order.has_key => csr.clone(),
            _ => {
                let names = self.cert.dns_names.clone();
                let reusable = self.reusable_key().await?;
                let reused = reusable.is_some();
                let made = match reusable {
                    Some(key) => super::keys::csr_for(key, names).await?,
                    None => super::keys::generate(self.cert.key_type, names).await?,
                };
                let stored = db
                    .store_order_key(
                        &self.shared.state.secrets,
                        self.order.id,
                        self.owner(),
                        &made.key_pkcs8_der,
                        &made.csr_der,
                        now(),
                    )
                    .await?;
                fenced(stored)?;
                self.order.has_key = true;
                self.order.csr_der = Some(made.csr_der.clone());
                let whose = if reused { "current version's" } else { "new" };
                self.event(
                    OrderEventKind::KeyStored,
                    &format!("{} key ({whose}) and CSR stored", self.cert.key_type),
                )
                .await?;
                made.csr_der
            }
        };
        self.advance(OrderState::Ready).await?;
        self.event(OrderEventKind::Finalizing, "sending the CSR")
            .await?;
        match order.finalize(&csr).await {
            Ok(ca) => Ok(ca),
            Err(e) => {
                self.event(OrderEventKind::FinalizeFailed, &e.to_string())
                    .await?;
                // Re-read the order before anything else: the CA may have taken the CSR.
                match order.refresh().await {
                    Ok(ca) if ca.status != CaOrderStatus::Ready => Ok(ca),
                    _ => Err(Stop::Acme(e)),
                }
            }
        }
    }

    /// The current version's key, when the certificate reuses keys, this order renews (never a
    /// first order or a re-issue after revocation) and the key is still of the wanted type.
    async fn reusable_key(&self) -> Result<Option<crate::secrets::SecretBytes>, Stop> {
        let (true, OrderReason::Renewal | OrderReason::Manual, Some(current)) = (
            self.cert.reuse_key,
            self.order.reason,
            self.cert.current_version_id,
        ) else {
            return Ok(None);
        };
        let state = &self.shared.state;
        let version = state.db.version(current).await?;
        let leaf = issuance::parse_chain(&version.chain_pem).map_err(AcmeError::Internal)?;
        if version.revoked_at.is_some()
            || crate::domain::lifecycle::leaf_key_type(&leaf.leaf_der) != Some(self.cert.key_type)
        {
            return Ok(None);
        }
        Ok(Some(state.db.version_key(&state.secrets, current).await?))
    }

    /// Waits for the CA: inline for short waits, parked for long ones, failed past the deadline.
    async fn wait(
        &mut self,
        retry_after: Option<Duration>,
        why: &str,
    ) -> Result<Option<Outcome>, Stop> {
        let delay = issuance::poll_delay(
            retry_after,
            self.polls,
            self.shared.state.config.ca_limits.max_retry_after(),
        );
        self.polls += 1;
        let max_inline = Duration::from_secs(self.shared.state.config.engine.max_inline_wait_secs);
        match issuance::wait_decision(now(), delay, max_inline, self.order.deadline_at) {
            Wait::Inline(d) => {
                metrics::histogram!(crate::metrics::ACME_POLL_WAIT, "directory" => self.account.directory_url.clone())
                    .record(d);
                tokio::time::sleep(d).await;
                Ok(None)
            }
            Wait::Park(until) => Ok(Some(Outcome::Park {
                until,
                why: why.to_owned(),
            })),
            Wait::Expired => Err(Stop::Failed(format!("the order's deadline passed: {why}"))),
        }
    }

    /// Downloads the chain of a valid order and stores it as the new current version, only if
    /// it is the certificate that was asked for: exactly the requested names, the stored key.
    async fn download(&mut self, order: &mut dyn IssuerOrder) -> Result<Outcome, Stop> {
        self.advance(OrderState::Valid).await?;
        let chain = order.certificate().await?;
        let url = &order.view().url;
        let leaf = issuance::parse_chain(&chain).map_err(Stop::Failed)?;
        issuance::check_leaf_names(&self.cert.dns_names, &leaf).map_err(Stop::Failed)?;
        let state = &self.shared.state;
        let key = state.db.order_key(&state.secrets, self.order.id).await.map_err(|e| {
            Stop::Failed(format!("the order is valid at the CA but its stored key is missing ({e}); the certificate cannot be used"))
        })?;
        issuance::check_leaf_key(&key, &leaf).map_err(Stop::Failed)?;
        let renew_after = self.renewal_time(&leaf).await;
        let version = NewVersion {
            id: VersionId::new(),
            certificate_id: self.cert.id,
            order_id: Some(self.order.id),
            chain_pem: &chain,
            key_pkcs8_der: &key,
            serial: &leaf.serial,
            thumbprint: &leaf.thumbprint,
            dns_names: &leaf.dns_names,
            not_before: leaf.not_before,
            not_after: leaf.not_after,
        };
        let kind = match self.cert.current_version_id {
            None => NotificationEvent::CertificateIssued,
            Some(_) => NotificationEvent::CertificateRenewed,
        };
        let detail = format!("valid until {}", leaf.not_after);
        let event = crate::notify::events::certificate(
            kind,
            &self.cert,
            &leaf.dns_names,
            Some(&detail),
            None,
            now(),
        );
        fenced(
            state
                .db
                .complete_order(
                    &state.secrets,
                    self.owner(),
                    &version,
                    &event,
                    renew_after,
                    now(),
                )
                .await?,
        )?;
        state
            .db
            .add_order_event(
                self.order.id,
                OrderEventKind::Issued,
                &format!(
                    "serial {}, valid until {}, {} certificates in the chain; renewal after {renew_after}",
                    leaf.serial, leaf.not_after, leaf.chain_len
                ),
                now(),
            )
            .await?;
        tracing::info!(certificate.id = %self.cert.id, certificate.serial = %leaf.serial, order.url = %url, "certificate issued");
        Ok(Outcome::Done)
    }

    /// When the new version is renewed: by the certificate's policy, or earlier inside the ARI
    /// window when the CA offers one (never later), with jitter either way.
    async fn renewal_time(&self, leaf: &LeafInfo) -> time::OffsetDateTime {
        let jitter: f64 = rand::random();
        let by_policy = renewal::renew_at(
            leaf.not_before,
            leaf.not_after,
            &self.cert.policy,
            self.shared.state.config.engine.renew_fraction,
            jitter,
        );
        if self.issuer.supports_renewal_info() {
            let window = match ari_cert_id(&leaf.leaf_der) {
                Ok(id) => self.issuer.renewal_window(&id).await,
                Err(e) => Err(e),
            };
            match window {
                Ok(w) if renewal::ari_window_applies(w.end, leaf.not_before) => {
                    return renewal::ari_renew_at(
                        w.start,
                        w.end,
                        jitter,
                        leaf.not_before,
                        by_policy,
                    );
                }
                Ok(w) => {
                    tracing::warn!(account.name = %self.account.name, window.end = %w.end, "the CA's ARI window ended before this certificate began; renewing by policy")
                }
                Err(e) => {
                    tracing::warn!(account.name = %self.account.name, error = %e, "no ARI window; renewing by policy")
                }
            }
        }
        by_policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_are_not_acme_errors() {
        let stop: Stop = crate::db::Error::NotFound.into();
        assert!(matches!(stop, Stop::Storage(_)), "{stop:?}");
        let stop: Stop = EngineError::Storage(crate::db::Error::NotFound).into();
        assert!(matches!(stop, Stop::Storage(_)), "{stop:?}");
        let stop: Stop = EngineError::Acme(AcmeError::Internal("x".into())).into();
        assert!(matches!(stop, Stop::Acme(_)), "{stop:?}");
    }
}
