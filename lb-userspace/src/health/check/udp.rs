//! UDP_CHECK: send the payload to the real. With `require_reply`, up only if a datagram comes
//! back in time; without it, up unless the kernel reports an ICMP error (port unreachable) for the
//! connected socket within the timeout — silence counts as up, as in keepalived.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use tokio::net::UdpSocket;

use super::{BindError, Outcome, bind_addr};
use crate::config::health::UdpCheck;

#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    #[error(transparent)]
    Family(#[from] BindError),
    #[error("socket: {0}")]
    Socket(#[source] io::Error),
    #[error("send: {0}")]
    Send(#[source] io::Error),
    #[error("ICMP error: {0}")]
    Icmp(io::Error),
    #[error("no reply within {0:?}")]
    NoReply(Duration),
}

/// One UDP_CHECK attempt.
pub async fn run(
    target: SocketAddr,
    params: &UdpCheck,
    bindto: Option<IpAddr>,
    timeout: Duration,
) -> Outcome {
    let started = Instant::now();
    Outcome::from_result(attempt(target, params, bindto, timeout).await, started)
}

async fn attempt(
    target: SocketAddr,
    params: &UdpCheck,
    bindto: Option<IpAddr>,
    timeout: Duration,
) -> Result<String, UdpError> {
    let socket =
        UdpSocket::bind(bind_addr(target.ip(), bindto)?).await.map_err(UdpError::Socket)?;
    super::super::probe::mark_socket(&socket).map_err(UdpError::Socket)?;
    socket.connect(target).await.map_err(UdpError::Socket)?;
    socket.send(&params.payload).await.map_err(UdpError::Send)?;
    let mut buf = vec![0u8; 2048];
    match tokio::time::timeout(timeout, socket.recv(&mut buf)).await {
        Ok(Ok(_)) => Ok("reply received".to_owned()),
        Ok(Err(e)) => Err(UdpError::Icmp(e)),
        Err(_) if params.require_reply => Err(UdpError::NoReply(timeout)),
        Err(_) => Ok("no ICMP error".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(require_reply: bool) -> UdpCheck {
        UdpCheck { payload: b"ping".to_vec(), require_reply }
    }

    /// A socket that echoes every datagram back.
    async fn echo(host: &str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let socket = UdpSocket::bind((host, 0)).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(&buf[..n], peer).await;
            }
        });
        (addr, task)
    }

    fn closed_port(host: &str) -> SocketAddr {
        std::net::UdpSocket::bind((host, 0)).unwrap().local_addr().unwrap()
    }

    #[tokio::test]
    async fn outcomes() {
        let t = Duration::from_millis(300);
        for host in ["127.0.0.1", "::1"] {
            let (echo_addr, task) = echo(host).await;
            let silent = std::net::UdpSocket::bind((host, 0)).unwrap();
            let silent_addr = silent.local_addr().unwrap();
            let closed = closed_port(host);
            // (target, require_reply, ok, message)
            let table = [
                (echo_addr, true, true, "reply received".to_owned()),
                (echo_addr, false, true, "reply received".to_owned()),
                (silent_addr, true, false, "no reply within 300ms".to_owned()),
                (silent_addr, false, true, "no ICMP error".to_owned()),
                (closed, false, false, "ICMP error: Connection refused (os error 111)".to_owned()),
                (closed, true, false, "ICMP error: Connection refused (os error 111)".to_owned()),
            ];
            for (addr, require_reply, ok, message) in table {
                let out = run(addr, &params(require_reply), None, t).await;
                assert_eq!((out.ok, out.message), (ok, message), "{addr} {require_reply}");
            }
            task.abort();
        }
    }
}
