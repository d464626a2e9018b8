//! One sync (manifest, downloads, verification, installation, report) and the `run` loop.
//!
//! Network calls are async; installers run on a blocking thread. Nothing here logs a password,
//! key or PFX bytes.

use std::{
    collections::{HashMap, HashSet},
    fs,
    future::Future,
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context, ensure};
use certkeep_api_types::{
    agent::{
        DeploymentStatus, FileReport, Manifest, ManifestEntry, ProbeReport, ProbeResult, Report,
        TargetSettings,
    },
    pfx::{PfxError, open_pfx},
};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::{
    client::{AgentClient, ManifestFetch},
    config::Config,
    format_time, host,
    identity::{self, Identity},
    install::{self, Bundle, Installer, MANIFEST_FILE, file_report},
    now, poll, probe,
    reload::{self, RELOAD_TIMEOUT},
    state::{self, Etag, LastSync, SyncState},
};

/// Result of one sync.
#[derive(Debug, Default)]
pub struct SyncOutcome {
    /// The server answered 304: nothing changed, nothing written, nothing reported.
    pub unchanged: bool,
    /// One report per file (or directory) the agent manages.
    pub files: Vec<FileReport>,
    /// Errors not tied to one file.
    pub errors: Vec<String>,
    /// Files in the targets that are not ours and were left alone.
    pub notes: Vec<String>,
    /// The manifest's targets, described (empty after a 304).
    pub targets: Vec<String>,
    /// What the probes saw after installing (empty after a 304).
    pub probes: Vec<ProbeResult>,
    /// The manifest's probe interval (none after a 304).
    pub probe_interval: Option<Duration>,
    /// The report reached the server.
    pub reported: bool,
}

/// What [`probe_once`] saw.
#[derive(Debug)]
pub struct ProbeOutcome {
    /// One result per target, address and name.
    pub probes: Vec<ProbeResult>,
    /// The manifest's probe interval.
    pub interval: Duration,
}

impl SyncOutcome {
    /// True when every file is current and nothing failed.
    pub fn is_success(&self) -> bool {
        self.errors.is_empty()
            && (self.unchanged || self.reported)
            && self
                .files
                .iter()
                .all(|f| f.status != DeploymentStatus::Failed)
    }

    /// Summary for `status`; a 304 keeps the file counts and notes of the run before.
    fn summary(&self, previous: Option<LastSync>) -> LastSync {
        let count = |status| self.files.iter().filter(|f| f.status == status).count();
        let (installed, failed, kept, notes, targets) = match previous {
            Some(p) if self.unchanged => (p.installed, p.failed, p.kept, p.notes, p.targets),
            _ => (
                count(DeploymentStatus::Installed),
                count(DeploymentStatus::Failed),
                count(DeploymentStatus::Kept),
                self.notes.clone(),
                self.targets.clone(),
            ),
        };
        LastSync {
            at: now(),
            success: self.is_success(),
            unchanged: self.unchanged,
            installed,
            failed,
            kept,
            notes,
            targets,
            errors: self
                .files
                .iter()
                .filter_map(|f| {
                    let target = f.target.as_deref().unwrap_or_default();
                    f.error
                        .as_ref()
                        .map(|e| format!("{target}/{}: {e}", f.file_name))
                })
                .chain(self.errors.iter().cloned())
                .collect(),
        }
    }
}

/// Syncs once: renews the agent certificate if due, fetches the manifest (conditionally),
/// installs what changed and reports.
///
/// `Err` means nothing could be attempted (not enrolled, certificate expired, server
/// unreachable); per-file failures are in the outcome.
pub async fn sync_once(config: &Config) -> anyhow::Result<SyncOutcome> {
    let _lock = state::lock(&config.state_dir)?;
    let mut identity = Identity::load(&config.state_dir)?;
    identity.ensure_valid(now())?;
    let mut client = connect(config, &identity)?;
    let mut errors = Vec::new();
    if poll::renewal_due(identity.not_before, identity.not_after, now()) {
        match identity::renew(&client, &identity, &config.state_dir).await {
            Ok(renewed) => {
                identity = renewed;
                client = connect(config, &identity)?;
            }
            Err(e) => errors.push(format!(
                "agent certificate renewal failed (it expires at {}): {e:#}",
                format_time(identity.not_after)
            )),
        }
    }
    let mut state = SyncState::load(&config.state_dir);
    let outcome = deliver(&client, &identity, &mut state, errors).await?;
    for file in outcome
        .files
        .iter()
        .filter(|f| f.status != DeploymentStatus::Installed)
    {
        tracing::warn!(
            file = %file.file_name,
            status = ?file.status,
            error = file.error.as_deref().unwrap_or_default(),
            "not installed"
        );
    }
    for error in &outcome.errors {
        tracing::warn!(error = %error, "sync error");
    }
    for note in &outcome.notes {
        tracing::info!(note = %note, "left alone");
    }
    if !outcome.is_success() {
        state.etag = None;
    }
    state.last_sync = Some(outcome.summary(state.last_sync.take()));
    state.save(&config.state_dir)?;
    Ok(outcome)
}

