//! Debian's nginx as the reference server: TLS with a certificate from certkeep's internal CA,
//! client certificates from the same CA required (`ssl_verify_client on`), static files with
//! ETags. Run (in the foreground, stopped on drop) by `certkeep_testsupport::nginx`.

use std::path::Path;

use anyhow::Context as _;

use crate::procfs;

/// A running nginx (master + workers), started by `certkeep_testsupport`'s nginx harness.
pub struct Nginx {
    nginx: certkeep_testsupport::nginx::Nginx,
    /// Loopback port it listens on.
    pub port: u16,
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
    /// Writes the files into `dir` and starts nginx with `workers` worker processes on a free
    /// loopback port.
    pub async fn start(dir: &Path, workers: usize, files: &NginxFiles<'_>) -> anyhow::Result<Self> {
        let www = dir.join("www");
        std::fs::create_dir_all(&www)?;
        std::fs::write(dir.join("cert.pem"), files.cert_pem)?;
        std::fs::write(dir.join("key.pem"), files.key_pem)?;
        std::fs::write(dir.join("client-ca.pem"), files.client_ca_pem)?;
        std::fs::write(www.join("manifest.json"), files.manifest)?;
        std::fs::write(www.join("cert.pfx"), files.pfx)?;
        let binary = certkeep_testsupport::nginx::Nginx::installed()
            .context("nginx not found (apt-get install -y nginx)")?;
        let d = dir.display();
        let http = |port| {
            format!(
                r#"    keepalive_requests 100000000;
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
"#
            )
        };
        let nginx = certkeep_testsupport::nginx::Nginx::serve(binary, workers, 8192, http)
            .await
            .map_err(anyhow::Error::msg)?;
        Ok(Self {
            port: nginx.port,
            nginx,
        })
    }

    /// Master and worker pids (for CPU accounting).
    pub fn pids(&self) -> Vec<u32> {
        let master = self.nginx.pid();
        let mut pids = vec![master];
        pids.extend(procfs::children(master));
        pids
    }
}
