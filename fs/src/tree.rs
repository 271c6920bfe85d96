//! The merged inode table of an image: its layers applied in order, whiteouts and opaque
//! directories resolved, hard links sharing one inode.
//!
//! Pure logic over [`LayerIndex`]es (no I/O), so every merge rule is unit-tested without a
//! mount. Names are bytes (Linux names need not be UTF-8). A hard link names its target as
//! the merged tree stands when its layer is applied, so it may point at a file of a lower layer
//! (or one a middle layer rewrote), as unpacking the layers in order or overlayfs copy-up gives. Hostile input never panics: entries that cannot be placed (bad paths, hard links to
//! missing targets or directories) are skipped and reported as [`MergeWarning`]s.

use skiff_store::{FileEntry, FileKind, LayerIndex, LayerPath};

/// Inode number of the root directory (FUSE's fixed root id).
pub const ROOT_INO: u64 = 1;

/// Prefix of whiteout names (OCI image spec, "Whiteouts").
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The name that marks its directory opaque.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Which layer entry describes an inode: indexes into the layer list and its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef {
    pub layer: usize,
    pub entry: usize,
}

/// The kind of a merged inode. Hard links are not a kind: they are names sharing an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
}

/// One inode of the merged tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    /// The parent directory (the root is its own parent). For non-directories, the parent of
    /// the first name found; only directories use it (for `..`).
    pub parent: u64,
    pub kind: NodeKind,
    /// The entry whose metadata (and content) this inode has; `None` for directories that no
    /// layer lists (created as parents of listed entries): 0755 root:root, mtime 0.
    pub source: Option<EntryRef>,
    /// Directories: 2 + subdirectories. Others: how many names refer to the inode.
    pub nlink: u32,
    /// Directories only: children sorted by name (bytes).
    pub children: Vec<(Vec<u8>, u64)>,
}

/// An entry the merge could not place; it was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeWarning {
    pub layer: String,
    pub path: skiff_store::LayerPath,
    pub reason: &'static str,
}

impl std::fmt::Display for MergeWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "layer {}: entry {:?} skipped: {}",
            self.layer, self.path, self.reason
        )
    }
}

/// The merged, immutable inode table. Inode `n` is at index `n - 1`.
#[derive(Debug, Clone)]
pub struct Tree {
    inodes: Vec<Inode>,
    warnings: Vec<MergeWarning>,
}

/// A node while merging; unreachable nodes are dropped when the tree is finalized.
#[derive(Debug)]
struct WorkNode {
    kind: NodeKind,
    source: Option<EntryRef>,
    children: std::collections::BTreeMap<Vec<u8>, usize>,
}

struct Builder<'a> {
    layers: &'a [LayerIndex],
    nodes: Vec<WorkNode>,
    warnings: Vec<MergeWarning>,
    /// The directory `ensure_dir` returned last (tar order keeps siblings together), valid
    /// until a directory is removed or replaced.
    last_dir: Vec<Vec<u8>>,
    last_dir_node: Option<usize>,
}

const WORK_ROOT: usize = 0;

impl Tree {
    /// Merges `layers` (lowest first) into one tree.
    pub fn build(layers: &[LayerIndex]) -> Tree {
        let mut b = Builder {
            layers,
            nodes: vec![WorkNode::dir(None)],
            warnings: Vec::new(),
            last_dir: Vec::new(),
            last_dir_node: None,
        };
        for (li, layer) in layers.iter().enumerate() {
            b.apply_whiteouts(layer);
            for (ei, entry) in layer.entries.iter().enumerate() {
                b.add_entry(li, ei, entry);
            }
        }
        b.finish()
    }

    /// The inode `ino`, if it exists.
    pub fn get(&self, ino: u64) -> Option<&Inode> {
        let idx = usize::try_from(ino.checked_sub(1)?).ok()?;
        self.inodes.get(idx)
    }

    /// The child `name` of directory `parent` (`None` if absent or `parent` is no directory).
    pub fn child(&self, parent: &Inode, name: &[u8]) -> Option<u64> {
        parent
            .children
            .binary_search_by(|(n, _)| n.as_slice().cmp(name))
            .ok()
            .map(|i| parent.children[i].1)
    }

    /// Resolves a relative path (`a/b/c`, `""` = root) without following symlinks.
    pub fn resolve(&self, path: impl AsRef<[u8]>) -> Option<u64> {
        let mut ino = ROOT_INO;
        for part in path
            .as_ref()
            .split(|&b| b == b'/')
            .filter(|p| !p.is_empty())
        {
            ino = self.child(self.get(ino)?, part)?;
        }
        Some(ino)
    }

    /// Number of inodes.
    pub fn len(&self) -> usize {
        self.inodes.len()
    }

    /// Never true: the root always exists.
    pub fn is_empty(&self) -> bool {
        self.inodes.is_empty()
    }

    /// Entries skipped while merging.
    pub fn warnings(&self) -> &[MergeWarning] {
        &self.warnings
    }