/// A client of the configured server presenting `identity`.
fn connect(config: &Config, identity: &Identity) -> anyhow::Result<AgentClient> {
    let ca_pem = fs::read(&config.ca_file)
        .with_context(|| format!("cannot read CA file {}", config.ca_file.display()))?;
    Ok(AgentClient::new(
        &config.server,
        &ca_pem,
        Some(&identity.client_pem()),
    )?)
}

/// Probes what the targets serve and reports it, without installing anything: fetches the
/// whole manifest (no ETag) for the targets and names.
pub async fn probe_once(config: &Config) -> anyhow::Result<ProbeOutcome> {
    let identity = {
        let _lock = state::lock(&config.state_dir)?;
        Identity::load(&config.state_dir)?
    };
    identity.ensure_valid(now())?;
    let client = connect(config, &identity)?;
    let ManifestFetch::Changed { manifest, .. } = client.manifest(None).await? else {
        anyhow::bail!("the server answered 304 to a manifest request without an ETag");
    };
    let probes = probe::probe(&manifest).await;
    client
        .probe_report(&ProbeReport {
            probes: probes.clone(),
        })
        .await
        .context("probe report not delivered")?;
    Ok(ProbeOutcome {
        probes,
        interval: Duration::from_secs(manifest.probe_interval_secs),
    })
}

/// Repeats [`sync_once`] every interval (±10 %), backing off after failures, until `shutdown`;
/// between syncs that change nothing, probes the targets every probe interval.
pub async fn run(config: &Config, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut failures = 0;
    // Probe once at start (a 304 does not probe), then every probe interval.
    let mut next_probe = tokio::time::Instant::now();
    loop {
        let result = tokio::select! {
            result = sync_once(config) => result,
            () = &mut shutdown => break,
        };
        if let Ok(outcome) = &result
            && let Some(interval) = outcome.probe_interval
        {
            next_probe = tokio::time::Instant::now() + interval;
        }
        if next_probe <= tokio::time::Instant::now() {
            let probed = tokio::select! {
                probed = probe_once(config) => probed,
                () = &mut shutdown => break,
            };
            match probed {
                Ok(p) => next_probe = tokio::time::Instant::now() + p.interval,
                Err(e) => tracing::warn!(error = format!("{e:#}"), "probe failed"),
            }
        }
        let succeeded = match result {
            Ok(outcome) => {
                tracing::info!(
                    unchanged = outcome.unchanged,
                    files = outcome.files.len(),
                    success = outcome.is_success(),
                    "sync finished"
                );
                outcome.is_success()
            }
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "sync failed");
                false
            }
        };
        failures = if succeeded { 0 } else { failures + 1 };
        let base = if succeeded {
            config.interval
        } else {
            poll::backoff(failures, config.interval)
        };
        let wait = poll::jittered(base, rand::random());
        tracing::debug!(wait_secs = wait.as_secs(), "next sync");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut shutdown => break,
        }
    }
    tracing::info!("stopped");
}

/// Folders of the file-based targets of `manifest`.
fn target_dirs(manifest: &Manifest) -> Vec<PathBuf> {
    manifest
        .targets
        .iter()
        .filter_map(|t| match &t.settings {
            TargetSettings::Ccs { path } | TargetSettings::Directory { path, .. } => {
                Some(PathBuf::from(path))
            }
            TargetSettings::WindowsStore { .. } => None,
        })
        .collect()
}

