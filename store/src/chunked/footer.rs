//! The zstd:chunked footer and layer annotations: where the TOC (and tar-split) sit in the
//! blob. Two generations exist: the current one (64-byte footer ending `GNUlInUx`, keys
//! under `io.github.containers.zstd-chunked.`, with tar-split) and the one skopeo 1.9 /
//! podman 4 write (40-byte footer ending `GnUlInUx`, keys under `io.containers.zstd-chunked.`,
//! no tar-split).

use std::collections::BTreeMap;

use crate::{Result, StoreError};

pub const SKIPPABLE_FRAME_MAGIC: [u8; 4] = [0x50, 0x2a, 0x4d, 0x18];
/// Skippable frame header: magic + u32 LE length.
pub const SKIPPABLE_FRAME_HEADER: u64 = 8;
pub const FOOTER_MAGIC: &[u8; 8] = b"GNUlInUx";
pub const LEGACY_FOOTER_MAGIC: &[u8; 8] = b"GnUlInUx";
pub const FOOTER_SIZE: u64 = 64;
pub const LEGACY_FOOTER_SIZE: u64 = 40;

pub const MANIFEST_CHECKSUM_KEY: &str = "io.github.containers.zstd-chunked.manifest-checksum";
pub const MANIFEST_POSITION_KEY: &str = "io.github.containers.zstd-chunked.manifest-position";
pub const TARSPLIT_POSITION_KEY: &str = "io.github.containers.zstd-chunked.tarsplit-position";
pub const LEGACY_MANIFEST_CHECKSUM_KEY: &str = "io.containers.zstd-chunked.manifest-checksum";
pub const LEGACY_MANIFEST_POSITION_KEY: &str = "io.containers.zstd-chunked.manifest-position";
/// The only manifest type defined (a CRFS-style JSON TOC).
pub const MANIFEST_TYPE_CRFS: u64 = 1;

/// Which generation of the format a layer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedFormat {
    Current,
    Legacy,
}

/// Where the TOC and tar-split of one layer are, from annotations or the footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocLocation {
    pub format: ChunkedFormat,
    /// Offset of the compressed TOC (just past its skippable frame header).
    pub offset: u64,
    pub compressed_len: u64,
    pub uncompressed_len: u64,
    /// `sha256:<hex>` of the compressed TOC, when the manifest pins it.
    pub checksum: Option<String>,
    /// `(offset, compressed_len, uncompressed_len)` of the tar-split frame's payload.
    pub tarsplit: Option<(u64, u64, u64)>,
}

fn bad(layer: &str, what: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidToc {
        layer: layer.to_string(),
        entry: what.to_string(),
        reason: reason.into(),
    }
}

fn parse_numbers(layer: &str, key: &str, value: &str, n: usize) -> Result<Vec<u64>> {
    let parts: Vec<&str> = value.split(':').collect();
    if parts.len() != n {
        return Err(bad(
            layer,
            key,
            format!("expected {n} ':'-separated numbers, got {value:?}"),
        ));
    }
    parts
        .iter()
        .map(|p| {
            p.parse::<u64>()
                .map_err(|_| bad(layer, key, format!("{p:?} is not a number")))
        })
        .collect()
}

