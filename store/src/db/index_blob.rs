//! How a layer's file index is kept in `layer_files.data`, by `layer_files.format`:
//! - `'json+zstd'`: serde JSON, zstd-compressed. Indexes of large lazy layers are megabytes
//!   of JSON (5.9 MB for an 11,000-file TOC); compressed they are a sixth of that, which
//!   halves the write.
//! - `'zstd-chunked-toc'`: a zstd:chunked layer's TOC as fetched ([`StoredToc`]), from
//!   which the index is converted again on reading. No encoding at all on the pull's path
//!   (encoding the JSON index took 25-45 ms there); reading costs about what decoding the
//!   JSON does. Layout: `data_end` and `uncompressed_len` (u64 little-endian each), then
//!   the compressed TOC.
//! - `'json'` (rows written before indexes were compressed): still read.

use crate::chunked::StoredToc;
use crate::layer_index::LayerIndex;
use crate::{Result, StoreError};

/// `layer_files.format` of encoded indexes this version writes.
pub const FORMAT: &str = "json+zstd";
/// `layer_files.format` of an index kept as its zstd:chunked TOC.
pub const TOC_FORMAT: &str = "zstd-chunked-toc";
/// `layer_files.format` of rows written before indexes were compressed.
const LEGACY_FORMAT: &str = "json";
/// zstd level: the fastest positive one; ratio barely matters next to write time.
const LEVEL: i32 = 1;
/// Bytes before the compressed TOC in a [`TOC_FORMAT`] row.
const TOC_HEADER: usize = 16;

/// A layer's index as stored: `layer_files.format` and `layer_files.data`.
#[derive(Debug, Clone)]
pub struct IndexBlob {
    pub format: &'static str,
    pub data: Vec<u8>,
}

impl IndexBlob {
    /// `index` encoded in [`FORMAT`]. Errors: [`StoreError::InvalidIndex`] naming the layer
    /// when it does not serialize or compress.
    pub fn of_index(index: &LayerIndex) -> Result<IndexBlob> {
        Ok(IndexBlob {
            format: FORMAT,
            data: encode(index)?,
        })
    }

    /// An index kept as the TOC it was converted from ([`TOC_FORMAT`]).
    pub fn of_toc(toc: &StoredToc) -> IndexBlob {
        let mut data = Vec::with_capacity(TOC_HEADER + toc.compressed.len());
        data.extend_from_slice(&toc.data_end.to_le_bytes());
        data.extend_from_slice(&toc.uncompressed_len.to_le_bytes());
        data.extend_from_slice(&toc.compressed);
        IndexBlob {
            format: TOC_FORMAT,
            data,
        }
    }
}

/// `index` as `layer_files.data` in [`FORMAT`]. Errors: [`StoreError::InvalidIndex`] naming
/// the layer when it does not serialize or compress.
pub fn encode(index: &LayerIndex) -> Result<Vec<u8>> {
    let bad = |reason: String| StoreError::InvalidIndex {
        layer: index.digest.clone(),
        reason,
    };
    let t0 = std::time::Instant::now();
    let json = serde_json::to_vec(index).map_err(|e| bad(e.to_string()))?;
    let t1 = std::time::Instant::now();
    let out = zstd::bulk::compress(&json, LEVEL).map_err(|e| bad(format!("compressing: {e}")));
    tracing::debug!(layer = %index.digest, json_bytes = json.len(), json_ms = (t1 - t0).as_secs_f64() * 1e3, zstd_ms = t1.elapsed().as_secs_f64() * 1e3, "index encoded");
    out
}

/// The index of `layer` stored as `data` in `format`. Errors: [`StoreError::InvalidIndex`]
/// for an unknown format or data that does not decompress, parse or convert.
pub fn decode(layer: &str, format: &str, data: &[u8]) -> Result<LayerIndex> {
    let bad = |reason: String| StoreError::InvalidIndex {
        layer: layer.to_string(),
        reason,
    };
    let json;
    let bytes = match format {
        FORMAT => {
            json = zstd::stream::decode_all(data)
                .map_err(|e| bad(format!("stored index does not decompress: {e}")))?;
            &json[..]
        }
        TOC_FORMAT => {
            if data.len() < TOC_HEADER {
                return Err(bad("stored TOC is truncated".into()));
            }
            let u64_at = |i: usize| u64::from_le_bytes(data[i..i + 8].try_into().unwrap());
            let toc = StoredToc {
                data_end: u64_at(0),
                uncompressed_len: u64_at(8),
                compressed: bytes::Bytes::copy_from_slice(&data[TOC_HEADER..]),
            };
            return toc
                .index(layer)
                .map_err(|e| bad(format!("stored TOC does not convert: {e}")));
        }
        LEGACY_FORMAT => data,
        other => return Err(bad(format!("stored index has unknown format {other:?}"))),
    };
    serde_json::from_slice(bytes).map_err(|e| bad(format!("stored index does not parse: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_legacy_rows() {
        let index = LayerIndex {
            digest: "sha256:ab".into(),
            entries: Vec::new(),
        };
        let data = encode(&index).unwrap();
        assert_eq!(
            decode("sha256:ab", FORMAT, &data).unwrap().digest,
            "sha256:ab"
        );
        let json = serde_json::to_vec(&index).unwrap();
        assert_eq!(
            decode("sha256:ab", "json", &json).unwrap().digest,
            "sha256:ab"
        );
        let err = decode("sha256:ab", "cbor", &json).unwrap_err().to_string();
        assert!(err.contains("unknown format \"cbor\""), "{err}");
        let err = decode("sha256:ab", FORMAT, b"not zstd")
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not decompress"), "{err}");
    }

    /// A zstd:chunked layer of a few files, opened lazily from a file: its index and TOC.
    fn opened_layer(dir: &std::path::Path) -> (LayerIndex, crate::chunked::TocInfo) {
        let mut b = tar::Builder::new(Vec::new());
        for (name, len) in [("etc/a", 10usize), ("usr/lib/b", 600_000), ("usr/lib/c", 3)] {
            let data: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
            let mut h = tar::Header::new_gnu();
            h.set_size(len as u64);
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let mut blob = Vec::new();
        let layer =
            crate::chunked::write_zstd_chunked(&tar, &mut blob, &Default::default()).unwrap();
        let path = dir.join("blob");
        std::fs::write(&path, &blob).unwrap();
        let src = crate::chunked::FileBlobSource::open(&path, &layer.digest).unwrap();
        crate::chunked::open_lazy_layer(
            &src,
            &layer.digest,
            &layer.annotations,
            &Default::default(),
        )
        .unwrap()
    }

    #[test]
    fn an_index_stored_as_its_toc_converts_back_to_the_same_index() {
        let dir = tempfile::tempdir().unwrap();
        let (index, info) = opened_layer(dir.path());
        let toc = StoredToc::of(&info).expect("plain names: the TOC gives the index back");
        let blob = IndexBlob::of_toc(&toc);
        assert_eq!(blob.format, TOC_FORMAT);
        assert_eq!(blob.data.len(), TOC_HEADER + info.compressed_toc.len());
        let back = decode(&index.digest, TOC_FORMAT, &blob.data).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&index).unwrap()
        );
        // Damaged rows are errors naming the layer, never a wrong index.
        let err = decode(&index.digest, TOC_FORMAT, &blob.data[..10]).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        let mut bad = blob.data.clone();
        bad[8] ^= 1; // the stated size
        let err = decode(&index.digest, TOC_FORMAT, &bad).unwrap_err();
        assert!(err.to_string().contains("does not convert"), "{err}");
        assert!(err.to_string().contains(&index.digest), "{err}");
    }
}
