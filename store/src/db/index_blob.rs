//! How a layer's file index is kept in `layer_files.data`: serde JSON, zstd-compressed
//! (`format = 'json+zstd'`). Indexes of large lazy layers are megabytes of JSON (5.9 MB for
//! a 19,000-chunk TOC) and are written on the pull's path; compressed they are a sixth of
//! that, which halves the write. Rows written as plain `'json'` (before compression) are
//! still read.

use crate::layer_index::LayerIndex;
use crate::{Result, StoreError};

/// `layer_files.format` of rows this version writes.
pub const FORMAT: &str = "json+zstd";
/// `layer_files.format` of rows written before indexes were compressed.
const LEGACY_FORMAT: &str = "json";
/// zstd level: the fastest positive one; ratio barely matters next to write time.
const LEVEL: i32 = 1;

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
/// for an unknown format or data that does not decompress or parse.
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
}