    /// A fingerprint of the inode numbering: 64-bit FNV-1a over every inode's number, kind
    /// and named children, in inode order. The numbering is a pure function of the layer
    /// indexes (breadth-first over name-sorted children), so a daemon that rebuilds the tree
    /// after a restart gets the numbers the kernel still holds; the fingerprint, recorded at
    /// mount, proves it (a different skiff version numbering differently would not match).
    pub fn fingerprint(&self) -> u64 {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h = (h ^ u64::from(b)).wrapping_mul(PRIME);
            }
        };
        for (i, inode) in self.inodes.iter().enumerate() {
            eat(&(i as u64 + 1).to_le_bytes());
            eat(&[inode.kind as u8]);
            for (name, ino) in &inode.children {
                eat(name);
                eat(&[0]);
                eat(&ino.to_le_bytes());
            }
        }
        h
    }
}

impl WorkNode {
    fn dir(source: Option<EntryRef>) -> WorkNode {
        WorkNode {
            kind: NodeKind::Directory,
            source,
            children: Default::default(),
        }
    }
}

/// Longest name Linux accepts (longer ones could not be looked up, and break listings).
const NAME_MAX: usize = 255;

/// Splits a normalized path into components, rejecting anything not normalized or too long.
fn components(path: &LayerPath) -> Option<Vec<&[u8]>> {
    let mut trimmed = path.as_bytes();
    while let Some(rest) = trimmed.strip_suffix(b"/") {
        trimmed = rest;
    }
    if trimmed.is_empty() || trimmed == b"." {
        return Some(Vec::new());
    }
    let parts: Vec<&[u8]> = trimmed.split(|&b| b == b'/').collect();
    let bad = |p: &&[u8]| {
        p.is_empty() || *p == b"." || *p == b".." || p.contains(&0) || p.len() > NAME_MAX
    };
    if parts.iter().any(bad) {
        return None;
    }
    Some(parts)
}

