//! The filesystem core: answers lookups, attributes, directory listings, xattrs and reads of
//! an image's merged tree, independent of FUSE (the adapter maps its errors to errno).
//!
//! Metadata comes from the layer indexes in memory and never touches the [`ContentReader`];
//! only `read` does, and it may block on the network.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use skiff_store::{ContentReader, FileEntry, LayerIndex, StoreError};

use crate::recorder::AccessRecorder;
use crate::tree::{Inode, NodeKind, Tree, ROOT_INO};
use crate::{FsError, Result};

/// Size reported for directories (like ext4's one block).
const DIR_SIZE: u64 = 4096;
/// Block size reported by `statfs` and `stat`.
pub const BLOCK_SIZE: u32 = 4096;

/// Attributes of one inode, exactly as `stat` should report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: NodeKind,
    /// Permission bits including setuid, setgid and sticky (no file-type bits).
    pub perm: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// 512-byte blocks.
    pub blocks: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Device number of character and block devices (0 otherwise).
    pub dev_major: u32,
    pub dev_minor: u32,
}

impl Attr {
    /// The full `st_mode`: file type and permission bits.
    pub fn mode(&self) -> u32 {
        let ty = match self.kind {
            NodeKind::Regular => libc::S_IFREG,
            NodeKind::Directory => libc::S_IFDIR,
            NodeKind::Symlink => libc::S_IFLNK,
            NodeKind::CharDevice => libc::S_IFCHR,
            NodeKind::BlockDevice => libc::S_IFBLK,
            NodeKind::Fifo => libc::S_IFIFO,
        };
        ty | self.perm
    }
}

/// One directory entry; `next_offset` is the cookie to continue listing after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirEntry<'a> {
    pub ino: u64,
    pub next_offset: u64,
    pub kind: NodeKind,
    /// The name's bytes (Linux names need not be UTF-8).
    pub name: &'a OsStr,
}

/// Filesystem totals for `statfs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    /// Total size of regular files in `BLOCK_SIZE` blocks (none free: read-only).
    pub blocks: u64,
    pub files: u64,
    pub block_size: u32,
    pub name_max: u32,
}

/// An image's merged, read-only filesystem.
pub struct ImageFs {
    layers: Vec<LayerIndex>,
    /// Whether any entry of any layer has an extended attribute.
    any_xattrs: bool,
    tree: Tree,
    reader: Arc<dyn ContentReader>,
    statfs: StatFs,
    recorder: Option<Arc<AccessRecorder>>,
}

impl std::fmt::Debug for ImageFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageFs")
            .field("layers", &self.layers.len())
            .field("inodes", &self.tree.len())
            .finish()
    }
}

impl ImageFs {
    /// Merges `layers` (lowest first). Entries the merge cannot place are skipped and logged.
    pub fn new(layers: Vec<LayerIndex>, reader: Arc<dyn ContentReader>) -> Result<ImageFs> {
        let tree = Tree::build(&layers);
        for w in tree.warnings() {
            tracing::warn!(layer = %w.layer, path = %w.path, reason = w.reason, "layer entry skipped");
        }
        let mut bytes = 0u64;
        for ino in 1..=tree.len() as u64 {
            if let Some(inode) = tree.get(ino) {
                if inode.kind == NodeKind::Regular {
                    bytes = bytes
                        .saturating_add(Self::source_entry(&layers, inode).map_or(0, |e| e.size));
                }
            }
        }
        let statfs = StatFs {
            blocks: bytes.div_ceil(u64::from(BLOCK_SIZE)),
            files: tree.len() as u64,
            block_size: BLOCK_SIZE,
            name_max: 255,
        };
        let any_xattrs = layers
            .iter()
            .any(|l| l.entries.iter().any(|e| !e.xattrs.is_empty()));
        Ok(ImageFs {
            layers,
            any_xattrs,
            tree,
            reader,
            statfs,
            recorder: None,
        })
    }

