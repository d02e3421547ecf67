//! `lb check -c FILE` as operators and scripts use it: exit 0 and a summary for a valid file; exit 1
//! and one `FILE:LINE:COL: message` line per error on stderr otherwise; `--json` for scripts.

use std::{path::PathBuf, process::Command};

use lb_tests::{lb_bin, scratch_dir};
use tempfile::TempDir;

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

/// The exit code and everything printed: stdout, then stderr (where the errors go).
fn printed(out: &std::process::Output) -> (i32, String) {
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn check(path: &PathBuf) -> (i32, String) {
    printed(&Command::new(lb_bin()).args(["check", "-c"]).arg(path).output().expect("run lb check"))
}

/// Errors go to stderr (stdout stays for the summary); `--json` puts one document on stdout
/// with the same exit code.
#[test]
fn errors_on_stderr_and_json_on_stdout() {
    let tmp = scratch_dir("lb-check-").expect("temp dir");
    let bad = write(&tmp, "streams-bad.toml", "[[virtual_server]]\nvip = \"nope\"\n");
    let good = write(
        &tmp,
        "streams-good.toml",
        &format!("{GOOD_VS}[[virtual_server.real_server]]\naddress = \"192.0.2.11\"\n"),
    );
    let run = |args: &[&str], path: &PathBuf| {
        Command::new(lb_bin())
            .arg("check")
            .args(args)
            .arg("-c")
            .arg(path)
            .output()
            .expect("lb check")
    };
    let out = run(&[], &bad);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "errors on stdout: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().all(|l| l.contains("streams-bad.toml:")) && !err.is_empty(), "{err}");

    // (file, exit code, valid, errors non-empty)
    for (path, code, valid) in [(&bad, 1, false), (&good, 0, true)] {
        let out = run(&["--json"], path);
        assert_eq!(out.status.code(), Some(code), "{}", path.display());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
        assert_eq!(v["valid"], valid, "{v}");
        assert_eq!(v["errors"].as_array().is_some_and(|e| !e.is_empty()), !valid, "{v}");
        assert!(v["warnings"].is_array(), "{v}");
        if valid {
            assert_eq!(v["summary"]["virtual_servers"], 1, "{v}");
        } else {
            let e = &v["errors"][0];
            assert!(e["file"].is_string() && e["line"].is_u64() && e["col"].is_u64(), "{v}");
            assert!(e["message"].is_string(), "{v}");
        }
    }
}

const GOOD_VS: &str = "[[virtual_server]]\nvip = \"192.0.2.100\"\nport = 80\nprotocol = \"tcp\"\ninterface = \"lo\"\n";

#[test]
fn bad_input_is_rejected_with_a_located_message() {
    let tmp = scratch_dir("lb-check-").expect("temp dir");
    // (case, file text, expected "LINE:COL: message" fragment)
    let cases: &[(&str, String, &str)] = &[
        ("unknown key", format!("{GOOD_VS}weigth = 1\n"), "6:1: unknown key `weigth`"),
        (
            "unknown key in real",
            format!(
                "{GOOD_VS}[[virtual_server.real_server]]\naddress = \"192.0.2.11\"\nwieght = 2\n"
            ),
            "8:1: unknown key `wieght`",
        ),
        (
            "wrong type",
            GOOD_VS.replace("port = 80", "port = \"80\""),
            "3:8: `port` must be an integer",
        ),
        (
            "port out of range",
            GOOD_VS.replace("port = 80", "port = 70000"),
            "3:8: `port` must be between 0 and 65535",
        ),
        (
            "weight out of range",
            format!(
                "{GOOD_VS}[[virtual_server.real_server]]\naddress = \"192.0.2.11\"\nweight = -1\n"
            ),
            "8:10: `weight` must be between 0 and 65535",
        ),
        (
            "duplicate service",
            format!("{GOOD_VS}{GOOD_VS}"),
            "6:1: duplicate virtual server 192.0.2.100:80/tcp",
        ),
        (
            "vip not an address",
            GOOD_VS.replace("192.0.2.100", "192.0.2.300"),
            "2:7: `vip` must be an IP address",
        ),
        (
            "vip is a name",
            GOOD_VS.replace("\"192.0.2.100\"", "\"www.example.com\""),
            "2:7: `vip` must be an IP address",
        ),
        (
            "interface does not exist",
            GOOD_VS.replace("\"lo\"", "\"lbnosuch0\""),
            "5:13: interface `lbnosuch0` does not exist on this host",
        ),
        (
            "vip no host has",
            GOOD_VS.replace("192.0.2.100", "0.0.0.0"),
            "2:7: virtual IP 0.0.0.0 is the unspecified address",
        ),
        (
            "real on the loopback",
            format!("{GOOD_VS}[[virtual_server.real_server]]\naddress = \"127.0.0.1\"\n"),
            "7:11: real server 127.0.0.1 is a loopback address",
        ),
        ("syntax error", "[[virtual_server]\n".to_owned(), "1:"),
    ];
    for (i, (name, text, want)) in cases.iter().enumerate() {
        let path = write(&tmp, &format!("bad{i}.toml"), text);
        let (code, stdout) = check(&path);
        assert_eq!(code, 1, "{name}: exit code; stdout: {stdout}");
        let expected = format!("{}:{want}", path.display());
        assert!(
            stdout.lines().any(|l| l.starts_with(&expected)),
            "{name}: want line starting {expected:?}, got:\n{stdout}"
        );
    }
}

#[test]
fn all_errors_of_a_file_are_reported() {
    let tmp = scratch_dir("lb-check-").expect("temp dir");
    let text = format!(
        "{}{}",
        GOOD_VS.replace("port = 80", "port = 70000"),
        "[[virtual_server]]\nvip = \"nope\"\nport = 81\ninterface = \"lo\"\n\
         [[virtual_server]]\nvip = \"192.0.2.101\"\nport = 81\ninterface = \"lbnosuch1\"\n"
    );
    let path = write(&tmp, "many.toml", &text);
    let (code, stdout) = check(&path);
    assert_eq!(code, 1);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "three errors, one line each:\n{stdout}");
    for l in lines {
        assert!(l.starts_with(&path.display().to_string()), "{l}");
    }
}

