//! [`ContentReader`] for `ChunkLocation::Local`: `pread` from a layer's verified data.tar.

use std::fs::File;
use std::num::NonZeroUsize;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::unpack::DATA_TAR;
use crate::content::digest_hex;
use crate::layer_index::{ChunkLocation, ChunkRef, ContentReader};
use crate::{Result, StoreError};

/// Open data.tar files kept around; FUSE reads hit a few layers over and over.
const OPEN_FILES: usize = 64;

/// Reads file bytes of fully pulled layers from `<layers dir>/<hex>/data.tar`.
pub struct LocalContentReader {
    layers_dir: PathBuf,
    files: Mutex<lru::LruCache<String, Arc<File>>>,
}

impl LocalContentReader {
    pub fn new(layers_dir: PathBuf) -> LocalContentReader {
        LocalContentReader {
            layers_dir,
            files: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(OPEN_FILES).expect("nonzero"),
            )),
        }
    }

    fn data_path(&self, layer: &str) -> Result<PathBuf> {
        Ok(self.layers_dir.join(digest_hex(layer)?).join(DATA_TAR))
    }

    fn file(&self, layer: &str) -> Result<Arc<File>> {
        if let Some(f) = self.files.lock().expect("fd cache").get(layer) {
            return Ok(f.clone());
        }
        let path = self.data_path(layer)?;
        let f = Arc::new(File::open(&path).map_err(|e| StoreError::io(&path, e))?);
        self.files
            .lock()
            .expect("fd cache")
            .put(layer.to_string(), f.clone());
        Ok(f)
    }

    /// Forgets an open file (after its layer was removed).
    pub fn forget(&self, layer: &str) {
        self.files.lock().expect("fd cache").pop(layer);
    }
}

impl ContentReader for LocalContentReader {
    fn read_at(
        &self,
        layer_digest: &str,
        chunks: &[ChunkRef],
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        // First chunk whose end lies beyond `offset`.
        let start = chunks.partition_point(|c| c.file_offset + c.len <= offset);
        let mut done = 0usize;
        let mut pos = offset;
        for chunk in &chunks[start..] {
            if done == buf.len() {
                break;
            }
            if chunk.file_offset > pos {
                return Err(StoreError::InvalidIndex {
                    layer: layer_digest.to_string(),
                    reason: format!("gap in chunks at file offset {pos}"),
                });
            }
            let ChunkLocation::Local { offset: base } = chunk.location else {
                return Err(StoreError::UnsupportedLocation {
                    layer: layer_digest.to_string(),
                    reason: "compressed chunk handed to the local reader".to_string(),
                });
            };
            let within = pos - chunk.file_offset;
            let want = ((chunk.len - within) as usize).min(buf.len() - done);
            let file = self.file(layer_digest)?;
            let mut got = 0;
            while got < want {
                let n = file
                    .read_at(
                        &mut buf[done + got..done + want],
                        base + within + got as u64,
                    )
                    .map_err(|e| {
                        StoreError::io(self.data_path(layer_digest).unwrap_or_default(), e)
                    })?;
                if n == 0 {
                    return Err(StoreError::Corrupt {
                        what: format!("data.tar of layer {layer_digest}"),
                        reason: format!("ends before offset {}", base + within + got as u64),
                    });
                }
                got += n;
            }
            done += want;
            pos += want as u64;
        }
        Ok(done)
    }
}
