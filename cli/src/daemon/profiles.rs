//! Access profiles on the daemon's side: a freshly mounted image with lazy layers records
//! its first reads (saved when its last container goes, the window ends, or the daemon
//! stops) and, when a profile exists, prefetches the chunks it names on a thread of its
//! own while the container starts, then the rest of its lazy layers at a bounded rate.
//! `--no-profile-record`, `--no-profile-prefetch` and `--no-background-fetch` turn each off.

use std::sync::{Arc, Mutex};

#[cfg(doc)]
use skiff_fs::ImageFs;
use skiff_fs::{AccessRecorder, RECORD_WINDOW};
use skiff_store::{LayerIndex, Store};

use super::config::DaemonConfig;

#[derive(Debug, Clone, Copy)]
pub struct ProfileSettings {
    pub record: bool,
    pub prefetch: bool,
    /// Fetch the rest of lazy layers in the background, at most `background_rate` bytes/s.
    pub background: bool,
    pub background_rate: u64,
}

impl ProfileSettings {
    pub fn from_config(args: &DaemonConfig) -> anyhow::Result<ProfileSettings> {
        let rate = crate::client::format::parse_bytes(&args.background_fetch_rate)
            .filter(|b| *b >= 0)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "invalid background-fetch-rate {:?}",
                    args.background_fetch_rate
                )
            })?;
        Ok(ProfileSettings {
            record: args.profile_record,
            prefetch: args.profile_prefetch,
            background: args.background_fetch,
            background_rate: rate as u64,
        })
    }
}

/// What a mount started: the recorder of its reads and the switch that stops its
/// background fetch.
pub struct MountWork {
    pub recorder: Option<Arc<AccessRecorder>>,
    pub cancel: Arc<std::sync::atomic::AtomicBool>,
}

/// The profile side of the image mounts: starts each mount's work and saves what it
/// recorded; saves under way are joined at shutdown so none is cut short.
pub struct MountProfiles {
    settings: ProfileSettings,
    store: Mutex<Option<Store>>,
    saving: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl MountProfiles {
    pub fn new(settings: ProfileSettings) -> MountProfiles {
        MountProfiles {
            settings,
            store: Mutex::new(None),
            saving: Mutex::new(Vec::new()),
        }
    }

    /// For an image about to be mounted: see [`on_mount`].
    pub fn on_mount(&self, store: &Store, image_id: &str, layers: &[LayerIndex]) -> MountWork {
        *self.store.lock().expect("profiles store") = Some(store.clone());
        on_mount(self.settings, store, image_id, layers)
    }

    /// The mount's last container is gone: its recording is saved (on a thread: it fsyncs).
    pub fn released(&self, work: &mut MountWork) {
        let store = self.store.lock().expect("profiles store").clone();
        if let (Some(r), Some(store)) = (work.recorder.take(), store) {
            let spawned = std::thread::Builder::new()
                .name("skiff-profile".into())
                .spawn(move || save(&store, &r));
            if let Ok(h) = spawned {
                let mut saving = self.saving.lock().expect("saves");
                saving.retain(|h| !h.is_finished());
                saving.push(h);
            }
        }
    }

    /// The image is unmounted: its background fetch stops, its recording is saved.
    pub fn unmounted(&self, work: MountWork) {
        work.cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let store = self.store.lock().expect("profiles store").clone();
        if let (Some(r), Some(store)) = (work.recorder, store) {
            save(&store, &r);
        }
    }

    /// Waits for the saves under way (at shutdown, and before a profile is removed).
    pub fn shutdown(&self) {
        for h in self.saving.lock().expect("saves").drain(..) {
            let _ = h.join();
        }
    }
}

/// Starts the prefetch and the background fetch and makes a recorder, for an image about
/// to be mounted. The recorder goes to its filesystem ([`ImageFs::set_recorder`]) and is
/// saved later ([`save`]).
pub fn on_mount(
    settings: ProfileSettings,
    store: &Store,
    image_id: &str,
    layers: &[LayerIndex],
) -> MountWork {
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    MountWork {
        recorder: start(settings, store, image_id, layers, &cancel),
        cancel,
    }
}

fn start(
    settings: ProfileSettings,
    store: &Store,
    image_id: &str,
    layers: &[LayerIndex],
    cancel: &Arc<std::sync::atomic::AtomicBool>,
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
    if settings.prefetch || settings.background {
        let (store, id, cancel) = (store.clone(), image_id.to_string(), cancel.clone());
        let spawned = std::thread::Builder::new()
            .name("skiff-prefetch".into())
            .spawn(move || {
                if settings.prefetch {
                    match store.prefetch_profile(&id) {
                        Ok(Some(r)) => tracing::info!(image = %id, planned = r.planned, ignored = r.ignored, fetched = r.fetched, skipped = r.skipped, requests = r.requests, stopped = r.stopped, "profile prefetch done"),
                        Ok(None) => tracing::debug!(image = %id, "no access profile"),
                        Err(e) => tracing::warn!(image = %id, error = %e, "profile prefetch failed"),
                    }
                }
                if settings.background {
                    match store.fetch_image_rest(&id, settings.background_rate, &cancel) {
                        Ok(n) => tracing::info!(image = %id, chunks = n, "background fetch done"),
                        Err(e) => tracing::warn!(image = %id, error = %e, "background fetch failed"),
                    }
                }
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