#[test]
fn valid_files_pass_with_a_summary_and_notices() {
    let tmp = scratch_dir("lb-check-").expect("temp dir");
    let text = format!(
        "{GOOD_VS}lb_algo = \"wrr\"\n[[virtual_server.real_server]]\naddress = \"192.0.2.11\"\nweight = 2\n"
    );
    let path = write(&tmp, "good.toml", &text);
    let (code, stdout) = check(&path);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("ok (TOML, 1 virtual servers, 1 real servers)"), "{stdout}");
    assert!(
        stdout
            .contains("6:11: notice: 192.0.2.100:80/tcp: scheduler `wrr` runs as weighted Maglev"),
        "{stdout}"
    );

    let missing = std::env::temp_dir().join("lb-check-no-such-file.toml");
    let (code, stdout) = check(&missing);
    assert_eq!(code, 1);
    assert!(stdout.contains(":1:1: cannot read configuration file"), "{stdout}");
}

#[test]
fn shipped_examples_are_valid_apart_from_their_interface() {
    let tmp = scratch_dir("lb-check-").expect("temp dir");
    // The examples name eth0, which may not exist here: every other check must pass.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for entry in std::fs::read_dir(&dir).expect("examples/") {
        let path = entry.expect("entry").path();
        // TOML and keepalived.conf examples alike.
        let text = std::fs::read_to_string(&path).expect("read example");
        let text = match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => text.replace("\"eth0\"", "\"lo\""),
            Some("conf") => text.replace(" eth0\n", " lo\n"),
            _ => continue,
        };
        let copy = write(
            &tmp,
            &format!("example-{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("x")),
            &text,
        );
        let (code, stdout) = check(&copy);
        assert_eq!(code, 0, "{}: {stdout}", path.display());
    }
}

#[test]
fn keepalived_conf_is_read_as_is_and_strict_turns_warnings_into_errors() {
    let tmp = scratch_dir("lb-check-").expect("temp dir");
    let text = "! Configuration File for keepalived\nglobal_defs {\n   router_id LVS_DEVEL\n   notification_email {\n     ops@example.com\n   }\n}\n\nvirtual_server 192.0.2.100 80 {\n    delay_loop 6\n    lb_algo wrr\n    lb_kind DR\n    protocol TCP\n    lb_interface lo\n\n    real_server 192.0.2.11 80 {\n        weight 1\n        TCP_CHECK {\n            connect_timeout 3\n        }\n    }\n}\n";
    let path = write(&tmp, "keepalived.conf", text);
    let (code, stdout) = check(&path);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("ok (keepalived.conf, 1 virtual servers, 1 real servers)"), "{stdout}");
    assert!(
        stdout.contains(": warning: "),
        "notification_email is accepted, not acted on: {stdout}"
    );
    let out = Command::new(lb_bin())
        .args(["check", "--strict", "-c"])
        .arg(&path)
        .output()
        .expect("lb check");
    assert_eq!(out.status.code(), Some(1), "--strict refuses warnings");
    let misspelled = write(&tmp, "typo.conf", &text.replace("delay_loop", "delay_lop"));
    let (code, stdout) = check(&misspelled);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("typo.conf:10:5:") && stdout.contains("delay_loop"),
        "located, with a suggestion: {stdout}"
    );
}

