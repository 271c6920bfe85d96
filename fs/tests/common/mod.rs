//! Test-only helpers: layers whose file bytes live in a real local data file, a
//! `ContentReader` that preads it, and mount guards.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use skiff_store::{ChunkLocation, ChunkRef, ContentReader, FileEntry, FileKind, LayerIndex};

/// Size of the chunks files are split into (small, so tests cross chunk boundaries).
pub const CHUNK: u64 = 64 * 1024;

/// Appends file contents to one data file and builds layer indexes pointing into it.
pub struct DataFile {
    pub path: PathBuf,
    file: File,
    len: u64,
    /// Also write each appended blob to its own file, offered as a passthrough backing file.
    pub backing: bool,
}

impl DataFile {
    pub fn create(dir: &Path) -> DataFile {
        let path = dir.join("layer.data");
        let file = File::create(&path).unwrap();
        DataFile {
            path,
            file,
            len: 0,
            backing: false,
        }
    }

    /// Appends `data`, returning its chunk list.
    pub fn append(&mut self, data: &[u8]) -> Vec<ChunkRef> {
        self.file.write_all(data).unwrap();
        let base = self.len;
        if self.backing && !data.is_empty() {
            std::fs::write(backing_path(&self.path, base), data).unwrap();
        }
        self.len += data.len() as u64;
        let mut chunks = Vec::new();
        let mut off = 0u64;
        while off < data.len() as u64 {
            let len = CHUNK.min(data.len() as u64 - off);
            chunks.push(ChunkRef {
                file_offset: off,
                len,
                location: ChunkLocation::Local { offset: base + off },
            });
            off += len;
        }
        chunks
    }

    pub fn reader(&self) -> Arc<FileReader> {
        self.file.sync_all().unwrap();
        Arc::new(FileReader {
            file: File::open(&self.path).unwrap(),
            path: self.path.clone(),
            calls: AtomicUsize::new(0),
            gate: Gate::default(),
        })
    }
}

fn backing_path(data: &Path, base: u64) -> PathBuf {
    data.with_file_name(format!("blob-{base}"))
}

/// Blocks reads of one layer until opened: simulates a slow network fetch.
#[derive(Default)]
pub struct Gate {
    state: Mutex<(Option<String>, bool)>,
    cond: Condvar,
}

impl Gate {
    pub fn close_for(&self, layer: &str) {
        *self.state.lock().unwrap() = (Some(layer.to_string()), false);
    }
    pub fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.cond.notify_all();
    }
    fn wait(&self, layer: &str) {
        let mut s = self.state.lock().unwrap();
        while s.0.as_deref() == Some(layer) && !s.1 {
            s = self.cond.wait(s).unwrap();
        }
    }
}

/// Reads file bytes by preading the data file at each chunk's `Local` offset. Fails (like a
/// store whose local data is truncated) when a chunk points past the end of the data file.
pub struct FileReader {
    file: File,
    path: PathBuf,
    pub calls: AtomicUsize,
    pub gate: Gate,
}

impl ContentReader for FileReader {
    fn read_at(
        &self,
        layer: &str,
        chunks: &[ChunkRef],
        offset: u64,
        buf: &mut [u8],
    ) -> skiff_store::Result<usize> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.gate.wait(layer);
        let Some(c) = chunks
            .iter()
            .find(|c| c.file_offset <= offset && offset < c.file_offset + c.len)
        else {
            return Ok(0);
        };
        let ChunkLocation::Local { offset: base } = c.location else {
            unreachable!("tests use local chunks");
        };
        let want = buf.len().min((c.file_offset + c.len - offset) as usize);
        let at = base + (offset - c.file_offset);
        let n = self
            .file
            .read_at(&mut buf[..want], at)
            .map_err(|e| skiff_store::StoreError::io(&self.path, e))?;
        if n < want {
            return Err(skiff_store::StoreError::io(
                &self.path,
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "data file truncated"),
            ));
        }
        Ok(n)
    }

    fn backing_file(&self, _layer: &str, chunks: &[ChunkRef]) -> Option<File> {
        let ChunkLocation::Local { offset } = chunks.first()?.location else {
            return None;
        };
        File::open(backing_path(&self.path, offset)).ok()
    }
}

pub fn entry(path: &str, kind: FileKind, mode: u32) -> FileEntry {
    FileEntry {
        path: path.into(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        size: 0,
        mtime: 1_600_000_000,
        mtime_nsec: 0,
        link_target: Default::default(),
        dev_major: 0,
        dev_minor: 0,
        xattrs: BTreeMap::new(),
        chunks: Vec::new(),
    }
}

pub fn dir(path: &str) -> FileEntry {
    entry(path, FileKind::Directory, 0o755)
}

pub fn file(data: &mut DataFile, path: &str, bytes: &[u8]) -> FileEntry {
    FileEntry {
        size: bytes.len() as u64,
        chunks: data.append(bytes),
        ..entry(path, FileKind::Regular, 0o644)
    }
}

pub fn symlink(path: &str, target: &str) -> FileEntry {
    FileEntry {
        link_target: target.into(),
        ..entry(path, FileKind::Symlink, 0o777)
    }
}

pub fn hardlink(path: &str, target: &str) -> FileEntry {
    FileEntry {
        link_target: target.into(),
        ..entry(path, FileKind::Hardlink, 0o644)
    }
}

pub fn whiteout(path: &str) -> FileEntry {
    entry(path, FileKind::Regular, 0o644)
}

pub fn layer(digest: &str, entries: Vec<FileEntry>) -> LayerIndex {
    LayerIndex {
        digest: digest.to_string(),
        entries,
    }
}

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Whether `path` is a mount point in this mount namespace.
pub fn is_mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

/// The mountinfo line of the mount at `path`.
pub fn mountinfo_line(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_str().unwrap();
    info.lines()
        .find(|l| l.split(' ').nth(4) == Some(p))
        .map(str::to_string)
}

/// Unmounts (lazily) on drop: keeps a failing test from leaving mounts behind.
pub struct UnmountGuard(pub PathBuf);

impl Drop for UnmountGuard {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// `getxattr(2)` through the mount: `Err(errno)` on failure.
pub fn getxattr(path: &Path, name: &str, size: usize) -> Result<Vec<u8>, i32> {
    let p = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; size];
    // SAFETY: valid NUL-terminated strings and a buffer of `size` bytes.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// `listxattr(2)` through the mount.
pub fn listxattr(path: &Path) -> Vec<u8> {
    let p = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid NUL-terminated string and a buffer of its stated length.
    let r = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(r >= 0, "{}", std::io::Error::last_os_error());
    buf.truncate(r as usize);
    buf
}
