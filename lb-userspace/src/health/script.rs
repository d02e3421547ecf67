//! Running operator scripts (MISC_CHECK, notify and quorum scripts) the way keepalived does:
//! `/bin/sh -c COMMAND`, no arguments, no stdio, bounded in time.
//!
//! Each script gets its own process group, so that a timeout (or the monitor stopping) kills
//! whatever the script started too, not just the shell.

use std::{io, process::ExitStatus, process::Stdio, time::Duration};

use tokio::process::Command;

/// Why a script gave no exit status.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("cannot start /bin/sh: {0}")]
    Spawn(#[source] io::Error),
    #[error("waiting for the script failed: {0}")]
    Wait(#[source] io::Error),
    #[error("timed out after {0:?} (killed)")]
    Timeout(Duration),
}

/// Kills a process group when dropped, unless disarmed: covers timeouts and a caller that is
/// cancelled (task aborted) while the script runs.
struct GroupKiller(Option<i32>);

impl GroupKiller {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            // SAFETY: kill has no memory preconditions. The group leader has not been reaped yet
            // (we only disarm after reaping it), so its pid, the group id, cannot have been reused.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// Runs `command` with `/bin/sh -c` and waits at most `timeout` for it to exit; on timeout the
/// script's whole process group is killed.
pub async fn run_shell(command: &str, timeout: Duration) -> Result<ExitStatus, ScriptError> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(ScriptError::Spawn)?;
    let mut killer = GroupKiller(child.id().and_then(|pid| i32::try_from(pid).ok()));
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => {
            killer.disarm();
            Ok(status)
        }
        Ok(Err(e)) => Err(ScriptError::Wait(e)),
        Err(_) => {
            drop(killer);
            // Reap it (SIGKILL cannot be ignored, so this is quick); tokio reaps it anyway if not.
            let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
            Err(ScriptError::Timeout(timeout))
        }
    }
}

/// Runs a notify / quorum script and logs how it ended; `what` names it in the log.
pub async fn run_logged(command: String, timeout: Duration, what: String) {
    match run_shell(&command, timeout).await {
        Ok(status) if status.success() => {
            tracing::debug!(script = %command, "{what}: script succeeded");
        }
        Ok(status) => tracing::warn!(script = %command, %status, "{what}: script failed"),
        Err(e) => tracing::warn!(script = %command, "{what}: script failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exit_codes() {
        for code in [0, 1, 5, 255] {
            let status = run_shell(&format!("exit {code}"), Duration::from_secs(5)).await;
            assert_eq!(status.ok().and_then(|s| s.code()), Some(code));
        }
    }

    #[tokio::test]
    async fn timeout_kills_the_group() {
        let tmp = crate::testutil::scratch_dir("lb-script-");
        let dir = tmp.path();
        let marker = dir.join("survived");
        let _ = std::fs::remove_file(&marker);
        // The background child would write the marker after 1 s unless the group is killed.
        let cmd = format!("(sleep 1; touch {}) & sleep 10", marker.display());
        let started = std::time::Instant::now();
        let err = run_shell(&cmd, Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(err, ScriptError::Timeout(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "the script's background child survived the timeout");
    }
}
