//! MISC_CHECK: an operator script decides. Exit 0 is up, anything else down; with
//! `misc_dynamic`, exit 1 is down and 2–255 up with weight = code − 2 (0 leaves the weight as it
//! is), as in keepalived. A script that runs past `misc_timeout` is killed and the real is down.

use std::{process::ExitStatus, time::Instant};

use super::Outcome;
use crate::{config::health::MiscCheck, health::script};

/// One MISC_CHECK attempt.
pub async fn run(params: &MiscCheck) -> Outcome {
    let started = Instant::now();
    match script::run_shell(&params.path, params.timeout).await {
        Ok(status) => {
            let mut out = interpret(status, params.dynamic);
            out.latency = started.elapsed();
            out
        }
        Err(e) => Outcome::from_error(&format_args!("script {e}"), &e, started),
    }
}

/// What an exit status means.
fn interpret(status: ExitStatus, dynamic: bool) -> Outcome {
    let outcome = |ok: bool, weight: Option<u32>, message: String| Outcome {
        ok,
        weight,
        message,
        latency: std::time::Duration::ZERO,
        not_run: false,
    };
    match status.code() {
        Some(0) => outcome(true, None, "script exited 0".into()),
        Some(code @ 2..=255) if dynamic => {
            let weight = code.unsigned_abs() - 2;
            outcome(true, Some(weight), format!("script exited {code}: weight {weight}"))
        }
        Some(code) => outcome(false, None, format!("script exited {code}")),
        None => outcome(false, None, format!("script ended by {status}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn misc(path: &str, dynamic: bool, timeout: Duration) -> MiscCheck {
        MiscCheck { path: path.into(), timeout, dynamic }
    }

    #[tokio::test]
    async fn exit_codes() {
        let table = [
            ("exit 0", false, true, None, "script exited 0"),
            ("exit 1", false, false, None, "script exited 1"),
            ("exit 5", false, false, None, "script exited 5"),
            ("exit 0", true, true, None, "script exited 0"),
            ("exit 1", true, false, None, "script exited 1"),
            ("exit 5", true, true, Some(3), "script exited 5: weight 3"),
            ("exit 2", true, true, Some(0), "script exited 2: weight 0"),
            ("exit 255", true, true, Some(253), "script exited 255: weight 253"),
            ("kill -9 $$", true, false, None, "script ended by signal: 9 (SIGKILL)"),
        ];
        for (path, dynamic, ok, weight, message) in table {
            let out = run(&misc(path, dynamic, Duration::from_secs(5))).await;
            assert_eq!(
                (out.ok, out.weight, out.message.as_str()),
                (ok, weight, message),
                "{path} dynamic={dynamic}"
            );
        }
    }

    #[tokio::test]
    async fn timeout_is_down() {
        let started = Instant::now();
        let out = run(&misc("sleep 10", false, Duration::from_millis(200))).await;
        assert!(!out.ok);
        assert_eq!(out.message, "script timed out after 200ms (killed)");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
