//! The agent listener's cache of identities and manifests, over real mTLS: every kind of
//! change made through one server reaches the manifest (or the refusal) an agent gets, on the
//! same server (SQLite, in-process invalidation) and on a second server of the same
//! PostgreSQL database (trigger notifications); the ETag changes exactly when the manifest does.
#![allow(
    clippy::unwrap_used,
    reason = "integration test: a failed step must panic"
)]

use std::time::{Duration, Instant};

use certkeep_agent::client::{AgentClient, ManifestFetch};
use certkeep_agent::identity::Identity;
use certkeep_agent::{EnrollOptions, enroll};
use certkeep_api_types::agent::Manifest;
use certkeep_api_types::agent::PfxEncryption;
use certkeep_api_types::target::TargetSettings;
use certkeep_server::db::rollout::AgentRollout;
use certkeep_server::model::AgentId;
use certkeep_server::testkit::TestServer;
use certkeep_tests::seeded::Seeded;

/// How long a change may take to reach the other server (the notification latency is far
/// below a millisecond; this only bounds a failing test).
const DEADLINE: Duration = Duration::from_secs(15);

/// Servers on one database: `a` takes the changes, `b` answers the agent (`b` is `a` on
/// SQLite).
struct Servers {
    a: TestServer,
    b: Option<TestServer>,
    seeded: Seeded,
    dir: tempfile::TempDir,
}

/// Entries never expire during a test: what reaches `b` was invalidated, not refreshed.
fn no_expiry(config: &mut certkeep_server::config::Config) {
    config.agent_cache.refresh_secs = 86_400;
}

impl Servers {
    async fn sqlite() -> Self {
        let a = TestServer::start_with(no_expiry).await;
        Self::with(a, None).await
    }

    /// Two servers on one fresh PostgreSQL database; `None` when that tier is skipped.
    async fn postgres() -> Option<Self> {
        let cluster = certkeep_testsupport::postgres::PgCluster::shared()?;
        let url = cluster.url(&cluster.create_database().await);
        let on_pg = |url: String| {
            move |c: &mut certkeep_server::config::Config| {
                no_expiry(c);
                c.database_url = Some(secrecy::SecretString::from(url));
            }
        };
        let a = TestServer::start_with(on_pg(url.clone())).await;
        let identity = a.state.config.identity_path();
        let b = TestServer::start_with(|c| {
            on_pg(url)(c);
            c.age_identity_file = Some(identity);
        })
        .await;
        Some(Self::with(a, Some(b)).await)
    }

