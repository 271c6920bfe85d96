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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::tar_index::normalize_path;
    use crate::layer::LocalContentReader;
    use crate::layer_index::{ChunkLocation, ChunkRef, ContentReader};

    fn sample_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [("a.txt", &b"alpha"[..]), ("dir/b.bin", &[7u8; 3000][..])] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_uid(1);
            h.set_gid(2);
            h.set_mtime(3);
            b.append_data(&mut h, name, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
        match c {
            Compression::None => data.to_vec(),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(data, 3).unwrap(),
        }
    }

    #[test]
    fn unpack_writes_data_tar_and_reads_back() {
        let tar = sample_tar();
        let diff_id = crate::content::sha256_digest(&tar);
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let root = tempfile::tempdir().unwrap();
            let tmp = root.path().join("tmp");
            std::fs::create_dir(&tmp).unwrap();
            let layer = crate::content::sha256_digest(c.as_str().as_bytes());
            let hex = &layer["sha256:".len()..];
            let dest = root.path().join("layers").join(hex);
            let blob = compress(c, &tar);
            let u = unpack_layer(&blob[..], c, &layer, Some(&diff_id), &tmp, &dest).unwrap();
            assert_eq!(u.diff_id, diff_id);
            assert_eq!(u.tar_size, tar.len() as u64);
            assert_eq!(std::fs::read(dest.join(DATA_TAR)).unwrap(), tar);
            let reader = LocalContentReader::new(root.path().join("layers"));
            let b = &u.index.entries[1];
            assert_eq!(b.path, "dir/b.bin");
            let mut buf = vec![0u8; 4000];
            let n = reader.read_at(&layer, &b.chunks, 100, &mut buf).unwrap();
            assert_eq!(&buf[..n], &[7u8; 2900][..]);
            assert_eq!(normalize_path(&layer, b"./x").unwrap().unwrap(), "x");
        }
    }

    #[test]
    fn diff_id_mismatch_or_corrupt_stream_stores_nothing() {
        let tar = sample_tar();
        let root = tempfile::tempdir().unwrap();
        let tmp = root.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let dest = root.path().join("layer");
        let wrong = crate::content::sha256_digest(b"other");
        let r = unpack_layer(
            &tar[..],
            Compression::None,
            "sha256:l",
            Some(&wrong),
            &tmp,
            &dest,
        );
        assert!(matches!(r, Err(StoreError::DigestMismatch { .. })));
        let mut gz = compress(Compression::Gzip, &tar);
        let mid = gz.len() / 2;
        gz[mid] ^= 0x55;
        assert!(unpack_layer(&gz[..], Compression::Gzip, "sha256:l", None, &tmp, &dest).is_err());
        assert!(!dest.join(DATA_TAR).exists());
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    }

    #[test]
    fn reader_spans_chunks_and_rejects_gaps() {
        let root = tempfile::tempdir().unwrap();
        let layer = crate::content::sha256_digest(b"layer");
        let dir = root.path().join(&layer["sha256:".len()..]);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(DATA_TAR), b"0123456789abcdef").unwrap();
        let reader = LocalContentReader::new(root.path().to_path_buf());
        let local = |file_offset, len, offset| ChunkRef {
            file_offset,
            len,
            location: ChunkLocation::Local { offset },
        };
        // File = "cdef" + "0123": two chunks at different places of data.tar.
        let chunks = [local(0, 4, 12), local(4, 4, 0)];
        let mut buf = [0u8; 8];
        assert_eq!(reader.read_at(&layer, &chunks, 2, &mut buf).unwrap(), 6);
        assert_eq!(&buf[..6], b"ef0123");
        assert_eq!(reader.read_at(&layer, &chunks, 8, &mut buf).unwrap(), 0);
        let gap = [local(0, 2, 0), local(4, 2, 4)];
        assert!(matches!(
            reader.read_at(&layer, &gap, 0, &mut buf),
            Err(StoreError::InvalidIndex { .. })
        ));
        // A chunk pointing past the end of data.tar is corrupt, not a short read.
        let past = [local(0, 10, 12)];
        assert!(matches!(
            reader.read_at(&layer, &past, 0, &mut buf),
            Err(StoreError::Corrupt { .. })
        ));
        let lazy = [ChunkRef {
            file_offset: 0,
            len: 4,
            location: ChunkLocation::Compressed {
                blob_offset: 0,
                blob_len: 4,
                digest: layer.clone(),
                codec: Default::default(),
                inner_offset: 0,
            },
        }];
        assert!(matches!(
            reader.read_at(&layer, &lazy, 0, &mut buf),
            Err(StoreError::UnsupportedLocation { .. })
        ));
    }
}
