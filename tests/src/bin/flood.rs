//! `lb-flood`: holds many idle connections to a listener, for tests of the agent's caps.
//!
//! ```text
//! lb-flood unix PATH N SECONDS
//! lb-flood tcp ADDR:PORT N SECONDS
//! ```
//! Opens up to N connections that never send anything (a full backlog is retried) within
//! SECONDS, prints `held K` on stdout, then keeps them open until killed. A separate process so
//! that tens of thousands of sockets fit under a per-process descriptor limit. Std + libc only.

use std::{
    io::Write as _,
    net::{SocketAddr, TcpStream},
    os::unix::net::UnixStream,
    process::ExitCode,
    time::{Duration, Instant},
};

/// One non-blocking connect to a Unix socket: `None` when the backlog is full (try again).
fn connect_unix(path: &str) -> std::io::Result<Option<UnixStream>> {
    use std::os::fd::FromRawFd as _;
    let c = std::ffi::CString::new(path).map_err(std::io::Error::other)?;
    // SAFETY: plain socket calls on a zeroed sockaddr_un we fill within its bounds.
    unsafe {
        let fd = libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = UnixStream::from_raw_fd(fd);
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = c.as_bytes_with_nul();
        if bytes.len() > addr.sun_path.len() {
            return Err(std::io::Error::other("path too long"));
        }
        for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        if libc::connect(fd, (&raw const addr).cast(), len) == 0 {
            return Ok(Some(stream));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EAGAIN) { Ok(None) } else { Err(e) }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, target, n, secs] = args.as_slice() else {
        eprintln!("usage: lb-flood unix|tcp TARGET N SECONDS");
        return ExitCode::FAILURE;
    };
    let (Ok(n), Ok(secs)) = (n.parse::<usize>(), secs.parse::<u64>()) else {
        eprintln!("N and SECONDS are numbers");
        return ExitCode::FAILURE;
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut unix = Vec::new();
    let mut tcp = Vec::new();
    let tcp_target: Option<SocketAddr> = target.parse().ok();
    while unix.len() + tcp.len() < n && Instant::now() < deadline {
        match (kind.as_str(), tcp_target) {
            ("unix", _) => match connect_unix(target) {
                Ok(Some(s)) => unix.push(s),
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => {
                    eprintln!("connect {target}: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            },
            ("tcp", Some(addr)) => {
                if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                    tcp.push(s);
                }
            }
            _ => {
                eprintln!("unknown kind {kind:?} or bad address {target:?}");
                return ExitCode::FAILURE;
            }
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "held {}", unix.len() + tcp.len());
    let _ = out.flush();
    drop(out);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
