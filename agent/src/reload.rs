//! Runs a target's reload command (e.g. `systemctl reload nginx`): once per sync, after all the
//! target's files are switched, with a timeout. No shell: the command is an argv.

use std::{process::Stdio, time::Duration};

/// Longest a reload command may run before it is killed.
pub(crate) const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest reload-command output kept in an error.
const MAX_OUTPUT: usize = 500;

/// Runs `argv` and waits at most `timeout`; `Err` names the command, its exit status and the
/// start of its stderr, or says it was killed.
pub(crate) async fn run(argv: &[String], timeout: Duration) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Ok(());
    };
    tracing::info!(command = ?argv, "running reload command");
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("reload command {argv:?} could not start: {e}"))?;
    // On timeout the future is dropped with the child, which kills it.
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(format!(
            "reload command {argv:?} did not finish within {} s and was killed",
            timeout.as_secs()
        )),
        Ok(Err(e)) => Err(format!("reload command {argv:?} failed: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            stderr.truncate(stderr.floor_char_boundary(MAX_OUTPUT));
            Err(format!(
                "reload command {argv:?} failed ({}): {}",
                out.status,
                stderr.trim()
            ))
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn reports_status_and_stderr_and_kills_on_timeout() {
        assert_eq!(run(&sh("exit 0"), RELOAD_TIMEOUT).await, Ok(()));
        let err = run(&sh("echo broken config >&2; exit 3"), RELOAD_TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            err.contains("exit status: 3") && err.contains("broken config"),
            "{err}"
        );
        let err = run(&sh("sleep 30"), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(err.contains("killed"), "{err}");
        let err = run(&["/nonexistent/reload".into()], RELOAD_TIMEOUT)
            .await
            .unwrap_err();
        assert!(err.contains("could not start"), "{err}");
    }
}
