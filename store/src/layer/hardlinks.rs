//! Which hard links of a layer stack are valid: the rule `pull` and `convert` share.
//!
//! A tar hard link names a path that must exist, as a non-directory, when the link is
//! extracted. Layers are applied in order onto one tree (plain unpack) or through overlayfs
//! (copy-up), so that path may come from an earlier entry of the same layer or from any lower
//! layer, including a file a middle layer rewrote or another hard link (chains). The filesystem
//! resolves such links to one inode when it merges the layers (skiff-fs `Tree`); this module
//! only decides whether every link has a target, so an image that plain unpack would fail on
//! (a target that no layer provides, or that a whiteout removed) is refused up front.

use std::collections::BTreeMap;

use crate::layer_index::{FileKind, LayerIndex};
use crate::layer_path::LayerPath;
use crate::{Result, StoreError};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// The paths that exist while layers are applied: `true` for directories.
#[derive(Default)]
pub struct HardlinkCheck {
    paths: BTreeMap<Vec<u8>, bool>,
}

fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut p = dir.to_vec();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

impl HardlinkCheck {
    /// Removes everything below `dir` (`dir` itself stays); the root when `dir` is empty.
    fn clear_below(&mut self, dir: &[u8]) {
        if dir.is_empty() {
            self.paths.clear();
            return;
        }
        let mut prefix = dir.to_vec();
        prefix.push(b'/');
        let doomed: Vec<Vec<u8>> = self
            .paths
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.paths.remove(&k);
        }
    }

    fn remove(&mut self, path: &[u8]) {
        self.paths.remove(path);
        self.clear_below(path);
    }

    /// Parents of an entry become directories (replacing files, as extraction does).
    fn ensure_parents(&mut self, path: &[u8]) {
        for (i, &b) in path.iter().enumerate() {
            if b == b'/' {
                let parent = &path[..i];
                if self.paths.get(parent) != Some(&true) {
                    self.paths.insert(parent.to_vec(), true);
                }
            }
        }
    }

    /// Applies `layer` (the next one up), failing on its first hard link without a target.
    pub fn apply(&mut self, layer: &LayerIndex) -> Result<()> {
        // Whiteouts hide lower layers only, wherever they sit in the tar: apply them first.
        for e in &layer.entries {
            let (dir, name) = split_last(e.path.as_bytes());
            if name == OPAQUE_MARKER {
                self.clear_below(dir);
            } else if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                if !hidden.is_empty() && !hidden.starts_with(WHITEOUT_PREFIX) {
                    self.remove(&join(dir, hidden));
                }
            }
        }
        for e in &layer.entries {
            let path = e.path.as_bytes();
            if split_last(path).1.starts_with(WHITEOUT_PREFIX) {
                continue;
            }
            if e.kind == FileKind::Hardlink {
                let target = e.link_target.as_bytes();
                if self.paths.get(target) != Some(&false) {
                    return Err(StoreError::DanglingHardlink {
                        layer: layer.digest.clone(),
                        path: e.path.clone(),
                        target: LayerPath::from(target),
                        reason: if self.paths.get(target) == Some(&true) {
                            "it is a directory"
                        } else {
                            "no earlier entry of this layer or of a lower layer provides it"
                        },
                    });
                }
            }
            self.ensure_parents(path);
            let is_dir = e.kind == FileKind::Directory;
            if !is_dir {
                self.clear_below(path);
            }
            self.paths.insert(path.to_vec(), is_dir);
        }
        Ok(())
    }
}

/// Whether every hard link of `layer` names an earlier non-directory entry of the same layer:
/// such links are valid whatever lies below, so a stack of such layers needs no
/// [`check_hardlinks`] (the common case; a linear pass without copying names).
pub fn links_within(layer: &LayerIndex) -> bool {
    let mut seen: std::collections::HashMap<&[u8], bool> =
        std::collections::HashMap::with_capacity(layer.entries.len());
    for e in &layer.entries {
        if e.kind == FileKind::Hardlink && seen.get(e.link_target.as_bytes()) != Some(&false) {
            return false;
        }
        seen.insert(e.path.as_bytes(), e.kind == FileKind::Directory);
    }
    true
}

/// Checks every hard link of `layers` (lowest first); see the module docs.
pub fn check_hardlinks<'a>(layers: impl IntoIterator<Item = &'a LayerIndex>) -> Result<()> {
    let mut check = HardlinkCheck::default();
    for l in layers {
        check.apply(l)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer_index::FileEntry;

    fn entry(path: &str, kind: FileKind, target: &str) -> FileEntry {
        FileEntry {
            path: path.into(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            mtime_nsec: 0,
            link_target: target.into(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: Default::default(),
            chunks: Vec::new(),
        }
    }
    fn file(p: &str) -> FileEntry {
        entry(p, FileKind::Regular, "")
    }
    fn dir(p: &str) -> FileEntry {
        entry(p, FileKind::Directory, "")
    }
    fn link(p: &str, t: &str) -> FileEntry {
        entry(p, FileKind::Hardlink, t)
    }
    fn layer(n: &str, entries: Vec<FileEntry>) -> LayerIndex {
        LayerIndex {
            digest: format!("sha256:{n}"),
            entries,
        }
    }

    #[test]
    fn links_to_lower_layers_and_chains_are_valid() {
        let l0 = layer("0", vec![dir("a"), file("a/orig"), file("a/dst")]);
        let l1 = layer("1", vec![file("a/orig")]); // rewritten by a middle layer
        let l2 = layer("2", vec![link("a/dst", "a/orig"), link("b/c", "a/dst")]);
        let l3 = layer("3", vec![link("z", "b/c")]);
        check_hardlinks([&l0, &l1, &l2, &l3]).unwrap();
        assert!(links_within(&l0) && links_within(&l1));
        assert!(!links_within(&l2) && !links_within(&l3));
        assert!(links_within(&layer("4", vec![file("x"), link("y", "x")])));
    }

    #[test]
    fn dangling_links_are_refused() {
        let l0 = layer("0", vec![file("a/orig"), dir("d")]);
        let err = |layers: &[&LayerIndex]| match check_hardlinks(layers.iter().copied()) {
            Err(StoreError::DanglingHardlink {
                layer,
                path,
                target,
                reason,
            }) => (layer, path.display().into_owned(), target, reason),
            other => panic!("expected a refusal, got {other:?}"),
        };
        let missing = layer("1", vec![link("x", "nowhere")]);
        assert_eq!(
            err(&[&l0, &missing]),
            (
                "sha256:1".to_string(),
                "x".to_string(),
                LayerPath::from("nowhere"),
                "no earlier entry of this layer or of a lower layer provides it"
            )
        );
        let whited = layer("1", vec![file("a/.wh.orig"), link("x", "a/orig")]);
        assert_eq!(err(&[&l0, &whited]).2, "a/orig");
        let opaque = layer("1", vec![file("a/.wh..wh..opq"), link("x", "a/orig")]);
        assert_eq!(err(&[&l0, &opaque]).2, "a/orig");
        let to_dir = layer("1", vec![link("x", "d")]);
        assert_eq!(err(&[&l0, &to_dir]).3, "it is a directory");
        // A target later in the same layer is not there yet when the link is extracted.
        let later = layer("1", vec![link("x", "y"), file("y")]);
        assert_eq!(err(&[&later]).2, "y");
        // A directory replacing the parent of the target removes it.
        let replaced = layer("1", vec![file("a"), link("x", "a/orig")]);
        assert_eq!(err(&[&l0, &replaced]).2, "a/orig");
    }
}
