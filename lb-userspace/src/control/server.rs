//! The agent side of the control socket.

use std::{
    io,
    os::unix::{fs::PermissionsExt as _, net::UnixStream as StdUnixStream},
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

/// Answers decoded requests; implemented by the agent, and by fakes in tests.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request) -> Response;
}

/// A bound control socket; the file is removed when this is dropped.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another lb agent is already listening on {0}")]
    InUse(PathBuf),
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ControlSocket {
    /// Binds `path` (creating its directory), refusing to steal a socket a live agent uses.
    pub fn bind(path: &Path) -> Result<Self, BindError> {
        let io_err = |source| BindError::Io { path: path.to_owned(), source };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        if path.exists() {
            if StdUnixStream::connect(path).is_ok() {
                return Err(BindError::InUse(path.to_owned()));
            }
            // Left behind by an agent that died: nobody answers on it.
            std::fs::remove_file(path).map_err(io_err)?;
        }
        let listener = UnixListener::bind(path).map_err(io_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
        Ok(Self { listener, path: path.to_owned() })
    }

    /// Serves connections until the task is dropped. One slow client never blocks the others.
    pub async fn serve(self, handler: Arc<dyn Handler>) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let h = handler.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_one(stream, h).await {
                            tracing::debug!(error = %e, "control connection failed");
                        }
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

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve_one(stream: UnixStream, handler: Arc<dyn Handler>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64 + 1));
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
    let response = match read {
        Err(_) => Response::error("timed out waiting for a request"),
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
    write.write_all(&out).await?;
    write.shutdown().await
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
        s.write_all(text.as_bytes()).expect("write");
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
        let task = tokio::spawn(sock.serve(Arc::new(Echo)));

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
}
