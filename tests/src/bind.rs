//! BIND 9 harness: `named` started as a subprocess on a free loopback port, authoritative for
//! the test zone `example.test` (every name has `A 127.0.0.1`, so Pebble can reach the http-01
//! responder), accepting TXT updates signed with one TSIG key. Killed on drop. Tests skip with a
//! loud notice when `named` is not installed, unless `CERTKEEP_TEST_REQUIRE_BIND=1`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use certkeep_server::config::{Dns01Config, TsigAlgorithm};
use certkeep_server::solvers::dns01::lookup_txt;
use certkeep_testsupport::process::Daemon;
use certkeep_testsupport::{Tool, free_port};

/// The zone BIND serves.
pub const ZONE: &str = "example.test";
/// The TSIG key allowed to update TXT records in [`ZONE`].
pub const KEY_NAME: &str = "certkeep-test.";

/// A running `named`, killed on drop.
pub struct Bind {
    process: Daemon,
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    /// The TSIG secret, base64.
    pub secret: String,
}

/// `named` (Debian installs it in /usr/sbin).
const NAMED: Tool = Tool {
    binaries: &["named"],
    fallback_dir: Some("/usr/sbin"),
    require_var: "CERTKEEP_TEST_REQUIRE_BIND",
    skipped: "the dns-01/http-01 challenge tests",
    install: "the Debian package `bind9`",
};

impl Bind {
    /// Starts BIND, or returns `None` after a loud notice when it is not installed (panics
    /// instead with `CERTKEEP_TEST_REQUIRE_BIND=1`).
    pub async fn start() -> Option<Self> {
        let binary = NAMED.find_or_skip()?;
        Some(Self::spawn(&binary).await)
    }

    async fn spawn(binary: &Path) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let secret = base64::engine::general_purpose::STANDARD.encode(rand_bytes());
        let d = dir.path().display();
        let conf = format!(
            r#"options {{
  directory "{d}";
  pid-file none;
  session-keyfile none;
  managed-keys-directory "{d}";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
  notify no;
}};
controls {{ }};
key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{secret}"; }};
zone "{ZONE}" {{
  type primary;
  file "{d}/{ZONE}.zone";
  update-policy {{ grant {KEY_NAME} zonesub TXT; }};
}};
"#
        );
        let zone = format!(
            "$TTL 60\n@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 60\n@ IN NS ns1.{ZONE}.\nns1 IN A 127.0.0.1\n@ IN A 127.0.0.1\n* IN A 127.0.0.1\n"
        );
        std::fs::write(dir.path().join("named.conf"), conf).expect("write named.conf");
        std::fs::write(dir.path().join(format!("{ZONE}.zone")), zone).expect("write zone");
        let mut command = Command::new(binary);
        command
            .arg("-g")
            .args(["-n", "1"])
            .arg("-c")
            .arg(dir.path().join("named.conf"));
        let mut process = Daemon::spawn("named", &mut command, dir);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // The zone is loaded once a query in it is answered (REFUSED until then).
        process
            .wait_ready(&format!("serve {ZONE}"), async || {
                lookup_txt(addr, ZONE, Duration::from_millis(200))
                    .await
                    .is_ok()
            })
            .await;
        Self {
            process,
            addr,
            secret,
        }
    }

    /// Writes `secret` (base64) to a file in BIND's directory and returns its path.
    pub fn secret_file(&self, secret: &str) -> PathBuf {
        let path = self
            .process
            .dir()
            .join(format!("tsig-{}.key", uuid::Uuid::new_v4()));
        std::fs::write(&path, format!("{secret}\n")).expect("write secret file");
        path
    }

    /// A dns-01 solver entry for [`ZONE`] with the right key; the zone is found by SOA query and
    /// the authoritative servers are asked on this BIND's port.
    pub fn dns01_config(&self) -> Dns01Config {
        Dns01Config {
            suffix: ZONE.into(),
            server: self.addr,
            key_name: KEY_NAME.into(),
            algorithm: TsigAlgorithm::HmacSha256,
            secret_file: Some(self.secret_file(&self.secret)),
            zone: None,
            nameserver_port: self.addr.port(),
        }
    }

    /// The TXT strings BIND holds at `name`.
    pub async fn txt(&self, name: &str) -> Vec<String> {
        lookup_txt(self.addr, name, Duration::from_secs(2))
            .await
            .expect("query BIND")
    }

    /// BIND's output so far (for assertion messages).
    pub fn log(&self) -> String {
        self.process.log()
    }
}

fn rand_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_mut(16) {
        chunk.copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    bytes
}
