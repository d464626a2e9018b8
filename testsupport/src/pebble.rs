//! Pebble harness: a throwaway test PKI (rcgen) for `127.0.0.1`/`localhost`, and Pebble started as
//! a subprocess on free ports with EAB required, killed on drop. Tests skip with a loud notice
//! when `pebble` is not installed, unless `CERTKEEP_TEST_REQUIRE_PEBBLE=1` (then they fail).

use std::process::Command;
use std::sync::Arc;

use base64::Engine as _;

use crate::process::Daemon;
use crate::{Tool, free_port};

/// The `pebble` binary (Debian installs it in /usr/bin).
const PEBBLE: Tool = Tool {
    binaries: &["pebble"],
    fallback_dir: Some("/usr/bin"),
    require_var: "CERTKEEP_TEST_REQUIRE_PEBBLE",
    skipped: "the ACME end-to-end tests",
    install: "the Debian package `pebble`",
};

/// A CA and a server certificate for `127.0.0.1` and `localhost`, shared by Pebble and the proxy.
pub struct TestPki {
    /// The CA certificate the server under test trusts.
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestPki {
    /// A fresh CA and a loopback server certificate.
    pub fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "certkeep test PKI");
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().expect("server key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        Self {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// One EAB key Pebble accepts.
#[derive(Clone)]
pub struct EabKey {
    pub kid: String,
    pub hmac: Vec<u8>,
}

impl EabKey {
    /// The HMAC as Pebble and Sectigo hand it out: base64url without padding.
    pub fn b64url(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.hmac)
    }
}

/// How to start Pebble.
#[derive(Clone)]
pub struct PebbleOptions {
    /// `PEBBLE_WFE_NONCEREJECT` (percent of nonces rejected).
    pub nonce_reject: u8,
    /// `PEBBLE_AUTHZREUSE` (percent of valid authorizations reused).
    pub authz_reuse: u8,
    /// Certificate lifetime in seconds (Pebble's default when unset).
    pub validity_secs: Option<u64>,
    /// Whether EAB is required.
    pub eab_required: bool,
    /// `PEBBLE_VA_ALWAYS_VALID`: accept every challenge without looking.
    pub always_valid: bool,
    /// DNS server Pebble resolves names with (`-dnsserver`), for real validation.
    pub dns_server: Option<std::net::SocketAddr>,
    /// Port Pebble connects to for http-01 (a free one when unset).
    pub http_port: Option<u16>,
}

impl Default for PebbleOptions {
    fn default() -> Self {
        Self {
            nonce_reject: 0,
            authz_reuse: 100,
            validity_secs: None,
            eab_required: true,
            always_valid: true,
            dns_server: None,
            http_port: None,
        }
    }
}

impl PebbleOptions {
    /// The defaults with no authorization reuse: every order gets fresh authorizations.
    pub fn fresh_authorizations() -> Self {
        Self {
            authz_reuse: 0,
            ..Self::default()
        }
    }
}

/// A running Pebble, killed on drop.
pub struct Pebble {
    process: Daemon,
    pub pki: Arc<TestPki>,
    /// Port of the ACME (WFE) listener.
    pub port: u16,
    /// `https://127.0.0.1:<port>/dir`.
    pub directory_url: String,
    /// EAB keys configured in Pebble (`kid-1` 64 bytes, `kid-2` 32 bytes, more 64-byte ones).
    pub eab: Vec<EabKey>,
}

impl Pebble {
    /// Starts Pebble, or returns `None` after a loud notice when it is not installed (panics
    /// instead with `CERTKEEP_TEST_REQUIRE_PEBBLE=1`).
    pub async fn start(options: PebbleOptions) -> Option<Self> {
        let binary = PEBBLE.find_or_skip()?;
        Some(Self::spawn(&binary, options).await)
    }

    async fn spawn(binary: &std::path::Path, options: PebbleOptions) -> Self {
        let pki = Arc::new(TestPki::new());
        let dir = tempfile::tempdir().expect("temp dir");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, &pki.cert_pem).expect("write cert");
        std::fs::write(&key, &pki.key_pem).expect("write key");
        let eab: Vec<EabKey> = (1..=6)
            .map(|i| EabKey {
                kid: format!("kid-{i}"),
                hmac: (0..if i == 2 { 32 } else { 64 })
                    .map(|b: u8| b.wrapping_mul(31).wrapping_add(i * 17))
                    .collect(),
            })
            .collect();
        let port = free_port();
        let mut config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{port}"),
                "managementListenAddress": format!("127.0.0.1:{}", free_port()),
                "certificate": cert,
                "privateKey": key,
                "httpPort": options.http_port.unwrap_or_else(free_port),
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": options.eab_required,
                "externalAccountMACKeys": eab.iter().map(|k| (k.kid.clone(), serde_json::Value::String(k.b64url()))).collect::<serde_json::Map<_, _>>(),
            }
        });
        if let Some(secs) = options.validity_secs {
            config["pebble"]["certificateValidityPeriod"] = secs.into();
        }
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).expect("write pebble config");
        let mut command = Command::new(binary);
        command.arg("-config").arg(&config_path);
        if let Some(dns) = options.dns_server {
            command.arg("-dnsserver").arg(dns.to_string());
        }
        if options.always_valid {
            command.env("PEBBLE_VA_ALWAYS_VALID", "1");
        }
        command
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", options.nonce_reject.to_string())
            .env("PEBBLE_AUTHZREUSE", options.authz_reuse.to_string());
        let mut process = Daemon::spawn("pebble", &mut command, dir);
        process.wait_listening(port).await;
        Self {
            process,
            pki,
            port,
            directory_url: format!("https://127.0.0.1:{port}/dir"),
            eab,
        }
    }

    /// Process id of the Pebble process (for CPU accounting in benchmarks).
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Pebble's output so far (for assertion messages).
    pub fn log(&self) -> String {
        self.process.log()
    }
}
