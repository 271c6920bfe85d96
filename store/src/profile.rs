//! Access profiles: which chunks of which files a container of an image read in its first
//! seconds, in order. Recorded by the filesystem, stored here keyed by the image's layer
//! digests, and used on a cold start to fetch all of them at once (see `docs/profiles.md`).
//!
//! A profile is data, never code: an ordered list of `(layer digest, path, chunks)` where
//! each chunk is named by its offset in the file and its digest. Applying one to an image
//! keeps only the chunks that image really has (same path, same offset, same digest), so a
//! profile from another version of the image, or a hostile one, can only cause fetches of
//! the image's own chunks.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::layer_index::{ChunkLocation, FileEntry, LayerIndex};
use crate::{Result, StoreError};

/// The version this code writes and reads.
pub const PROFILE_VERSION: u32 = 1;
/// Most chunks one profile holds; recording stops there.
pub const MAX_PROFILE_CHUNKS: usize = 16384;
/// Largest profile document accepted (stored or fetched).
pub const MAX_PROFILE_BYTES: u64 = 4 << 20;

/// One chunk read: its offset in the file and its digest (`sha256:<hex>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileChunk {
    pub offset: u64,
    pub digest: String,
}

/// The chunks read of one file, in the order first read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileEntry {
    /// The digest of the layer the file was read from.
    pub layer: String,
    /// The file's path in the image (relative, as in the layer index).
    pub path: crate::layer_path::LayerPath,
    pub chunks: Vec<ProfileChunk>,
}

/// A recorded access profile of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub version: u32,
    /// The image's layer digests, lowest first: the key.
    pub layers: Vec<String>,
    /// When it was recorded (RFC 3339).
    pub created: String,
    /// Files in the order their first chunk was read.
    pub entries: Vec<ProfileEntry>,
}

/// A stored profile, as `skiff image profile ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProfileSummary {
    /// The profile's key: hex sha256 of its layer digests.
    pub key: String,
    pub layers: Vec<String>,
    pub created: String,
    pub files: usize,
    pub chunks: usize,
    /// Size of the stored document.
    pub bytes: u64,
}

impl Profile {
    /// A profile of an image with `layers`, recorded now.
    pub fn new(layers: Vec<String>, entries: Vec<ProfileEntry>) -> Profile {
        Profile {
            version: PROFILE_VERSION,
            layers,
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            entries,
        }
    }

    /// `self` followed by the files of `older` that `self` lacks, within the chunk cap: a
    /// later run that read less keeps what earlier runs needed.
    pub fn merged_with(mut self, older: &Profile) -> Profile {
        let have: HashSet<(String, crate::layer_path::LayerPath)> = self
            .entries
            .iter()
            .map(|e| (e.layer.clone(), e.path.clone()))
            .collect();
        let mut total = self.chunk_count();
        for e in &older.entries {
            if have.contains(&(e.layer.clone(), e.path.clone())) {
                continue;
            }
            if total + e.chunks.len() > MAX_PROFILE_CHUNKS {
                break;
            }
            total += e.chunks.len();
            self.entries.push(e.clone());
        }
        self
    }

    /// Chunks over all entries.
    pub fn chunk_count(&self) -> usize {
        self.entries.iter().map(|e| e.chunks.len()).sum()
    }

    /// The key of an image with `layers` (lowest first).
    pub fn key_for(layers: &[String]) -> String {
        let mut h = Sha256::new();
        for l in layers {
            h.update(l.as_bytes());
            h.update(b"\n");
        }
        hex::encode(h.finalize())
    }

    pub fn key(&self) -> String {
        Profile::key_for(&self.layers)
    }

    /// Parses and checks a profile document: version, size, digests, chunk cap.
    pub fn from_json(data: &[u8], what: &str) -> Result<Profile> {
        let bad = |reason: String| StoreError::Corrupt {
            what: format!("access profile {what}"),
            reason,
        };
        if data.len() as u64 > MAX_PROFILE_BYTES {
            return Err(bad(format!(
                "{} bytes, over the cap of {MAX_PROFILE_BYTES}",
                data.len()
            )));
        }
        let p: Profile = serde_json::from_slice(data).map_err(|e| bad(e.to_string()))?;
        if p.version != PROFILE_VERSION {
            return Err(bad(format!(
                "version {} (this skiff reads {PROFILE_VERSION})",
                p.version
            )));
        }
        if p.layers.is_empty() {
            return Err(bad("no layers".into()));
        }
        if p.chunk_count() > MAX_PROFILE_CHUNKS {
            return Err(bad(format!("more than {MAX_PROFILE_CHUNKS} chunks")));
        }
        Ok(p)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a profile serializes")
    }
}

/// One chunk to prefetch: where it is in its layer blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefetchChunk {
    pub blob_offset: u64,
    /// Position in the profile (lower = read earlier).
    pub order: usize,
}

/// What applying a profile to an image gave.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PrefetchPlan {
    /// Layer digest → chunks to fetch, in profile order.
    pub layers: Vec<(String, Vec<PrefetchChunk>)>,
    /// Profile chunks the image does not have (missing layer, file, offset or digest).
    pub ignored: usize,
}

