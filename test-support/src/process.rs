//! Child processes started by the harness.
//!
//! Every child runs in its own process group (so `ip netns exec` and whatever it starts can be killed
//! together), gets `PR_SET_PDEATHSIG=SIGKILL` (so a test binary killed by a timeout does not leave
//! servers behind), and is killed with its whole group when its [`Process`] guard drops.

use anyhow::{Context, Result, anyhow, bail};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Default limit for short commands run through [`run_command`]: generous, only there so that a hung
/// command fails the test instead of hanging CI.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A running child process; dropping it SIGKILLs its whole process group and reaps it.
///
/// Note: because of `PR_SET_PDEATHSIG`, the child is also killed when the *thread* that spawned it
/// exits, so spawn long-lived processes from the thread that owns the guard (the test's thread).
pub struct Process {
    label: String,
    child: Child,
    status: Option<ExitStatus>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    lines: mpsc::Receiver<String>,
    readers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("label", &self.label)
            .field("pid", &self.child.id())
            .field("status", &self.status)
            .finish()
    }
}

impl Process {
    /// Spawns `cmd` (stdin null, stdout/stderr captured) in a new process group.
    ///
    /// `label` only names the process in error messages.
    pub fn spawn(mut cmd: Command, label: &str) -> Result<Process> {
        let parent = std::process::id();
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        // SAFETY: the closure only calls async-signal-safe functions (prctl, getppid, _exit).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl: then nobody would kill us.
                if libc::getppid() as u32 != parent {
                    libc::_exit(127);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().with_context(|| format!("spawning {label}: {cmd:?}"))?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(spawn_line_reader(out, Arc::clone(&stdout), tx));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(spawn_reader(err, Arc::clone(&stderr)));
        }
        Ok(Process {
            label: label.to_string(),
            child,
            status: None,
            stdout,
            stderr,
            lines,
            readers,
        })
    }

    /// The child's pid, which is also its process-group id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The label given at spawn time.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Everything the child wrote to stdout so far (lossy UTF-8).
    pub fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&lock(&self.stdout)).into_owned()
    }

    /// Everything the child wrote to stderr so far (lossy UTF-8).
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&lock(&self.stderr)).into_owned()
    }

    /// Waits for a stdout line (without its newline) matching `pred`; lines read while waiting are
    /// consumed. Fails on timeout or when the child closes stdout first, quoting its stderr.
    pub fn wait_for_line(
        &mut self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return Ok(line),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                    "{}: no expected stdout line within {timeout:?}; stdout: {:?}; stderr: {:?}",
                    self.label,
                    self.stdout_so_far(),
                    self.stderr_so_far()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Give the child a moment to be reapable so the message can say how it ended.
                    let status = self.wait_timeout(Duration::from_millis(500)).ok().flatten();
                    bail!(
                        "{}: stdout closed before the expected line (exit: {status:?}); stderr: {:?}",
                        self.label,
                        self.stderr_so_far()
                    )
                }
            }
        }
    }

    /// Waits until the child's stderr so far has a line matching `pred` (stderr is not consumed).
    pub fn wait_for_stderr_line(
        &self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.stderr_so_far().lines().find(|l| pred(l)) {
                return Ok(line.to_owned());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{}: no expected stderr line within {timeout:?}; stderr: {:?}",
                    self.label,
                    self.stderr_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to the child's whole process group.
    pub fn signal(&self, sig: i32) -> Result<()> {
        if self.status.is_some() {
            bail!("{}: already exited and reaped", self.label);
        }
        kill_group(self.pid(), sig).with_context(|| format!("signalling {}", self.label))
    }

    /// Non-blocking exit check. When the group leader has exited, the rest of its group is killed
    /// *before* reaping it, so the group id cannot be recycled while we may still signal it.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        if !leader_exited(self.pid())? {
            return Ok(None);
        }
        let _ = kill_group(self.pid(), libc::SIGKILL);
        let status = self.child.wait().context("reaping child")?;
        self.status = Some(status);
        Ok(Some(status))
    }

    /// Waits up to `timeout` for the child to exit; `Ok(None)` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILLs the whole group and reaps the leader.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let _ = kill_group(self.pid(), libc::SIGKILL);
        let status = self.child.wait().context("reaping child")?;
        self.status = Some(status);
        Ok(status)
    }

    /// Waits for exit (killing the group after `timeout`) and returns everything it printed.
    pub fn wait_with_output(mut self, timeout: Duration) -> Result<Output> {
        let status = match self.wait_timeout(timeout)? {
            Some(status) => status,
            None => {
                self.kill()?;
                bail!(
                    "{}: still running after {timeout:?}, killed; stdout: {:?}; stderr: {:?}",
                    self.label,
                    self.stdout_so_far(),
                    self.stderr_so_far()
                );
            }
        };
        // The group is dead, so the pipes are closed and the readers finish promptly.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Ok(Output {
            status,
            stdout: std::mem::take(&mut *lock(&self.stdout)),
            stderr: std::mem::take(&mut *lock(&self.stderr)),
        })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.status.is_none() {
            // The leader is not reaped yet, so its pid (= our group id) cannot have been reused.
            let _ = kill_group(self.pid(), libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` to completion (killed after `timeout`) and fails, quoting stderr, unless it exits 0.
pub fn run_command(cmd: Command, timeout: Duration) -> Result<Output> {
    let label = describe(&cmd);
    let out = Process::spawn(cmd, &label)?.wait_with_output(timeout)?;
    if !out.status.success() {
        bail!(
            "`{label}` failed ({}): {}",
            describe_status(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// A shell-like rendering of a command for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    }
}

fn lock(m: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn spawn_line_reader(
    out: ChildStdout,
    buf: Arc<Mutex<Vec<u8>>>,
    tx: mpsc::Sender<String>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(out);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    lock(&buf).extend_from_slice(&line);
                    let text = String::from_utf8_lossy(&line);
                    let _ = tx.send(text.trim_end_matches(['\n', '\r']).to_string());
                }
            }
        }
    })
}

fn spawn_reader(mut err: ChildStderr, buf: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match err.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => lock(&buf).extend_from_slice(&chunk[..n]),
            }
        }
    })
}

/// `kill(-pgid, sig)`; a group that is already gone is not an error.
fn kill_group(pgid: u32, sig: i32) -> Result<()> {
    let pgid = i32::try_from(pgid).map_err(|_| anyhow!("pid {pgid} out of range"))?;
    // SAFETY: plain syscall wrapper; a negative pid addresses the process group.
    if unsafe { libc::kill(-pgid, sig) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err.into());
        }
    }
    Ok(())
}

/// Whether the child has exited, without reaping it (`waitid(WNOWAIT)`).
fn leader_exited(pid: u32) -> Result<bool> {
    // SAFETY: siginfo_t is plain data; waitid fills it in.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("waitid");
    }
    // SAFETY: with WNOHANG, si_pid stays 0 when no child changed state.
    Ok(unsafe { info.si_pid() } != 0)
}
