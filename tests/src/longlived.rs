//! Long-lived TCP connections through a VIP, checked continuously: the yardstick for "existing
//! connections survive" (drain, agent restart, reload, failover).
//!
//! [`LongLived::start`] opens `n` connections from a client namespace to a line-echo service (the
//! `lb-testpeer` `--tcp-echo` server on VIP:7, which answers each line with `NAME line`). A thread per
//! connection then sends `ll-<conn>-<seq>` every `interval` and reads the echo with a time limit,
//! recording which real answered first, the number of good round trips and every problem:
//!
//! - **reset**: `ECONNRESET`/`EPIPE` (e.g. the flow was sent to a real that has no such
//!   connection and answered with a RST) — fatal;
//! - **EOF**: the peer closed the connection — fatal;
//! - **timeout**: no full reply within `reply_timeout` — the connection is kept and tried again
//!   (a late reply to an earlier line is skipped and counted in `late_replies`);
//! - **wrong real**: the answer names a different real than the first answer did;
//! - **garbled**: the answer is not `NAME <the line sent>`;
//! - other I/O errors — fatal.
//!
//! All socket I/O has time limits, and every thread ends by itself `max_duration` after the start
//! (default [`DEFAULT_MAX_DURATION`]) even if the test never calls [`LongLived::stop`]; dropping a
//! [`LongLived`] stops and joins its threads too. [`LongLived::snapshot`] and [`LongLived::stop`]
//! return a [`Report`].

use std::collections::BTreeMap;
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::Netns;

/// Default time limit for one echo.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Default time limit for opening one connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default lifetime after which the checker stops by itself.
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(120);
/// Errors kept per connection; later ones are only counted (`errors_dropped`).
const MAX_ERRORS_KEPT: usize = 20;
/// A "line" longer than this without a newline is reported as garbled.
const MAX_LINE: usize = 4096;

/// Tuning of a [`LongLived`] checker.
#[derive(Clone, Debug)]
pub struct LongLivedOptions {
    /// Time between the starts of two round trips on one connection.
    pub interval: Duration,
    /// How long to wait for one echo before recording a timeout.
    pub reply_timeout: Duration,
    /// Time limit for opening each connection ([`LongLived::start_with`]).
    pub connect_timeout: Duration,
    /// The threads stop by themselves this long after the start (a forgotten checker must not run
    /// on forever); a report taken later says `expired`.
    pub max_duration: Duration,
}

impl Default for LongLivedOptions {
    fn default() -> Self {
        LongLivedOptions {
            interval: Duration::from_millis(100),
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_duration: DEFAULT_MAX_DURATION,
        }
    }
}

/// What went wrong on one round trip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnErrorKind {
    /// Connection reset (`ECONNRESET`, `ECONNABORTED`, `EPIPE`).
    Reset,
    /// No (complete) reply in time, or a write that could not complete in time.
    Timeout,
    /// The peer closed the connection.
    Eof,
    /// The echo came from `got`, but the connection's first echo came from `expected`.
    WrongReal { expected: String, got: String },
    /// The reply is not `NAME <line sent>`.
    Garbled { reply: String },
    /// Any other socket error.
    Io(String),
}

impl fmt::Display for ConnErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnErrorKind::Reset => write!(f, "connection reset"),
            ConnErrorKind::Timeout => write!(f, "timeout"),
            ConnErrorKind::Eof => write!(f, "closed by the peer (EOF)"),
            ConnErrorKind::WrongReal { expected, got } => {
                write!(f, "wrong real: answered by {got}, but the connection was on {expected}")
            }
            ConnErrorKind::Garbled { reply } => write!(f, "garbled reply {reply:?}"),
            ConnErrorKind::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

/// One recorded problem of one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnError {
    /// Time since the checker started.
    pub at: Duration,
    /// Number of the round trip (1-based) it happened on.
    pub round_trip: u64,
    pub kind: ConnErrorKind,
    /// Whether the connection was given up because of it.
    pub fatal: bool,
    /// Extra detail (e.g. the OS error text).
    pub detail: String,
}