/// `lb check -c FILE` under `timeout`: a file that blocks the reader shows as exit 124, not a
/// test that hangs.
fn check_within(path: &std::path::Path, seconds: u32) -> (i32, String) {
    let out = Command::new("timeout")
        .arg(seconds.to_string())
        .arg(lb_bin())
        .args(["check", "-c"])
        .arg(path)
        .output()
        .expect("run timeout lb check");
    printed(&out)
}

/// Hostile or mistaken files are one located error each, never a crash (a stack overflow aborts
/// with 134), a hang (a FIFO) or memory without end (`/dev/zero`).
#[test]
fn hostile_files_are_located_errors_not_crashes() {
    let tmp = scratch_dir("lb-check-").expect("temp dir");
    let fifo = tmp.path().join("pipe.conf");
    let c_fifo = std::ffi::CString::new(fifo.to_str().expect("utf-8 path")).expect("path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    let deep = |n: usize| format!("global_defs {}{}\n", "{ ".repeat(n), "} ".repeat(n));
    // (case, file (None: the path given), expected "LINE:COL: message" start after the path)
    let cases: Vec<(&str, PathBuf, &str)> = vec![
        (
            "keepalived blocks 7,000 deep",
            write(&tmp, "deep.conf", &deep(7_000)),
            "1:77: blocks are nested more than 32 deep here",
        ),
        (
            "keepalived blocks 100,000 deep",
            write(&tmp, "deeper.conf", &deep(100_000)),
            "1:77: blocks are nested more than 32 deep here",
        ),
        (
            "TOML arrays 100,000 deep",
            write(
                &tmp,
                "deep.toml",
                &format!("a = {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
            ),
            "1:",
        ),
        (
            "-c /dev/zero",
            PathBuf::from("/dev/zero"),
            "1:1: cannot read configuration file: it is a character device, not a regular file",
        ),
        (
            "-c a FIFO",
            fifo.clone(),
            "1:1: cannot read configuration file: it is a named pipe (FIFO), not a regular file",
        ),
        (
            "include /dev/zero",
            write(&tmp, "zero.conf", "include /dev/zero\n"),
            "1:9: cannot read included file `/dev/zero`: it is a character device",
        ),
        (
            "include a FIFO",
            write(&tmp, "fifo.conf", &format!("include {}\n", fifo.display())),
            "1:9: cannot read included file",
        ),
        (
            "15 brace groups",
            write(&tmp, "braces.conf", &format!("include /nonexistent/{}\n", "{a,b}".repeat(15))),
            "1:9: `include /nonexistent/{a,b}",
        ),
    ];
    for (name, path, want) in cases {
        let (code, stdout) = check_within(&path, 30);
        assert_eq!(code, 1, "{name}: exit code; stdout: {stdout}");
        let expected = format!("{}:{want}", path.display());
        assert!(
            stdout.lines().any(|l| l.starts_with(&expected)),
            "{name}: want a line starting {expected:?}, got:\n{stdout}"
        );
    }
}

/// A reader that stops reading (`lb ... | head -1`, `| grep -q`) is no crash: lb stops writing and
/// exits 0, as the rest of its output is not wanted. Its standard output here is a pipe whose
/// reading end is closed before lb starts, so its first write fails.
#[test]
fn a_closed_standard_output_is_no_crash() {
    let dir = scratch_dir("lb-cli-pipe").expect("scratch dir");
    let config = write(&dir, "lb.toml", VALID_FOR_PIPES);
    let man = dir.path().join("man");
    let man = man.to_str().expect("utf-8 path");
    let config = config.to_str().expect("utf-8 path");
    let cases: &[&[&str]] = &[
        &["man", "--dir", man],
        &["completions", "bash"],
        &["check", "-c", config],
        &["check", "-c", config, "--json"],
        &["convert", "-c", config],
    ];
    for args in cases {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = Command::new(lb_bin()).args(*args).stdout(writer).output().expect("run lb");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "lb {args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "lb {args:?}: {stderr}");
    }
}

const VALID_FOR_PIPES: &str = r#"
[[virtual_server]]
vip = "192.0.2.10"
port = 80
protocol = "tcp"
interface = "lo"

[[virtual_server.real_server]]
address = "192.0.2.11"
port = 80
"#;