/// Reads the TOC position from a layer descriptor's annotations, if it has them.
pub fn location_from_annotations(
    layer: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<Option<TocLocation>> {
    let (format, pos_key, sum_key) = if annotations.contains_key(MANIFEST_POSITION_KEY) {
        (
            ChunkedFormat::Current,
            MANIFEST_POSITION_KEY,
            MANIFEST_CHECKSUM_KEY,
        )
    } else if annotations.contains_key(LEGACY_MANIFEST_POSITION_KEY) {
        (
            ChunkedFormat::Legacy,
            LEGACY_MANIFEST_POSITION_KEY,
            LEGACY_MANIFEST_CHECKSUM_KEY,
        )
    } else {
        return Ok(None);
    };
    let n = parse_numbers(layer, pos_key, &annotations[pos_key], 4)?;
    if n[3] != MANIFEST_TYPE_CRFS {
        return Err(bad(
            layer,
            pos_key,
            format!("unknown manifest type {}", n[3]),
        ));
    }
    let checksum = annotations
        .get(sum_key)
        .ok_or_else(|| bad(layer, sum_key, "position annotation without checksum"))?;
    if !is_sha256_digest(checksum) {
        return Err(bad(
            layer,
            sum_key,
            format!("not a sha256 digest: {checksum:?}"),
        ));
    }
    let tarsplit = match annotations.get(TARSPLIT_POSITION_KEY) {
        Some(v) if format == ChunkedFormat::Current => {
            let t = parse_numbers(layer, TARSPLIT_POSITION_KEY, v, 3)?;
            Some((t[0], t[1], t[2]))
        }
        _ => None,
    };
    Ok(Some(TocLocation {
        format,
        offset: n[0],
        compressed_len: n[1],
        uncompressed_len: n[2],
        checksum: Some(checksum.clone()),
        tarsplit,
    }))
}

/// How many tail bytes to fetch to read either footer (with its skippable frame header).
pub const FOOTER_TAIL_LEN: u64 = FOOTER_SIZE + SKIPPABLE_FRAME_HEADER;

/// Parses the footer from the last bytes of a blob (`tail` ends at the blob's end).
pub fn location_from_footer(layer: &str, tail: &[u8]) -> Result<TocLocation> {
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
    if tail.len() < (LEGACY_FOOTER_SIZE + SKIPPABLE_FRAME_HEADER) as usize {
        return Err(bad(layer, "footer", "blob too small for a footer"));
    }
    let magic = &tail[tail.len() - 8..];
    let (format, size) = if magic == FOOTER_MAGIC {
        (ChunkedFormat::Current, FOOTER_SIZE as usize)
    } else if magic == LEGACY_FOOTER_MAGIC {
        (ChunkedFormat::Legacy, LEGACY_FOOTER_SIZE as usize)
    } else {
        return Err(bad(layer, "footer", "no zstd:chunked footer magic"));
    };
    if tail.len() < size + SKIPPABLE_FRAME_HEADER as usize {
        return Err(bad(layer, "footer", "blob too small for a footer"));
    }
    let frame = &tail[tail.len() - size - 8..];
    if frame[..4] != SKIPPABLE_FRAME_MAGIC
        || u32::from_le_bytes(frame[4..8].try_into().unwrap()) as usize != size
    {
        return Err(bad(
            layer,
            "footer",
            "footer is not in a skippable frame of its size",
        ));
    }
    let f = &frame[8..];
    if u64_at(f, 3) != MANIFEST_TYPE_CRFS {
        return Err(bad(
            layer,
            "footer",
            format!("unknown manifest type {}", u64_at(f, 3)),
        ));
    }
    let tarsplit = (format == ChunkedFormat::Current && u64_at(f, 5) > 0)
        .then(|| (u64_at(f, 4), u64_at(f, 5), u64_at(f, 6)));
    Ok(TocLocation {
        format,
        offset: u64_at(f, 0),
        compressed_len: u64_at(f, 1),
        uncompressed_len: u64_at(f, 2),
        checksum: None,
        tarsplit,
    })
}

/// The 64-byte current-format footer, inside its skippable frame.
pub fn encode_footer(loc: &TocLocation) -> Vec<u8> {
    let (ts_off, ts_len, ts_ulen) = loc.tarsplit.unwrap_or((0, 0, 0));
    let mut out = Vec::with_capacity(FOOTER_TAIL_LEN as usize);
    out.extend_from_slice(&SKIPPABLE_FRAME_MAGIC);
    out.extend_from_slice(&(FOOTER_SIZE as u32).to_le_bytes());
    for v in [
        loc.offset,
        loc.compressed_len,
        loc.uncompressed_len,
        MANIFEST_TYPE_CRFS,
        ts_off,
        ts_len,
        ts_ulen,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(FOOTER_MAGIC);
    out
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_roundtrip() {
        let loc = TocLocation {
            format: ChunkedFormat::Current,
            offset: 100,
            compressed_len: 20,
            uncompressed_len: 50,
            checksum: None,
            tarsplit: Some((128, 10, 30)),
        };
        let tail = encode_footer(&loc);
        assert_eq!(tail.len() as u64, FOOTER_TAIL_LEN);
        assert_eq!(location_from_footer("l", &tail).unwrap(), loc);
    }

    #[test]
    fn legacy_footer() {
        // As skopeo 1.9.3 wrote it.
        let mut tail = vec![0u8; 24];
        tail.extend_from_slice(&SKIPPABLE_FRAME_MAGIC);
        tail.extend_from_slice(&40u32.to_le_bytes());
        for v in [3001094u64, 2934, 10151, 1] {
            tail.extend_from_slice(&v.to_le_bytes());
        }
        tail.extend_from_slice(LEGACY_FOOTER_MAGIC);
        let loc = location_from_footer("l", &tail).unwrap();
        assert_eq!(loc.format, ChunkedFormat::Legacy);
        assert_eq!(
            (loc.offset, loc.compressed_len, loc.uncompressed_len),
            (3001094, 2934, 10151)
        );
        assert_eq!(loc.tarsplit, None);
    }

    #[test]
    fn lying_footers_refused() {
        let mut tail = encode_footer(&TocLocation {
            format: ChunkedFormat::Current,
            offset: 1,
            compressed_len: 1,
            uncompressed_len: 1,
            checksum: None,
            tarsplit: None,
        });
        tail[4] = 63; // frame length disagrees with the footer size
        assert!(location_from_footer("l", &tail).is_err());
        let n = tail.len();
        tail[n - 1] = b'y';
        assert!(location_from_footer("l", &tail).is_err());
    }

    #[test]
    fn annotations_both_generations() {
        let mut a = BTreeMap::new();
        a.insert(
            LEGACY_MANIFEST_POSITION_KEY.to_string(),
            "10:20:30:1".to_string(),
        );
        a.insert(
            LEGACY_MANIFEST_CHECKSUM_KEY.to_string(),
            format!("sha256:{}", "a".repeat(64)),
        );
        let l = location_from_annotations("l", &a).unwrap().unwrap();
        assert_eq!(l.format, ChunkedFormat::Legacy);
        a.insert(MANIFEST_POSITION_KEY.to_string(), "10:20:30:2".to_string());
        assert!(location_from_annotations("l", &a).is_err());
        a.insert(MANIFEST_POSITION_KEY.to_string(), "10:20:30".to_string());
        assert!(location_from_annotations("l", &a).is_err());
        a.insert(MANIFEST_POSITION_KEY.to_string(), "10:20:30:1".to_string());
        // current position without the current checksum
        assert!(location_from_annotations("l", &a).is_err());
        assert!(location_from_annotations("l", &BTreeMap::new())
            .unwrap()
            .is_none());
    }
}