/// The state of one connection.
#[derive(Clone, Debug, Default)]
pub struct ConnReport {
    /// 0-based connection number (also in the lines sent: `ll-<index>-<seq>`).
    pub index: usize,
    /// The client side's address (its source port decides the flow hash).
    pub local: Option<SocketAddr>,
    /// The address connected to.
    pub peer: Option<SocketAddr>,
    /// The real named by the first good echo.
    pub first_real: Option<String>,
    /// The real named by the latest good echo.
    pub last_real: Option<String>,
    /// Echoes received that matched the line sent (a wrong-real echo counts too: it is an error,
    /// but the connection works).
    pub round_trips: u64,
    /// Replies to earlier lines that arrived after their timeout (skipped).
    pub late_replies: u64,
    /// Time since start of the latest good echo.
    pub last_ok: Option<Duration>,
    /// False once a fatal error ended the connection (a clean stop keeps it true).
    pub alive: bool,
    /// The first [`MAX_ERRORS_KEPT`] problems.
    pub errors: Vec<ConnError>,
    /// Problems beyond those kept.
    pub errors_dropped: u64,
}

impl ConnReport {
    /// The number of problems, kept or not.
    pub fn error_count(&self) -> u64 {
        self.errors.len() as u64 + self.errors_dropped
    }

    fn label(&self) -> String {
        let local = self.local.map_or_else(|| "?".to_string(), |a| a.to_string());
        let real = self.first_real.as_deref().unwrap_or("no real yet");
        format!("conn {} [{local} on {real}]", self.index)
    }

    fn record(&mut self, err: ConnError) {
        if err.fatal {
            self.alive = false;
        }
        if self.errors.len() < MAX_ERRORS_KEPT {
            self.errors.push(err);
        } else {
            self.errors_dropped += 1;
        }
    }
}

/// What a [`LongLived`] checker saw.
#[derive(Clone, Debug)]
pub struct Report {
    /// Time since the checker started.
    pub elapsed: Duration,
    /// The threads stopped by themselves because `max_duration` passed.
    pub expired: bool,
    /// Whether the threads were still running when this was taken ([`LongLived::snapshot`]).
    pub running: bool,
    /// The `max_duration` the checker ran with (for messages).
    pub max_duration: Duration,
    pub connections: Vec<ConnReport>,
}

impl Report {
    /// Every problem, one human-readable line each (empty when all went well). Includes a line
    /// when the checker stopped itself because `max_duration` passed.
    pub fn errors(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.connections {
            for e in &c.errors {
                let fatal = if e.fatal { " — connection given up" } else { "" };
                let detail =
                    if e.detail.is_empty() { String::new() } else { format!(" ({})", e.detail) };
                out.push(format!(
                    "{} at {:.3} s, round trip {}: {}{detail}{fatal}",
                    c.label(),
                    e.at.as_secs_f64(),
                    e.round_trip,
                    e.kind
                ));
            }
            if c.errors_dropped > 0 {
                out.push(format!("{}: {} more errors not kept", c.label(), c.errors_dropped));
            }
        }
        if self.expired {
            out.push(format!(
                "the checker stopped itself after max_duration {:?}: connections were no longer \
                 exercised (stop it earlier or raise max_duration)",
                self.max_duration
            ));
        }
        out
    }

    /// The number of problems (kept or only counted), plus one if the checker expired.
    pub fn error_count(&self) -> u64 {
        self.connections.iter().map(ConnReport::error_count).sum::<u64>() + u64::from(self.expired)
    }

    /// No problem at all.
    pub fn is_clean(&self) -> bool {
        self.error_count() == 0
    }

    /// Connections per real (by the first echo); connections that never got one count under
    /// `"(no reply)"`.
    pub fn by_real(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for c in &self.connections {
            let key = c.first_real.clone().unwrap_or_else(|| "(no reply)".to_string());
            *m.entry(key).or_insert(0) += 1;
        }
        m
    }

    /// The connections whose first echo came from `real`.
    pub fn on_real(&self, real: &str) -> Vec<&ConnReport> {
        self.connections.iter().filter(|c| c.first_real.as_deref() == Some(real)).collect()
    }

    /// Good round trips over all connections.
    pub fn total_round_trips(&self) -> u64 {
        self.connections.iter().map(|c| c.round_trips).sum()
    }

    /// The fewest round trips any connection made (0 without connections).
    pub fn min_round_trips(&self) -> u64 {
        self.connections.iter().map(|c| c.round_trips).min().unwrap_or(0)
    }

    /// Connections that are still usable.
    pub fn alive(&self) -> usize {
        self.connections.iter().filter(|c| c.alive).count()
    }

