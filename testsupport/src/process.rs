//! A child process that says on stderr when it is ready: started, waited for until a line
//! holds a marker, its log drained (so it never blocks on a full pipe) and kept, killed on drop
//! unless terminated first.

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A running child process with its stderr log.
pub struct LoggedChild {
    child: Child,
    /// Everything it logged until (and including) the ready line.
    pub startup_log: String,
    /// What it logged after the ready line, so far.
    rest: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

/// How a terminated child ended.
pub struct Ended {
    pub status: ExitStatus,
    /// What it logged after start-up.
    pub log: String,
    /// Its stdout, when it was piped.
    pub stdout: String,
}

impl LoggedChild {
    /// Spawns `command` with stderr piped and waits until a stderr line contains `ready`;
    /// `Err` with what it logged when it exits first. The wait is bounded by the life of the
    /// process (end of file ends it).
    pub fn start(command: &mut Command, ready: &str) -> Result<Self, String> {
        let mut child = command
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {:?}: {e}", command.get_program()))?;
        let stderr = child.stderr.take().ok_or("stderr is not piped")?;
        let mut lines = BufReader::new(stderr).lines();
        let mut startup_log = String::new();
        let mut is_ready = false;
        for line in lines.by_ref().map_while(Result::ok) {
            startup_log.push_str(&line);
            startup_log.push('\n');
            if line.contains(ready) {
                is_ready = true;
                break;
            }
        }
        if !is_ready {
            let status = child.wait().map_err(|e| e.to_string())?;
            return Err(format!(
                "exited ({status}) before logging {ready:?}:\n{startup_log}"
            ));
        }
        let rest = Arc::new(Mutex::new(Vec::new()));
        let kept = rest.clone();
        let reader = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(mut kept) = kept.lock() {
                    kept.push(line);
                }
            }
        });
        Ok(Self {
            child,
            startup_log,
            rest,
            reader: Some(reader),
        })
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The last `n` lines it logged after start-up (for error messages).
    pub fn tail(&self, n: usize) -> String {
        self.rest
            .lock()
            .map(|l| l[l.len().saturating_sub(n)..].join("\n"))
            .unwrap_or_default()
    }

    /// Kills it with SIGKILL, as a crash would, and waits for it.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill the child");
        self.child.wait().expect("wait for the child");
    }

    /// Sends SIGTERM and waits for it to exit and for its log to end.
    pub fn terminate(&mut self) -> Ended {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        let status = self.child.wait().expect("wait for the child");
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            out.read_to_string(&mut stdout).expect("read stdout");
        }
        if let Some(reader) = self.reader.take() {
            reader.join().expect("log reader");
        }
        let log = self.rest.lock().map(|l| l.join("\n")).unwrap_or_default();
        Ended {
            status,
            log,
            stdout,
        }
    }
}

impl Drop for LoggedChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A service process (Pebble, BIND) with its own temporary directory, writing stdout and
/// stderr to `<name>.log` there; killed on drop.
pub struct Daemon {
    name: &'static str,
    child: Child,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// Spawns `command` with its output going to `<dir>/<name>.log`.
    pub fn spawn(name: &'static str, command: &mut Command, dir: tempfile::TempDir) -> Self {
        let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Self { name, child, dir }
    }

    /// Polls `ready` every 20 ms until it holds; panics with the log when the process exits
    /// first or 20 s pass. `what` completes "did not … within 20 s".
    pub async fn wait_ready(&mut self, what: &str, mut ready: impl AsyncFnMut() -> bool) {
        let started = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited early ({status}): {}", self.name, self.log());
            }
            if ready().await {
                return;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "{} did not {what} within 20 s: {}",
                self.name,
                self.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Waits (as `wait_ready`) until the process accepts TCP connections on loopback `port`.
    pub async fn wait_listening(&mut self, port: u16) {
        self.wait_ready("listen", async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
    }

    /// Its temporary directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its output so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.name)))
            .unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
