//! TCP_CHECK: the real accepts a TCP connection within `connect_timeout`. Also the connection
//! helper of HTTP_GET / SSL_GET.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use tokio::net::{TcpSocket, TcpStream};

use super::{BindError, Outcome, bind_addr};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Family(#[from] BindError),
    #[error("cannot bind to {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("connect to {target}: {source}")]
    Connect { target: SocketAddr, source: io::Error },
    #[error("connect to {target}: timed out after {timeout:?}")]
    Timeout { target: SocketAddr, timeout: Duration },
}

/// Connects to `target` from `bindto` (if given) within `timeout`.
pub async fn connect(
    target: SocketAddr,
    bindto: Option<IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let socket = if target.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() };
    let socket = socket.map_err(|source| ConnectError::Connect { target, source })?;
    super::super::probe::mark_socket(&socket)
        .map_err(|source| ConnectError::Connect { target, source })?;
    if bindto.is_some() {
        let addr = bind_addr(target.ip(), bindto)?;
        socket.bind(addr).map_err(|source| ConnectError::Bind { addr, source })?;
    }
    let stream = tokio::time::timeout(timeout, socket.connect(target))
        .await
        .map_err(|_| ConnectError::Timeout { target, timeout })?
        .map_err(|source| ConnectError::Connect { target, source })?;
    // Requests are written in one piece; no need to wait for Nagle.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// One TCP_CHECK attempt.
pub async fn run(target: SocketAddr, bindto: Option<IpAddr>, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let result = connect(target, bindto, timeout).await.map(|_stream| "connected".to_owned());
    Outcome::from_result(result, started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_and_closed_ports() {
        for host in ["127.0.0.1", "::1"] {
            let listener = tokio::net::TcpListener::bind((host, 0)).await.unwrap();
            let addr = listener.local_addr().unwrap();
            let out = run(addr, None, Duration::from_secs(2)).await;
            assert!(out.ok, "{host}: {}", out.message);
            assert_eq!(out.message, "connected");

            let bound = run(addr, Some(addr.ip()), Duration::from_secs(2)).await;
            assert!(bound.ok, "{host} bindto: {}", bound.message);

            drop(listener);
            let out = run(addr, None, Duration::from_secs(2)).await;
            assert!(!out.ok);
            assert!(out.message.contains("refused"), "{}", out.message);
        }
    }

    #[tokio::test]
    async fn bindto_of_the_wrong_family() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let out = run(addr, Some("::1".parse().unwrap()), Duration::from_secs(1)).await;
        assert!(!out.ok);
        assert!(out.message.contains("different address families"), "{}", out.message);
    }

    #[tokio::test]
    async fn timeout() {
        // A listener with a full accept queue drops further SYNs: the connect hangs until the
        // timeout, all on loopback.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        socket.listen(0).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        let mut held = Vec::new();
        let mut out = None;
        for _ in 0..8 {
            let started = Instant::now();
            let o = run(addr, None, Duration::from_millis(300)).await;
            if !o.ok {
                assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
                out = Some(o);
                break;
            }
            // Keep the queue full: connected but never accepted.
            held.push(connect(addr, None, Duration::from_secs(1)).await);
        }
        let out = out.expect("the accept queue never filled");
        assert_eq!(out.message, format!("connect to {addr}: timed out after 300ms"));
    }
}