impl PrefetchPlan {
    pub fn chunk_count(&self) -> usize {
        self.layers.iter().map(|(_, c)| c.len()).sum()
    }
}

/// Maps `profile` onto an image's `layers` (lowest first): every profile chunk whose file
/// exists at that path, in the recorded layer or else the topmost layer holding the path,
/// with a compressed chunk at the recorded offset and digest. Everything else is ignored.
pub fn plan(profile: &Profile, layers: &[LayerIndex]) -> PrefetchPlan {
    let by_path: Vec<HashMap<&[u8], &FileEntry>> = layers
        .iter()
        .map(|l| l.entries.iter().map(|e| (e.path.as_bytes(), e)).collect())
        .collect();
    let position: HashMap<&str, usize> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| (l.digest.as_str(), i))
        .collect();
    let mut out: Vec<Vec<PrefetchChunk>> = vec![Vec::new(); layers.len()];
    let mut seen: HashSet<(usize, u64)> = HashSet::new();
    let mut ignored = 0;
    let mut order = 0;
    for entry in &profile.entries {
        let found = position
            .get(entry.layer.as_str())
            .and_then(|&i| by_path[i].get(entry.path.as_bytes()).map(|f| (i, *f)))
            .or_else(|| {
                (0..layers.len())
                    .rev()
                    .find_map(|i| by_path[i].get(entry.path.as_bytes()).map(|f| (i, *f)))
            });
        let Some((li, file)) = found else {
            ignored += entry.chunks.len();
            continue;
        };
        for pc in &entry.chunks {
            order += 1;
            let at = file
                .chunks
                .binary_search_by_key(&pc.offset, |c| c.file_offset);
            let hit = at.ok().and_then(|i| match &file.chunks[i].location {
                ChunkLocation::Compressed {
                    blob_offset,
                    digest,
                    ..
                } if *digest == pc.digest => Some(*blob_offset),
                _ => None,
            });
            match hit {
                Some(blob_offset) => {
                    if seen.insert((li, blob_offset)) {
                        out[li].push(PrefetchChunk { blob_offset, order });
                    }
                }
                None => ignored += 1,
            }
        }
    }
    PrefetchPlan {
        layers: layers
            .iter()
            .zip(out)
            .filter(|(_, c)| !c.is_empty())
            .map(|(l, c)| (l.digest.clone(), c))
            .collect(),
        ignored,
    }
}

/// Profiles on disk: `<dir>/<key>.json`, written atomically.
pub struct ProfileStore {
    dir: PathBuf,
}

