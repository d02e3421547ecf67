//! VRRP notify scripts, called the way keepalived calls them.
//!
//! On every state change an instance runs its state-specific script (`notify_master`,
//! `notify_backup`, `notify_fault`, `notify_stop`) with no arguments, then its generic `notify`
//! script with `INSTANCE <name> <STATE> <priority>`; a sync group's generic script gets
//! `GROUP <name> <STATE>`. Scripts run through `/bin/sh -c` like the project's other operator
//! scripts ([`crate::health::script`]), so arguments are shell-quoted onto the command line.
//!
//! The scripts of one instance run one after the other, in the order of the transitions: a
//! script that records the state (the usual use) must never see BACKUP after MASTER when the
//! instance went BACKUP → MASTER. The state machine does not wait for them.

use std::{borrow::Cow, time::Duration};

use tokio::{sync::mpsc, task::JoinHandle};

use super::machine::State;
use crate::health::script;

/// keepalived's default `script_timeout` is 5 s for check scripts; notify scripts are expected to
/// be quick too, but a stuck one must not pile up forever.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of the generic `notify` script of an instance: `INSTANCE <name> <STATE> <priority>`
/// (keepalived passes the effective priority).
pub fn instance_args(name: &str, state: State, priority: u8) -> Vec<String> {
    vec!["INSTANCE".into(), name.into(), state.as_str().into(), priority.to_string()]
}

/// Arguments of a sync group's generic `notify` script: `GROUP <name> <STATE>`.
pub fn group_args(name: &str, state: State) -> Vec<String> {
    vec!["GROUP".into(), name.into(), state.as_str().into()]
}

/// The state-specific script of an instance or group for `state`, if configured.
pub fn specific<'a>(
    state: State,
    master: Option<&'a str>,
    backup: Option<&'a str>,
    fault: Option<&'a str>,
    stop: Option<&'a str>,
) -> Option<&'a str> {
    match state {
        State::Master => master,
        State::Backup => backup,
        State::Fault => fault,
        State::Stop => stop,
        State::Initialize => None,
    }
}

/// The command line run by `/bin/sh -c`: the configured script (itself a command line, possibly
/// with its own arguments) followed by `args`, each quoted so the script receives it verbatim.
pub fn command_line(script: &str, args: &[String]) -> String {
    let mut line = script.trim().to_string();
    for arg in args {
        line.push(' ');
        line.push_str(&shell_quote(arg));
    }
    line
}

/// Quotes one argument for a POSIX shell; plain words are left as they are.
pub fn shell_quote(arg: &str) -> Cow<'_, str> {
    let plain = !arg.is_empty()
        && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-./:@%+=,".contains(&b));
    if plain { Cow::Borrowed(arg) } else { Cow::Owned(format!("'{}'", arg.replace('\'', r"'\''"))) }
}

/// Runs one owner's notify scripts sequentially on a task of its own.
pub struct Notifier {
    tx: mpsc::UnboundedSender<(String, String)>,
    task: JoinHandle<()>,
}

impl Notifier {
    /// Starts the runner; each script may run at most `timeout` (then its process group is killed).
    pub fn spawn(timeout: Duration) -> Notifier {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, String)>();
        let task = tokio::spawn(async move {
            while let Some((command, what)) = rx.recv().await {
                tracing::debug!(script = %command, "{what}: running notify script");
                script::run_logged(command, timeout, what).await;
            }
        });
        Notifier { tx, task }
    }

    /// Queues `command` (a full command line); `what` names it in the logs.
    pub fn run(&self, command: String, what: String) {
        // The receiver lives until `finish`, which consumes self: this cannot fail.
        let _ = self.tx.send((command, what));
    }

    /// Waits (at most `limit`) for the queued scripts to finish, e.g. `notify_stop` on shutdown.
    pub async fn finish(self, limit: Duration) {
        let Notifier { tx, mut task } = self;
        drop(tx);
        if tokio::time::timeout(limit, &mut task).await.is_err() {
            tracing::warn!("notify scripts still running after {limit:?}: abandoning them");
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_arguments_are_keepalived_s() {
        assert_eq!(
            instance_args("VI_1", State::Master, 100),
            ["INSTANCE", "VI_1", "MASTER", "100"]
        );
        assert_eq!(instance_args("web", State::Stop, 1), ["INSTANCE", "web", "STOP", "1"]);
        assert_eq!(group_args("G1", State::Fault), ["GROUP", "G1", "FAULT"]);
    }

    #[test]
    fn specific_script_follows_the_state() {
        let pick = |s| specific(s, Some("m"), Some("b"), None, Some("s"));
        assert_eq!(pick(State::Master), Some("m"));
        assert_eq!(pick(State::Backup), Some("b"));
        assert_eq!(pick(State::Fault), None);
        assert_eq!(pick(State::Stop), Some("s"));
        assert_eq!(pick(State::Initialize), None);
    }

    #[test]
    fn command_line_quotes_only_what_needs_it() {
        let args = instance_args("VI_1", State::Backup, 90);
        assert_eq!(
            command_line("/etc/lb/notify.sh", &args),
            "/etc/lb/notify.sh INSTANCE VI_1 BACKUP 90"
        );
        let odd = vec!["a b".to_string(), "it's".to_string(), String::new(), "$(x)".to_string()];
        assert_eq!(command_line(" /bin/echo -n ", &odd), r"/bin/echo -n 'a b' 'it'\''s' '' '$(x)'");
    }

    #[tokio::test]
    async fn the_shell_sees_the_arguments_verbatim_and_in_order() {
        let tmp = crate::testutil::scratch_dir("lb-vrrp-notify-");
        let dir = tmp.path();
        let out = dir.join("out");
        let script = format!("printf '%s|' >> {}", out.display());
        let notifier = Notifier::spawn(Duration::from_secs(5));
        for (state, prio) in [(State::Backup, 90), (State::Master, 90)] {
            let args = instance_args("odd name's", state, prio);
            notifier.run(command_line(&script, &args), "test".into());
        }
        notifier.finish(Duration::from_secs(10)).await;
        let got = std::fs::read_to_string(&out).unwrap();
        assert_eq!(got, "INSTANCE|odd name's|BACKUP|90|INSTANCE|odd name's|MASTER|90|");
    }
}
