//! The store facade the daemon uses: pull, list, inspect, tag, remove, import, push, and
//! the per-layer file indexes and content reader the filesystem needs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::ImageConfiguration;

use crate::cache::{ChunkCache, ChunkCacheConfig};
use crate::content::{digest_hex, BlobStore};
use crate::db::{Db, ImageRow, LayerRow};
use crate::layer::LocalContentReader;
use crate::layer_index::{ContentReader, LayerIndex};
use crate::lazy::DispatchReader;
use crate::reference::ImageReference;
use crate::registry::{Platform, RegistryClient, RegistryOptions};
use crate::{Result, StoreError};

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Registries (`host[:port]`) spoken to over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// Docker `config.json` with credentials; `None` = `$DOCKER_CONFIG` / `~/.docker`.
    pub docker_config: Option<PathBuf>,
    /// Per-registry CAs and client certificates, laid out like Docker's `certs.d`.
    pub certs_dir: Option<PathBuf>,
    /// Docker Hub mirrors (`http[s]://host[:port]`), tried first for `docker.io` reads.
    pub registry_mirrors: Vec<String>,
    /// Where `docker.io` is reached instead of Docker Hub (tests only).
    pub docker_hub_origin: Option<String>,
    /// Layers downloaded at once during a pull.
    pub max_concurrent_downloads: usize,
    /// Platform picked from multi-arch indexes; `None` = the host's.
    pub platform: Option<Platform>,
    /// Disk budget of the chunk cache of lazy (zstd:chunked) layers.
    pub cache_bytes: u64,
    /// Store zstd:chunked layers lazily (TOC only); `false` pulls them in full.
    pub lazy_pull: bool,
    /// Fetch the access profile an image's registry holds for it (docs/profiles.md).
    pub fetch_profiles: bool,
    /// At the end of a lazy pull, fetch the program the image starts by default and the
    /// files it loads (`program_prefetch`): no profile needed.
    pub prefetch_program: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            insecure_registries: Vec::new(),
            docker_config: None,
            certs_dir: None,
            registry_mirrors: Vec::new(),
            docker_hub_origin: None,
            max_concurrent_downloads: 3,
            platform: None,
            cache_bytes: 10 << 30,
            lazy_pull: true,
            fetch_profiles: true,
            prefetch_program: true,
        }
    }
}

/// One layer of an image, bottom first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// Compressed blob digest.
    pub digest: String,
    pub media_type: String,
    /// Compressed size.
    pub size: u64,
    pub diff_id: String,
    /// `tar`, `tar+gzip`, `tar+zstd` for local layers; the lazy format (`zstd:chunked`,
    /// `estargz`) for lazy ones.
    pub format: String,
    /// `local` when `<root>/layers/<hex>/data.tar` holds the layer.
    pub state: String,
    /// Uncompressed size.
    pub tar_size: u64,
}

impl From<LayerRow> for LayerInfo {
    fn from(r: LayerRow) -> Self {
        LayerInfo {
            digest: r.digest,
            media_type: r.media_type,
            size: r.size,
            diff_id: r.diff_id,
            format: r.format,
            state: r.state,
            tar_size: r.tar_size,
        }
    }
}

/// Everything known about a local image (`docker image inspect`).
#[derive(Debug, Clone)]
pub struct ImageRecord {
    /// Config digest, `sha256:<hex>`.
    pub id: String,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    /// Normalised `registry/repository:tag` names.
    pub repo_tags: Vec<String>,
    pub created: Option<String>,
    /// Sum of uncompressed layer sizes.
    pub size: u64,
    pub config: ImageConfiguration,
    pub config_bytes: Vec<u8>,
    pub layers: Vec<LayerInfo>,
    pub diff_ids: Vec<String>,
}

/// One line of `docker images`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    pub id: String,
    pub manifest_digest: String,
    pub repo_tags: Vec<String>,
    pub created: Option<String>,
    pub size: u64,
}

/// What `remove_image` did, in Docker's terms (`[{"Untagged": ..}, {"Deleted": ..}]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    Untagged(String),
    /// An image id or a layer digest whose data was removed.
    Deleted(String),
}

/// Cheap to clone; all clones share one database, blob store and registry client.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) root: PathBuf,
    pub(crate) blobs: BlobStore,
    pub(crate) db: Db,
    pub(crate) registry: RegistryClient,
    pub(crate) reader: Arc<LocalContentReader>,
    pub(crate) cache: Arc<ChunkCache>,
    pub(crate) opts: StoreOptions,
    /// One lock per layer digest being pulled: concurrent pulls of an image wait for the
    /// first to store a layer, then reuse it, instead of each fetching its TOC or blob.
    pub(crate) layer_pulls: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// zTOCs found by pulls in progress (layer digest → zTOC), for their layers' pulls.
    pub(crate) soci_ztocs: std::sync::Mutex<HashMap<String, Arc<crate::soci::Ztoc>>>,
    /// Indexes a pull just stored, for the image's first mount.
    pub(crate) fresh_indexes: crate::fresh_indexes::FreshIndexes,
}

