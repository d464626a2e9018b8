//! This serving process's row in `server_instances`: registered when it starts serving,
//! renewed every `liveness.heartbeat_secs`, deleted on clean shutdown. `rekey` refuses while a
//! row is fresh. On SQLite the process also holds the database's lock file (taken when the
//! database was opened), so every lease and row found at start was left by a process that
//! died: they are released at once and its orders resume without waiting for lease expiry.

use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::app::AppState;
use crate::ca::InternalCa;
use crate::db::Db;
use crate::db::instances::ServerInstance;
use crate::now;

/// This process's registration; [`Registration::end`] removes it.
pub struct Registration {
    id: Uuid,
    db: Db,
    lost: CancellationToken,
    heartbeat: JoinHandle<()>,
}

/// The machine's host name, for the operator reading `rekey`'s refusal.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Registers this process and starts its heartbeat. On the locked SQLite database, first
/// releases every order lease and forgets every row (their processes are dead). Fails when the
/// age identity no longer opens the stored secrets (a `rekey` committed while this process
/// was starting).
pub async fn register(state: &AppState) -> anyhow::Result<Registration> {
    let db = state.db.clone();
    if db.is_exclusive() {
        let forgotten = db.forget_instances().await?;
        let released = db.release_all_leases().await?;
        tracing::info!(
            released_leases = released,
            forgotten_instances = forgotten,
            "this process holds the database lock: leases left by a previous process released"
        );
    }
    let t = now();
    let instance = ServerInstance {
        id: Uuid::new_v4(),
        host: host_name(),
        pid: i64::from(std::process::id()),
        started_at: t,
        heartbeat_at: t,
    };
    db.register_instance(&instance)
        .await
        .context("register this server process in server_instances")?;
    if let Err(e) = InternalCa::check_identity(&db, &state.secrets).await {
        let _ = db.deregister_instance(instance.id).await;
        return Err(anyhow::Error::new(e).context(
            "the age identity does not open the stored secrets (was the database rekeyed while this server started?)",
        ));
    }
    let lost = CancellationToken::new();
    let every = Duration::from_secs(state.config.liveness.heartbeat_secs.max(1));
    let heartbeat = tokio::spawn(beat(db.clone(), instance.id, every, lost.clone()));
    tracing::info!(instance.id = %instance.id, "server process registered");
    Ok(Registration {
        id: instance.id,
        db,
        lost,
        heartbeat,
    })
}

/// Writes the heartbeat every `every`; cancels `lost` (and returns) when the row is gone.
async fn beat(db: Db, id: Uuid, every: Duration, lost: CancellationToken) {
    loop {
        tokio::time::sleep(every).await;
        match db.instance_heartbeat(id, now()).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::error!(
                    instance.id = %id,
                    "this server's row in server_instances was removed (a rekey found no heartbeat within liveness.stale_secs): stopping, since the stored secrets may be sealed to another identity now"
                );
                lost.cancel();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot write this server's heartbeat"),
        }
    }
}

impl Registration {
    /// Cancelled when the registration was removed by someone else; the server must stop.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Stops the heartbeat and removes the row (clean shutdown). Errors when the registration
    /// had been lost.
    pub async fn end(self) -> anyhow::Result<()> {
        self.heartbeat.abort();
        if self.lost.is_cancelled() {
            anyhow::bail!(
                "stopped: this server's registration was removed while it ran (see the log)"
            );
        }
        self.db
            .deregister_instance(self.id)
            .await
            .context("remove this server process from server_instances")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::db::instances::DataDirLock;
    use crate::secrets::Secrets;
    use certkeep_testsupport::postgres::PgCluster;

    use crate::testkit::TestServer;

    /// Polls `check` until it holds, failing after 10 s.
    async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check().await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn rekey_on_postgres_is_refused_while_a_server_runs_and_works_after_it_stopped() {
        let Some(cluster) = PgCluster::shared() else {
            return;
        };
        let url = cluster.url(&cluster.create_database().await);
        let server = TestServer::start_with(|c| {
            c.database_url = Some(secrecy::SecretString::from(url.clone()));
        })
        .await;
        let db = Db::connect_postgres(&secrecy::SecretString::from(url))
            .await
            .unwrap();
        wait_for("the server's registration", async || {
            db.instances().await.unwrap().len() == 1
        })
        .await;
        let (old, new) = (server.state.secrets.clone(), Secrets::generate());
        let alive_since = now() - Duration::from_secs(30);
        let err = db.rekey(&old, &new, alive_since).await.unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        InternalCa::check_identity(&db, &old).await.unwrap();
        server.stop().await;
        assert!(
            db.instances().await.unwrap().is_empty(),
            "a clean shutdown removes the row"
        );
        assert!(db.rekey(&old, &new, alive_since).await.unwrap() >= 1);
        InternalCa::check_identity(&db, &new).await.unwrap();
    }

    /// A prepared server state (SQLite, lock held) beating every second.
    async fn state(dir: &tempfile::TempDir) -> AppState {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let config = crate::config::Config {
            data_dir: dir.path().join("data"),
            liveness: crate::config::LivenessConfig {
                heartbeat_secs: 1,
                stale_secs: 2,
            },
            ..crate::config::Config::default()
        };
        crate::bootstrap::prepare(config, now()).await.unwrap()
    }

    #[tokio::test]
    async fn a_server_whose_registration_was_removed_is_told_to_stop() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir).await;
        let registration = register(&state).await.unwrap();
        assert_eq!(state.db.instances().await.unwrap().len(), 1);
        state.db.forget_instances().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), registration.lost().cancelled())
            .await
            .expect("the heartbeat notices within a few beats");
        let err = registration.end().await.unwrap_err().to_string();
        assert!(err.contains("registration was removed"), "{err}");
    }

    #[tokio::test]
    async fn a_server_starting_after_a_rekey_with_the_old_identity_refuses_to_serve() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(&dir).await;
        state
            .db
            .rekey(&state.secrets, &Secrets::generate(), now())
            .await
            .unwrap();
        let err = format!("{:#}", register(&state).await.err().unwrap());
        assert!(err.contains("does not open the stored secrets"), "{err}");
        assert!(state.db.instances().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_server_on_sqlite_holds_the_database_lock() {
        let server = TestServer::start().await;
        let database = server.state.config.data_dir.join("certkeep.db");
        let err = DataDirLock::acquire(&database).unwrap_err();
        assert!(err.to_string().contains("stop it first"), "{err}");
        server.stop().await;
    }
}