impl Builder<'_> {
    fn warn(&mut self, layer: usize, path: &LayerPath, reason: &'static str) {
        self.warnings.push(MergeWarning {
            layer: self.layers[layer].digest.clone(),
            path: path.clone(),
            reason,
        });
    }

    /// The node at `parts`, without creating anything.
    fn find(&self, parts: &[&[u8]]) -> Option<usize> {
        let mut cur = WORK_ROOT;
        for p in parts {
            cur = *self.nodes[cur].children.get(*p)?;
        }
        Some(cur)
    }

    /// Whiteouts and opaque markers of a layer hide only lower layers' entries, wherever
    /// they appear in the layer's tar order, so they are applied before its entries.
    fn apply_whiteouts(&mut self, layer: &LayerIndex) {
        self.last_dir_node = None;
        for entry in &layer.entries {
            let Some(parts) = components(&entry.path) else {
                continue; // reported when the entry itself is added
            };
            let Some((name, dir)) = parts.split_last() else {
                continue;
            };
            let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) else {
                continue;
            };
            let Some(dir_node) = self.find(dir) else {
                continue;
            };
            if self.nodes[dir_node].kind != NodeKind::Directory {
                continue;
            }
            if *name == OPAQUE_MARKER {
                self.nodes[dir_node].children.clear();
            } else if !hidden.is_empty() && !hidden.starts_with(WHITEOUT_PREFIX) {
                // (Other `.wh..wh.*` names are aufs metadata, not whiteouts.)
                self.nodes[dir_node].children.remove(hidden);
            }
        }
    }

    /// Walks to the directory `parts`, creating missing (or replacing non-directory)
    /// components as implicit 0755 directories.
    fn ensure_dir(&mut self, parts: &[&[u8]]) -> usize {
        if let Some(n) = self.last_dir_node {
            if self.last_dir.len() == parts.len()
                && self.last_dir.iter().zip(parts).all(|(a, b)| a == b)
            {
                return n;
            }
        }
        let mut cur = WORK_ROOT;
        for p in parts {
            let next = match self.nodes[cur].children.get(*p) {
                Some(&n) if self.nodes[n].kind == NodeKind::Directory => n,
                _ => {
                    let n = self.nodes.len();
                    self.nodes.push(WorkNode::dir(None));
                    self.nodes[cur].children.insert(p.to_vec(), n);
                    n
                }
            };
            cur = next;
        }
        self.last_dir = parts.iter().map(|p| p.to_vec()).collect();
        self.last_dir_node = Some(cur);
        cur
    }

    /// Links `name` in `parent` to `node`, replacing (and so unlinking) what was there.
    fn link(&mut self, parent: usize, name: &[u8], node: usize) {
        if let Some(old) = self.nodes[parent].children.insert(name.to_vec(), node) {
            if self.nodes[old].kind == NodeKind::Directory {
                self.last_dir_node = None;
            }
        }
    }

    fn add_entry(&mut self, li: usize, ei: usize, entry: &FileEntry) {
        let Some(parts) = components(&entry.path) else {
            self.warn(li, &entry.path, "path is not normalized");
            return;
        };
        let me = EntryRef {
            layer: li,
            entry: ei,
        };
        let Some((name, dir)) = parts.split_last() else {
            // The root itself: only a directory can describe it.
            if entry.kind == FileKind::Directory {
                self.nodes[WORK_ROOT].source = Some(me);
            } else {
                self.warn(li, &entry.path, "root entry is not a directory");
            }
            return;
        };
        if name.starts_with(WHITEOUT_PREFIX) {
            // Applied in apply_whiteouts and never visible, but it implies its directory.
            self.ensure_dir(dir);
            return;
        }
        if entry.kind == FileKind::Hardlink {
            self.add_hardlink(li, entry, dir, name);
            return;
        }
        let kind = match entry.kind {
            FileKind::Regular => NodeKind::Regular,
            FileKind::Directory => NodeKind::Directory,
            FileKind::Symlink => NodeKind::Symlink,
            FileKind::CharDevice => NodeKind::CharDevice,
            FileKind::BlockDevice => NodeKind::BlockDevice,
            FileKind::Fifo => NodeKind::Fifo,
            FileKind::Hardlink => unreachable!("handled above"),
        };
        if kind == NodeKind::Regular && !chunks_cover(entry) {
            self.warn(li, &entry.path, "chunks do not cover the file's size");
            return;
        }
        let parent = self.ensure_dir(dir);
        if let Some(&existing) = self.nodes[parent].children.get(*name) {
            if kind == NodeKind::Directory && self.nodes[existing].kind == NodeKind::Directory {
                // A directory over a directory: merged children, newer metadata.
                self.nodes[existing].source = Some(me);
                return;
            }
        }
        let n = self.nodes.len();
        self.nodes.push(WorkNode {
            kind,
            source: Some(me),
            children: Default::default(),
        });
        self.link(parent, name, n);
    }

    fn add_hardlink(&mut self, li: usize, entry: &FileEntry, dir: &[&[u8]], name: &[u8]) {
        let Some(target_parts) = components(&entry.link_target) else {
            self.warn(li, &entry.path, "hard link target is not normalized");
            return;
        };
        let Some(target) = self
            .find(&target_parts)
            .filter(|_| !target_parts.is_empty())
        else {
            self.warn(li, &entry.path, "hard link target does not exist");
            return;
        };
        if self.nodes[target].kind == NodeKind::Directory {
            self.warn(li, &entry.path, "hard link target is a directory");
            return;
        }
        let parent = self.ensure_dir(dir);
        self.link(parent, name, target);
    }

    /// Numbers the reachable nodes (breadth-first, so siblings are close) and counts links.
    fn finish(self) -> Tree {
        let mut ino_of: Vec<u64> = vec![0; self.nodes.len()];
        let mut order: Vec<usize> = vec![WORK_ROOT];
        ino_of[WORK_ROOT] = ROOT_INO;
        let mut parent_of: Vec<u64> = vec![ROOT_INO];
        let mut names: Vec<u32> = vec![0];
        let mut i = 0;
        while i < order.len() {
            let node = order[i];
            let my_ino = (i + 1) as u64;
            for &child in self.nodes[node].children.values() {
                if ino_of[child] == 0 {
                    ino_of[child] = (order.len() + 1) as u64;
                    order.push(child);
                    parent_of.push(my_ino);
                    names.push(0);
                }
                let ci = (ino_of[child] - 1) as usize;
                names[ci] = names[ci].saturating_add(1);
            }
            i += 1;
        }
        let mut nodes = self.nodes;
        let mut inodes = Vec::with_capacity(order.len());
        for (i, &node) in order.iter().enumerate() {
            // Only directories have children, and each has one name: taking them is safe.
            let children = std::mem::take(&mut nodes[node].children);
            let w = &nodes[node];
            let nlink = if w.kind == NodeKind::Directory {
                let subdirs = children
                    .values()
                    .filter(|&&c| nodes[c].kind == NodeKind::Directory)
                    .count();
                u32::try_from(subdirs).unwrap_or(u32::MAX).saturating_add(2)
            } else {
                names[i]
            };
            inodes.push(Inode {
                parent: parent_of[i],
                kind: w.kind,
                source: w.source,
                nlink,
                children: children.into_iter().map(|(n, c)| (n, ino_of[c])).collect(),
            });
        }
        Tree {
            inodes,
            warnings: self.warnings,
        }
    }
}

/// Whether a regular file's chunks cover `0..size` in order without gaps or overlaps.
fn chunks_cover(entry: &FileEntry) -> bool {
    let mut next = 0u64;
    for c in &entry.chunks {
        if c.file_offset != next {
            return false;
        }
        match next.checked_add(c.len) {
            Some(n) => next = n,
            None => return false,
        }
    }
    next == entry.size
}

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;
