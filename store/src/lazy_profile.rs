//! The store's side of access profiles: keeping them under `<root>/profiles/` and turning
//! an image's profile into a prefetch of its chunks.

use crate::profile::{self, Profile, ProfileStore, ProfileSummary};
use crate::store::Store;
use crate::{Result, StoreError};

/// What a profile prefetch of an image did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImagePrefetch {
    /// Chunks the profile named that the image has.
    pub planned: usize,
    /// Profile chunks the image lacks (ignored).
    pub ignored: usize,
    pub requests: u64,
    pub fetched: u64,
    /// Chunks already cached or being read.
    pub skipped: u64,
    /// Stopped early (budget near, or the registry failed).
    pub stopped: bool,
}

/// Spans fetched at once by one image's prefetch.
const PREFETCH_WORKERS: usize = 4;

impl Store {
    fn profile_store(&self) -> Result<ProfileStore> {
        ProfileStore::open(&self.inner.root.join("profiles"))
    }

    /// The layer digests of image `name_or_id`, lowest first (a profile's key).
    pub fn image_layer_digests(&self, name_or_id: &str) -> Result<Vec<String>> {
        let img = self.image(name_or_id)?;
        Ok(img.layers.iter().map(|l| l.digest.clone()).collect())
    }

    /// Stores `p`, merged with the profile already stored under its key (newer files
    /// first). Returns the key.
    pub fn save_profile(&self, p: Profile) -> Result<String> {
        let ps = self.profile_store()?;
        let merged = match ps.get(&p.key()) {
            Ok(Some((old, _))) => p.merged_with(&old),
            _ => p,
        };
        ps.put(&merged)
    }

    /// Whether a profile is stored for an image with `layers`.
    pub(crate) fn has_profile(&self, layers: &[String]) -> bool {
        self.profile_store()
            .and_then(|ps| ps.get(&Profile::key_for(layers)))
            .is_ok_and(|p| p.is_some())
    }

    pub fn profiles(&self) -> Result<Vec<ProfileSummary>> {
        self.profile_store()?.list()
    }

    /// The profile under `key_or_image`: a profile key, or an image whose own profile it is.
    pub fn profile(&self, key_or_image: &str) -> Result<Profile> {
        let key = self.profile_key(key_or_image)?;
        self.profile_store()?
            .get(&key)?
            .map(|(p, _)| p)
            .ok_or_else(|| StoreError::ImageNotFound {
                name: format!("access profile {key_or_image}"),
            })
    }

    /// Removes the profile under `key_or_image`; an error if there is none.
    pub fn remove_profile(&self, key_or_image: &str) -> Result<String> {
        let key = self.profile_key(key_or_image)?;
        if self.profile_store()?.remove(&key)? {
            Ok(key)
        } else {
            Err(StoreError::ImageNotFound {
                name: format!("access profile {key_or_image}"),
            })
        }
    }

    fn profile_key(&self, key_or_image: &str) -> Result<String> {
        if key_or_image.len() == 64 && key_or_image.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(key_or_image.to_ascii_lowercase());
        }
        Ok(Profile::key_for(&self.image_layer_digests(key_or_image)?))
    }

    /// Fetches every chunk the image's profile (its own, or one sharing layers with it)
    /// names and the image has, in large coalesced requests behind on-demand reads.
    /// `Ok(None)` without a profile. The image's lazy layers must be registered (mounted)
    /// already. Blocking: run it on its own thread.
    pub fn prefetch_profile(&self, image_id: &str) -> Result<Option<ImagePrefetch>> {
        let layers = self.image_layer_digests(image_id)?;
        let Some(p) = self.profile_store()?.find(&layers)? else {
            return Ok(None);
        };
        let mut indexes = Vec::with_capacity(layers.len());
        for l in &layers {
            let Some(index) = self.inner.db.layer_index(l)? else {
                return Err(StoreError::InvalidIndex {
                    layer: l.clone(),
                    reason: "no file index stored".into(),
                });
            };
            indexes.push(index);
        }
        let plan = profile::plan(&p, &indexes);
        let mut out = ImagePrefetch {
            planned: plan.chunk_count(),
            ignored: plan.ignored,
            ..Default::default()
        };
        for (layer, chunks) in &plan.layers {
            let r = self
                .inner
                .cache
                .prefetch_profile(layer, chunks, PREFETCH_WORKERS);
            out.requests += r.requests;
            out.fetched += r.chunks;
            out.skipped += r.skipped;
            out.stopped |= r.stopped;
            if r.stopped {
                break;
            }
        }
        Ok(Some(out))
    }
}

impl Store {
    /// Fetches the rest of every lazy layer of `image_id` at low priority, at most `rate`
    /// bytes per second (0 = unbounded), until done, `cancel`, or the cache budget. The
    /// image's layers must be registered (mounted). Returns the chunks fetched. Blocking.
    pub fn fetch_image_rest(
        &self,
        image_id: &str,
        rate: u64,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<u64> {
        let mut fetched = 0;
        for l in self.inner.db.image_layers(&self.resolve_id(image_id)?)? {
            if l.state != "lazy" {
                continue;
            }
            let r = self.inner.cache.fetch_rest(&l.digest, rate, cancel);
            fetched += r.chunks;
            if r.stopped || cancel.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
        }
        Ok(fetched)
    }
}
