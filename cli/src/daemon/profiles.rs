//! Access profiles on the daemon's side: a freshly mounted image with lazy layers records
//! its first reads (saved when its last container goes, the window ends, or the daemon
//! stops) and, when a profile exists, prefetches the chunks it names on a thread of its
//! own while the container starts. `--no-profile-record` / `--no-profile-prefetch` turn
//! either off.

use std::sync::Arc;

#[cfg(doc)]
use skiff_fs::ImageFs;
use skiff_fs::{AccessRecorder, RECORD_WINDOW};
use skiff_store::{LayerIndex, Store};

use crate::args::DaemonArgs;

#[derive(Debug, Clone, Copy)]
pub struct ProfileSettings {
    pub record: bool,
    pub prefetch: bool,
}

impl ProfileSettings {
    pub fn from_args(args: &DaemonArgs) -> ProfileSettings {
        ProfileSettings {
            record: !args.no_profile_record,
            prefetch: !args.no_profile_prefetch,
        }
    }
}

/// Starts the prefetch and makes a recorder, for an image about to be mounted. Returns the
/// recorder to give its filesystem ([`ImageFs::set_recorder`]) and to save later
/// ([`save`]); `None` when nothing is recorded.
pub fn on_mount(
    settings: ProfileSettings,
    store: &Store,
    image_id: &str,
    layers: &[LayerIndex],
) -> Option<Arc<AccessRecorder>> {
    let lazy = layers.iter().any(|l| {
        l.entries.iter().any(|e| {
            e.chunks.first().is_some_and(|c| {
                matches!(c.location, skiff_store::ChunkLocation::Compressed { .. })
            })
        })
    });
    if !lazy {
        return None;
    }
    if settings.prefetch {
        let (store, id) = (store.clone(), image_id.to_string());
        let spawned = std::thread::Builder::new()
            .name("skiff-prefetch".into())
            .spawn(move || match store.prefetch_profile(&id) {
                Ok(Some(r)) => tracing::info!(image = %id, planned = r.planned, ignored = r.ignored, fetched = r.fetched, skipped = r.skipped, requests = r.requests, stopped = r.stopped, "profile prefetch done"),
                Ok(None) => tracing::debug!(image = %id, "no access profile"),
                Err(e) => tracing::warn!(image = %id, error = %e, "profile prefetch failed"),
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the prefetch thread");
        }
    }
    if !settings.record {
        return None;
    }
    let digests = layers.iter().map(|l| l.digest.clone()).collect();
    let recorder = Arc::new(AccessRecorder::new(digests, RECORD_WINDOW));
    // Saved when the window closes even if containers keep running.
    let (store, weak) = (store.clone(), Arc::downgrade(&recorder));
    let _ = std::thread::Builder::new()
        .name("skiff-profile".into())
        .spawn(move || {
            std::thread::sleep(RECORD_WINDOW + std::time::Duration::from_secs(1));
            if let Some(r) = weak.upgrade() {
                save(&store, &r);
            }
        });
    Some(recorder)
}

/// Stores what `recorder` recorded (once; later calls find nothing).
pub fn save(store: &Store, recorder: &AccessRecorder) {
    let Some(p) = recorder.finish() else {
        return;
    };
    let (files, chunks) = (p.entries.len(), p.chunk_count());
    match store.save_profile(p) {
        Ok(key) => tracing::info!(%key, files, chunks, "access profile saved"),
        Err(e) => tracing::warn!(error = %e, "saving an access profile failed"),
    }
}
