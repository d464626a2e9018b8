//! chromedriver (Debian `chromium-driver`) on a free loopback port, driving a headless
//! `chromium` with a fresh profile; killed on drop. Browser tests skip with a loud notice
//! without them, unless `CERTKEEP_TEST_REQUIRE_BROWSER=1` (then they fail).

use std::path::PathBuf;
use std::process::Command;

use crate::process::Daemon;
use crate::{Tool, free_port};

/// chromedriver and the browser it drives.
const BROWSER: Tool = Tool {
    binaries: &["chromedriver", "chromium"],
    fallback_dir: Some("/usr/bin"),
    require_var: "CERTKEEP_TEST_REQUIRE_BROWSER",
    skipped: "the dashboard's browser tests",
    install: "the Debian packages `chromium` and `chromium-driver`",
};

/// A running chromedriver.
pub struct ChromeDriver {
    process: Daemon,
    /// `http://127.0.0.1:<port>`, for a WebDriver client.
    pub url: String,
}

impl ChromeDriver {
    /// Starts chromedriver, or `None` after a loud notice when chromedriver or chromium is
    /// missing (panics instead with `CERTKEEP_TEST_REQUIRE_BROWSER=1`).
    pub async fn start() -> Option<Self> {
        let binary = BROWSER.find_or_skip()?;
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new(binary);
        command
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .arg("--log-level=WARNING");
        let mut process = Daemon::spawn("chromedriver", &mut command, dir);
        process.wait_listening(port).await;
        Some(Self {
            process,
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    /// The `goog:chromeOptions` arguments of a headless, quiet chromium with a fresh profile
    /// in this driver's temporary directory and a 1280×900 window.
    pub fn chromium_args(&self) -> Vec<String> {
        let profile: PathBuf = self.process.dir().join("profile");
        vec![
            "--headless".into(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", profile.display()),
        ]
    }

    /// chromedriver's output so far (for assertion messages).
    pub fn log(&self) -> String {
        self.process.log()
    }
}