    /// Records this filesystem's reads into `recorder` (see [`AccessRecorder`]).
    pub fn set_recorder(&mut self, recorder: Arc<AccessRecorder>) {
        self.recorder = Some(recorder);
    }

    /// The merged tree (for inspection and benches).
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    fn source_entry<'a>(layers: &'a [LayerIndex], inode: &Inode) -> Option<&'a FileEntry> {
        let s = inode.source?;
        layers.get(s.layer)?.entries.get(s.entry)
    }

    fn inode(&self, ino: u64) -> Result<&Inode> {
        self.tree.get(ino).ok_or(FsError::NoInode { ino })
    }

    fn entry_of(&self, inode: &Inode) -> Option<&FileEntry> {
        Self::source_entry(&self.layers, inode)
    }

    fn attr_of(&self, ino: u64, inode: &Inode) -> Attr {
        let e = self.entry_of(inode);
        let size = match inode.kind {
            NodeKind::Directory => DIR_SIZE,
            NodeKind::Regular => e.map_or(0, |e| e.size),
            NodeKind::Symlink => e.map_or(0, |e| e.link_target.len() as u64),
            _ => 0,
        };
        let device = matches!(inode.kind, NodeKind::CharDevice | NodeKind::BlockDevice);
        Attr {
            ino,
            kind: inode.kind,
            perm: e.map_or(0o755, |e| e.mode & 0o7777),
            nlink: inode.nlink,
            uid: e.map_or(0, |e| e.uid),
            gid: e.map_or(0, |e| e.gid),
            size,
            blocks: size.div_ceil(512),
            mtime: e.map_or(0, |e| e.mtime),
            mtime_nsec: e.map_or(0, |e| e.mtime_nsec.min(999_999_999)),
            dev_major: if device {
                e.map_or(0, |e| e.dev_major)
            } else {
                0
            },
            dev_minor: if device {
                e.map_or(0, |e| e.dev_minor)
            } else {
                0
            },
        }
    }

    fn dir(&self, ino: u64) -> Result<&Inode> {
        let inode = self.inode(ino)?;
        if inode.kind != NodeKind::Directory {
            return Err(FsError::NotADirectory { ino });
        }
        Ok(inode)
    }

    /// The attributes of `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr> {
        let dir = self.dir(parent)?;
        let not_found = || FsError::NotFound {
            parent,
            name: name.to_string_lossy().into_owned(),
        };
        let ino = self
            .tree
            .child(dir, name.as_bytes())
            .ok_or_else(not_found)?;
        self.getattr(ino)
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        Ok(self.attr_of(ino, self.inode(ino)?))
    }

    /// Entries of directory `ino` from cookie `offset` on (0 = start): `.`, `..`, then the
    /// children by name. Cookies are stable: the tree never changes.
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
    ) -> Result<impl Iterator<Item = DirEntry<'_>> + '_> {
        let dir = self.dir(ino)?;
        let dots = [(OsStr::new("."), ino), (OsStr::new(".."), dir.parent)];
        let all = dots
            .into_iter()
            .map(move |(n, i)| (n, i, NodeKind::Directory))
            .chain(dir.children.iter().map(move |(n, c)| {
                let kind = self.tree.get(*c).map_or(NodeKind::Regular, |i| i.kind);
                (OsStr::from_bytes(n), *c, kind)
            }));
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        Ok(all
            .enumerate()
            .skip(skip)
            .map(|(i, (name, ino, kind))| DirEntry {
                ino,
                next_offset: i as u64 + 1,
                kind,
                name,
            }))
    }

    /// The target of symlink `ino`.
    pub fn readlink(&self, ino: u64) -> Result<&[u8]> {
        let inode = self.inode(ino)?;
        match (inode.kind, self.entry_of(inode)) {
            (NodeKind::Symlink, Some(e)) => Ok(e.link_target.as_bytes()),
            _ => Err(FsError::NotASymlink { ino }),
        }
    }

    /// Whether any file of the image has an extended attribute. Without any, the FUSE
    /// layer tells the kernel it has no xattr support at all, so `security.capability`
    /// checks on every exec and overlayfs' xattr probes stop being requests.
    pub fn has_xattrs(&self) -> bool {
        self.any_xattrs
    }

    /// The value of extended attribute `name` of `ino`.
    pub fn getxattr(&self, ino: u64, name: &OsStr) -> Result<&[u8]> {
        let inode = self.inode(ino)?;
        let no_xattr = || FsError::NoXattr {
            ino,
            name: name.to_string_lossy().into_owned(),
        };
        let key = name.to_str().ok_or_else(no_xattr)?;
        self.entry_of(inode)
            .and_then(|e| e.xattrs.get(key))
            .map(Vec::as_slice)
            .ok_or_else(no_xattr)
    }

    /// The names of `ino`'s extended attributes, each NUL-terminated (the `listxattr` format).
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        let inode = self.inode(ino)?;
        let mut out = Vec::new();
        if let Some(e) = self.entry_of(inode) {
            for name in e.xattrs.keys() {
                out.extend_from_slice(name.as_bytes());
                out.push(0);
            }
        }
        Ok(out)
    }

    /// Checks that `ino` can be opened for reading as a file.
    pub fn open(&self, ino: u64) -> Result<()> {
        match self.inode(ino)?.kind {
            NodeKind::Directory => Err(FsError::IsADirectory { ino }),
            _ => Ok(()),
        }
    }

    /// Up to `size` bytes of regular file `ino` from `offset`; fewer only at end of file.
    /// Blocks while the reader fetches missing chunks.
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let inode = self.inode(ino)?;
        if inode.kind == NodeKind::Directory {
            return Err(FsError::IsADirectory { ino });
        }
        let Some(e) = self
            .entry_of(inode)
            .filter(|_| inode.kind == NodeKind::Regular)
        else {
            return Ok(Vec::new());
        };
        let end = e.size.min(offset.saturating_add(u64::from(size)));
        if offset >= end {
            return Ok(Vec::new());
        }
        let layer = inode
            .source
            .map_or("", |s| self.layers[s.layer].digest.as_str());
        if let (Some(r), Some(s)) = (&self.recorder, inode.source) {
            r.record(s.layer, ino, e, offset, end);
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let fail = |source| FsError::Read {
                ino,
                path: e.path.clone(),
                layer: layer.to_string(),
                offset: at,
                source: Box::new(source),
            };
            let n = self
                .reader
                .read_at(layer, &e.chunks, at, &mut buf[done..])
                .map_err(fail)?;
            if n == 0 {
                return Err(fail(StoreError::InvalidIndex {
                    layer: layer.to_string(),
                    reason: format!("{:?} ends before its size {}", e.path, e.size),
                }));
            }
            done += n.min(buf.len() - done);
        }
        Ok(buf)
    }

    /// A local file holding exactly the content of regular file `ino`, if the reader has
    /// one (see [`ContentReader::backing_file`]); one of the wrong length is refused.
    pub fn backing_file(&self, ino: u64) -> Option<std::fs::File> {
        let inode = self.tree.get(ino).filter(|i| i.kind == NodeKind::Regular)?;
        let e = self.entry_of(inode)?;
        let layer = &self.layers[inode.source?.layer].digest;
        let file = self.reader.backing_file(layer, &e.chunks)?;
        match file.metadata() {
            Ok(m) if m.is_file() && m.len() == e.size => Some(file),
            _ => {
                tracing::warn!(%layer, path = %e.path, "backing file does not match the index; not used");
                None
            }
        }
    }

    pub fn statfs(&self) -> StatFs {
        self.statfs
    }

    /// The root inode number.
    pub fn root(&self) -> u64 {
        ROOT_INO
    }
}

#[cfg(test)]
#[path = "image_fs_tests.rs"]
mod tests;