/// Fetches the manifest, installs what changed into each target and reports, along with
/// earlier `errors`. A failing target does not stop the others.
async fn deliver(
    client: &AgentClient,
    identity: &Identity,
    state: &mut SyncState,
    mut errors: Vec<String>,
) -> anyhow::Result<SyncOutcome> {
    let mut ours = true;
    for dir in state.etag.iter().flat_map(|e| &e.targets) {
        ours &= tokio::fs::try_exists(dir.join(MANIFEST_FILE))
            .await
            .unwrap_or(false);
    }
    let etag = state
        .etag
        .as_ref()
        .filter(|e| ours && e.agent_id == identity.agent_id)
        .map(|e| e.value.clone());
    let (manifest, new_etag) = match client.manifest(etag.as_deref()).await? {
        ManifestFetch::NotModified => {
            return Ok(SyncOutcome {
                unchanged: true,
                errors,
                ..SyncOutcome::default()
            });
        }
        ManifestFetch::Changed { manifest, etag } => (manifest, etag),
    };
    ensure!(
        manifest.agent_id == identity.agent_id,
        "the server sent the manifest of agent {} to agent {}",
        manifest.agent_id,
        identity.agent_id
    );
    let dirs = target_dirs(&manifest);
    let password = if manifest.certificates.is_empty() {
        Zeroizing::new(String::new())
    } else {
        client
            .pfx_password()
            .await
            .context("cannot fetch the PFX password")?
    };
    let delivered = install_manifest(client, &manifest, password).await?;
    errors.extend(delivered.errors);

    let (os_name, os_build) = host::os_info();
    let report = Report {
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        os_name,
        os_build,
        files: delivered.files,
        errors,
    };
    let reported = client.report(&report).await;
    let probes = probe::probe(&manifest).await;
    let probe_reported = client
        .probe_report(&ProbeReport {
            probes: probes.clone(),
        })
        .await;
    let mut outcome = SyncOutcome {
        unchanged: false,
        files: report.files,
        errors: report.errors,
        notes: delivered.notes,
        probes,
        probe_interval: Some(Duration::from_secs(manifest.probe_interval_secs)),
        targets: manifest
            .targets
            .iter()
            .map(|t| format!("{}: {}", t.name, t.settings.describe()))
            .collect(),
        reported: reported.is_ok(),
    };
    if let Err(e) = reported {
        outcome.errors.push(format!("report not delivered: {e}"));
    }
    if let Err(e) = probe_reported {
        outcome
            .errors
            .push(format!("probe report not delivered: {e}"));
    }
    state.etag = new_etag.map(|value| Etag {
        value,
        agent_id: identity.agent_id,
        targets: dirs,
    });
    Ok(outcome)
}

/// Reports, errors and notes of one sync over every target.
#[derive(Default)]
struct Delivered {
    files: Vec<FileReport>,
    errors: Vec<String>,
    notes: Vec<String>,
}

/// Installs the manifest into each of its targets in turn: recover, download what changed
/// (each PFX once per sync), install, finish, then the target's reload command.
async fn install_manifest(
    client: &AgentClient,
    manifest: &Manifest,
    password: Zeroizing<String>,
) -> anyhow::Result<Delivered> {
    let mut out = Delivered::default();
    for entry in manifest
        .certificates
        .iter()
        .filter(|e| e.targets.is_empty())
    {
        out.errors.push(format!(
            "certificate {} goes to no target of this agent; add one with `certkeep agent target add`",
            entry.certificate_name
        ));
    }
    let mut downloads: HashMap<String, Result<Vec<u8>, String>> = HashMap::new();
    for target in &manifest.targets {
        let entries: Vec<ManifestEntry> = manifest
            .certificates
            .iter()
            .filter(|e| e.targets.contains(&target.name))
            .cloned()
            .collect();
        let mut files = Vec::new();
        let mut errors = Vec::new();
        match install::for_target(target, password.clone()) {
            Err(error) => {
                for entry in &entries {
                    files.extend(install::failed_reports(entry, &entry.file_names, &error));
                }
                errors.push(error);
            }
            Ok(installer) => {
                let (pass, wanted) = blocking(move || Pass::prepare(installer, entries)).await?;
                let mut fetched = Vec::with_capacity(wanted.len());
                for entry in wanted {
                    if !downloads.contains_key(&entry.download_path) {
                        let pfx = client
                            .download(&entry.download_path)
                            .await
                            .map_err(|e| format!("download failed: {e}"));
                        downloads.insert(entry.download_path.clone(), pfx);
                    }
                    fetched.push((entry.clone(), downloads[&entry.download_path].clone()));
                }
                let password = password.clone();
                let done = blocking(move || pass.complete(fetched, &password)).await?;
                files.extend(done.files);
                errors.extend(done.errors);
                out.notes.extend(done.notes);
                if let Some(argv) = done.reload
                    && let Err(e) = reload::run(&argv, RELOAD_TIMEOUT).await
                {
                    errors.push(e);
                }
            }
        }
        for file in &mut files {
            file.target = Some(target.name.clone());
        }
        out.files.extend(files);
        out.errors.extend(
            errors
                .into_iter()
                .map(|e| format!("target {}: {e}", target.name)),
        );
    }
    Ok(out)
}

/// The local half of a sync, everything but the network; runs on a blocking thread.
pub(crate) struct Pass {
    installer: Box<dyn Installer>,
    entries: Vec<ManifestEntry>,
    files: Vec<FileReport>,
    errors: Vec<String>,
    incomplete: HashSet<Uuid>,
    /// `recover` succeeded, so `finish` may run (it rewrites our manifest).
    usable: bool,
}

