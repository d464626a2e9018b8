//! A real OpenID Provider for the SSO tests: the npm package `oidc-provider` run by Node from
//! `tests/oidc-idp/` (`npm ci` there first), on a free loopback port, with the clients the test
//! names and three users (`alice` in `pki-admins` and `staff`, `bob` in `pki-readers`,
//! `carol` in `students`); any password is accepted. Killed on drop. Skipped with a loud notice
//! without `node` or the installed package, unless `CERTKEEP_TEST_REQUIRE_NODE=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::LoggedChild;
use crate::{Tool, free_port};

const NODE: Tool = Tool {
    binaries: &["node"],
    fallback_dir: Some("/usr/bin"),
    require_var: "CERTKEEP_TEST_REQUIRE_NODE",
    skipped: "the OIDC tests against a real IdP",
    install: "Node.js 20+ and `npm ci` in tests/oidc-idp",
};

/// One client registered at the IdP.
pub struct IdpClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
}

/// The running provider.
pub struct OidcIdp {
    /// `http://127.0.0.1:<port>`.
    pub issuer: String,
    child: LoggedChild,
    node: PathBuf,
    app: PathBuf,
    dir: tempfile::TempDir,
}

impl OidcIdp {
    /// Starts the provider with `clients`, ID tokens valid 10 minutes; `None` when the tier is
    /// skipped.
    pub fn start(clients: &[IdpClient]) -> Option<Self> {
        Self::start_with_id_token_ttl(clients, 600)
    }

    /// Like [`Self::start`], its ID tokens valid `id_token_ttl_secs`.
    pub fn start_with_id_token_ttl(clients: &[IdpClient], id_token_ttl_secs: u32) -> Option<Self> {
        let node = NODE.find_or_skip()?;
        let app = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/oidc-idp");
        if !app.join("node_modules/oidc-provider").is_dir() {
            let required = std::env::var(NODE.require_var).is_ok_and(|v| v == "1");
            assert!(
                !required,
                "{}=1 but {} has no node_modules/oidc-provider: run `npm ci` there",
                NODE.require_var,
                app.display()
            );
            eprintln!(
                "\n!!! NOTICE: {} has no node_modules: {} are SKIPPED. Run `npm ci` there.\n",
                app.display(),
                NODE.skipped
            );
            return None;
        }
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = serde_json::json!({
            "port": port,
            "id_token_ttl": id_token_ttl_secs,
            "clients": clients.iter().map(|c| serde_json::json!({
                "client_id": c.client_id,
                "client_secret": c.client_secret,
                "redirect_uris": [c.redirect_uri],
            })).collect::<Vec<_>>(),
        });
        std::fs::write(dir.path().join("idp.json"), settings.to_string()).expect("write idp.json");
        Some(Self {
            issuer: format!("http://127.0.0.1:{port}"),
            child: Self::spawn(&node, &app, &dir),
            node,
            app,
            dir,
        })
    }

    fn spawn(node: &Path, app: &Path, dir: &tempfile::TempDir) -> LoggedChild {
        LoggedChild::start(
            Command::new(node)
                .arg(app.join("idp.mjs"))
                .arg(dir.path().join("idp.json"))
                .current_dir(app),
            "oidc-idp ready",
        )
        .unwrap_or_else(|e| panic!("oidc-provider did not start: {e}"))
    }

    /// Stops the provider and starts it again on the same port with the same clients: it
    /// signs with new keys (they live in its memory), and earlier sessions and codes are gone.
    pub fn restart(&mut self) {
        self.child.kill();
        self.child = Self::spawn(&self.node, &self.app, &self.dir);
    }
}
