//! A file whose reads wait while a gate is shut: a configuration on a network filesystem that
//! hangs. It is served over FUSE from this process, so a test decides exactly how long a reader
//! (the agent reloading its config) is held, and can see that it is being held, instead of
//! hoping that a large file takes longer to parse than some other event takes to happen.
//!
//! Looking the file up and its attributes never wait; only the bytes do. The file is opened in
//! direct-I/O mode, so every `read()` reaches this process and none is served from a cache.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, Result};
use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyEntry,
    ReplyOpen, Request,
};

const FILE: INodeNo = INodeNo(2);

/// A read held at the gate.
struct Held {
    offset: u64,
    size: u32,
    reply: ReplyData,
}

#[derive(Default)]
struct State {
    content: Vec<u8>,
    shut: bool,
    held: Vec<Held>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn slice(content: &[u8], offset: u64, size: u32) -> &[u8] {
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(content.len());
    let end = start.saturating_add(size as usize).min(content.len());
    &content[start..end]
}

/// The filesystem: a root folder holding one regular file.
struct Fs {
    name: String,
    shared: Arc<Shared>,
}

impl Fs {
    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let (kind, perm, size) = if ino == INodeNo::ROOT {
            (FileType::Directory, 0o755, 0)
        } else if ino == FILE {
            (FileType::RegularFile, 0o644, self.shared.lock().content.len() as u64)
        } else {
            return None;
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        })
    }
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.attr(FILE) {
            // No caching of attributes: the size follows `set_content` at once.
            Some(attr) if parent == INodeNo::ROOT && name == OsStr::new(&self.name) => {
                reply.entry(&Duration::ZERO, &attr, Generation(0));
            }
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&Duration::ZERO, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut state = self.shared.lock();
        if state.shut {
            // Answered by `open`; the session thread stays free for lookups meanwhile.
            state.held.push(Held { offset, size, reply });
            self.shared.changed.notify_all();
        } else {
            reply.data(slice(&state.content, offset, size));
        }
    }
}

/// The mounted file; unmounted (and its folder removed) on drop.
pub struct GatedFile {
    // Field order is drop order: unmount before the folder goes.
    _session: BackgroundSession,
    shared: Arc<Shared>,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl GatedFile {
    /// Mounts a folder holding `name` with `content`, gate open.
    ///
    /// # Errors
    /// The folder cannot be made or FUSE cannot mount (no `/dev/fuse`, not root).
    pub fn mount(prefix: &str, name: &str, content: &[u8]) -> Result<GatedFile> {
        let dir = crate::scratch_dir(prefix)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State { content: content.to_vec(), ..State::default() }),
            ..Shared::default()
        });
        let fs = Fs { name: name.to_owned(), shared: Arc::clone(&shared) };
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("lb-test-gated".into()), MountOption::RO];
        let session = fuser::spawn_mount(fs, dir.path(), &config)
            .with_context(|| format!("mounting a FUSE filesystem on {}", dir.path().display()))?;
        let path = dir.path().join(name);
        Ok(GatedFile { _session: session, shared, path, _dir: dir })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file's bytes (readers already held get the new ones when let through).
    pub fn set_content(&self, content: &[u8]) {
        self.shared.lock().content = content.to_vec();
    }

    /// Shuts the gate: reads wait until the returned guard is opened or dropped (also in a
    /// panic unwind, so that a held reader never outlives the test).
    pub fn shut(&self) -> Shut<'_> {
        self.shared.lock().shut = true;
        Shut { file: self }
    }

    /// Whether a read is held at the gate, waiting up to `timeout` for one.
    pub fn wait_for_reader(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while state.held.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .map(|(s, _)| s)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        true
    }

    /// How many reads are held at the gate now.
    pub fn held(&self) -> usize {
        self.shared.lock().held.len()
    }

    fn open(&self) {
        let mut state = self.shared.lock();
        state.shut = false;
        for held in std::mem::take(&mut state.held) {
            held.reply.data(slice(&state.content, held.offset, held.size));
        }
    }
}

impl Drop for GatedFile {
    fn drop(&mut self) {
        // A reader still held would keep its process from exiting until the unmount.
        self.open();
    }
}

/// The shut gate; [`Shut::open`] or dropping it lets every held read through.
pub struct Shut<'a> {
    file: &'a GatedFile,
}

impl Shut<'_> {
    pub fn open(self) {}
}

impl Drop for Shut<'_> {
    fn drop(&mut self) {
        self.file.open();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_stop_at_the_end() {
        let content = b"0123456789";
        assert_eq!(slice(content, 0, 4), b"0123");
        assert_eq!(slice(content, 8, 4), b"89");
        assert_eq!(slice(content, 10, 4), b"");
        assert_eq!(slice(content, u64::MAX, u32::MAX), b"");
    }

    #[test]
    fn a_read_waits_at_the_shut_gate_and_attributes_do_not() {
        if !crate::require_root("FUSE mount") {
            return;
        }
        let file = GatedFile::mount("lb-gated-unit-", "f.conf", b"first").expect("mount");
        assert_eq!(std::fs::read(file.path()).expect("read"), b"first");
        let shut = file.shut();
        let path = file.path().to_owned();
        let reader = std::thread::spawn(move || std::fs::read(path));
        assert!(file.wait_for_reader(Duration::from_secs(5)), "the read never reached the gate");
        file.set_content(b"second, longer");
        // Looking at the file does not wait, and sees the new size.
        let meta = std::fs::metadata(file.path()).expect("stat while a read is held");
        assert!(meta.is_file());
        assert_eq!(meta.len(), 14);
        std::thread::sleep(Duration::from_millis(200));
        assert!(!reader.is_finished(), "the read went through a shut gate");
        shut.open();
        let read = reader.join().expect("reader thread").expect("read after opening");
        assert_eq!(read, b"second, longer");
        assert_eq!(file.held(), 0);
    }
}