    /// Per connection, how many round trips it made since `earlier` (a report of the same
    /// checker), indexed like `connections`.
    pub fn progress_since(&self, earlier: &Report) -> Vec<u64> {
        self.connections
            .iter()
            .map(|c| {
                let before = earlier.connections.get(c.index).map_or(0, |e| e.round_trips);
                c.round_trips.saturating_sub(before)
            })
            .collect()
    }

    /// One line: connections, alive, round trips, spread over reals, error count.
    pub fn summary(&self) -> String {
        format!(
            "{} connections ({} alive), {} round trips (min {} per connection) in {:.1} s, by real \
             {:?}, {} errors{}",
            self.connections.len(),
            self.alive(),
            self.total_round_trips(),
            self.min_round_trips(),
            self.elapsed.as_secs_f64(),
            self.by_real(),
            self.error_count(),
            if self.expired { " (expired)" } else { "" }
        )
    }
}

impl fmt::Display for Report {
    /// The summary, then up to 40 error lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.summary())?;
        let errors = self.errors();
        for e in errors.iter().take(40) {
            write!(f, "\n  {e}")?;
        }
        if errors.len() > 40 {
            write!(f, "\n  ... and {} more", errors.len() - 40)?;
        }
        Ok(())
    }
}

/// Shared between the checker's handle and its threads.
struct Shared {
    stop: Mutex<bool>,
    wake: Condvar,
    expired: AtomicBool,
    conns: Vec<Mutex<ConnReport>>,
    started: Instant,
    opts: LongLivedOptions,
}

impl Shared {
    fn stopped(&self) -> bool {
        *lock(&self.stop)
    }

    fn request_stop(&self) {
        *lock(&self.stop) = true;
        self.wake.notify_all();
    }

