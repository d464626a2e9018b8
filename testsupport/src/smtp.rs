//! A real SMTP server for the notification tests: Debian's `python3-aiosmtpd` running
//! `tests/smtp/sink.py`, which writes each accepted message to a directory (optionally answering
//! `451` to the first one). Skipped when aiosmtpd is missing, unless
//! `CERTKEEP_TEST_REQUIRE_SMTP=1`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::Daemon;
use crate::{Tool, free_port};

/// Debian's Python, which has the packaged aiosmtpd (a pyenv `python3` on PATH may not).
const PYTHON: Tool = Tool {
    binaries: &["python3"],
    fallback_dir: None,
    require_var: "CERTKEEP_TEST_REQUIRE_SMTP",
    skipped: "the SMTP notification tests",
    install: "the Debian package `python3-aiosmtpd`",
};

/// A running SMTP sink on `127.0.0.1:port`.
pub struct SmtpSink {
    pub port: u16,
    daemon: Daemon,
}

impl SmtpSink {
    /// Starts the sink; with `fail_first` its first message gets `451`. `None` (after a notice)
    /// when aiosmtpd is not installed.
    pub async fn start(fail_first: bool) -> Option<Self> {
        let python = PathBuf::from("/usr/bin/python3");
        let has_aiosmtpd = Command::new(&python)
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success());
        if !has_aiosmtpd {
            PYTHON.missing("/usr/bin/python3 with aiosmtpd");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let mail = dir.path().join("mail");
        std::fs::create_dir(&mail).expect("mail dir");
        let port = free_port();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/smtp/sink.py");
        let mut command = Command::new(python);
        command
            .arg(script)
            .arg("--port")
            .arg(port.to_string())
            .arg("--dir")
            .arg(&mail);
        if fail_first {
            command.arg("--fail-first");
        }
        let mut daemon = Daemon::spawn("smtp-sink", &mut command, dir);
        daemon.wait_listening(port).await;
        Some(Self { port, daemon })
    }

    /// The messages accepted so far, oldest first (each begins with `X-Envelope-To:`).
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.daemon.dir().join("mail"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
        files.sort();
        files
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect()
    }

    /// Waits until at least `n` messages arrived, at most `within`; returns them.
    pub async fn wait_messages(&self, n: usize, within: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            assert!(
                start.elapsed() < within,
                "{} of {n} messages within {within:?}; sink log: {}",
                got.len(),
                self.daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
