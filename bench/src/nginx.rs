//! Debian's nginx as the reference server: TLS with a certificate from certkeep's internal CA,
//! client certificates from the same CA required (`ssl_verify_client on`), static files with
//! ETags. Runs in the foreground under this process; killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::procfs;

/// A running nginx (master + workers).
pub struct Nginx {
    child: Child,
    /// Loopback port it listens on.
    pub port: u16,
    dir: PathBuf,
}

/// What nginx serves.
pub struct NginxFiles<'a> {
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
    pub client_ca_pem: &'a str,
    /// Served at `/agent/v1/manifest` as JSON.
    pub manifest: &'a [u8],
    /// Served at every `/agent/v1/certificates/...` path as PKCS#12.
    pub pfx: &'a [u8],
}

impl Nginx {
    /// Writes the configuration and files into `dir` and starts nginx with `workers` worker
    /// processes on a free loopback port.
    pub async fn start(dir: &Path, workers: usize, files: &NginxFiles<'_>) -> anyhow::Result<Self> {
        let www = dir.join("www");
        std::fs::create_dir_all(&www)?;
        std::fs::write(dir.join("cert.pem"), files.cert_pem)?;
        std::fs::write(dir.join("key.pem"), files.key_pem)?;
        std::fs::write(dir.join("client-ca.pem"), files.client_ca_pem)?;
        std::fs::write(www.join("manifest.json"), files.manifest)?;
        std::fs::write(www.join("cert.pfx"), files.pfx)?;
        let port = certkeep_testsupport::free_port();
        let d = dir.display();
        let conf = format!(
            r#"daemon off;
master_process on;
worker_processes {workers};
user root root;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp;
    proxy_temp_path {d}/tmp;
    fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp;
    scgi_temp_path {d}/tmp;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        ssl_client_certificate {d}/client-ca.pem;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
        root {d}/www;
        location = /agent/v1/manifest {{
            default_type application/json;
            try_files /manifest.json =404;
        }}
        location /agent/v1/certificates/ {{
            default_type application/x-pkcs12;
            try_files /cert.pfx =404;
        }}
    }}
}}
"#
        );
        std::fs::create_dir_all(dir.join("tmp"))?;
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("start nginx (apt-get install -y nginx)")?;
        let mut nginx = Self {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(nginx);
            }
            if let Some(status) = nginx.child.try_wait()? {
                let log = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
                bail!("nginx exited with {status}: {log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("nginx did not listen on port {port}")
    }

    /// Master and worker pids (for CPU accounting).
    pub fn pids(&self) -> Vec<u32> {
        let master = self.child.id();
        let mut pids = vec![master];
        pids.extend(procfs::children(master));
        pids
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM makes the master stop its workers too (SIGKILL would orphan them).
        let stopped = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
