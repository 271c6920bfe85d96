//! The eStargz TOC: `stargz.index.json`, the only entry of a tar in the gzip member the
//! footer points at. Its JSON has the zstd:chunked TOC's schema (zstd:chunked took it from
//! eStargz) except that payload entries give only where their gzip stream starts
//! (`offset`, `innerOffset`): a stream ends where the next one starts, or at the TOC. Read
//! as stargz-snapshotter's `estargz.Reader` reads it (`initFields`, `Verifiers`).

use std::io::Read;

use sha2::{Digest, Sha256};

use crate::chunked::toc::{normalize_name, toc_to_layer_index_with, Toc};
use crate::chunked::MAX_TOC_SIZE;
use crate::layer_index::{ChunkLocation, ChunkRef, Codec, LayerIndex};
use crate::{Result, StoreError};

/// The TOC's name in its tar.
pub const TOC_TAR_NAME: &str = "stargz.index.json";
/// Marks the end of the prefetch region: entries before it are what the image needs first.
pub const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
/// Says the image asks for no prefetch.
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";

fn bad(layer: &str, entry: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidToc {
        layer: layer.to_string(),
        entry: entry.to_string(),
        reason: reason.into(),
    }
}

/// The TOC JSON in `member` (the blob's bytes from the TOC offset to the footer): one gzip
/// member holding a tar whose first entry is [`TOC_TAR_NAME`]. At most [`MAX_TOC_SIZE`]
/// bytes are decompressed. Returns the JSON bytes, whose sha256 the layer annotation pins.
pub fn toc_json_from_member(layer: &str, member: &[u8]) -> Result<Vec<u8>> {
    let gz = flate2::read::GzDecoder::new(member).take(MAX_TOC_SIZE + 1024);
    let mut archive = tar::Archive::new(gz);
    let mut entries = archive
        .entries()
        .map_err(|e| bad(layer, TOC_TAR_NAME, format!("TOC member: {e}")))?;
    let mut entry = entries
        .next()
        .ok_or_else(|| bad(layer, TOC_TAR_NAME, "TOC member holds no tar entry"))?
        .map_err(|e| bad(layer, TOC_TAR_NAME, format!("TOC member: {e}")))?;
    let name = entry.path_bytes().into_owned();
    if name != TOC_TAR_NAME.as_bytes() {
        return Err(bad(
            layer,
            TOC_TAR_NAME,
            format!(
                "TOC tar entry is named {:?}",
                String::from_utf8_lossy(&name)
            ),
        ));
    }
    let size = entry.header().size().unwrap_or(u64::MAX);
    if size > MAX_TOC_SIZE {
        return Err(bad(
            layer,
            TOC_TAR_NAME,
            format!("TOC of {size} bytes over the cap"),
        ));
    }
    let mut json = Vec::with_capacity(size as usize);
    entry
        .read_to_end(&mut json)
        .map_err(|e| bad(layer, TOC_TAR_NAME, format!("TOC member: {e}")))?;
    if json.len() as u64 != size {
        return Err(bad(
            layer,
            TOC_TAR_NAME,
            format!("TOC entry truncated at {} of {size} bytes", json.len()),
        ));
    }
    Ok(json)
}

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A parsed eStargz layer: its index (landmarks hidden) and its prefetch region.
#[derive(Debug)]
pub struct ParsedToc {
    pub index: LayerIndex,
    /// Chunks before `.prefetch.landmark`, in blob order (empty without it).
    pub prefetch: Vec<ChunkRef>,
    /// Whether a landmark asked for no prefetch.
    pub no_prefetch: bool,
}

