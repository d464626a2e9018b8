//! A real `certkeep serve` child process for the binary-level tests: started in an empty
//! temporary directory on free loopback ports, ready once it logs that it is serving, killed on
//! drop unless terminated first.
#![allow(
    clippy::unwrap_used,
    reason = "test harness: a failed set-up step must panic"
)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
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
    /// The directory it runs in; its data directory is `certkeep-data` below it.
    pub(crate) dir: tempfile::TempDir,
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
        let dir = tempfile::tempdir().unwrap();
        let api = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_certkeep"))
            .args(["serve", "--api-addr", &format!("127.0.0.1:{api}")])
            .args(["--agent-addr", &format!("127.0.0.1:{}", free_port())])
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CERTKEEP_ENGINE__ENABLED", "false")
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
        assert!(
            startup_log.contains("certkeep is serving"),
            "server did not start:\n{startup_log}"
        );
        // Keep draining the log so the server never blocks on a full pipe.
        let rest =
            std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>().join("\n"));
        Self {
            child,
            dir,
            url: format!("https://127.0.0.1:{api}"),
            startup_log,
            rest: Some(rest),
        }
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