    /// Sleeps until `until` or a stop request; true if stop was requested.
    fn sleep_until(&self, until: Instant) -> bool {
        let mut stop = lock(&self.stop);
        loop {
            if *stop {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            stop = self
                .wake
                .wait_timeout(stop, until - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running set of long-lived, continuously checked connections. See the module docs.
pub struct LongLived {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for LongLived {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LongLived")
            .field("connections", &self.shared.conns.len())
            .field("opts", &self.shared.opts)
            .finish()
    }
}

impl LongLived {
    /// Opens `n` connections from `client`'s namespace to `target` (a line-echo service such as
    /// VIP:7) and starts a round trip on each every `interval`; other options are the defaults.
    pub fn start(
        client: &Netns,
        target: SocketAddr,
        n: usize,
        interval: Duration,
    ) -> Result<LongLived> {
        LongLived::start_with(
            client,
            target,
            n,
            LongLivedOptions { interval, ..Default::default() },
        )
    }

    /// [`LongLived::start`] with explicit options.
    pub fn start_with(
        client: &Netns,
        target: SocketAddr,
        n: usize,
        opts: LongLivedOptions,
    ) -> Result<LongLived> {
        let timeout = opts.connect_timeout;
        let streams = client
            .run_in(move || -> Result<Vec<TcpStream>> {
                let mut streams = Vec::with_capacity(n);
                for i in 0..n {
                    let s = TcpStream::connect_timeout(&target, timeout)
                        .with_context(|| format!("connection {i} of {n} (after {i} succeeded)"))?;
                    streams.push(s);
                }
                Ok(streams)
            })?
            .with_context(|| format!("[{}] long-lived connections to {target}", client.name()))?;
        LongLived::from_streams(streams, opts)
    }

    /// Checks connections opened elsewhere (any namespace, any family). Each must lead to a
    /// line-echo service answering `NAME line`.
    pub fn from_streams(streams: Vec<TcpStream>, opts: LongLivedOptions) -> Result<LongLived> {
        if opts.interval.is_zero() || opts.reply_timeout.is_zero() {
            bail!("LongLived: interval and reply_timeout must be positive: {opts:?}");
        }
        let conns = streams
            .iter()
            .enumerate()
            .map(|(index, s)| {
                Mutex::new(ConnReport {
                    index,
                    local: s.local_addr().ok(),
                    peer: s.peer_addr().ok(),
                    alive: true,
                    ..Default::default()
                })
            })
            .collect();
        let shared = Arc::new(Shared {
            stop: Mutex::new(false),
            wake: Condvar::new(),
            expired: AtomicBool::new(false),
            conns,
            started: Instant::now(),
            opts,
        });
        let mut checker = LongLived { shared, threads: Vec::new() };
        for (index, stream) in streams.into_iter().enumerate() {
            let shared = Arc::clone(&checker.shared);
            let spawned = std::thread::Builder::new()
                .name(format!("longlived-{index}"))
                .stack_size(256 * 1024)
                .spawn(move || run_connection(index, stream, &shared));
            match spawned {
                Ok(handle) => checker.threads.push(handle),
                // Dropping `checker` stops and joins the threads already started.
                Err(e) => return Err(e).context("spawning a long-lived connection thread"),
            }
        }
        Ok(checker)
    }

    /// The state so far (threads keep running).
    pub fn snapshot(&self) -> Report {
        self.report(self.threads.iter().any(|t| !t.is_finished()))
    }

    /// Waits until every connection has made at least `min_each` round trips. Fails (with the
    /// report) on timeout or as soon as a connection is given up.
    pub fn wait_round_trips(&self, min_each: u64, timeout: Duration) -> Result<Report> {
        self.wait_for(timeout, &format!("every connection to make {min_each} round trips"), |r| {
            r.connections.iter().all(|c| c.round_trips >= min_each)
        })
    }

    /// Waits until every connection has made at least `more` round trips beyond `earlier` (a report
    /// of this checker). Fails (with the report) on timeout or when a connection is given up.
    pub fn wait_progress(&self, earlier: &Report, more: u64, timeout: Duration) -> Result<Report> {
        self.wait_for(timeout, &format!("every connection to make {more} more round trips"), |r| {
            r.progress_since(earlier).iter().all(|&p| p >= more)
        })
    }

    fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&Report) -> bool,
    ) -> Result<Report> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.snapshot();
            if done(&r) {
                return Ok(r);
            }
            if r.alive() < r.connections.len() {
                bail!("waiting for {what}: a connection was given up: {r}");
            }
            if !r.running {
                bail!("waiting for {what}: the checker is no longer running: {r}");
            }
            if Instant::now() >= deadline {
                bail!("waiting for {what}: not within {timeout:?}: {r}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the threads (each finishes its current round trip, at most `reply_timeout`), closes
    /// the connections and returns the final report.
    pub fn stop(mut self) -> Report {
        self.halt();
        self.report(false)
    }

    fn halt(&mut self) {
        self.shared.request_stop();
        for t in self.threads.drain(..) {
            // A panicking connection thread has nothing more to report; keep the others.
            let _ = t.join();
        }
    }

    fn report(&self, running: bool) -> Report {
        Report {
            elapsed: self.shared.started.elapsed(),
            expired: self.shared.expired.load(Ordering::SeqCst),
            running,
            max_duration: self.shared.opts.max_duration,
            connections: self.shared.conns.iter().map(|c| lock(c).clone()).collect(),
        }
    }
}

impl Drop for LongLived {
    fn drop(&mut self) {
        self.halt();
    }
}

/// What a reply line means for round trip `seq` of connection `index`.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// A correct echo by this real.
    Echo(String),
    /// A correct echo of an earlier line (its round trip already timed out).
    Late,
    /// Anything else.
    Garbled,
}

fn payload(index: usize, seq: u64) -> String {
    format!("ll-{index}-{seq}")
}

fn parse_reply(line: &str, index: usize, seq: u64) -> Reply {
    let Some((name, rest)) = line.split_once(' ') else {
        return Reply::Garbled;
    };
    let name_ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic());
    if !name_ok {
        return Reply::Garbled;
    }
    if rest == payload(index, seq) {
        return Reply::Echo(name.to_string());
    }
    let earlier = rest
        .strip_prefix(&format!("ll-{index}-"))
        .and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|s| s >= 1 && s < seq && rest == payload(index, s));
    if earlier { Reply::Late } else { Reply::Garbled }
}

/// Why no line could be read.
#[derive(Debug)]
enum ReadFail {
    Timeout,
    Eof,
    Io(std::io::Error),
}

/// Buffers bytes between reads so that a line split over segments (or two lines in one) is
/// handled.
#[derive(Default)]
struct LineReader {
    buf: Vec<u8>,
}

impl LineReader {
    /// The next line (without `\n`/`\r\n`, lossy UTF-8), read until `deadline`.
    fn read_line(&mut self, stream: &mut TcpStream, deadline: Instant) -> Result<String, ReadFail> {
        let mut chunk = [0u8; 2048];
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let text = String::from_utf8_lossy(&line[..pos]);
                return Ok(text.trim_end_matches('\r').to_string());
            }
            if self.buf.len() > MAX_LINE {
                let text = String::from_utf8_lossy(&self.buf).into_owned();
                self.buf.clear();
                return Ok(text);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadFail::Timeout);
            }
            stream.set_read_timeout(Some(left)).map_err(ReadFail::Io)?;
            match stream.read(&mut chunk) {
                Ok(0) => return Err(ReadFail::Eof),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if is_would_block(&e) || e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadFail::Io(e)),
            }
        }
    }
}