/// Turns the TOC of the eStargz blob `layer`, whose TOC member starts at `toc_offset`,
/// into a [`LayerIndex`] of gzip chunks, checking what stargz-snapshotter checks: version
/// 1, every payload with a digest (`chunkDigest` on every chunk as soon as a file has
/// several; a single-chunk file may give only its `digest`), payload streams in blob order
/// before the TOC, names inside the layer. The landmark files are left out of the index.
pub fn parse_toc(layer: &str, mut toc: Toc, toc_offset: u64) -> Result<ParsedToc> {
    if toc.version != 1 {
        return Err(bad(
            layer,
            "",
            format!("unsupported TOC version {}", toc.version),
        ));
    }
    if !toc.tar_split_digest.is_empty() {
        return Err(bad(layer, "", "tarSplitDigest in an eStargz TOC"));
    }
    let has_chunks = toc.entries.iter().any(|e| e.typ == "chunk");
    // Chunks take their file's name and, when the last, its remaining size.
    let (mut name, mut size) = (String::new(), 0i64);
    for e in toc.entries.iter_mut() {
        match e.typ.as_str() {
            "reg" => {
                name = e.name.clone();
                size = e.size;
                if e.end_offset != 0 {
                    return Err(bad(layer, &e.name, "endOffset in an eStargz TOC"));
                }
            }
            "chunk" => {
                if name.is_empty() {
                    return Err(bad(layer, &e.name, "chunk entry without a preceding file"));
                }
                e.name = name.clone();
                if e.chunk_size == 0 {
                    e.chunk_size = size.saturating_sub(e.chunk_offset);
                }
                if e.end_offset != 0 {
                    return Err(bad(layer, &e.name, "endOffset in an eStargz TOC"));
                }
            }
            _ => name.clear(),
        }
        let payload = (e.typ == "reg" && e.size > 0) || e.typ == "chunk";
        if payload && has_chunks && e.chunk_digest.is_empty() {
            return Err(bad(
                layer,
                &e.name,
                "payload without a chunkDigest (chunks cannot be verified)",
            ));
        }
        if payload && e.chunk_digest.is_empty() && e.digest.is_empty() {
            return Err(bad(layer, &e.name, "payload without a digest"));
        }
    }
    // Each payload's stream ends where the next stream (innerOffset 0) starts, the last one
    // at the TOC member; offsets must grow.
    let mut next = toc_offset;
    for e in toc.entries.iter_mut().rev() {
        let payload = (e.typ == "reg" && e.size > 0) || e.typ == "chunk";
        if !payload {
            continue;
        }
        if e.offset <= 0 || e.offset as u64 >= next {
            return Err(bad(
                layer,
                &e.name,
                format!(
                    "payload at offset {} is not before the next one at {next}",
                    e.offset
                ),
            ));
        }
        e.end_offset = next as i64;
        if e.inner_offset == 0 {
            next = e.offset as u64;
        }
    }
    let mut index = toc_to_layer_index_with(layer, &toc, toc_offset, Codec::Gzip)?;
    // Landmarks are the writer's marks, not files of the image.
    let mut landmark = None;
    let mut no_prefetch = false;
    for e in &toc.entries {
        match normalize_name(&e.name).ok().flatten().as_deref() {
            Some(PREFETCH_LANDMARK) if landmark.is_none() => landmark = Some(e.offset as u64),
            Some(NO_PREFETCH_LANDMARK) => no_prefetch = true,
            _ => {}
        }
    }
    index.entries.retain(|e| {
        let p = e.path.as_bytes();
        p != PREFETCH_LANDMARK.as_bytes()
            && p != NO_PREFETCH_LANDMARK.as_bytes()
            && p != TOC_TAR_NAME.as_bytes()
    });
    let mut prefetch = Vec::new();
    if let (Some(end), false) = (landmark, no_prefetch) {
        for e in &index.entries {
            for c in &e.chunks {
                if let ChunkLocation::Compressed { blob_offset, .. } = &c.location {
                    if *blob_offset < end {
                        prefetch.push(c.clone());
                    }
                }
            }
        }
        prefetch.sort_by_key(|c| match &c.location {
            ChunkLocation::Compressed { blob_offset, .. } => *blob_offset,
            ChunkLocation::Local { offset } => *offset,
        });
    }
    Ok(ParsedToc {
        index,
        prefetch,
        no_prefetch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunked::toc::TocEntry;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn reg(name: &str, size: i64, off: i64) -> TocEntry {
        TocEntry {
            typ: "reg".into(),
            name: name.into(),
            size,
            offset: off,
            digest: d('a'),
            chunk_digest: d('a'),
            mode: 0o644,
            ..Default::default()
        }
    }

    fn toc(entries: Vec<TocEntry>) -> Toc {
        Toc {
            version: 1,
            entries,
            tar_split_digest: String::new(),
        }
    }

    fn loc(c: &ChunkRef) -> (u64, u64, u64) {
        match &c.location {
            ChunkLocation::Compressed {
                blob_offset,
                blob_len,
                inner_offset,
                codec,
                ..
            } => {
                assert_eq!(*codec, Codec::Gzip);
                (*blob_offset, *blob_len, *inner_offset)
            }
            _ => panic!("local chunk"),
        }
    }

    #[test]
    fn streams_end_at_the_next_stream_or_the_toc() {
        let mut big = reg("./big", 10, 100);
        big.chunk_size = 4;
        let chunk = TocEntry {
            typ: "chunk".into(),
            name: "./big".into(),
            offset: 200,
            chunk_offset: 4,
            chunk_digest: d('b'),
            ..Default::default()
        };
        let dir = TocEntry {
            typ: "dir".into(),
            name: "etc/".into(),
            ..Default::default()
        };
        let empty = reg("etc/empty", 0, 0);
        let small = reg("etc/small", 3, 300);
        let mut inner = reg("etc/inner", 2, 300);
        inner.inner_offset = 1024;
        let p = parse_toc("l", toc(vec![big, chunk, dir, empty, small, inner]), 500).unwrap();
        let big = &p.index.entries[0];
        assert_eq!(big.path, "big");
        assert_eq!(loc(&big.chunks[0]), (100, 100, 0));
        // The last chunk's size is the rest of the file.
        assert_eq!(big.chunks[1].len, 6);
        assert_eq!(loc(&big.chunks[1]), (200, 100, 0));
        assert_eq!(loc(&p.index.entries[3].chunks[0]), (300, 200, 0));
        assert_eq!(loc(&p.index.entries[4].chunks[0]), (300, 200, 1024));
        assert!(p.prefetch.is_empty());
    }

    #[test]
    fn landmarks_hidden_and_prefetch_region_taken() {
        let entries = vec![
            reg("bin/sh", 5, 100),
            reg(".prefetch.landmark", 1, 200),
            reg("usr/big", 5, 300),
        ];
        let p = parse_toc("l", toc(entries), 400).unwrap();
        let names: Vec<_> = p.index.entries.iter().map(|e| e.path.to_string()).collect();
        assert_eq!(names, ["bin/sh", "usr/big"]);
        assert_eq!(p.prefetch.len(), 1);
        assert_eq!(loc(&p.prefetch[0]).0, 100);
        let entries = vec![reg(".no.prefetch.landmark", 1, 100), reg("a", 5, 200)];
        let p = parse_toc("l", toc(entries), 400).unwrap();
        assert!(p.no_prefetch && p.prefetch.is_empty());
        assert_eq!(p.index.entries.len(), 1);
    }

    #[test]
    fn lying_tocs_refused() {
        let refused = |entries: Vec<TocEntry>| {
            parse_toc("sha256:l", toc(entries), 1000)
                .unwrap_err()
                .to_string()
        };
        // Offsets past the TOC, out of order, or missing.
        assert!(refused(vec![reg("a", 1, 1000)]).contains("not before"));
        assert!(refused(vec![reg("a", 1, 500), reg("b", 1, 400)]).contains("not before"));
        assert!(refused(vec![reg("a", 1, 0)]).contains("not before"));
        // A chunked layer without chunk digests.
        let mut a = reg("a", 10, 100);
        a.chunk_size = 5;
        a.chunk_digest.clear();
        let c = TocEntry {
            typ: "chunk".into(),
            name: "a".into(),
            offset: 200,
            chunk_offset: 5,
            ..Default::default()
        };
        assert!(refused(vec![a, c]).contains("chunkDigest"));
        let mut nodigest = reg("a", 1, 100);
        nodigest.digest.clear();
        nodigest.chunk_digest.clear();
        assert!(refused(vec![nodigest]).contains("digest"));
        assert!(refused(vec![reg("../../x", 1, 100)]).contains(".."));
        let orphan = TocEntry {
            typ: "chunk".into(),
            name: "a".into(),
            offset: 100,
            chunk_digest: d('c'),
            ..Default::default()
        };
        assert!(refused(vec![orphan]).contains("chunk"));
        let mut huge = reg("a", i64::MAX, 100);
        huge.chunk_size = 0;
        assert!(refused(vec![huge]).contains("size"));
        let mut t = toc(vec![]);
        t.version = 2;
        assert!(parse_toc("l", t, 10).is_err());
    }

    #[test]
    fn toc_member_must_hold_the_index_entry() {
        use std::io::Write;
        let member = |name: &str, data: &[u8]| {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, data).unwrap();
            let tar = b.into_inner().unwrap();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            gz.write_all(&tar).unwrap();
            gz.finish().unwrap()
        };
        let json = br#"{"version":1,"entries":[]}"#;
        assert_eq!(
            toc_json_from_member("l", &member(TOC_TAR_NAME, json)).unwrap(),
            json
        );
        assert!(toc_json_from_member("l", &member("other.json", json))
            .unwrap_err()
            .to_string()
            .contains("other.json"));
        let m = member(TOC_TAR_NAME, json);
        assert!(toc_json_from_member("l", &m[..m.len() / 2]).is_err());
        assert!(toc_json_from_member("l", b"garbage").is_err());
    }
}
