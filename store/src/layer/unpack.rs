//! Turns a compressed layer blob into `<layer dir>/data.tar` plus its [`LayerIndex`].
//!
//! The decompressed stream is written to a temporary file and hashed while the tar headers
//! are indexed; `data.tar` appears (atomically) only if the stream is a complete, valid tar
//! whose sha256 matches the config's diff_id.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::compression::Compression;
use super::tar_index::index_tar;
use crate::content::AtomicFile;
use crate::layer_index::LayerIndex;
use crate::{Result, StoreError};

/// The file name of a layer's uncompressed tar inside its directory.
pub const DATA_TAR: &str = "data.tar";

pub struct UnpackedLayer {
    pub index: LayerIndex,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    pub tar_size: u64,
}

/// Copies everything read from `inner` into `out` and a hasher.
struct Tee<R, W> {
    inner: R,
    out: W,
    hasher: Sha256,
    count: u64,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Decompresses `blob` (the layer `layer_digest`), indexes it and commits
/// `dest_dir/data.tar`. With `expected_diff_id`, a mismatch stores nothing.
pub fn unpack_layer(
    blob: impl Read + Send,
    compression: Compression,
    layer_digest: &str,
    expected_diff_id: Option<&str>,
    tmp_dir: &Path,
    dest_dir: &Path,
) -> Result<UnpackedLayer> {
    let decoder = compression
        .decoder(BufReader::with_capacity(256 * 1024, blob))
        .map_err(|e| StoreError::BadLayerEntry {
            layer: layer_digest.to_string(),
            path: String::new(),
            reason: format!("cannot start {} decoder: {e}", compression.as_str()),
        })?;
    let mut file = AtomicFile::new(tmp_dir)?;
    let tmp_path = file.path().to_path_buf();
    let tee = Tee {
        inner: decoder,
        out: BufWriter::with_capacity(1 << 20, file.file()),
        hasher: Sha256::new(),
        count: 0,
    };
    let (index, rest) = index_tar(layer_digest, BufReader::with_capacity(256 * 1024, tee))?;
    // Drain the end-of-archive blocks (and any padding) so data.tar is the whole stream.
    let mut rest = rest;
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| StoreError::BadLayerEntry {
        layer: layer_digest.to_string(),
        path: String::new(),
        reason: format!(
            "corrupt {} stream after the last entry: {e}",
            compression.as_str()
        ),
    })?;
    let Tee {
        mut out,
        hasher,
        count: tar_size,
        ..
    } = rest.into_inner();
    out.flush().map_err(|e| StoreError::io(&tmp_path, e))?;
    drop(out);
    let diff_id = format!("sha256:{}", hex::encode(hasher.finalize()));
    if let Some(expected) = expected_diff_id {
        if expected != diff_id {
            return Err(StoreError::DigestMismatch {
                what: format!("uncompressed layer {layer_digest} (diff_id)"),
                expected: expected.to_string(),
                actual: diff_id,
            });
        }
    }
    std::fs::create_dir_all(dest_dir).map_err(|e| StoreError::io(dest_dir, e))?;
    file.commit(&dest_dir.join(DATA_TAR))?;
    Ok(UnpackedLayer {
        index,
        diff_id,
        tar_size,
    })
}
