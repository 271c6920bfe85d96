//! The build cache, keyed as Docker's classic builder keys it: the image a step starts
//! from plus the step's instruction (with the build args it sees), plus for `COPY`/`ADD`
//! the checksum of what it copies. A key maps to the intermediate image the step made.
//! Kept in `<data-root>/build-cache.json` (written atomically); images it names and no tag
//! names are hidden from `docker images` (as Docker hides intermediate images) and go with
//! `builder prune`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::super::error::DaemonError;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    version: u32,
    /// Cache key → image id.
    entries: BTreeMap<String, String>,
    /// Images a build ended with (shown even untagged, as Docker shows `<none>`).
    finals: BTreeSet<String>,
    /// Image id → the image it was made from: a build step's image → the previous step's
    /// (or the base), a commit → the container's image (Docker's `Parent`).
    #[serde(default)]
    parents: BTreeMap<String, String>,
}

pub struct BuildCache {
    path: PathBuf,
    index: Mutex<Index>,
}

/// The cache key of a step: sha256 over parent image, instruction and content checksum.
pub fn key(parent: Option<&str>, instruction: &str, content: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(parent.unwrap_or("scratch").as_bytes());
    h.update(b"\n");
    h.update(instruction.as_bytes());
    h.update(b"\n");
    h.update(content.unwrap_or("").as_bytes());
    hex::encode(h.finalize())
}

impl BuildCache {
    /// Opens the cache index at `path` (none yet: empty; unreadable: empty, logged).
    pub fn open(path: PathBuf) -> BuildCache {
        let index = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), "build cache index unreadable, starting empty: {e}");
                Index::default()
            }),
            Err(_) => Index::default(),
        };
        BuildCache {
            path,
            index: Mutex::new(index),
        }
    }

    fn save(&self, index: &Index) -> Result<(), DaemonError> {
        let bytes = serde_json::to_vec(index).expect("index serializes");
        super::super::volumes::write_atomic(&self.path, &bytes)
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.index
            .lock()
            .expect("cache lock")
            .entries
            .get(key)
            .cloned()
    }

    /// Records that step `key` made `image` from `parent`.
    pub fn put(&self, key: String, image: String, parent: Option<&str>) -> Result<(), DaemonError> {
        let mut i = self.index.lock().expect("cache lock");
        i.version = 1;
        if let Some(p) = parent.filter(|p| *p != image) {
            i.parents.insert(image.clone(), p.to_string());
        }
        i.entries.insert(key, image);
        self.save(&i)
    }

    /// Records that `image` was made from `parent` (a commit).
    pub fn set_parent(&self, image: &str, parent: &str) -> Result<(), DaemonError> {
        let mut i = self.index.lock().expect("cache lock");
        if image == parent || i.parents.get(image).is_some_and(|p| p == parent) {
            return Ok(());
        }
        i.parents.insert(image.to_string(), parent.to_string());
        self.save(&i)
    }

    /// The image `image` was built or committed from, if skiff made it.
    pub fn parent_of(&self, image: &str) -> Option<String> {
        let i = self.index.lock().expect("cache lock");
        i.parents.get(image).cloned()
    }

    pub fn forget(&self, key: &str) -> Result<(), DaemonError> {
        let mut i = self.index.lock().expect("cache lock");
        if i.entries.remove(key).is_some() {
            self.save(&i)?;
        }
        Ok(())
    }

    /// Records `image` as a build's result.
    pub fn mark_final(&self, image: &str) -> Result<(), DaemonError> {
        let mut i = self.index.lock().expect("cache lock");
        if i.finals.insert(image.to_string()) {
            self.save(&i)?;
        }
        Ok(())
    }

    /// Whether `image` is only a build step's intermediate image.
    pub fn is_intermediate(&self, image: &str) -> bool {
        let i = self.index.lock().expect("cache lock");
        !i.finals.contains(image) && i.entries.values().any(|v| v == image)
    }

    /// Every image the cache names (`builder prune`, `system df`).
    pub fn images(&self) -> BTreeSet<String> {
        let i = self.index.lock().expect("cache lock");
        i.entries.values().cloned().collect()
    }

    /// Forgets every entry naming an image in `gone`.
    pub fn drop_images(&self, gone: &BTreeSet<String>) -> Result<(), DaemonError> {
        let mut i = self.index.lock().expect("cache lock");
        i.entries.retain(|_, v| !gone.contains(v));
        i.finals.retain(|v| !gone.contains(v));
        i.parents
            .retain(|child, parent| !gone.contains(child) && !gone.contains(parent));
        self.save(&i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_persistence() {
        assert_ne!(key(Some("a"), "RUN x", None), key(Some("b"), "RUN x", None));
        assert_ne!(
            key(Some("a"), "COPY . /", Some("1")),
            key(Some("a"), "COPY . /", Some("2"))
        );
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("build-cache.json");
        let c = BuildCache::open(p.clone());
        c.put("k".into(), "sha256:i".into(), Some("sha256:base"))
            .unwrap();
        c.put("k2".into(), "sha256:f".into(), Some("sha256:i"))
            .unwrap();
        assert_eq!(c.parent_of("sha256:f").as_deref(), Some("sha256:i"));
        assert_eq!(c.parent_of("sha256:base"), None);
        c.mark_final("sha256:f").unwrap();
        let c = BuildCache::open(p);
        assert_eq!(c.get("k").as_deref(), Some("sha256:i"));
        assert!(c.is_intermediate("sha256:i"));
        assert!(!c.is_intermediate("sha256:f"));
        c.drop_images(&["sha256:i".to_string()].into()).unwrap();
        assert_eq!(c.get("k"), None);
    }
}
