//! A throwaway PostgreSQL cluster started from the `initdb`/`postgres` binaries on PATH (as the
//! `postgres` user when running as root), one per test process, with a fresh database per
//! caller. Skipped with a notice when the binaries are missing, unless
//! `CERTKEEP_TEST_REQUIRE_POSTGRES=1`.

use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use crate::{Tool, free_port};

/// The server binaries the cluster needs.
const POSTGRES: Tool = Tool {
    binaries: &["initdb", "postgres"],
    fallback_dir: None,
    require_var: "CERTKEEP_TEST_REQUIRE_POSTGRES",
    skipped: "the PostgreSQL test tier",
    install: "PostgreSQL server binaries",
};

/// A PostgreSQL cluster owned by this test process. The server process is stopped when this
/// process exits: it runs under a small shell guard that kills it when our stdin pipe closes.
pub struct PgCluster {
    port: u16,
    _guard: Mutex<Child>,
}

static CLUSTER: OnceLock<Option<PgCluster>> = OnceLock::new();

impl PgCluster {
    /// The process-wide cluster, started on first use. `None` (after a loud notice) when the
    /// PostgreSQL binaries are missing, unless `CERTKEEP_TEST_REQUIRE_POSTGRES=1`, which panics.
    pub fn shared() -> Option<&'static PgCluster> {
        CLUSTER
            .get_or_init(|| {
                POSTGRES.find_or_skip()?;
                Some(Self::start().expect("start throwaway PostgreSQL cluster"))
            })
            .as_ref()
    }

    fn start() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("certkeep-pg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let ids = postgres_ids()?;
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
        }
        let data = dir.join("data");
        let mut initdb = Command::new("initdb");
        initdb
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-N",
                "-E",
                "UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_user(&mut initdb, ids);
        let out = initdb.output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let port = free_port();
        // The guard shell starts the server with `pg_ctl -w` (which returns once it accepts
        // connections), says "ready", then waits for its stdin to close (this process exited or
        // dropped the handle) and stops the server and removes the directory.
        let script = format!(
            "pg_ctl -D '{data}' -l '{log}' -w -t 60 -o \"-h 127.0.0.1 -p {port} -k '{sock}' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200\" start >/dev/null && echo ready; cat >/dev/null; pg_ctl -D '{data}' -m immediate -w stop >/dev/null 2>&1; rm -rf '{sock}'",
            data = data.display(),
            sock = dir.display(),
            log = dir.join("postgres.log").display(),
        );
        let mut guard = Command::new("sh");
        guard
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        as_user(&mut guard, ids);
        let mut child = guard.spawn()?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        }
        if line.trim() != "ready" {
            let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
            return Err(std::io::Error::other(format!(
                "PostgreSQL did not start: {log}"
            )));
        }
        Ok(Self {
            port,
            _guard: Mutex::new(child),
        })
    }

    /// TCP port of the cluster.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates an empty database with a unique name and returns that name.
    pub async fn create_database(&self) -> String {
        use sqlx::Connection as _;
        let name = format!("t{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the throwaway cluster");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create database");
        name
    }

    /// Runs `pg_dump` of database `name` and returns the dump text.
    pub fn dump(&self, name: &str) -> Vec<u8> {
        let out = Command::new("pg_dump")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ])
            .output()
            .expect("run pg_dump");
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

fn as_user(command: &mut Command, ids: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt as _;
    if let Some((uid, gid)) = ids {
        command.uid(uid).gid(gid);
    }
}

/// When running as root, the uid/gid of the `postgres` user (PostgreSQL refuses to run as root).
fn postgres_ids() -> std::io::Result<Option<(u32, u32)>> {
    let me = Command::new("id").arg("-u").output()?;
    if String::from_utf8_lossy(&me.stdout).trim() != "0" {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .ok_or_else(|| std::io::Error::other("running as root but there is no postgres user"))?;
    let fields: Vec<&str> = line.split(':').collect();
    let parse = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u32>().ok())
            .ok_or_else(|| std::io::Error::other("bad /etc/passwd entry for postgres"))
    };
    Ok(Some((parse(2)?, parse(3)?)))
}
