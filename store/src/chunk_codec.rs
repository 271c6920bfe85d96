//! Decoding one compressed chunk of a lazy layer by its [`Codec`], never producing more
//! than the chunk asks for (a hostile blob cannot make a read allocate beyond it).

use std::io::Read;

use crate::layer_index::Codec;

impl Codec {
    /// The `len` bytes at `inner_offset` of the decoded `compressed` bytes. zstd: the frame
    /// must decode to exactly `inner_offset + len` bytes (zstd:chunked gives each chunk a
    /// frame of its own). gzip: the stream (members in a row) must reach that far; what
    /// follows is not decoded. The caller checks the digest. Errors are reasons, for logs.
    pub fn decode(
        self,
        compressed: &[u8],
        inner_offset: u64,
        len: u64,
    ) -> std::result::Result<Vec<u8>, String> {
        let end = inner_offset
            .checked_add(len)
            .ok_or_else(|| format!("chunk at {inner_offset}+{len} overflows"))?;
        let mut out = Vec::with_capacity(len as usize);
        let (mut reader, name): (Box<dyn Read + '_>, &str) = match self {
            Codec::Zstd => (
                Box::new(zstd::stream::read::Decoder::new(compressed).map_err(|e| e.to_string())?),
                "zstd",
            ),
            Codec::Gzip => (
                Box::new(flate2::read::MultiGzDecoder::new(compressed)),
                "gzip",
            ),
            // Its checkpoint window is the layer's: the chunk cache inflates it.
            Codec::Zran { span } => {
                return Err(format!("zran span {span} needs its layer's zTOC"));
            }
        };
        let skipped = std::io::copy(&mut (&mut reader).take(inner_offset), &mut std::io::sink())
            .map_err(|e| format!("{name}: {e}"))?;
        if skipped != inner_offset {
            return Err(format!(
                "decoded to {skipped} bytes, the chunk starts at {inner_offset}"
            ));
        }
        // zstd reads one byte more, to see that the frame ends with the chunk.
        let want = if self == Codec::Zstd { len + 1 } else { len };
        reader
            .take(want)
            .read_to_end(&mut out)
            .map_err(|e| format!("{name}: {e}"))?;
        if out.len() as u64 != len {
            let total = if self == Codec::Zstd {
                format!("{}", inner_offset + out.len() as u64)
            } else {
                format!("at most {}", inner_offset + out.len() as u64)
            };
            return Err(format!("decompressed to {total} bytes, expected {end}"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn zstd_frame_must_be_exactly_the_chunk() {
        let frame = zstd::encode_all(&b"hello world"[..], 1).unwrap();
        assert_eq!(Codec::Zstd.decode(&frame, 0, 11).unwrap(), b"hello world");
        assert!(Codec::Zstd
            .decode(&frame, 0, 5)
            .unwrap_err()
            .contains("expected 5"));
        assert!(Codec::Zstd.decode(&frame, 0, 12).is_err());
        assert!(Codec::Zstd.decode(b"not zstd", 0, 3).is_err());
    }

    #[test]
    fn gzip_takes_the_chunk_at_its_inner_offset_across_members() {
        let mut blob = gz(b"header");
        blob.extend(gz(b"payload and trailing tar bytes"));
        assert_eq!(Codec::Gzip.decode(&blob, 6, 7).unwrap(), b"payload");
        assert_eq!(Codec::Gzip.decode(&blob, 0, 6).unwrap(), b"header");
        assert!(Codec::Gzip
            .decode(&blob, 6, 100)
            .unwrap_err()
            .contains("expected 106"));
        assert!(Codec::Gzip.decode(&blob, 100, 1).is_err());
        assert!(Codec::Gzip.decode(b"\x1f\x8bgarbage", 0, 1).is_err());
        assert!(Codec::Gzip.decode(&blob, u64::MAX, 2).is_err());
    }
}
