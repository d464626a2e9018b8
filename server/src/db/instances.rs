//! Which server processes use the database. `server_instances` holds one row per serving
//! process with a heartbeat (written by `crate::liveness`), so `rekey` can refuse while a server
//! is alive. The embedded SQLite database is also locked for the life of a process
//! ([`DataDirLock`]): a second server or a `rekey` on the same data directory fails at once,
//! and the holder knows no other process can hold an order lease.

use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Db, Error, Result, on_pool};

/// A serving process, as recorded in `server_instances`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ServerInstance {
    /// Random id of this process's registration.
    pub id: Uuid,
    /// Host name of the machine it runs on.
    pub host: String,
    /// Its process id.
    pub pid: i64,
    /// When it registered.
    pub started_at: OffsetDateTime,
    /// Its last heartbeat.
    pub heartbeat_at: OffsetDateTime,
}

impl std::fmt::Display for ServerInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on {} (last heartbeat {})",
            self.pid, self.host, self.heartbeat_at
        )
    }
}

/// An exclusive OS lock on `<database>.lock`, held for the life of the process that took it.
/// Dropping it (or the process dying, even by `kill -9`) releases it.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    /// The lock file next to the SQLite database at `database`.
    fn path(database: &Path) -> PathBuf {
        let mut name = database.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the lock of the SQLite database at `database` without waiting, and writes this
    /// process id into the lock file; fails with [`Error::InUse`] naming the holder's pid when
    /// another process holds it.
    pub fn acquire(database: &Path) -> Result<Self> {
        let path = Self::path(database);
        let io = |source| Error::LockFile {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(Error::InUse(format!(
                    "another certkeep process (pid {}) is using the database {}; stop it first (lock file {})",
                    holder.trim(),
                    database.display(),
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

impl Db {
    /// Whether this process holds the database's [`DataDirLock`], so no other process can use
    /// it (SQLite opened by `serve` or `rekey`).
    pub fn is_exclusive(&self) -> bool {
        self.lock.is_some()
    }

    /// Records a serving process.
    pub async fn register_instance(&self, instance: &ServerInstance) -> Result<()> {
        const Q: &str = "INSERT INTO server_instances (id, host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5)";
        on_pool!(self, p => sqlx::query(Q)
            .bind(instance.id)
            .bind(&instance.host)
            .bind(instance.pid)
            .bind(instance.started_at)
            .bind(instance.heartbeat_at)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Writes a heartbeat; `false` when the row is gone (a `rekey` judged this process dead).
    pub async fn instance_heartbeat(&self, id: Uuid, now: OffsetDateTime) -> Result<bool> {
        const Q: &str = "UPDATE server_instances SET heartbeat_at = $2 WHERE id = $1";
        let n = on_pool!(self, p => sqlx::query(Q).bind(id).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Removes a process's row (clean shutdown).
    pub async fn deregister_instance(&self, id: Uuid) -> Result<()> {
        const Q: &str = "DELETE FROM server_instances WHERE id = $1";
        on_pool!(self, p => sqlx::query(Q).bind(id).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Removes every row: only for the holder of the [`DataDirLock`], for whom every row is
    /// left over from a process that died.
    pub async fn forget_instances(&self) -> Result<u64> {
        const Q: &str = "DELETE FROM server_instances";
        Ok(on_pool!(self, p => sqlx::query(Q).execute(p).await.map(|r| r.rows_affected()))?)
    }

    /// Every registered process, newest heartbeat first.
    pub async fn instances(&self) -> Result<Vec<ServerInstance>> {
        const Q: &str = "SELECT id, host, pid, started_at, heartbeat_at FROM server_instances ORDER BY heartbeat_at DESC";
        Ok(on_pool!(self, p => sqlx::query_as(Q).fetch_all(p).await)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TestDb;

    fn instance(heartbeat_at: OffsetDateTime) -> ServerInstance {
        ServerInstance {
            id: Uuid::new_v4(),
            host: "host-a".into(),
            pid: 4242,
            started_at: heartbeat_at,
            heartbeat_at,
        }
    }

    #[tokio::test]
    async fn instances_register_beat_and_leave() {
        for t in TestDb::all().await {
            let now = crate::now();
            let a = instance(now - time::Duration::minutes(5));
            t.db.register_instance(&a).await.unwrap();
            assert!(t.db.instance_heartbeat(a.id, now).await.unwrap());
            let listed = t.db.instances().await.unwrap();
            assert_eq!(listed.len(), 1, "{}", t.backend);
            assert_eq!((listed[0].id, listed[0].pid), (a.id, 4242));
            assert!((listed[0].heartbeat_at - now).abs() < time::Duration::milliseconds(1));
            t.db.deregister_instance(a.id).await.unwrap();
            assert!(t.db.instances().await.unwrap().is_empty());
            assert!(
                !t.db.instance_heartbeat(a.id, now).await.unwrap(),
                "{}: a removed row is reported",
                t.backend
            );
            t.db.register_instance(&instance(now)).await.unwrap();
            assert_eq!(t.db.forget_instances().await.unwrap(), 1);
        }
    }

    #[test]
    fn a_second_lock_on_one_database_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("certkeep.db");
        let first = DataDirLock::acquire(&db).unwrap();
        let err = DataDirLock::acquire(&db).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())) && err.contains("stop it first"),
            "{err}"
        );
        drop(first);
        DataDirLock::acquire(&db).unwrap();
    }
}
