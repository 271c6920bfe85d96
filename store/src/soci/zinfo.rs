//! The gzip zinfo blob: the zTOC's `compression_info.checkpoints` bytes, laid out as
//! soci-snapshotter's `ztoc/compression/gzip_zinfo.c` (`zinfo_to_blob`, `blob_to_zinfo`)
//! lays them out, all integers little-endian:
//!
//! ```text
//! i32  number of checkpoints (n)
//! i64  span size
//! n ×  { i64 compressed offset ("in", first full byte of the block)
//!        i64 uncompressed offset ("out")
//!        u8  bits (0..=7) of the byte before "in" that belong to the block
//!        32768 bytes of window (the output before "out") }
//! ```
//!
//! Version 2 (what soci-snapshotter writes today and what skiff writes) stores all `n`
//! checkpoints; version 1 left out the first one, which then is taken as `in = 10` (right
//! after a 10-byte gzip header), `out = 0`, no bits, zero window. The version is not stored:
//! like soci, it is told from the blob's length.

use super::zran::{Checkpoint, WINDOW};

/// Bytes before the first checkpoint.
pub const HEADER_SIZE: usize = 4 + 8;
/// Bytes per checkpoint.
pub const CHECKPOINT_SIZE: usize = 8 + 8 + 1 + WINDOW;

/// Which layout a blob had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZinfoVersion {
    /// The first checkpoint is implied (gzip header of exactly 10 bytes).
    V1,
    /// Every checkpoint is stored.
    V2,
}

/// A decoded zinfo blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zinfo {
    pub version: ZinfoVersion,
    /// Least uncompressed bytes between checkpoints, as the builder was asked.
    pub span_size: u64,
    pub checkpoints: Vec<Checkpoint>,
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

impl Zinfo {
    /// Decodes `blob`. Errors (reasons, for the caller's error) when its length fits
    /// neither layout for the count it claims, or a field is out of range (negative
    /// count, offset or span size, bits over 7). Offsets are checked against the layer by
    /// the zTOC's validation, not here.
    pub fn parse(blob: &[u8]) -> Result<Zinfo, String> {
        if blob.len() < HEADER_SIZE {
            return Err(format!("zinfo of {} bytes has no header", blob.len()));
        }
        let n = i32::from_le_bytes(blob[..4].try_into().expect("4 bytes"));
        let span_size = i64::from_le_bytes(blob[4..12].try_into().expect("8 bytes"));
        if n < 1 {
            return Err(format!("zinfo claims {n} checkpoints"));
        }
        let span_size =
            u64::try_from(span_size).map_err(|_| format!("zinfo span size {span_size}"))?;
        let n = n as usize;
        let body = blob.len() - HEADER_SIZE;
        let version = if body == n * CHECKPOINT_SIZE {
            ZinfoVersion::V2
        } else if body == (n - 1) * CHECKPOINT_SIZE {
            ZinfoVersion::V1
        } else {
            return Err(format!(
                "zinfo of {} bytes does not hold the {n} checkpoints it claims",
                blob.len()
            ));
        };
        let mut checkpoints = Vec::with_capacity(n);
        if version == ZinfoVersion::V1 {
            checkpoints.push(Checkpoint {
                compressed_offset: 10,
                uncompressed_offset: 0,
                bits: 0,
                window: vec![0; WINDOW],
            });
        }
        for (i, c) in blob[HEADER_SIZE..]
            .chunks_exact(CHECKPOINT_SIZE)
            .enumerate()
        {
            let (cin, out, bits) = (le_u64(&c[0..8]), le_u64(&c[8..16]), c[16]);
            if cin > i64::MAX as u64 || out > i64::MAX as u64 {
                return Err(format!("checkpoint {i}: negative offset"));
            }
            if bits > 7 {
                return Err(format!("checkpoint {i}: {bits} bits"));
            }
            checkpoints.push(Checkpoint {
                compressed_offset: cin,
                uncompressed_offset: out,
                bits,
                window: c[17..].to_vec(),
            });
        }
        Ok(Zinfo {
            version,
            span_size,
            checkpoints,
        })
    }