    async fn with(a: TestServer, b: Option<TestServer>) -> Self {
        let seeded = Seeded::on(&a.state).await.unwrap();
        Self {
            a,
            b,
            seeded,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn b(&self) -> &TestServer {
        self.b.as_ref().unwrap_or(&self.a)
    }

    /// An agent enrolled through `a`, and a client presenting its certificate to `b`.
    async fn agent(&self, name: &str) -> (AgentId, AgentClient) {
        let (agent, token) = self
            .seeded
            .pending_agent(name, "pfx password", time::Duration::hours(1))
            .await
            .unwrap();
        let state_dir = self.dir.path().join(name);
        enroll(EnrollOptions {
            server: self.a.agent_url.parse().unwrap(),
            ca_file: self.a.ca_file(),
            token,
            config_path: state_dir.join("agent.toml"),
            state_dir: Some(state_dir.clone()),
        })
        .await
        .unwrap();
        let identity = Identity::load(&state_dir).unwrap();
        let b = self.b();
        let client = AgentClient::new(
            &b.agent_url.parse().unwrap(),
            &std::fs::read(b.ca_file()).unwrap(),
            Some(&identity.client_pem()),
        )
        .unwrap();
        (agent, client)
    }
}

/// The manifest `b` serves now and its ETag.
async fn fetch(client: &AgentClient) -> (Manifest, String) {
    match client.manifest(None).await.unwrap() {
        ManifestFetch::Changed { manifest, etag } => (manifest, etag.unwrap()),
        ManifestFetch::NotModified => unreachable!("an unconditional request got 304"),
    }
}

/// Polls `b` with `etag` until it serves a manifest satisfying `done` (within [`DEADLINE`]);
/// that manifest and its ETag, which must differ from `etag`.
async fn changed_to(
    client: &AgentClient,
    etag: &str,
    what: &str,
    done: impl Fn(&Manifest) -> bool,
) -> (Manifest, String) {
    let start = Instant::now();
    loop {
        if let ManifestFetch::Changed {
            manifest,
            etag: new,
        } = client.manifest(Some(etag)).await.unwrap()
            && done(&manifest)
        {
            let new = new.unwrap();
            assert_ne!(new, etag, "{what}: a changed manifest has a new ETag");
            return (manifest, new);
        }
        assert!(start.elapsed() < DEADLINE, "{what} never reached the agent");
        tokio::task::yield_now().await;
    }
}

/// Waits until `b` holds the agent in its cache (on PostgreSQL: once its LISTEN is up), so
/// what follows is answered from the cache and must be invalidated.
async fn cached_on_b(servers: &Servers, client: &AgentClient) {
    let start = Instant::now();
    while servers.b().state.agent_cache.size().entries == 0 {
        fetch(client).await;
        assert!(start.elapsed() < DEADLINE, "the agent cache never filled");
        tokio::task::yield_now().await;
    }
}

/// Each kind of change made through `a`: an assignment, a new current version, a target
/// added and removed, the PFX mode, rollout settings, a no-op write (same bytes, same ETag),
/// and finally revocation (refused on `b`).
async fn every_change_reaches_the_agent(servers: Servers) {
    let db = &servers.a.state.db;
    let www = servers
        .seeded
        .certificate("www", &["www.example.com"])
        .await
        .unwrap();
    let api = servers
        .seeded
        .certificate("api", &["api.example.com"])
        .await
        .unwrap();
    let (agent, client) = servers.agent("web1").await;
    db.assign_certificate(agent, www.id, certkeep_server::now())
        .await
        .unwrap();
    cached_on_b(&servers, &client).await;
    let (manifest, etag) = fetch(&client).await;
    assert_eq!(manifest.certificates.len(), 1);
    assert!(matches!(
        client.manifest(Some(&etag)).await.unwrap(),
        ManifestFetch::NotModified
    ));

    // An assignment.
    db.assign_certificate(agent, api.id, certkeep_server::now())
        .await
        .unwrap();
    let (_, etag) = changed_to(&client, &etag, "an assignment", |m| {
        m.certificates.iter().any(|c| c.certificate_id == api.id.0)
    })
    .await;

    // A new current version of an assigned certificate.
    let version = servers
        .seeded
        .issue(&api, &["api.example.com"])
        .await
        .unwrap();
    let (_, etag) = changed_to(&client, &etag, "a new version", |m| {
        m.certificates.iter().any(|c| c.version_id == version.id.0)
    })
    .await;

    // A target added, then removed.
    let target = servers
        .seeded
        .target(
            agent,
            "pem",
            TargetSettings::Directory {
                path: "/srv/pem".into(),
                reload_command: None,
            },
        )
        .await
        .unwrap();
    let (_, etag) = changed_to(&client, &etag, "a new target", |m| {
        m.targets.iter().any(|t| t.name == "pem")
    })
    .await;
    db.delete_target(&target).await.unwrap();
    let (_, etag) = changed_to(&client, &etag, "a removed target", |m| m.targets.is_empty()).await;

    // The PFX mode.
    db.update_agent_ccs(
        &servers.a.state.secrets,
        agent,
        None,
        Some(PfxEncryption::Aes256),
        certkeep_server::now(),
    )
    .await
    .unwrap();
    let (_, etag) = changed_to(&client, &etag, "the PFX mode", |m| {
        m.pfx_encryption == PfxEncryption::Aes256
    })
    .await;

    // An unassignment.
    db.unassign_certificate(agent, www.id).await.unwrap();
    let (before, etag) = changed_to(&client, &etag, "an unassignment", |m| {
        m.certificates.len() == 1
    })
    .await;

    // A write that changes nothing the manifest shows (the PFX mode it already has), yet
    // invalidates: the rebuilt manifest has the same bytes, hence the same ETag.
    let entries = servers.b().state.agent_cache.size();
    db.update_agent_ccs(
        &servers.a.state.secrets,
        agent,
        None,
        Some(PfxEncryption::Aes256),
        certkeep_server::now(),
    )
    .await
    .unwrap();
    let start = Instant::now();
    while servers.b().state.agent_cache.size() == entries {
        assert!(
            start.elapsed() < DEADLINE,
            "the no-op write never invalidated"
        );
        tokio::task::yield_now().await;
    }
    assert!(
        matches!(
            client.manifest(Some(&etag)).await.unwrap(),
            ManifestFetch::NotModified
        ),
        "same manifest bytes after a rebuild: same ETag"
    );
    let (rebuilt, same) = fetch(&client).await;
    assert_eq!(same, etag);
    assert_eq!(
        serde_json::to_value(rebuilt).unwrap(),
        serde_json::to_value(before).unwrap()
    );

    // Rollout settings (a change window): the manifest changes only by its holds, so it is
    // the same manifest here, but it is no longer served from the cache.
    db.set_rollout(
        agent,
        &AgentRollout {
            change_window: Some("Sat 02:00-04:00".into()),
            canary: false,
        },
    )
    .await
    .unwrap();
    let start = Instant::now();
    while servers.b().state.agent_cache.size().entries != 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "rollout settings never invalidated"
        );
        tokio::task::yield_now().await;
    }
    // The identity is cached again (the guarded manifest is not), and revocation must
    // invalidate it.
    cached_on_b(&servers, &client).await;

    // Revocation: refused on `b` once the change reached it.
    db.revoke_agent(agent, certkeep_server::now())
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        match client.manifest(Some(&etag)).await {
            Err(e) if format!("{e:#}").contains("401") => break,
            other => assert!(
                start.elapsed() < DEADLINE,
                "a revoked agent is still served: {other:?}"
            ),
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_change_reaches_the_agent_sqlite() {
    every_change_reaches_the_agent(Servers::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_change_reaches_the_agent_on_another_postgres_server() {
    if let Some(servers) = Servers::postgres().await {
        every_change_reaches_the_agent(servers).await;
    }
}
