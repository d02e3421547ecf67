//! The agent side of the control socket.

use std::{
    io::{self, Write as _},
    os::unix::{
        fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
        net::UnixStream as StdUnixStream,
    },
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
};

use super::{
    MAX_REQUEST,
    proto::{Request, Response},
};
use crate::listen::{ListenerLimit, READ_TIMEOUT, WRITE_TIMEOUT};

/// Answers decoded requests; implemented by the agent, and by fakes in tests.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request) -> Response;
}

/// A bound control socket; the file is removed when this is dropped, if it is still ours.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file we created: stop removes only that file.
    identity: (u64, u64),
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another lb agent is already listening on {0}")]
    InUse(PathBuf),
    #[error(
        "control socket {path}: refusing to replace it, it is not a socket but a {kind} \
         (is --socket a typo?)"
    )]
    NotASocket { path: PathBuf, kind: &'static str },
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What a file is, in words, for a refusal.
fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_file() {
        "regular file"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_symlink() {
        "symbolic link"
    } else if ft.is_fifo() {
        "FIFO"
    } else {
        "device or other file"
    }
}

impl ControlSocket {
    /// Binds `path` (creating its directory), refusing to steal a socket a live agent uses and
    /// to delete anything that is not a socket.
    pub fn bind(path: &Path) -> Result<Self, BindError> {
        let io_err = |source| BindError::Io { path: path.to_owned(), source };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(BindError::NotASocket {
                    path: path.to_owned(),
                    kind: kind_of(meta.file_type()),
                });
            }
            Ok(_) => match StdUnixStream::connect(path) {
                Ok(_) => return Err(BindError::InUse(path.to_owned())),
                // Left behind by an agent that died: nobody answers on it.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(io_err)?;
                }
                Err(e) => return Err(io_err(e)),
            },
        }
        let listener = UnixListener::bind(path).map_err(io_err)?;
        let meta = std::fs::symlink_metadata(path).map_err(io_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
        Ok(Self { listener, path: path.to_owned(), identity: (meta.dev(), meta.ino()) })
    }

    /// Serves connections until the task is dropped. One slow client never blocks the others;
    /// at most `limit`'s cap are served at once, the excess is told "busy" and closed.
    pub async fn serve(self, handler: Arc<dyn Handler>, limit: Arc<ListenerLimit>) {
        let busy = busy_response(&limit);
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let Some(permit) = limit.admit() else {
                        refuse(stream, &busy);
                        continue;
                    };
                    let h = handler.clone();
                    let limit = limit.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_one(stream, h, &limit).await {
                            tracing::debug!(error = %e, "control connection failed");
                        }
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// The one line a refused client reads.
fn busy_response(limit: &ListenerLimit) -> Vec<u8> {
    let text =
        format!("busy: {} control connections are open already; try again", limit.view().limit);
    let mut out = serde_json::to_vec(&Response::error(text)).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Tells a refused client why (if its buffer takes it at once) and closes the connection.
fn refuse(stream: UnixStream, busy: &[u8]) {
    if let Ok(mut s) = stream.into_std() {
        let _ = s.write(busy);
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        // Only our own socket: the path may have been replaced since (another agent's socket,
        // a file an operator put there).
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.identity);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn serve_one(
    stream: UnixStream,
    handler: Arc<dyn Handler>,
    limit: &ListenerLimit,
) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64 + 1));
    let mut line = String::new();
    let read = tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await;
    let response = match read {
        Err(_) => {
            limit.timed_out();
            Response::error("timed out waiting for a request")
        }
        Ok(Err(e)) => Response::error(format!("bad request: {e}")),
        Ok(Ok(_)) if line.len() > MAX_REQUEST => {
            Response::error(format!("bad request: longer than {MAX_REQUEST} bytes"))
        }
        Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim()) {
            Ok(req) => {
                let h = handler.clone();
                tokio::task::spawn_blocking(move || h.handle(req))
                    .await
                    .unwrap_or_else(|e| Response::error(format!("internal error: {e}")))
            }
            Err(e) => Response::error(format!("bad request: {e}")),
        },
    };
    let mut out = serde_json::to_vec(&response).map_err(io::Error::other)?;
    out.push(b'\n');
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        write.write_all(&out).await?;
        write.shutdown().await
    })
    .await;
    written.unwrap_or_else(|_| {
        limit.timed_out();
        Err(io::Error::new(io::ErrorKind::TimedOut, "client did not read the response"))
    })
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader as StdBufReader, Write as _};

    use super::*;
    use crate::control::client;

    struct Echo;
    impl Handler for Echo {
        fn handle(&self, request: Request) -> Response {
            Response::ok(serde_json::json!({ "got": format!("{request:?}") }))
        }
    }

    fn raw(path: &Path, text: &str) -> Response {
        let mut s = StdUnixStream::connect(path).expect("connect");
        // A refused connection may be closed before the request is written: read anyway.
        let _ = s.write_all(text.as_bytes());
        let mut line = String::new();
        StdBufReader::new(s).read_line(&mut line).expect("read");
        serde_json::from_str(&line).expect("response is JSON")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_requests_refuses_garbage_and_protects_the_socket() {
        let tmp = crate::testutil::scratch_dir("lb-ctl-test-");
        let path = tmp.path().join("run/lb.sock");
        let sock = ControlSocket::bind(&path).expect("bind");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(ControlSocket::bind(&path), Err(BindError::InUse(_))));
        let task = tokio::spawn(sock.serve(Arc::new(Echo), ListenerLimit::new("control", 8)));

        let p = path.clone();
        tokio::task::spawn_blocking(move || {
            let data = client::call(&p, &Request::Backends {}).expect("call");
            assert_eq!(data["got"], "Backends");
            for bad in ["nonsense\n", "{\"command\":\"explode\"}\n", "\n"] {
                let r = raw(&p, bad);
                assert!(!r.ok, "{bad:?} must be refused");
                assert!(r.error.unwrap_or_default().starts_with("bad request"), "{bad:?}");
            }
            let huge = "x".repeat(MAX_REQUEST + 10);
            assert!(!raw(&p, &huge).ok);
        })
        .await
        .expect("client side");
        task.abort();
        let _ = task.await;
        // The socket task owned the listener; dropping it removed the file.
        assert!(!path.exists());
    }

    /// A fresh folder, removed when the guard drops (also when the test panics).
    fn scratch(name: &str) -> tempfile::TempDir {
        crate::testutil::scratch_dir(&format!("lb-ctl-{name}-"))
    }

    /// `--socket` pointing at something that is not a socket (a typo naming the config) is
    /// refused and the file is left alone; a stale socket is replaced; a live one is refused.
    #[tokio::test]
    async fn binds_only_over_a_stale_socket() {
        let scratch = scratch("bind");
        let dir = scratch.path();
        let file = dir.join("lb.toml");
        std::fs::write(&file, "precious").expect("write");
        let subdir = dir.join("sub");
        std::fs::create_dir(&subdir).expect("mkdir");
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let link = dir.join("link");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        for (path, kind) in [
            (&file, "regular file"),
            (&subdir, "directory"),
            (&fifo, "FIFO"),
            (&link, "symbolic link"),
        ] {
            match ControlSocket::bind(path) {
                Err(e @ BindError::NotASocket { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(kind) && msg.contains("not a socket"), "{msg}");
                }
                Err(e) => panic!("{}: {e}", path.display()),
                Ok(_) => panic!("{} was replaced", path.display()),
            }
            assert!(std::fs::symlink_metadata(path).is_ok(), "{} is gone", path.display());
        }
        assert_eq!(std::fs::read_to_string(&file).expect("still there"), "precious");

        // A stale socket: bound, then its listener closed without removing the file.
        let stale = dir.join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
        assert!(StdUnixStream::connect(&stale).is_err(), "nobody answers on it");
        let sock = ControlSocket::bind(&stale).expect("a stale socket is replaced");
        assert!(StdUnixStream::connect(&stale).is_ok(), "we answer on it now");
        assert!(matches!(ControlSocket::bind(&stale), Err(BindError::InUse(_))));
        drop(sock);
        assert!(!stale.exists(), "our socket is removed at stop");
    }

    /// Stop removes the socket file only while it is still ours.
    #[tokio::test]
    async fn removes_only_its_own_socket_at_stop() {
        let scratch = scratch("drop");
        let dir = scratch.path();
        let path = dir.join("lb.sock");
        let replaced_by_file = ControlSocket::bind(&path).expect("bind");
        std::fs::remove_file(&path).expect("rm");
        std::fs::write(&path, "not ours").expect("write");
        drop(replaced_by_file);
        assert_eq!(std::fs::read_to_string(&path).expect("kept"), "not ours");
        std::fs::remove_file(&path).expect("rm");

        let first = ControlSocket::bind(&path).expect("bind");
        std::fs::remove_file(&path).expect("rm");
        let second = ControlSocket::bind(&path).expect("bind again");
        drop(first);
        assert!(StdUnixStream::connect(&path).is_ok(), "the second socket survived the first");
        drop(second);
        assert!(!path.exists());
    }

    /// Beyond the cap, a connection is told "busy" at once; a slot freed is served again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_beyond_the_cap_are_refused_at_once() {
        let scratch = scratch("cap");
        let dir = scratch.path();
        let path = dir.join("lb.sock");
        let limit = ListenerLimit::new("control", 2);
        let sock = ControlSocket::bind(&path).expect("bind");
        let task = tokio::spawn(sock.serve(Arc::new(Echo), limit.clone()));
        let p = path.clone();
        let l = limit.clone();
        tokio::task::spawn_blocking(move || {
            let idle: Vec<_> = (0..2).map(|_| StdUnixStream::connect(&p).expect("idle")).collect();
            assert!(wait(|| l.view().open == 2), "{:?}", l.view());
            let started = std::time::Instant::now();
            let r = raw(&p, "{\"command\":\"backends\"}\n");
            assert!(started.elapsed() < Duration::from_secs(1), "refused at once");
            assert!(!r.ok);
            assert!(r.error.unwrap_or_default().starts_with("busy: 2 control connections"));
            let cli = client::call(&p, &Request::Status {}).expect_err("busy");
            assert!(
                format!("{cli:#}").starts_with("agent: busy: 2 control connections"),
                "{cli:#}"
            );
            drop(idle);
            assert!(wait(|| l.view().open == 0), "{:?}", l.view());
            let data = client::call(&p, &Request::Status {}).expect("served again");
            assert_eq!(data["got"], "Status");
            let v = l.view();
            assert_eq!((v.refused, v.accepted), (2, 3), "{v:?}");
        })
        .await
        .expect("client side");
        task.abort();
        let _ = task.await;
    }

    fn wait(mut cond: impl FnMut() -> bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cond()
    }
}
