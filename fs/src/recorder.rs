//! Records which chunks of which files a mount serves in its first seconds, in order: the
//! raw material of an access profile ([`skiff_store::profile`]). It sits at the filesystem
//! because the page cache hides repeated reads and the mount is shared by every container
//! of the image, so what reaches this mount's `read` first is what the image needs to
//! start. Only chunks of lazily fetched files are recorded (local layers need no prefetch).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use skiff_store::profile::{Profile, ProfileChunk, ProfileEntry, MAX_PROFILE_CHUNKS};
use skiff_store::{ChunkLocation, FileEntry};

/// How long after its first read a mount records.
pub const RECORD_WINDOW: Duration = Duration::from_secs(20);

struct Seen {
    layer: usize,
    path: skiff_store::layer_path::LayerPath,
    chunk: ProfileChunk,
}

struct State {
    first_read: Option<Instant>,
    closed: bool,
    seen: HashSet<(u64, usize)>,
    events: Vec<Seen>,
}

/// Shared by a mount's [`ImageFs`](crate::ImageFs) and whoever saves the profile.
pub struct AccessRecorder {
    layers: Vec<String>,
    window: Duration,
    state: Mutex<State>,
}

impl AccessRecorder {
    /// A recorder for an image with `layers` (digests, lowest first), recording for
    /// `window` after the first read.
    pub fn new(layers: Vec<String>, window: Duration) -> AccessRecorder {
        AccessRecorder {
            layers,
            window,
            state: Mutex::new(State {
                first_read: None,
                closed: false,
                seen: HashSet::new(),
                events: Vec::new(),
            }),
        }
    }

    /// Notes a read of `file` (inode `ino`, from layer number `layer`) covering bytes
    /// `offset..end`.
    pub(crate) fn record(&self, layer: usize, ino: u64, file: &FileEntry, offset: u64, end: u64) {
        let mut s = self.state.lock().unwrap();
        if s.closed || s.events.len() >= MAX_PROFILE_CHUNKS {
            return;
        }
        let now = Instant::now();
        let first = *s.first_read.get_or_insert(now);
        if now.duration_since(first) > self.window {
            s.closed = true;
            return;
        }
        let lo = file
            .chunks
            .partition_point(|c| c.file_offset + c.len <= offset);
        let hi = file.chunks.partition_point(|c| c.file_offset < end);
        for (i, c) in file.chunks.iter().enumerate().take(hi).skip(lo) {
            let ChunkLocation::Compressed { digest, .. } = &c.location else {
                continue;
            };
            if s.seen.insert((ino, i)) {
                s.events.push(Seen {
                    layer,
                    path: file.path.clone(),
                    chunk: ProfileChunk {
                        offset: c.file_offset,
                        digest: digest.clone(),
                    },
                });
            }
        }
    }

    /// Stops recording and returns the profile recorded, `None` if nothing was read.
    /// Later calls return `None`.
    pub fn finish(&self) -> Option<Profile> {
        let events = {
            let mut s = self.state.lock().unwrap();
            s.closed = true;
            std::mem::take(&mut s.events)
        };
        if events.is_empty() {
            return None;
        }
        let mut entries: Vec<ProfileEntry> = Vec::new();
        let mut at: HashMap<(usize, skiff_store::layer_path::LayerPath), usize> = HashMap::new();
        for e in events {
            let i = *at.entry((e.layer, e.path.clone())).or_insert_with(|| {
                entries.push(ProfileEntry {
                    layer: self.layers.get(e.layer).cloned().unwrap_or_default(),
                    path: e.path.clone(),
                    chunks: Vec::new(),
                });
                entries.len() - 1
            });
            entries[i].chunks.push(e.chunk);
        }
        Some(Profile::new(self.layers.clone(), entries))
    }
}