impl Store {
    /// Opens (creating) the store under `root`: `skiff.db`, `blobs/`, `layers/`, `tmp/`.
    pub fn open(root: &Path, opts: StoreOptions) -> Result<Store> {
        std::fs::create_dir_all(root).map_err(|e| StoreError::io(root, e))?;
        let blobs = BlobStore::open(root)?;
        let layers = root.join("layers");
        std::fs::create_dir_all(&layers).map_err(|e| StoreError::io(&layers, e))?;
        // Leftovers of interrupted writes are garbage: nothing refers to them.
        if let Ok(rd) = std::fs::read_dir(blobs.tmp_dir()) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let db = Db::open(&root.join("skiff.db"))?;
        let registry = RegistryClient::try_new(RegistryOptions {
            insecure_registries: opts.insecure_registries.clone(),
            docker_config: opts.docker_config.clone(),
            certs_dir: opts.certs_dir.clone(),
            registry_mirrors: opts.registry_mirrors.clone(),
            docker_hub_origin: opts.docker_hub_origin.clone(),
            // Credentials clients sent with pulls, for lazy reads after a restart.
            credentials_file: Some(root.join("registry-credentials.json")),
            platform: opts.platform.clone(),
        })?;
        let mut cache_config = ChunkCacheConfig::new(root.join("chunks"));
        cache_config.budget_bytes = opts.cache_bytes;
        let cache = Arc::new(ChunkCache::open(cache_config)?);
        Ok(Store {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                blobs,
                db,
                registry,
                reader: Arc::new(LocalContentReader::new(layers)),
                cache,
                opts,
                layer_pulls: std::sync::Mutex::new(HashMap::new()),
                soci_ztocs: std::sync::Mutex::new(HashMap::new()),
                fresh_indexes: Default::default(),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The registry client (shared; clone it freely).
    pub fn registry(&self) -> &RegistryClient {
        &self.inner.registry
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.inner.blobs
    }

    /// The database, for modules that keep their own tables in `skiff.db`.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Bytes received from registries since the store was opened.
    pub fn bytes_downloaded(&self) -> u64 {
        self.inner.registry.bytes_downloaded()
    }

    /// Directory of a layer's local data (`data.tar`).
    pub fn layer_dir(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.inner.root.join("layers").join(digest_hex(digest)?))
    }

    /// Reads file bytes of every layer: local ones from `data.tar`, lazy ones through the
    /// chunk cache (fetching from the registry on demand).
    pub fn content_reader(&self) -> Arc<dyn ContentReader> {
        Arc::new(DispatchReader {
            local: self.inner.reader.clone(),
            cache: self.inner.cache.clone(),
        })
    }

    /// `docker images`: every image with its tags, newest first.
    pub fn images(&self) -> Result<Vec<ImageSummary>> {
        let db = &self.inner.db;
        db.all_images()?
            .into_iter()
            .map(|row| {
                Ok(ImageSummary {
                    repo_tags: db.tags_of(&row.id)?,
                    id: row.id,
                    manifest_digest: row.manifest_digest,
                    created: row.created,
                    size: row.size,
                })
            })
            .collect()
    }

    /// Finds an image by reference (`busybox`, `reg:5000/x:t`, `x@sha256:..`), by id, or
    /// by an unambiguous id prefix (with or without `sha256:`).
    pub fn image(&self, name_or_id: &str) -> Result<ImageRecord> {
        let id = self.resolve_id(name_or_id)?;
        self.record(&id)
    }

    pub(crate) fn resolve_id(&self, name: &str) -> Result<String> {
        let db = &self.inner.db;
        let not_found = || StoreError::ImageNotFound {
            name: name.to_string(),
        };
        if let Ok(r) = ImageReference::parse(name) {
            if let Some(d) = &r.digest {
                let hit = db
                    .all_images()?
                    .into_iter()
                    .find(|i| &i.manifest_digest == d || &i.id == d);
                return hit.map(|i| i.id).ok_or_else(not_found);
            }
            if let Some(t) = r.tagged() {
                if let Some(id) = db.tag_target(&t)? {
                    return Ok(id);
                }
            }
        }
        let hex_part = name.strip_prefix("sha256:").unwrap_or(name);
        if hex_part.is_empty() || !hex_part.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(not_found());
        }
        let ids = db.ids_with_prefix(&name.to_ascii_lowercase())?;
        match ids.len() {
            0 => Err(not_found()),
            1 => Ok(ids.into_iter().next().expect("one id")),
            n => Err(StoreError::AmbiguousImage {
                name: name.to_string(),
                count: n,
            }),
        }
    }

    pub(crate) fn record(&self, id: &str) -> Result<ImageRecord> {
        let db = &self.inner.db;
        let row: ImageRow = db.image(id)?.ok_or_else(|| StoreError::ImageNotFound {
            name: id.to_string(),
        })?;
        let config: ImageConfiguration =
            serde_json::from_slice(&row.config).map_err(|e| StoreError::Corrupt {
                what: format!("config of image {id}"),
                reason: e.to_string(),
            })?;
        let layers: Vec<LayerInfo> = db.image_layers(id)?.into_iter().map(Into::into).collect();
        Ok(ImageRecord {
            repo_tags: db.tags_of(id)?,
            diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
            id: row.id,
            manifest_digest: row.manifest_digest,
            manifest_media_type: row.manifest_media_type,
            created: row.created,
            size: row.size,
            config,
            config_bytes: row.config,
            layers,
        })
    }

    /// The `registry/repository@digest` names the image `id` was pulled or pushed as
    /// (Docker's `RepoDigests`), sorted.
    pub fn repo_digests(&self, id: &str) -> Result<Vec<String>> {
        self.inner.db.repo_digests_of(id)
    }

    /// Points `target` (a reference with a tag) at the image `source` names.
    pub fn tag(&self, source: &str, target: &str) -> Result<()> {
        let id = self.resolve_id(source)?;
        let t = ImageReference::parse(target)?;
        let name = t.tagged().ok_or_else(|| StoreError::InvalidReference {
            reference: target.to_string(),
            reason: "a tag target cannot be a digest".to_string(),
        })?;
        self.inner.db.set_tag(&name, &id)?;
        self.inner.db.set_last_tag_time(&id)
    }

    /// When the image was last tagged by a tag, commit, import or build (RFC 3339; Docker's
    /// `Metadata.LastTagTime`), `None` when never (a pulled image).
    pub fn last_tag_time(&self, id: &str) -> Result<Option<String>> {
        self.inner.db.last_tag_time(id)
    }

    /// `docker rmi`: a tag name untags (and deletes the image when it was the last tag);
    /// an id deletes the image, refusing (without `force`) when several tags point at it.
    pub fn remove_image(&self, name_or_id: &str, force: bool) -> Result<Vec<Removed>> {
        let db = &self.inner.db;
        let id = self.resolve_id(name_or_id)?;
        let tags = db.tags_of(&id)?;
        let by_tag = ImageReference::parse(name_or_id)
            .ok()
            .and_then(|r| r.tagged())
            .filter(|t| tags.contains(t));
        let mut out = Vec::new();
        if let Some(tag) = by_tag {
            db.remove_tag(&tag)?;
            out.push(Removed::Untagged(tag));
            if tags.len() > 1 {
                return Ok(out);
            }
        } else {
            if tags.len() > 1 && !force {
                return Err(StoreError::Conflict {
                    name: name_or_id.to_string(),
                    reason: format!(
                        "image is referenced in multiple repositories ({}); use force",
                        tags.join(", ")
                    ),
                });
            }
            out.extend(tags.into_iter().map(Removed::Untagged));
        }
        let row = db.image(&id)?;
        let orphans = db.delete_image(&id)?;
        out.push(Removed::Deleted(id.clone()));
        // Files go after the transaction: a crash in between leaves unreferenced files,
        // never a row pointing at missing data.
        if let Some(row) = row {
            let _ = self.inner.blobs.remove(&row.id);
        }
        for layer in orphans {
            self.inner.reader.forget(&layer);
            self.inner.cache.unregister_layer(&layer);
            self.inner.blobs.remove(&layer)?;
            let dir = self.layer_dir(&layer)?;
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(&dir, e)),
            }
            out.push(Removed::Deleted(layer));
        }
        Ok(out)
    }

    /// The file indexes of an image's layers, bottom first. Lazy layers get registered
    /// with the chunk cache (after a restart nothing is), so call this inside the tokio
    /// runtime whose handle FUSE reads will block on.
    pub fn layer_indexes(&self, image_id: &str) -> Result<Vec<LayerIndex>> {
        let id = self.resolve_id(image_id)?;
        self.inner
            .db
            .image_layers(&id)?
            .into_iter()
            .map(|l| {
                if l.state == "lazy" {
                    self.register_lazy_layer(&l.digest)?;
                }
                let index = match self.inner.fresh_indexes.take(&l.digest) {
                    Some(i) => i,
                    None => self.inner.db.layer_index(&l.digest)?.ok_or_else(|| {
                        StoreError::InvalidIndex {
                            layer: l.digest.clone(),
                            reason: "no file index stored".to_string(),
                        }
                    })?,
                };
                if l.state == "lazy" {
                    self.inner.cache.set_layer_map(&index);
                }
                Ok(index)
            })
            .collect()
    }
}