impl ProfileStore {
    pub fn open(dir: &Path) -> Result<ProfileStore> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        Ok(ProfileStore {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::InvalidReference {
                reference: key.to_string(),
                reason: "a profile key is 64 hex digits".into(),
            });
        }
        Ok(self.dir.join(format!("{}.json", key.to_ascii_lowercase())))
    }

    /// Stores `p` under its key, replacing any profile there (tmp + fsync + rename).
    pub fn put(&self, p: &Profile) -> Result<String> {
        let key = p.key();
        let path = self.path(&key)?;
        let data = p.to_json();
        if data.len() as u64 > MAX_PROFILE_BYTES {
            return Err(StoreError::Corrupt {
                what: format!("access profile {key}"),
                reason: format!("{} bytes, over the cap of {MAX_PROFILE_BYTES}", data.len()),
            });
        }
        let mut tmp =
            tempfile::NamedTempFile::new_in(&self.dir).map_err(|e| StoreError::io(&self.dir, e))?;
        tmp.write_all(&data)
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| StoreError::io(tmp.path(), e))?;
        tmp.persist(&path)
            .map_err(|e| StoreError::io(&path, e.error))?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(key)
    }

    /// The profile stored under `key`, if any; a damaged one is an error naming it.
    pub fn get(&self, key: &str) -> Result<Option<(Profile, u64)>> {
        let path = self.path(key)?;
        match std::fs::read(&path) {
            Ok(d) => Ok(Some((Profile::from_json(&d, key)?, d.len() as u64))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    /// Removes the profile under `key`; `false` if there was none.
    pub fn remove(&self, key: &str) -> Result<bool> {
        let path = self.path(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    /// Every readable profile (damaged ones are logged and skipped).
    pub fn list(&self) -> Result<Vec<ProfileSummary>> {
        let rd = std::fs::read_dir(&self.dir).map_err(|e| StoreError::io(&self.dir, e))?;
        let mut out = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(key) = name.strip_suffix(".json") else {
                continue;
            };
            match self.get(key) {
                Ok(Some((p, bytes))) => out.push(ProfileSummary {
                    key: key.to_string(),
                    files: p.entries.len(),
                    chunks: p.chunk_count(),
                    layers: p.layers,
                    created: p.created,
                    bytes,
                }),
                Ok(None) => {}
                Err(err) => tracing::warn!(key, error = %err, "skipping a damaged access profile"),
            }
        }
        out.sort_by(|a, b| b.created.cmp(&a.created));
        Ok(out)
    }

    /// The profile for an image with `layers`: its own, else the stored one sharing most
    /// layers with it (a new version of the image reuses the old one's shared files).
    pub fn find(&self, layers: &[String]) -> Result<Option<Profile>> {
        if let Some((p, _)) = self.get(&Profile::key_for(layers))? {
            return Ok(Some(p));
        }
        let mine: HashSet<&str> = layers.iter().map(String::as_str).collect();
        let best = self
            .list()?
            .into_iter()
            .map(|s| {
                let shared = s
                    .layers
                    .iter()
                    .filter(|l| mine.contains(l.as_str()))
                    .count();
                (shared, s.key)
            })
            .filter(|(shared, _)| *shared > 0)
            .max_by_key(|(shared, _)| *shared);
        match best {
            Some((_, key)) => Ok(self.get(&key)?.map(|(p, _)| p)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer_index::{ChunkRef, FileKind};

    fn file(path: &str, chunks: &[(u64, u64, &str)]) -> FileEntry {
        FileEntry {
            path: path.into(),
            kind: FileKind::Regular,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: chunks.len() as u64 * 10,
            mtime: 0,
            mtime_nsec: 0,
            link_target: Default::default(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: Default::default(),
            chunks: chunks
                .iter()
                .map(|(off, blob, d)| ChunkRef {
                    file_offset: *off,
                    len: 10,
                    location: ChunkLocation::Compressed {
                        blob_offset: *blob,
                        blob_len: 5,
                        digest: d.to_string(),
                        codec: Default::default(),
                        inner_offset: 0,
                    },
                })
                .collect(),
        }
    }

    fn entry(layer: &str, path: &str, chunks: &[(u64, &str)]) -> ProfileEntry {
        ProfileEntry {
            layer: layer.into(),
            path: path.into(),
            chunks: chunks
                .iter()
                .map(|(o, d)| ProfileChunk {
                    offset: *o,
                    digest: d.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn plan_keeps_only_what_the_image_has() {
        let layers = vec![
            LayerIndex {
                digest: "sha256:low".into(),
                entries: vec![file(
                    "bin/sh",
                    &[(0, 100, "sha256:a"), (10, 105, "sha256:b")],
                )],
            },
            LayerIndex {
                digest: "sha256:new-top".into(),
                entries: vec![file("app/x", &[(0, 7, "sha256:x")])],
            },
        ];
        let profile = Profile {
            version: PROFILE_VERSION,
            layers: vec!["sha256:low".into(), "sha256:old-top".into()],
            created: "2026-11-30T00:00:00Z".into(),
            entries: vec![
                // The second chunk first: order is kept.
                entry("sha256:low", "bin/sh", &[(10, "sha256:b"), (0, "sha256:a")]),
                // Layer gone, same path and content in the new top layer: used.
                entry("sha256:old-top", "app/x", &[(0, "sha256:x")]),
                // Same path, changed content: ignored.
                entry("sha256:old-top", "app/x", &[(0, "sha256:changed")]),
                // No such file, no such offset: ignored.
                entry("sha256:low", "etc/missing", &[(0, "sha256:a")]),
                entry("sha256:low", "bin/sh", &[(999, "sha256:a")]),
            ],
        };
        let p = plan(&profile, &layers);
        assert_eq!(p.ignored, 3);
        assert_eq!(
            p.layers,
            vec![
                (
                    "sha256:low".to_string(),
                    vec![
                        PrefetchChunk {
                            blob_offset: 105,
                            order: 1
                        },
                        PrefetchChunk {
                            blob_offset: 100,
                            order: 2
                        }
                    ]
                ),
                (
                    "sha256:new-top".to_string(),
                    vec![PrefetchChunk {
                        blob_offset: 7,
                        order: 3
                    }]
                ),
            ]
        );
    }

    #[test]
    fn store_round_trips_finds_by_shared_layers_and_refuses_bad_documents() {
        let dir = tempfile::tempdir().unwrap();
        let ps = ProfileStore::open(dir.path()).unwrap();
        let p = Profile {
            version: PROFILE_VERSION,
            layers: vec!["sha256:a".into(), "sha256:b".into()],
            created: "2026-11-30T00:00:00Z".into(),
            entries: vec![entry("sha256:a", "f", &[(0, "sha256:c")])],
        };
        let key = ps.put(&p).unwrap();
        assert_eq!(ps.get(&key).unwrap().unwrap().0, p);
        assert_eq!(ps.list().unwrap().len(), 1);
        assert_eq!(ps.list().unwrap()[0].chunks, 1);
        // A new version sharing the base layer finds it.
        let found = ps
            .find(&["sha256:a".into(), "sha256:other".into()])
            .unwrap();
        assert_eq!(found, Some(p.clone()));
        assert_eq!(ps.find(&["sha256:z".into()]).unwrap(), None);
        assert!(Profile::from_json(
            b"{\"version\":2,\"layers\":[\"x\"],\"created\":\"\",\"entries\":[]}",
            "t"
        )
        .is_err());
        assert!(Profile::from_json(b"not json", "t").is_err());
        assert!(ps.get("../etc").is_err());
        assert!(ps.remove(&key).unwrap());
        assert!(!ps.remove(&key).unwrap());
    }
}
