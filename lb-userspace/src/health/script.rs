//! Running operator scripts (MISC_CHECK, notify and quorum scripts) the way keepalived does:
//! `/bin/sh -c COMMAND`, no arguments, no stdio, bounded in time.
//!
//! Each script gets its own process group, so that a timeout (or the monitor stopping) kills
//! whatever the script started too, not just the shell. With a `script_user` (keepalived's
//! global), every script runs as that user: its uid, its group (or the one given) and its
//! supplementary groups, set in the child before the shell starts.

use std::{
    ffi::CString,
    io,
    process::ExitStatus,
    process::Stdio,
    sync::{PoisonError, RwLock},
    time::Duration,
};

use tokio::process::Command;

/// The identity scripts run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptUser {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// Supplementary groups (the user's, from the group database).
    pub groups: Vec<libc::gid_t>,
}

/// Why a `script_user` cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScriptUserError {
    #[error("no such user `{0}`")]
    NoUser(String),
    #[error("no such group `{0}`")]
    NoGroup(String),
}

/// Who runs the scripts; None: the agent's own user.
static SCRIPT_USER: RwLock<Option<ScriptUser>> = RwLock::new(None);

/// Sets who runs scripts from now on (at start and on every reload).
pub fn set_script_user(user: Option<ScriptUser>) {
    *SCRIPT_USER.write().unwrap_or_else(PoisonError::into_inner) = user;
}

/// Makes the config's `script_user` (or none) the one scripts run as.
pub fn apply_setting(
    setting: Option<&crate::config::ScriptUserSetting>,
) -> Result<(), ScriptUserError> {
    let user = setting.map(|s| ScriptUser::resolve(&s.user, s.group.as_deref())).transpose()?;
    if let Some(u) = &user {
        tracing::info!(user = %u.name, uid = u.uid, gid = u.gid, "scripts run as the script user");
    }
    set_script_user(user);
    Ok(())
}

fn script_user() -> Option<ScriptUser> {
    SCRIPT_USER.read().unwrap_or_else(PoisonError::into_inner).clone()
}

impl ScriptUser {
    /// Looks `user` (and `group`, else the user's own) up in the system's databases.
    pub fn resolve(user: &str, group: Option<&str>) -> Result<ScriptUser, ScriptUserError> {
        let no_user = || ScriptUserError::NoUser(user.to_owned());
        let c_user = CString::new(user).map_err(|_| no_user())?;
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        // SAFETY: getpwnam_r writes into `pw` and `buf`, both ours and large enough or it says so.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe {
            libc::getpwnam_r(c_user.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut found)
        };
        if rc != 0 || found.is_null() {
            return Err(no_user());
        }
        let (uid, mut gid) = (pw.pw_uid, pw.pw_gid);
        if let Some(group) = group {
            let no_group = || ScriptUserError::NoGroup(group.to_owned());
            let c_group = CString::new(group).map_err(|_| no_group())?;
            // SAFETY: as above, for the group database.
            let mut gr: libc::group = unsafe { std::mem::zeroed() };
            let mut found: *mut libc::group = std::ptr::null_mut();
            let rc = unsafe {
                libc::getgrnam_r(c_group.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut found)
            };
            if rc != 0 || found.is_null() {
                return Err(no_group());
            }
            gid = gr.gr_gid;
        }
        let mut groups = vec![0 as libc::gid_t; 256];
        let mut n = groups.len() as libc::c_int;
        // SAFETY: `groups` has room for `n` entries; getgrouplist says how many it wrote.
        let rc = unsafe { libc::getgrouplist(c_user.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        groups.truncate(if rc < 0 { 0 } else { usize::try_from(n).unwrap_or(0) });
        if !groups.contains(&gid) {
            groups.push(gid);
        }
        Ok(ScriptUser { name: user.to_owned(), uid, gid, groups })
    }
}

/// Why a script gave no exit status.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("cannot start /bin/sh (as the script user): {0}")]
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
    run_shell_as(command, timeout, script_user()).await
}

