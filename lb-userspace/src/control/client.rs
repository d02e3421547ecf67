//! Blocking client used by the CLI.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::proto::{Request, Response};

/// Sends one request and returns the response's `data`, or the agent's error.
pub fn call(socket: &Path, request: &Request) -> anyhow::Result<serde_json::Value> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!("cannot reach the lb agent at {} (is `lb run` running?)", socket.display())
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    // A busy agent closes the connection at once, after saying so: read its reason.
    if let Err(e) = stream.write_all(line.as_bytes())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e.into());
    }
    let mut reader = BufReader::new(stream);
    let mut reply = String::new();
    reader.read_line(&mut reply).context("reading the agent's reply")?;
    let resp: Response = serde_json::from_str(&reply)
        .with_context(|| format!("the agent sent an unreadable reply: {reply:?}"))?;
    match (resp.ok, resp.data) {
        (true, Some(data)) => Ok(data),
        (true, None) => bail!("the agent's reply has no data"),
        (false, _) => bail!("agent: {}", resp.error.unwrap_or_else(|| "unknown error".into())),
    }
}
