//! Chunk bytes on disk, appended to pack files: `<root>/packs/<id>.pack`, each up to
//! [`PACK_MAX`] bytes. One file per chunk cost an inode allocation per chunk, which on ext4
//! without a journal scans past every recently deleted inode (`recently_deleted`) and took
//! a third of the daemon's CPU in a cold start; a pack costs one per [`PACK_MAX`] bytes.
//!
//! A chunk's place (pack, offset, length) is recorded in `cache.db` only after its bytes
//! are written, so a reader never finds a place whose bytes are not there; bytes a crash
//! left torn fail the digest check every read makes and are fetched again. An evicted
//! chunk's range is punched out of its pack (`FALLOC_FL_PUNCH_HOLE`), which frees the disk
//! space at once, even on a full disk; a pack no chunk is recorded in any more is removed.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::fcntl::{fallocate, FallocateFlags};

use crate::{Result, StoreError};

/// A pack is closed for appends once it holds this many bytes.
pub const PACK_MAX: u64 = 64 << 20;
/// Chunks start on this boundary (a filesystem block), so punching one out frees all its
/// blocks and shares none with a neighbour: the same rounding a file per chunk had.
pub const PACK_ALIGN: u64 = 4096;

fn align_up(n: u64) -> u64 {
    n.div_ceil(PACK_ALIGN) * PACK_ALIGN
}

/// Where a chunk's stored bytes are: `len` bytes at `offset` of pack `pack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackPlace {
    pub pack: u64,
    pub offset: u64,
    pub len: u64,
}

struct Current {
    id: u64,
    file: Arc<File>,
    end: u64,
}

pub struct ChunkPacks {
    dir: PathBuf,
    current: Mutex<Option<Current>>,
    next_id: Mutex<u64>,
    /// Open packs for reading and punching, by id.
    open: Mutex<HashMap<u64, Arc<File>>>,
}

impl ChunkPacks {
    /// Opens `<root>/packs`; appends go to a new pack after the highest one there (an old
    /// pack's tail may hold a write a crash cut short).
    pub fn open(root: &Path) -> Result<ChunkPacks> {
        let dir = root.join("packs");
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let highest = Self::ids_in(&dir)?.into_iter().max().unwrap_or(0);
        Ok(ChunkPacks {
            dir,
            current: Mutex::new(None),
            next_id: Mutex::new(highest + 1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The ids of the packs in `dir`.
    fn ids_in(dir: &Path) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        for e in fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
            let e = e.map_err(|e| StoreError::io(dir, e))?;
            let name = e.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".pack"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Every pack on disk.
    pub fn ids(&self) -> Result<Vec<u64>> {
        Self::ids_in(&self.dir)
    }

    pub fn path(&self, pack: u64) -> PathBuf {
        self.dir.join(format!("{pack:08}.pack"))
    }

    /// Appends `data` to the current pack (a new one when it is full) and returns its
    /// place. On an error (ENOSPC included) the range is punched out again and nothing is
    /// recorded anywhere; the error names the pack.
    pub fn append(&self, data: &[u8]) -> std::result::Result<PackPlace, (PathBuf, std::io::Error)> {
        let len = data.len() as u64;
        let (id, file, offset) = {
            let mut cur = self.current.lock().unwrap();
            if cur.as_ref().is_none_or(|c| c.end >= PACK_MAX) {
                let id = {
                    let mut next = self.next_id.lock().unwrap();
                    *next += 1;
                    *next - 1
                };
                let path = self.path(id);
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| (path, e))?;
                let file = Arc::new(file);
                self.open.lock().unwrap().insert(id, file.clone());
                *cur = Some(Current { id, file, end: 0 });
            }
            let c = cur.as_mut().expect("a current pack");
            let offset = align_up(c.end);
            c.end = offset + len;
            (c.id, c.file.clone(), offset)
        };
        if let Err(e) = file.write_all_at(data, offset) {
            let _ = punch(&file, offset, align_up(offset + len) - offset);
            return Err((self.path(id), e));
        }
        Ok(PackPlace {
            pack: id,
            offset,
            len,
        })
    }

    fn file(&self, pack: u64) -> std::io::Result<Arc<File>> {
        if let Some(f) = self.open.lock().unwrap().get(&pack) {
            return Ok(f.clone());
        }
        let f = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.path(pack))?,
        );
        self.open.lock().unwrap().insert(pack, f.clone());
        Ok(f)
    }

    /// The bytes at `at`, or `None` when its pack is gone or shorter.
    pub fn read(&self, at: PackPlace) -> Result<Option<Vec<u8>>> {
        let file = match self.file(at.pack) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(self.path(at.pack), e)),
        };
        let mut buf = vec![0u8; at.len as usize];
        match file.read_exact_at(&mut buf, at.offset) {
            Ok(()) => Ok(Some(buf)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(StoreError::io(self.path(at.pack), e)),
        }
    }

