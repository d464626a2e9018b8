//! A real `certkeep serve` child process for the binary-level tests: started in an empty
//! temporary directory on free loopback ports, ready once it logs that it is serving, killed on
//! drop unless terminated first.
#![allow(
    clippy::unwrap_used,
    reason = "test harness: a failed set-up step must panic"
)]
#![allow(dead_code, reason = "each test crate uses a part of the harness")]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `certkeep serve`.
pub(crate) struct ServerProcess {
    child: Child,
    /// The directory it runs in; its data directory is `certkeep-data` below it. Shared, so a
    /// test can start another server in it.
    pub(crate) dir: Arc<tempfile::TempDir>,
    /// `https://127.0.0.1:<api port>`.
    pub(crate) url: String,
    /// Everything it logged until it was serving.
    pub(crate) startup_log: String,
    rest: Option<JoinHandle<String>>,
}

/// How a terminated server ended.
pub(crate) struct Ended {
    pub(crate) status: ExitStatus,
    /// What it logged after start-up.
    pub(crate) log: String,
    pub(crate) stdout: String,
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_certkeep"))
            .args(["serve", "--api-addr", &format!("127.0.0.1:{api}")])
            .args(["--agent-addr", &format!("127.0.0.1:{}", free_port())])
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the log line, bounded by the life of the process (EOF ends the loop).
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut startup_log = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            startup_log.push_str(&line);
            startup_log.push('\n');
            if line.contains("certkeep is serving") {
                break;
            }
        }
        if !startup_log.contains("certkeep is serving") {
            let status = child.wait().unwrap();
            return Err(format!("exited ({status}) before serving:\n{startup_log}"));
        }
        // Keep draining the log so the server never blocks on a full pipe.
        let rest =
            std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>().join("\n"));
        Ok(Self {
            child,
            dir,
            url: format!("https://127.0.0.1:{api}"),
            startup_log,
            rest: Some(rest),
        })
    }

    /// Its process id.
    pub(crate) fn child_id(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL, as a crash would, and waits for it.
    pub(crate) fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// The data directory.
    pub(crate) fn data(&self) -> PathBuf {
        self.dir.path().join("certkeep-data")
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub(crate) fn terminate(&mut self) -> Ended {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = self.child.wait().unwrap();
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            out.read_to_string(&mut stdout).unwrap();
        }
        let log = self
            .rest
            .take()
            .map(|r| r.join().unwrap())
            .unwrap_or_default();
        Ended {
            status,
            log,
            stdout,
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
