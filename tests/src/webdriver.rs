//! A headless Chromium driven over chromedriver's WebDriver HTTP API (W3C), inside a test's
//! network namespace: just enough to load a page, run a script in it and take a screenshot.
//! Plain HTTP/1.1 over a socket opened in the namespace; no Selenium.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{Netns, Process, wait_until};

/// The flags that work in the lab (no GPU, no sandbox as root, nothing fetched from outside).
pub const CHROMIUM_FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

/// Whether the browser tests can run: Debian's `chromium` and `chromedriver` on PATH. With
/// `CI=true` a missing one panics (CI installs both through `cargo xtask bootstrap`); elsewhere
/// it prints `SKIP: ...` and returns false. Check root first ([`crate::require_root`]).
pub fn require_browser(test_name: &str) -> bool {
    crate::require_program(test_name, "chromium")
        && crate::require_program(test_name, "chromedriver")
}

/// chromedriver's port inside the namespace (loopback there is the test's own).
const DRIVER_PORT: u16 = 9515;

/// A chromedriver and its one browser session; the session is closed (the browser quits) and
/// the driver killed with its process group when dropped.
pub struct Browser<'a> {
    ns: &'a Netns,
    session: String,
    // Dropped after the session is deleted (Drop below), then the profile folder.
    _driver: Process,
    _profile: tempfile::TempDir,
}

/// One request to the driver; the parsed `value` of its answer.
fn call(ns: &Netns, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let addr = SocketAddr::from(([127, 0, 0, 1], DRIVER_PORT));
    let mut stream = ns
        .run_in(|| TcpStream::connect_timeout(&addr, Duration::from_secs(2)))?
        .context("connecting to chromedriver")?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    // chromedriver keeps the connection open whatever we ask: read the head, then exactly
    // Content-Length bytes (it never sends chunked answers).
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).with_context(|| format!("{method} {path}"))?;
        if n == 0 {
            bail!("{method} {path}: connection closed before the answer's head");
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
        })
        .context("no Content-Length")?;
    while raw.len() < head_end + length {
        let n = stream.read(&mut buf).with_context(|| format!("{method} {path}"))?;
        if n == 0 {
            bail!("{method} {path}: connection closed mid-answer");
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let payload = String::from_utf8_lossy(&raw[head_end..head_end + length]);
    let doc: Value = serde_json::from_str(&payload)
        .with_context(|| format!("{method} {path}: not JSON: {head}\n{payload}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{method} {path}: {head}\n{doc}");
    }
    Ok(doc["value"].clone())
}

impl<'a> Browser<'a> {
    /// Starts chromedriver in `ns` and opens a headless Chromium session of `width`×`height`.
    pub fn start(ns: &'a Netns, width: u32, height: u32) -> Result<Browser<'a>> {
        let profile = crate::scratch_dir("lb-chromium-")?;
        let port = format!("--port={DRIVER_PORT}");
        let driver = ns.spawn(&["chromedriver", &port])?;
        if !wait_until(Duration::from_secs(10), || call(ns, "GET", "/status", None).is_ok()) {
            bail!("chromedriver did not answer: {}", driver.stderr_so_far());
        }
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.push(format!("--window-size={width},{height}"));
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args }
        }}});
        let value = call(ns, "POST", "/session", Some(&caps))?;
        let session = value["sessionId"].as_str().context("no sessionId")?.to_owned();
        Ok(Browser { ns, session, _driver: driver, _profile: profile })
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    /// Loads `url` (returns when the document has loaded).
    pub fn navigate(&self, url: &str) -> Result<()> {
        call(self.ns, "POST", &self.at("/url"), Some(&json!({ "url": url }))).map(drop)
    }

    /// Runs `script` (a function body: `return ...;`) in the page and returns its result.
    pub fn execute(&self, script: &str) -> Result<Value> {
        call(
            self.ns,
            "POST",
            &self.at("/execute/sync"),
            Some(&json!({ "script": script, "args": [] })),
        )
    }

    /// Resizes the browser window (e.g. to a phone's 390×844).
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let rect = json!({ "width": width, "height": height });
        call(self.ns, "POST", &self.at("/window/rect"), Some(&rect)).map(drop)
    }

    /// A PNG of the viewport, written to `path`.
    pub fn screenshot(&self, path: &Path) -> Result<()> {
        let b64 = call(self.ns, "GET", &self.at("/screenshot"), None)?;
        let png = base64_decode(b64.as_str().context("screenshot is not a string")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        // The browser quits with its session; the driver's group is killed after.
        let _ = call(self.ns, "DELETE", &self.at(""), None);
    }
}

/// Standard base64 (with padding), as WebDriver sends screenshots.
fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let digit = |c: u8| -> Result<u32> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => bail!("not base64: {:?}", c as char),
        }
        .into())
    };
    let bytes: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let data: Vec<u8> = chunk.iter().copied().filter(|c| *c != b'=').collect();
        let mut n = 0u32;
        for (i, c) in data.iter().enumerate() {
            n |= digit(*c)? << (18 - 6 * i);
        }
        let [_, a, b, c] = n.to_be_bytes();
        out.extend_from_slice(&[a, b, c][..data.len().saturating_sub(1)]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_round_trips_known_values() {
        for (enc, dec) in
            [("", ""), ("Zg==", "f"), ("Zm8=", "fo"), ("Zm9v", "foo"), ("Zm9vYmFy", "foobar")]
        {
            assert_eq!(super::base64_decode(enc).expect(enc), dec.as_bytes());
        }
        assert!(super::base64_decode("Zm9v!").is_err());
    }
}