    /// Frees the disk space of the bytes at `at`, up to the next chunk's boundary (a pack
    /// already gone has none).
    pub fn discard(&self, at: PackPlace) -> Result<()> {
        let file = match self.file(at.pack) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io(self.path(at.pack), e)),
        };
        let len = align_up(at.offset + at.len) - at.offset;
        punch(&file, at.offset, len).map_err(|e| StoreError::io(self.path(at.pack), e))
    }

    /// Removes pack `pack` unless appends still go to it. The caller knows no chunk is
    /// recorded in it.
    pub fn remove(&self, pack: u64) -> Result<()> {
        if self
            .current
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|c| c.id == pack)
        {
            return Ok(());
        }
        self.open.lock().unwrap().remove(&pack);
        let path = self.path(pack);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }
}

fn punch(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    fallocate(
        file.as_raw_fd(),
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        offset as i64,
        len as i64,
    )
    .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn appended_bytes_read_back_and_a_discard_frees_their_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let packs = ChunkPacks::open(dir.path()).unwrap();
        let a = packs.append(&[1u8; 200_000]).unwrap();
        let b = packs.append(&[2u8; 300_000]).unwrap();
        assert_eq!((a.pack, a.offset, a.len), (1, 0, 200_000));
        // The next chunk starts on a block boundary.
        assert_eq!((b.pack, b.offset, b.len), (1, 200_704, 300_000));
        assert_eq!(packs.read(b).unwrap().unwrap(), vec![2u8; 300_000]);
        let blocks = |p: &ChunkPacks| fs::metadata(p.path(1)).unwrap().blocks() * 512;
        let before = blocks(&packs);
        packs.discard(b).unwrap();
        assert_eq!(before - blocks(&packs), 303_104, "all of b's blocks freed");
        assert_eq!(packs.read(a).unwrap().unwrap(), vec![1u8; 200_000]);
        // A place past the end, or in a pack that is gone, reads as absent.
        let past = PackPlace {
            pack: 1,
            offset: 10 << 20,
            len: 10,
        };
        assert_eq!(packs.read(past).unwrap(), None);
        let gone = PackPlace { pack: 7, ..a };
        assert_eq!(packs.read(gone).unwrap(), None);
        packs.discard(gone).unwrap();
    }

    #[test]
    fn a_reopened_store_appends_to_a_new_pack_and_only_old_packs_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let first = ChunkPacks::open(dir.path())
            .unwrap()
            .append(b"one")
            .unwrap();
        let packs = ChunkPacks::open(dir.path()).unwrap();
        let second = packs.append(b"two").unwrap();
        assert_eq!((first.pack, second.pack), (1, 2));
        assert_eq!(packs.ids().unwrap().len(), 2);
        packs.remove(second.pack).unwrap();
        assert!(packs.path(2).exists(), "the pack appends go to stays");
        packs.remove(first.pack).unwrap();
        assert!(!packs.path(1).exists());
        assert_eq!(packs.read(first).unwrap(), None);
    }
}
