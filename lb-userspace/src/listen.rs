//! Bounds on the agent's own listeners (control socket, metrics). Each serves at most `max`
//! connections at once and gives each a deadline, so a flood of idle clients costs a few hundred
//! file descriptors, never the ones health checks, VRRP and netlink need. Connections beyond the
//! cap are accepted, told "busy" and closed at once: they hold nothing.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};

use crate::control::proto::ListenerView;

/// Control connections served at once; the CLI needs one per command.
pub const MAX_CONTROL_CONNECTIONS: usize = 128;
/// Metrics connections served at once; a scraper needs one per scrape.
pub const MAX_METRICS_CONNECTIONS: usize = 256;
/// How long a connection may take to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a client may take to read the answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// One listener's cap and counters (`lb status`, metrics).
#[derive(Debug)]
pub struct ListenerLimit {
    name: &'static str,
    max: usize,
    permits: Arc<Semaphore>,
    accepted: AtomicU64,
    refused: AtomicU64,
    timed_out: AtomicU64,
}

impl ListenerLimit {
    pub fn new(name: &'static str, max: usize) -> Arc<Self> {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Self {
            name,
            max,
            permits: Arc::new(Semaphore::new(max)),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A slot for one more connection (held until the permit drops), or `None` when all are
    /// taken: the caller closes the connection, which is counted.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
                Some(permit)
            }
            Err(_) => {
                let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                // Once per flood and then every 1000th: a flood must not flood the log too.
                if n == 1 || n.is_multiple_of(1000) {
                    tracing::warn!(
                        listener = self.name,
                        limit = self.max,
                        refused = n,
                        "too many connections: refusing the excess"
                    );
                }
                None
            }
        }
    }

    /// A connection that sent nothing (or read nothing) in time.
    pub fn timed_out(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
    }

    pub fn view(&self) -> ListenerView {
        ListenerView {
            limit: self.max,
            open: self.max - self.permits.available_permits().min(self.max),
            accepted: self.accepted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
        }
    }
}

/// Raises the soft limit on open files to the hard limit, as many daemons do: the listeners are
/// capped, so the rest is headroom for checks. Returns (old soft, new soft).
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let old = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((old, lim.rlim_cur))
}

/// The small HTTP servers (metrics, status page): accepts connections under `limit` until the
/// task is dropped, runs `answer` on each in its own task; the connections beyond the cap are
/// answered 503 and closed.
pub async fn serve_http<F, Fut>(listener: TcpListener, limit: Arc<ListenerLimit>, answer: F)
where
    F: Fn(TcpStream, Arc<ListenerLimit>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    const BUSY: &[u8] =
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Some(permit) = limit.admit() else {
            if let Ok(mut s) = stream.into_std() {
                let _ = std::io::Write::write(&mut s, BUSY);
            }
            continue;
        };
        let answered = answer(stream, limit.clone());
        tokio::spawn(async move {
            answered.await;
            drop(permit);
        });
    }
}

/// Reads a request head into `buf` (its first line says which page), within [`READ_TIMEOUT`];
/// `None` when the client sent nothing in time (counted) or the read failed.
pub async fn read_head(
    stream: &mut TcpStream,
    buf: &mut [u8],
    limit: &ListenerLimit,
) -> Option<usize> {
    match tokio::time::timeout(READ_TIMEOUT, stream.read(buf)).await {
        Ok(Ok(n)) => Some(n),
        Ok(Err(_)) => None,
        Err(_) => {
            limit.timed_out();
            None
        }
    }
}

/// Writes one answer (`extra_headers`: whole `Name: value\r\n` lines) and closes, within
/// [`WRITE_TIMEOUT`] (a client that does not read in time is counted).
pub async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    extra_headers: &str,
    body: &str,
    limit: &ListenerLimit,
) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         {extra_headers}Connection: close\r\n\r\n",
        body.len()
    );
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
    if written.is_err() {
        limit.timed_out();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_cap_and_counts_the_rest() {
        let limit = ListenerLimit::new("test", 2);
        let a = limit.admit().expect("first");
        let b = limit.admit().expect("second");
        assert!(limit.admit().is_none());
        assert!(limit.admit().is_none());
        assert_eq!(limit.view().open, 2);
        drop(a);
        let c = limit.admit().expect("a slot freed");
        limit.timed_out();
        let v = limit.view();
        assert_eq!((v.limit, v.open, v.accepted, v.refused, v.timed_out), (2, 2, 3, 2, 1));
        drop((b, c));
        assert_eq!(limit.view().open, 0);
    }
}
