//! A real `certkeep serve` child process for the binary-level tests: started in an empty
//! temporary directory on free loopback ports, ready once it logs that it is serving, killed on
//! drop unless terminated first (`certkeep_testsupport::process`).
#![allow(
    clippy::unwrap_used,
    reason = "test harness: a failed set-up step must panic"
)]
#![allow(dead_code, reason = "each test crate uses a part of the harness")]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use certkeep_testsupport::free_port;
use certkeep_testsupport::process::{Ended, LoggedChild};

/// A running `certkeep serve`.
pub(crate) struct ServerProcess {
    child: LoggedChild,
    /// The directory it runs in; its data directory is `certkeep-data` below it. Shared, so a
    /// test can start another server in it.
    pub(crate) dir: Arc<tempfile::TempDir>,
    /// `https://127.0.0.1:<api port>`.
    pub(crate) url: String,
    /// Everything it logged until it was serving.
    pub(crate) startup_log: String,
}

impl ServerProcess {
    /// Starts the server with the issuance engine off and waits until it serves.
    pub(crate) fn start() -> Self {
        Self::start_with_env(&[])
    }

    /// Like [`Self::start`], with `env` added to the server's environment.
    pub(crate) fn start_with_env(env: &[(&str, &str)]) -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let mut all = vec![("CERTKEEP_ENGINE__ENABLED", "false")];
        all.extend_from_slice(env);
        Self::start_in(dir, &all).unwrap()
    }

    /// Starts `certkeep serve` in `dir` with `env` on fresh ports and waits until it serves;
    /// `Err` with what it logged when it exits first.
    pub(crate) fn start_in(
        dir: Arc<tempfile::TempDir>,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let api = free_port();
        let child = LoggedChild::start(
            Command::new(env!("CARGO_BIN_EXE_certkeep"))
                .args(["serve", "--api-addr", &format!("127.0.0.1:{api}")])
                .args(["--agent-addr", &format!("127.0.0.1:{}", free_port())])
                .current_dir(dir.path())
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .envs(env.iter().copied())
                .stdout(Stdio::piped()),
            "certkeep is serving",
        )?;
        Ok(Self {
            startup_log: child.startup_log.clone(),
            child,
            dir,
            url: format!("https://127.0.0.1:{api}"),
        })
    }

    /// Its process id.
    pub(crate) fn child_id(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL, as a crash would, and waits for it.
    pub(crate) fn kill(&mut self) {
        self.child.kill();
    }

    /// The data directory.
    pub(crate) fn data(&self) -> PathBuf {
        self.dir.path().join("certkeep-data")
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub(crate) fn terminate(&mut self) -> Ended {
        self.child.terminate()
    }
}
