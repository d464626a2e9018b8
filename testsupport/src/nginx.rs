//! Debian's nginx serving TLS from a PEM directory target (`<certs>/<name>/fullchain.pem` and
//! `privkey.pem`), on a free loopback port with its own prefix, config and pid file in a
//! temporary directory (never the system one). Stopped on drop. Tests skip with a loud notice
//! when `nginx` is not installed, unless `CERTKEEP_TEST_REQUIRE_NGINX=1` (then they fail).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Tool, free_port};

/// The `nginx` binary (Debian installs it in /usr/sbin).
const NGINX: Tool = Tool {
    binaries: &["nginx"],
    fallback_dir: Some("/usr/sbin"),
    require_var: "CERTKEEP_TEST_REQUIRE_NGINX",
    skipped: "the served-certificate tests with nginx",
    install: "the Debian package `nginx`",
};

/// A running nginx (master and one worker) serving one certificate directory.
pub struct Nginx {
    child: Child,
    binary: PathBuf,
    dir: tempfile::TempDir,
    /// Loopback port it serves TLS on.
    pub port: u16,
}

impl Nginx {
    /// Starts nginx serving `<certs>/<name>/{fullchain,privkey}.pem` for every SNI name, or
    /// `None` (after a notice) when nginx is not installed. Waits until it accepts connections.
    pub async fn start(certs: &Path, name: &str) -> Option<Self> {
        let binary = NGINX.find_or_skip()?;
        let pair = certs.join(name);
        let http = |port| {
            format!(
                r#"    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {chain};
        ssl_certificate_key {key};
        ssl_session_cache off;
        ssl_session_tickets off;
        return 204;
    }}
"#,
                chain = pair.join("fullchain.pem").display(),
                key = pair.join("privkey.pem").display(),
            )
        };
        Some(
            Self::serve(binary, 1, 64, http)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    /// The installed `nginx` binary, if any (no notice: for callers that fail without it).
    pub fn installed() -> Option<PathBuf> {
        NGINX.find(NGINX.binaries[0])
    }

    /// Starts `binary` with `workers` worker processes of `connections` connections each, its
    /// prefix, pid file, logs and temporary paths in a new temporary directory, and the
    /// directives `http(port)` inside `http {}` (the `server` blocks, listening on the free
    /// loopback `port` they are given). Waits until it accepts connections (at most 20 s);
    /// otherwise an error with its log.
    pub async fn serve(
        binary: PathBuf,
        workers: usize,
        connections: usize,
        http: impl FnOnce(u16) -> String,
    ) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("nginx dir");
        let port = free_port();
        let d = dir.path().display();
        let conf = format!(
            r#"daemon off;
master_process on;
worker_processes {workers};
user root root;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp;
    proxy_temp_path {d}/tmp;
    fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp;
    scgi_temp_path {d}/tmp;
{http}}}
"#,
            http = http(port),
        );
        std::fs::create_dir_all(dir.path().join("tmp")).expect("nginx tmp");
        std::fs::write(dir.path().join("nginx.conf"), conf).expect("nginx.conf");
        let child = Command::new(&binary)
            .args(Self::base_args(dir.path()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start nginx: {e}"))?;
        let mut nginx = Self {
            child,
            binary,
            dir,
            port,
        };
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                return Err(format!("nginx exited with {status}: {}", nginx.log()));
            }
            if started.elapsed() >= Duration::from_secs(20) {
                return Err(format!(
                    "nginx did not listen on {port} within 20 s: {}",
                    nginx.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(nginx)
    }

    /// The master's pid (its workers are its children).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn base_args(dir: &Path) -> Vec<String> {
        let d = dir.display();
        vec![
            "-p".into(),
            format!("{d}"),
            "-e".into(),
            format!("{d}/error.log"),
            "-c".into(),
            format!("{d}/nginx.conf"),
        ]
    }

    /// The command that reloads this nginx (`nginx ... -s reload`), as a target's argv.
    pub fn reload_command(&self) -> Vec<String> {
        let mut argv = vec![self.binary.display().to_string()];
        argv.extend(Self::base_args(self.dir.path()));
        argv.extend(["-s".into(), "reload".into()]);
        argv
    }

    /// `host:port` to probe.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The error log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // `-s stop` makes the master stop its workers too (SIGKILL would orphan them).
        let stopped = Command::new(&self.binary)
            .args(Self::base_args(self.dir.path()))
            .args(["-s", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
