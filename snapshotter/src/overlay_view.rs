//! One layer, alone, in the form overlayfs expects of a lower directory: containerd stacks
//! per-layer snapshots itself, so a lazily served layer must carry its own deletions.
//!
//! - `D/.wh.NAME` (OCI whiteout) becomes `D/NAME`, a character device 0:0 (overlay's
//!   whiteout), mode 0, root-owned.
//! - `D/.wh..wh..opq` (opaque marker) becomes the xattr `trusted.overlay.opaque=y` on `D`
//!   (a directory entry for `D` is added if the layer lists none).
//! - Other `.wh..wh.*` names are aufs metadata and are dropped.
//! - Hard links whose target is in the same layer stay hard links. A hard link to a file of
//!   a lower layer cannot be served by a per-layer view (the bytes live in another blob,
//!   and overlayfs has no cross-layer links): [`overlay_view`] refuses such a layer and the
//!   snapshotter unpacks it instead (containerd's applier then copies the file up, as an
//!   overlay snapshotter does).

use std::collections::{BTreeMap, HashSet};

use skiff_store::{FileEntry, FileKind, LayerIndex, LayerPath};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// overlayfs's opaque-directory xattr (Documentation/filesystems/overlayfs.rst).
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Why a layer cannot be served as a per-layer lazy view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotServable {
    /// A hard link names a file this layer does not contain.
    CrossLayerHardlink { path: LayerPath, target: LayerPath },
}

impl std::fmt::Display for NotServable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotServable::CrossLayerHardlink { path, target } => write!(
                f,
                "hard link {path} names {target}, a file of a lower layer"
            ),
        }
    }
}

fn trim(p: &[u8]) -> &[u8] {
    let mut p = p;
    while let Some(r) = p.strip_suffix(b"/") {
        p = r;
    }
    while let Some(r) = p.strip_prefix(b"./") {
        p = r;
    }
    p
}

fn split(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (b"", p),
    }
}

fn join(dir: &[u8], name: &[u8]) -> LayerPath {
    if dir.is_empty() {
        LayerPath::new(name.to_vec())
    } else {
        let mut v = dir.to_vec();
        v.push(b'/');
        v.extend_from_slice(name);
        LayerPath::new(v)
    }
}

fn dir_entry(path: LayerPath, like: &FileEntry) -> FileEntry {
    FileEntry {
        path,
        kind: FileKind::Directory,
        mode: 0o755,
        uid: 0,
        gid: 0,
        size: 0,
        mtime: like.mtime,
        mtime_nsec: like.mtime_nsec,
        link_target: LayerPath::default(),
        dev_major: 0,
        dev_minor: 0,
        xattrs: BTreeMap::new(),
        chunks: Vec::new(),
    }
}

/// `layer` rewritten in overlay format (see the module docs), or why it cannot be.
pub fn overlay_view(layer: &LayerIndex) -> Result<LayerIndex, NotServable> {
    let mut files: HashSet<&[u8]> = HashSet::new();
    let mut entries: Vec<FileEntry> = Vec::with_capacity(layer.entries.len());
    let mut opaque: Vec<Vec<u8>> = Vec::new();
    for e in &layer.entries {
        let path = trim(e.path.as_bytes());
        let (dir, name) = split(path);
        if name == OPAQUE_MARKER {
            opaque.push(dir.to_vec());
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden.starts_with(WHITEOUT_PREFIX) {
                continue;
            }
            let mut w = dir_entry(join(dir, hidden), e);
            w.kind = FileKind::CharDevice;
            w.mode = 0;
            entries.push(w);
            continue;
        }
        if e.kind == FileKind::Hardlink {
            let target = trim(e.link_target.as_bytes());
            if !files.contains(target) {
                return Err(NotServable::CrossLayerHardlink {
                    path: e.path.clone(),
                    target: e.link_target.clone(),
                });
            }
        }
        if e.kind != FileKind::Directory {
            files.insert(path);
        }
        entries.push(e.clone());
    }
    for dir in opaque {
        let found = entries
            .iter_mut()
            .find(|e| e.kind == FileKind::Directory && trim(e.path.as_bytes()) == dir.as_slice());
        match found {
            Some(e) => {
                e.xattrs.insert(OPAQUE_XATTR.into(), b"y".to_vec());
            }
            None => {
                let like = layer.entries.first().expect("a marker is an entry");
                let mut d = dir_entry(LayerPath::new(dir), like);
                d.xattrs.insert(OPAQUE_XATTR.into(), b"y".to_vec());
                entries.push(d);
            }
        }
    }
    Ok(LayerIndex {
        digest: layer.digest.clone(),
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: FileKind) -> FileEntry {
        let mut e = dir_entry(LayerPath::from(path), &dummy());
        e.kind = kind;
        e.mode = 0o644;
        e
    }

    fn dummy() -> FileEntry {
        FileEntry {
            path: LayerPath::default(),
            kind: FileKind::Directory,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 7,
            mtime_nsec: 0,
            link_target: LayerPath::default(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: BTreeMap::new(),
            chunks: Vec::new(),
        }
    }

    fn layer(entries: Vec<FileEntry>) -> LayerIndex {
        LayerIndex {
            digest: "sha256:ab".into(),
            entries,
        }
    }

    #[test]
    fn whiteouts_become_0_0_char_devices_and_opaque_markers_an_xattr() {
        let l = layer(vec![
            entry("etc", FileKind::Directory),
            entry("etc/.wh.passwd", FileKind::Regular),
            entry("etc/.wh..wh..opq", FileKind::Regular),
            entry("var/lib/.wh..wh..opq", FileKind::Regular),
            entry("var/.wh..wh.plnk", FileKind::Regular),
        ]);
        let v = overlay_view(&l).unwrap();
        let w = v
            .entries
            .iter()
            .find(|e| e.path.as_bytes() == b"etc/passwd")
            .unwrap();
        assert_eq!(w.kind, FileKind::CharDevice);
        assert_eq!((w.dev_major, w.dev_minor, w.mode), (0, 0, 0));
        let etc = v
            .entries
            .iter()
            .find(|e| e.path.as_bytes() == b"etc")
            .unwrap();
        assert_eq!(
            etc.xattrs.get(OPAQUE_XATTR).map(Vec::as_slice),
            Some(&b"y"[..])
        );
        let lib = v
            .entries
            .iter()
            .find(|e| e.path.as_bytes() == b"var/lib")
            .unwrap();
        assert_eq!(lib.kind, FileKind::Directory);
        assert_eq!(
            lib.xattrs.get(OPAQUE_XATTR).map(Vec::as_slice),
            Some(&b"y"[..])
        );
        assert!(!v
            .entries
            .iter()
            .any(|e| e.path.as_bytes().windows(4).any(|w| w == b".wh.")));
    }

    #[test]
    fn hard_links_within_the_layer_stay_and_across_layers_are_refused() {
        let mut link = entry("bin/b", FileKind::Hardlink);
        link.link_target = LayerPath::from("bin/a");
        let ok = layer(vec![entry("bin/a", FileKind::Regular), link.clone()]);
        assert_eq!(overlay_view(&ok).unwrap().entries.len(), 2);
        let bad = layer(vec![link]);
        assert_eq!(
            overlay_view(&bad).unwrap_err(),
            NotServable::CrossLayerHardlink {
                path: LayerPath::from("bin/b"),
                target: LayerPath::from("bin/a")
            }
        );
    }
}