/// A downloaded PFX, or why it could not be downloaded.
pub(crate) type Download = (ManifestEntry, Result<Vec<u8>, String>);

impl Pass {
    /// Recovers the target and plans; returns the entries to download.
    ///
    /// An unusable target (share down, folder missing, corrupt manifest) fails every file and
    /// touches nothing.
    pub(crate) fn prepare(
        mut installer: Box<dyn Installer>,
        entries: Vec<ManifestEntry>,
    ) -> (Self, Vec<ManifestEntry>) {
        let mut files = Vec::new();
        let mut incomplete = HashSet::new();
        if let Err(e) = installer.recover() {
            let error = e.to_string();
            for entry in &entries {
                files.extend(failed(installer.as_ref(), entry, &error));
            }
            let pass = Self {
                installer,
                entries,
                files,
                errors: vec![error],
                incomplete,
                usable: false,
            };
            return (pass, Vec::new());
        }
        // A held version (change window, canaries) is not installed: its files stay as they are.
        let (held, open): (Vec<ManifestEntry>, Vec<ManifestEntry>) =
            entries.iter().cloned().partition(|e| e.hold.is_some());
        for entry in &held {
            incomplete.insert(entry.certificate_id);
            let why = entry.hold.as_deref().unwrap_or_default();
            files.extend(installer.report_names(entry).iter().map(|name| {
                file_report(
                    entry,
                    name,
                    None,
                    DeploymentStatus::Kept,
                    Some(why.to_owned()),
                )
            }));
        }
        let plan = poll::plan(&open, |e| installer.is_current(e));
        for entry in &plan.current {
            files.extend(installer.report_names(entry).iter().map(|name| {
                file_report(
                    entry,
                    name,
                    Some(&entry.thumbprint),
                    DeploymentStatus::Installed,
                    None,
                )
            }));
        }
        for (entry, why) in &plan.conflicts {
            incomplete.insert(entry.certificate_id);
            files.extend(failed(installer.as_ref(), entry, why));
        }
        let download = plan.download.into_iter().cloned().collect();
        let pass = Self {
            installer,
            entries,
            files,
            errors: Vec::new(),
            incomplete,
            usable: true,
        };
        (pass, download)
    }

    /// Verifies and installs `downloads`, then finishes the target.
    pub(crate) fn complete(mut self, downloads: Vec<Download>, password: &str) -> Completed {
        for (entry, pfx) in downloads {
            let reports = match pfx.and_then(|pfx| verify(&entry, pfx, password)) {
                Ok(bundle) => self.installer.install(&entry, &bundle),
                Err(error) => failed(self.installer.as_ref(), &entry, &error),
            };
            if reports.iter().any(|r| r.status == DeploymentStatus::Failed) {
                self.incomplete.insert(entry.certificate_id);
            }
            self.files.extend(reports);
        }
        if !self.usable {
            return Completed {
                files: self.files,
                errors: self.errors,
                notes: Vec::new(),
                reload: None,
            };
        }
        let finish = self.installer.finish(&self.entries, &self.incomplete);
        self.files.extend(finish.files);
        self.errors.extend(finish.errors);
        Completed {
            files: self.files,
            errors: self.errors,
            notes: finish.notes,
            reload: finish.reload,
        }
    }
}

/// What one target's pass did; `reload` is the command to run now, if files changed.
pub(crate) struct Completed {
    pub(crate) files: Vec<FileReport>,
    pub(crate) errors: Vec<String>,
    pub(crate) notes: Vec<String>,
    pub(crate) reload: Option<Vec<String>>,
}

/// Opens the download with the local password and checks it is the manifest's certificate.
fn verify(entry: &ManifestEntry, pfx: Vec<u8>, password: &str) -> Result<Bundle, String> {
    let opened = open_pfx(&pfx, password).map_err(|e| match e {
        PfxError::WrongPassword => format!(
            "downloaded PFX does not open with the local password file, nothing written; the \
             agent's CCS password on the server differs ({e})"
        ),
        other => format!("downloaded PFX refused, nothing written: {other}"),
    })?;
    if opened.thumbprint != entry.thumbprint {
        return Err(format!(
            "downloaded PFX holds certificate {}, the manifest says {}; nothing written",
            opened.thumbprint, entry.thumbprint
        ));
    }
    Ok(Bundle { pfx, opened })
}

fn failed(installer: &dyn Installer, entry: &ManifestEntry, error: &str) -> Vec<FileReport> {
    install::failed_reports(entry, &installer.report_names(entry), error)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("installer thread panicked")
}