/// [`run_shell`] as `user` (None: the agent's own user).
async fn run_shell_as(
    command: &str,
    timeout: Duration,
    user: Option<ScriptUser>,
) -> Result<ExitStatus, ScriptError> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: geteuid/getegid have no preconditions.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    // Already that user (e.g. `script_user lb` under the unit): nothing to change, and changing
    // groups would need CAP_SETGID.
    if let Some(user) = user.filter(|u| (u.uid, u.gid) != (euid, egid)) {
        // Groups first, while still privileged; the uid last. A failure fails the spawn: a
        // script never runs as the agent when it should not.
        // SAFETY: only setgroups, setgid and setuid (async-signal-safe syscalls) run in the child.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(user.groups.len(), user.groups.as_ptr()) != 0
                    || libc::setgid(user.gid) != 0
                    || libc::setuid(user.uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(ScriptError::Spawn)?;
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

    #[test]
    fn unknown_users_and_groups_are_refused() {
        let root = ScriptUser::resolve("root", None).expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0));
        let cases = [
            ("lb-no-such-user-x", None, ScriptUserError::NoUser("lb-no-such-user-x".into())),
            (
                "root",
                Some("lb-no-such-group-x"),
                ScriptUserError::NoGroup("lb-no-such-group-x".into()),
            ),
            ("bad\0name", None, ScriptUserError::NoUser("bad\0name".into())),
        ];
        for (user, group, want) in cases {
            assert_eq!(ScriptUser::resolve(user, group), Err(want), "{user} {group:?}");
        }
    }

    /// A real user created for the test: the script runs with its uid, the group given and its
    /// supplementary groups. (`run_shell_as`: the process-wide setting would also change the
    /// user of other tests' scripts running meanwhile.)
    #[tokio::test]
    async fn scripts_run_as_the_script_user() {
        if !crate::testutil::require_root("script_user") {
            return;
        }
        let name = format!("lbsu{}", std::process::id() % 100_000);
        let supplementary = format!("{name}x");
        let run = |args: &[&str]| std::process::Command::new(args[0]).args(&args[1..]).status();
        struct Cleanup(String, String);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::process::Command::new("userdel").arg(&self.0).status();
                let _ = std::process::Command::new("groupdel").arg(&self.1).status();
            }
        }
        assert!(run(&["groupadd", "--system", &supplementary]).expect("groupadd").success());
        let _cleanup = Cleanup(name.clone(), supplementary.clone());
        let added = run(&[
            "useradd",
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--groups",
            &supplementary,
            &name,
        ]);
        assert!(added.expect("useradd").success());
        let user = ScriptUser::resolve(&name, Some("daemon")).expect("resolve");
        let daemon = ScriptUser::resolve("daemon", None).expect("daemon").gid;
        assert_eq!(user.gid, daemon);

        let tmp = crate::testutil::scratch_dir("lb-script-user-");
        let out = tmp.path().join("id");
        // World-writable folder: the script, no longer root, writes its identity there.
        std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("chmod");
        let cmd = format!("id -u > {0}; id -g >> {0}; id -G >> {0}", out.display());
        let status =
            run_shell_as(&cmd, Duration::from_secs(5), Some(user.clone())).await.expect("ran");
        assert!(status.success());
        let text = std::fs::read_to_string(&out).expect("id output");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], user.uid.to_string(), "uid: {text}");
        assert_eq!(lines[1], daemon.to_string(), "gid: {text}");
        let sup = ScriptUser::resolve("root", Some(&supplementary)).expect("group").gid;
        assert!(lines[2].split(' ').any(|g| g == sup.to_string()), "supplementary: {text}");
        assert!(!lines[2].split(' ').any(|g| g == "0"), "root's group kept: {text}");

        // Without one: the agent's own user.
        run_shell_as(&cmd, Duration::from_secs(5), None).await.expect("ran");
        let text = std::fs::read_to_string(&out).expect("id output");
        assert_eq!(text.lines().next(), Some("0"), "{text}");
    }

    /// `script_user` in both config formats: read, checked against the user database (an
    /// unknown user or group is a located error), and no longer a warning in keepalived.conf.
    #[test]
    fn script_user_in_toml_and_keepalived_conf() {
        use crate::config::{FormatChoice, ScriptUserSetting, Strictness, SystemHost, load};
        let tmp = crate::testutil::scratch_dir("lb-script-user-cfg-");
        let setting = |user: &str, group: Option<&str>| ScriptUserSetting {
            user: user.to_owned(),
            group: group.map(str::to_owned),
        };
        // (file, text, the setting, or the error's location and text)
        type Case = (&'static str, &'static str, Result<Option<ScriptUserSetting>, &'static str>);
        let cases: Vec<Case> = vec![
            ("a.toml", "", Ok(None)),
            ("b.toml", "script_user = \"root\"\n", Ok(Some(setting("root", None)))),
            (
                "c.toml",
                "script_user = \"root:daemon\"\n",
                Ok(Some(setting("root", Some("daemon")))),
            ),
            (
                "d.toml",
                "script_user = \"lb-no-such-user-x\"\n",
                Err(":1:15: `script_user`: no such user `lb-no-such-user-x`"),
            ),
            (
                "e.toml",
                "script_user = \"root:lb-no-such-group-x\"\n",
                Err(":1:15: `script_user`: no such group"),
            ),
            ("f.toml", "script_user = 0\n", Err(":1:15: `script_user` must be a string")),
            ("g.conf", "global_defs {\n  script_user root\n}\n", Ok(Some(setting("root", None)))),
            (
                "h.conf",
                "global_defs {\n  script_user root daemon\n}\n",
                Ok(Some(setting("root", Some("daemon")))),
            ),
            (
                "i.conf",
                "global_defs {\n  script_user lb-no-such-user-x\n}\n",
                Err(":2:15: `script_user`: no such user"),
            ),
        ];
        for (file, text, want) in cases {
            let path = tmp.path().join(file);
            std::fs::write(&path, text).expect("write");
            let got = load(&path, FormatChoice::Auto, &SystemHost, Strictness::Strict);
            match (got, want) {
                (Ok(loaded), Ok(setting)) => {
                    assert_eq!(loaded.config.script_user, setting, "{file}");
                    // `lb convert` keeps it.
                    let toml = crate::config::emit(&loaded.config);
                    let back = crate::config::parse_toml(
                        &toml,
                        &path,
                        &crate::config::test_support::FakeHost,
                    )
                    .unwrap_or_else(|e| panic!("{file}: {e}\n{toml}"));
                    assert_eq!(back.script_user, setting, "{file}: {toml}");
                    assert!(loaded.warnings.is_empty(), "{file}: {:?}", loaded.warnings);
                }
                (Err(errors), Err(at)) => {
                    let text = errors.to_string();
                    assert!(text.contains(at), "{file}: {text} lacks {at}");
                }
                (Ok(loaded), Err(at)) => {
                    panic!("{file}: accepted {:?}, want {at}", loaded.config.script_user)
                }
                (Err(errors), Ok(_)) => panic!("{file}: {errors}"),
            }
        }
    }
}
