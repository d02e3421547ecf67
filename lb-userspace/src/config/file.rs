//! Reading a configuration file, bounded: only regular files (a FIFO would block the reload, a
//! device like `/dev/zero` never ends), and never more than a limit, so that a wrong path gives
//! an error instead of hanging the agent or filling its memory.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

/// The largest configuration file read: keepalived.conf files of thousands of virtual servers
/// are a few MiB.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("it is a {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("it is larger than {} MiB, the limit for one configuration file", .0 >> 20)]
    TooLarge(u64),
}

/// The bytes of the regular file at `path`, at most `limit` of them.
///
/// # Errors
/// The file cannot be opened or read, is not a regular file, or holds more than `limit` bytes.
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    // Look before opening: opening a FIFO waits for a writer, and opening some devices acts
    // (a watchdog starts counting).
    regular(&std::fs::metadata(path)?)?;
    // Should the path have become a FIFO since, opening does not wait either.
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    regular(&file.metadata()?)?;
    read_at_most(file, limit)
}

fn read_at_most(file: File, limit: u64) -> Result<Vec<u8>, ReadError> {
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
        return Err(ReadError::TooLarge(limit));
    }
    Ok(bytes)
}

fn regular(metadata: &Metadata) -> Result<(), ReadError> {
    let kind = metadata.file_type();
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "directory"
    } else if kind.is_fifo() {
        "named pipe (FIFO)"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else if kind.is_socket() {
        "socket"
    } else {
        "special file"
    };
    Err(ReadError::NotRegular(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_up_to_the_limit_are_read() {
        let guard = crate::testutil::scratch_dir("lb-file-");
        let dir = guard.path();
        let small = dir.join("small.conf");
        std::fs::write(&small, "0123456789").unwrap();
        let fifo = dir.join("fifo");
        let c_fifo = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0, "mkfifo");
        let socket = dir.join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        // (path, limit, Ok(length) or the error's text)
        let cases: &[(&Path, u64, Result<usize, &str>)] = &[
            (&small, 10, Ok(10)),
            (&small, 100, Ok(10)),
            (&small, 9, Err("it is larger than 0 MiB, the limit for one configuration file")),
            (&fifo, 100, Err("it is a named pipe (FIFO), not a regular file")),
            (Path::new("/dev/zero"), 100, Err("it is a character device, not a regular file")),
            (&socket, 100, Err("it is a socket, not a regular file")),
            (dir, 100, Err("it is a directory, not a regular file")),
            (&dir.join("missing"), 100, Err("No such file or directory (os error 2)")),
        ];
        for (path, limit, expected) in cases {
            let got = read(path, *limit).map(|b| b.len()).map_err(|e| e.to_string());
            assert_eq!(got, expected.map_err(str::to_owned), "{}", path.display());
        }
        let message = ReadError::TooLarge(MAX_FILE_BYTES).to_string();
        assert_eq!(message, "it is larger than 16 MiB, the limit for one configuration file");
    }
}