    /// Encodes in the version it carries (V1 leaves the first checkpoint out, as soci
    /// does, so a V1 blob re-encodes to the same bytes). Windows shorter than
    /// [`WINDOW`] are zero-padded at the end; longer ones cut.
    pub fn to_bytes(&self) -> Vec<u8> {
        let skip = usize::from(self.version == ZinfoVersion::V1);
        let stored = &self.checkpoints[skip.min(self.checkpoints.len())..];
        let mut out = Vec::with_capacity(HEADER_SIZE + stored.len() * CHECKPOINT_SIZE);
        out.extend_from_slice(&(self.checkpoints.len() as i32).to_le_bytes());
        out.extend_from_slice(&(self.span_size as i64).to_le_bytes());
        for c in stored {
            out.extend_from_slice(&c.compressed_offset.to_le_bytes());
            out.extend_from_slice(&c.uncompressed_offset.to_le_bytes());
            out.push(c.bits);
            let w = &c.window[..c.window.len().min(WINDOW)];
            out.extend_from_slice(w);
            out.resize(out.len() + (WINDOW - w.len()), 0);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(cin: u64, out: u64, bits: u8, fill: u8) -> Checkpoint {
        Checkpoint {
            compressed_offset: cin,
            uncompressed_offset: out,
            bits,
            window: vec![fill; WINDOW],
        }
    }

    #[test]
    fn v2_layout_is_byte_exact_and_round_trips() {
        let z = Zinfo {
            version: ZinfoVersion::V2,
            span_size: 4 << 20,
            checkpoints: vec![cp(10, 0, 0, 0), cp(0x0102_0304, 0x0a0b_0c0d_0e0f, 5, 0xab)],
        };
        let b = z.to_bytes();
        assert_eq!(b.len(), HEADER_SIZE + 2 * CHECKPOINT_SIZE);
        assert_eq!(&b[..4], &[2, 0, 0, 0]);
        assert_eq!(&b[4..12], &(4u64 << 20).to_le_bytes());
        let second = &b[HEADER_SIZE + CHECKPOINT_SIZE..];
        assert_eq!(&second[..8], &[4, 3, 2, 1, 0, 0, 0, 0]);
        assert_eq!(&second[8..16], &[0x0f, 0x0e, 0x0d, 0x0c, 0x0b, 0x0a, 0, 0]);
        assert_eq!(second[16], 5);
        assert!(second[17..].iter().all(|&x| x == 0xab));
        assert_eq!(Zinfo::parse(&b).unwrap(), z);
    }

    #[test]
    fn v1_blob_implies_its_first_checkpoint() {
        let z = Zinfo {
            version: ZinfoVersion::V1,
            span_size: 1 << 20,
            checkpoints: vec![cp(10, 0, 0, 0), cp(5000, 1 << 20, 3, 7)],
        };
        let b = z.to_bytes();
        assert_eq!(b.len(), HEADER_SIZE + CHECKPOINT_SIZE);
        assert_eq!(&b[..4], &[2, 0, 0, 0], "the count includes the implied one");
        let back = Zinfo::parse(&b).unwrap();
        assert_eq!(back, z);
        assert_eq!(back.to_bytes(), b);
    }

    #[test]
    fn lying_blobs_are_refused() {
        let good = Zinfo {
            version: ZinfoVersion::V2,
            span_size: 1,
            checkpoints: vec![cp(10, 0, 0, 0)],
        }
        .to_bytes();
        assert!(Zinfo::parse(&good[..11]).unwrap_err().contains("no header"));
        assert!(Zinfo::parse(&good[..good.len() - 1])
            .unwrap_err()
            .contains("does not hold"));
        let mut neg = good.clone();
        neg[..4].copy_from_slice(&(-1i32).to_le_bytes());
        assert!(Zinfo::parse(&neg).unwrap_err().contains("-1 checkpoints"));
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(Zinfo::parse(&huge).is_err());
        let mut bits = good.clone();
        bits[HEADER_SIZE + 16] = 8;
        assert!(Zinfo::parse(&bits).unwrap_err().contains("8 bits"));
        let mut off = good;
        off[HEADER_SIZE + 7] = 0x80;
        assert!(Zinfo::parse(&off).unwrap_err().contains("negative"));
    }
}