/// `SO_RCVTIMEO`/`SO_SNDTIMEO` expiry (EAGAIN), as opposed to TCP's own ETIMEDOUT.
fn is_would_block(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::EAGAIN)
}

/// A fatal socket error as a problem kind.
fn classify(e: &std::io::Error) -> ConnErrorKind {
    match e.kind() {
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            ConnErrorKind::Reset
        }
        _ if is_would_block(e) => ConnErrorKind::Timeout,
        _ => ConnErrorKind::Io(format!("{:?}", e.kind())),
    }
}

/// The body of one connection's thread.
fn run_connection(index: usize, mut stream: TcpStream, shared: &Shared) {
    let opts = &shared.opts;
    let conn = &shared.conns[index];
    let end = shared.started + opts.max_duration;
    let problem = |seq: u64, kind: ConnErrorKind, fatal: bool, detail: String| {
        lock(conn).record(ConnError {
            at: shared.started.elapsed(),
            round_trip: seq,
            kind,
            fatal,
            detail,
        });
    };
    if let Err(e) = stream.set_write_timeout(Some(opts.reply_timeout)) {
        problem(0, classify(&e), true, format!("set_write_timeout: {e}"));
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut reader = LineReader::default();
    let mut next = Instant::now();
    let mut seq = 0u64;
    loop {
        if shared.stopped() {
            break;
        }
        if Instant::now() >= end {
            shared.expired.store(true, Ordering::SeqCst);
            break;
        }
        seq += 1;
        let line = payload(index, seq);
        if let Err(e) = stream.write_all(format!("{line}\n").as_bytes()) {
            problem(seq, classify(&e), true, format!("write: {e}"));
            break;
        }
        let deadline = Instant::now() + opts.reply_timeout;
        let fatal = loop {
            match reader.read_line(&mut stream, deadline) {
                Ok(reply) => match parse_reply(&reply, index, seq) {
                    Reply::Echo(real) => {
                        let mut c = lock(conn);
                        c.round_trips += 1;
                        c.last_ok = Some(shared.started.elapsed());
                        c.last_real = Some(real.clone());
                        match c.first_real.clone() {
                            None => c.first_real = Some(real),
                            Some(first) if first != real => {
                                let at = shared.started.elapsed();
                                c.record(ConnError {
                                    at,
                                    round_trip: seq,
                                    kind: ConnErrorKind::WrongReal { expected: first, got: real },
                                    fatal: false,
                                    detail: String::new(),
                                });
                            }
                            Some(_) => {}
                        }
                        break false;
                    }
                    Reply::Late => lock(conn).late_replies += 1,
                    Reply::Garbled => {
                        problem(seq, ConnErrorKind::Garbled { reply }, false, String::new());
                        break false;
                    }
                },
                Err(ReadFail::Timeout) => {
                    let detail = format!("no echo of {line:?} within {:?}", opts.reply_timeout);
                    problem(seq, ConnErrorKind::Timeout, false, detail);
                    break false;
                }
                Err(ReadFail::Eof) => {
                    problem(seq, ConnErrorKind::Eof, true, String::new());
                    break true;
                }
                Err(ReadFail::Io(e)) => {
                    problem(seq, classify(&e), true, format!("read: {e}"));
                    break true;
                }
            }
        };
        if fatal {
            break;
        }
        next += opts.interval;
        let now = Instant::now();
        if next < now {
            next = now;
        }
        if shared.sleep_until(next.min(end)) {
            break;
        }
    }
    // Dropping the stream closes the connection (FIN).
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;

    /// How the fake echo server behaves on every connection.
    #[derive(Clone)]
    enum Mode {
        Echo(&'static str),
        /// Echo as the first name for `n` lines, then as the second.
        Switch(&'static str, &'static str, usize),
        /// Answer line `n` (1-based) with garbage, the others correctly.
        GarbleAt(&'static str, usize),
        /// Close after `n` echoes.
        CloseAfter(&'static str, usize),
        /// Reset (SO_LINGER 0) after `n` echoes.
        ResetAfter(&'static str, usize),
        /// Answer line `n` only after `delay`, in two pieces.
        DelayAt(&'static str, usize, Duration),
        /// Stop answering (but keep the connection) after `n` echoes.
        SilentAfter(&'static str, usize),
    }

    fn server(mode: Mode) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let mode = mode.clone();
                std::thread::spawn(move || serve(conn, mode));
            }
        });
        addr
    }

    fn serve(conn: TcpStream, mode: Mode) {
        let mut w = conn.try_clone().unwrap();
        let mut r = BufReader::new(conn);
        let mut n = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => n += 1,
            }
            let text = line.trim_end();
            let out = match &mode {
                Mode::Echo(name) => format!("{name} {text}\n"),
                Mode::Switch(a, b, k) => format!("{} {text}\n", if n <= *k { a } else { b }),
                Mode::GarbleAt(_, k) if n == *k => "what?\n".to_string(),
                Mode::GarbleAt(name, _) => format!("{name} {text}\n"),
                Mode::CloseAfter(_, k) if n > *k => return,
                Mode::CloseAfter(name, _) => format!("{name} {text}\n"),
                Mode::ResetAfter(_, k) if n > *k => {
                    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
                    // SAFETY: setsockopt with a valid fd and a correctly sized struct.
                    unsafe {
                        libc::setsockopt(
                            w.as_raw_fd(),
                            libc::SOL_SOCKET,
                            libc::SO_LINGER,
                            (&linger as *const libc::linger).cast(),
                            std::mem::size_of::<libc::linger>() as libc::socklen_t,
                        );
                    }
                    return;
                }
                Mode::ResetAfter(name, _) => format!("{name} {text}\n"),
                Mode::DelayAt(name, k, delay) if n == *k => {
                    std::thread::sleep(*delay);
                    let reply = format!("{name} {text}\n");
                    let (a, b) = reply.split_at(3);
                    let _ = w.write_all(a.as_bytes());
                    std::thread::sleep(Duration::from_millis(5));
                    b.to_string()
                }
                Mode::DelayAt(name, _, _) => format!("{name} {text}\n"),
                Mode::SilentAfter(_, k) if n > *k => continue,
                Mode::SilentAfter(name, _) => format!("{name} {text}\n"),
            };
            if w.write_all(out.as_bytes()).is_err() {
                return;
            }
        }
    }

    fn opts() -> LongLivedOptions {
        LongLivedOptions {
            interval: Duration::from_millis(10),
            reply_timeout: Duration::from_millis(300),
            ..Default::default()
        }
    }

    fn connect(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
        (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect()
    }

    fn run(mode: Mode, n: usize, opts: LongLivedOptions, wait: Duration) -> Report {
        let ll = LongLived::from_streams(connect(server(mode), n), opts).unwrap();
        std::thread::sleep(wait);
        ll.stop()
    }

    #[test]
    fn replies_are_parsed() {
        assert_eq!(parse_reply("rs1 ll-3-7", 3, 7), Reply::Echo("rs1".into()));
        assert_eq!(parse_reply("rs1 ll-3-6", 3, 7), Reply::Late);
        assert_eq!(parse_reply("rs1 ll-3-8", 3, 7), Reply::Garbled, "a future line");
        assert_eq!(parse_reply("rs1 ll-4-7", 3, 7), Reply::Garbled, "another connection's line");
        assert_eq!(parse_reply("rs1 ll-3-07", 3, 7), Reply::Garbled);
        assert_eq!(parse_reply("rs1 ll-3-0", 3, 7), Reply::Garbled);
        assert_eq!(parse_reply("ll-3-7", 3, 7), Reply::Garbled);
        assert_eq!(parse_reply(" ll-3-7", 3, 7), Reply::Garbled);
        assert_eq!(parse_reply("rs1 ll-3-7 x", 3, 7), Reply::Garbled);
    }

    #[test]
    fn socket_errors_are_classified() {
        use std::io::Error;
        assert_eq!(classify(&Error::from_raw_os_error(libc::ECONNRESET)), ConnErrorKind::Reset);
        assert_eq!(classify(&Error::from_raw_os_error(libc::EPIPE)), ConnErrorKind::Reset);
        assert_eq!(classify(&Error::from_raw_os_error(libc::EAGAIN)), ConnErrorKind::Timeout);
        assert!(matches!(
            classify(&Error::from_raw_os_error(libc::ETIMEDOUT)),
            ConnErrorKind::Io(_)
        ));
    }

    #[test]
    fn report_helpers() {
        let conn = |index, real: Option<&str>, rt, errors: Vec<ConnError>| ConnReport {
            index,
            local: Some("192.0.2.1:40000".parse().unwrap()),
            first_real: real.map(str::to_string),
            round_trips: rt,
            alive: true,
            errors,
            ..Default::default()
        };
        let err = ConnError {
            at: Duration::from_millis(1500),
            round_trip: 4,
            kind: ConnErrorKind::Reset,
            fatal: true,
            detail: "read: Connection reset by peer".into(),
        };
        let before = Report {
            elapsed: Duration::from_secs(1),
            expired: false,
            running: true,
            max_duration: DEFAULT_MAX_DURATION,
            connections: vec![
                conn(0, Some("rs1"), 1, vec![]),
                conn(1, Some("rs2"), 2, vec![]),
                conn(2, None, 0, vec![]),
            ],
        };
        assert!(before.is_clean());
        let mut after = before.clone();
        after.connections[0] = conn(0, Some("rs1"), 5, vec![err]);
        after.connections[1] = conn(1, Some("rs2"), 9, vec![]);
        after.connections[2] = conn(2, Some("rs1"), 3, vec![]);
        after.connections[2].errors_dropped = 2;
        after.expired = true;
        assert_eq!(
            after.by_real(),
            BTreeMap::from([("rs1".to_string(), 2), ("rs2".to_string(), 1)])
        );
        assert_eq!(before.by_real().get("(no reply)"), Some(&1));
        assert_eq!(after.total_round_trips(), 17);
        assert_eq!(after.min_round_trips(), 3);
        assert_eq!(after.progress_since(&before), vec![4, 7, 3]);
        assert_eq!(after.on_real("rs1").len(), 2);
        assert_eq!(after.error_count(), 4, "1 kept + 2 dropped + expiry");
        let errors = after.errors();
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert_eq!(
            errors[0],
            "conn 0 [192.0.2.1:40000 on rs1] at 1.500 s, round trip 4: connection reset (read: \
             Connection reset by peer) — connection given up"
        );
        assert!(errors[1].contains("2 more errors"), "{}", errors[1]);
        assert!(errors[2].contains("max_duration"), "{}", errors[2]);
        let text = after.to_string();
        assert!(text.starts_with("3 connections (3 alive), 17 round trips"), "{text}");
    }

    #[test]
    fn healthy_connections_have_no_errors() {
        let ll = LongLived::from_streams(connect(server(Mode::Echo("rsA")), 3), opts()).unwrap();
        let r = ll.wait_round_trips(5, Duration::from_secs(5)).unwrap();
        assert!(r.running);
        let before = ll.snapshot();
        ll.wait_progress(&before, 3, Duration::from_secs(5)).unwrap();
        let r = ll.stop();
        assert!(!r.running);
        assert!(r.is_clean(), "{r}");
        assert_eq!(r.by_real(), BTreeMap::from([("rsA".to_string(), 3)]));
        assert!(r.min_round_trips() >= 8, "{r}");
        assert_eq!(r.alive(), 3);
        assert!(r.connections.iter().all(|c| c.last_real.as_deref() == Some("rsA")));
        assert!(r.connections.iter().all(|c| c.local.is_some() && c.peer.is_some()));
    }

    #[test]
    fn interval_paces_the_round_trips() {
        let o = LongLivedOptions { interval: Duration::from_millis(50), ..opts() };
        let r = run(Mode::Echo("rsA"), 1, o, Duration::from_millis(520));
        // First at t=0, then every 50 ms: 11 in 520 ms (allow scheduling slack).
        let rt = r.total_round_trips();
        assert!((6..=12).contains(&rt), "{rt} round trips at 50 ms in 520 ms");
    }

    #[test]
    fn a_different_real_is_reported() {
        let r = run(Mode::Switch("rsA", "rsB", 3), 1, opts(), Duration::from_millis(200));
        let c = &r.connections[0];
        assert_eq!(c.first_real.as_deref(), Some("rsA"));
        assert_eq!(c.last_real.as_deref(), Some("rsB"));
        assert!(c.alive);
        assert!(c.errors.iter().all(|e| e.round_trip >= 4), "{r}");
        assert!(
            r.errors()[0].contains("wrong real: answered by rsB, but the connection was on rsA")
        );
        assert!(c.error_count() > 1, "every later echo is wrong too: {r}");
    }

    #[test]
    fn garbled_replies_are_reported() {
        let r = run(Mode::GarbleAt("rsA", 2), 1, opts(), Duration::from_millis(150));
        let c = &r.connections[0];
        assert_eq!(c.errors.len(), 1, "{r}");
        assert_eq!(c.errors[0].round_trip, 2);
        assert_eq!(c.errors[0].kind, ConnErrorKind::Garbled { reply: "what?".into() });
        assert!(c.alive && c.round_trips >= 3, "{r}");
    }

    #[test]
    fn eof_ends_the_connection() {
        let r = run(Mode::CloseAfter("rsA", 2), 2, opts(), Duration::from_millis(200));
        for c in &r.connections {
            assert!(!c.alive);
            assert_eq!(c.round_trips, 2);
            assert_eq!(c.errors.len(), 1, "{r}");
            assert_eq!(c.errors[0].kind, ConnErrorKind::Eof);
            assert_eq!(c.errors[0].round_trip, 3);
        }
        assert!(r.errors()[0].contains("closed by the peer (EOF)"), "{r}");
    }

    #[test]
    fn reset_ends_the_connection() {
        let r = run(Mode::ResetAfter("rsA", 1), 1, opts(), Duration::from_millis(200));
        let c = &r.connections[0];
        assert!(!c.alive);
        assert_eq!(c.round_trips, 1);
        assert_eq!(c.errors.len(), 1, "{r}");
        assert_eq!(c.errors[0].kind, ConnErrorKind::Reset, "{r}");
    }

    #[test]
    fn silence_is_a_timeout_and_the_connection_is_kept() {
        let o = LongLivedOptions { reply_timeout: Duration::from_millis(100), ..opts() };
        let r = run(Mode::SilentAfter("rsA", 2), 1, o, Duration::from_millis(450));
        let c = &r.connections[0];
        assert!(c.alive, "{r}");
        assert_eq!(c.round_trips, 2);
        assert!(c.errors.len() >= 2, "{r}");
        assert!(c.errors.iter().all(|e| e.kind == ConnErrorKind::Timeout && !e.fatal), "{r}");
    }

    #[test]
    fn a_late_reply_is_skipped_after_its_timeout() {
        // Line 2 is answered 100 ms after its timeout, well before line 3's timeout.
        let o = LongLivedOptions { reply_timeout: Duration::from_millis(200), ..opts() };
        let r = run(
            Mode::DelayAt("rsA", 2, Duration::from_millis(300)),
            1,
            o,
            Duration::from_millis(800),
        );
        let c = &r.connections[0];
        assert_eq!(c.errors.len(), 1, "only the timeout: {r}");
        assert_eq!(c.errors[0].kind, ConnErrorKind::Timeout);
        assert_eq!(c.errors[0].round_trip, 2);
        assert_eq!(c.late_replies, 1, "{r}");
        assert!(c.alive && c.round_trips >= 4, "{r}");
    }

    #[test]
    fn it_stops_by_itself_after_max_duration() {
        let o = LongLivedOptions { max_duration: Duration::from_millis(150), ..opts() };
        let ll = LongLived::from_streams(connect(server(Mode::Echo("rsA")), 2), o).unwrap();
        assert!(
            crate::wait_until(Duration::from_secs(3), || !ll.snapshot().running),
            "threads still running after max_duration"
        );
        let r = ll.snapshot();
        assert!(r.expired);
        let rt = r.total_round_trips();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(ll.snapshot().total_round_trips(), rt, "no round trips after expiry");
        assert!(!r.is_clean());
        assert!(ll.wait_round_trips(1_000_000, Duration::from_secs(1)).is_err());
        drop(ll);
    }

    #[test]
    fn drop_stops_promptly_even_while_waiting_for_a_reply() {
        let o = LongLivedOptions { reply_timeout: Duration::from_millis(500), ..opts() };
        let ll =
            LongLived::from_streams(connect(server(Mode::SilentAfter("rsA", 0)), 4), o).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        drop(ll);
        assert!(t.elapsed() < Duration::from_millis(1500), "drop took {:?}", t.elapsed());
    }

    #[test]
    fn bad_options_are_refused() {
        let o = LongLivedOptions { interval: Duration::ZERO, ..opts() };
        assert!(LongLived::from_streams(Vec::new(), o).is_err());
        let r = LongLived::from_streams(Vec::new(), opts()).unwrap().stop();
        assert!(r.is_clean() && r.connections.is_empty());
    }
}
