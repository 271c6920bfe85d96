//! Property tests (arbtest, stable Rust, bounded time) for what the lazy formats parse from
//! the network: the zstd:chunked footer and TOC, the eStargz footer, TOC member and TOC.
//! Whatever the input: no panic, and what is accepted keeps the index's promises (chunks
//! tile each file, lie inside the blob's data, carry a sha256 digest).

use std::time::Duration;

use arbitrary::Unstructured;
use skiff_store::chunked::{footer, toc, Toc, TocEntry};
use skiff_store::estargz;
use skiff_store::{ChunkLocation, FileKind, LayerIndex};

const BUDGET: Duration = Duration::from_secs(2);

const NAMES: &[&str] = &[
    "a",
    "./a",
    "b/c",
    "/etc/x",
    "../x",
    "a/../b",
    "",
    "./",
    ".prefetch.landmark",
    ".no.prefetch.landmark",
    "stargz.index.json",
    "d/",
];
const TYPES: &[&str] = &[
    "reg", "dir", "symlink", "hardlink", "chunk", "char", "block", "fifo", "bogus",
];

fn digest(u: &mut Unstructured) -> arbitrary::Result<String> {
    Ok(match u.int_in_range(0..=3)? {
        0 => String::new(),
        1 => "sha256:zz".into(),
        _ => format!("sha256:{:064x}", u.int_in_range(0..=3u32)?),
    })
}

/// Small numbers mostly (so offsets meet), extremes sometimes.
fn num(u: &mut Unstructured) -> arbitrary::Result<i64> {
    Ok(match u.int_in_range(0..=9)? {
        0 => i64::MAX,
        1 => -1,
        2 => u.arbitrary()?,
        _ => u.int_in_range(0..=4096)?,
    })
}

fn entry(u: &mut Unstructured) -> arbitrary::Result<TocEntry> {
    Ok(TocEntry {
        typ: u.choose(TYPES)?.to_string(),
        name: u.choose(NAMES)?.to_string(),
        link_name: u.choose(NAMES)?.to_string(),
        mode: num(u)?,
        size: num(u)?,
        uid: num(u)?,
        gid: num(u)?,
        modtime: if u.arbitrary()? {
            Some("2023-11-14T22:13:20Z".into())
        } else {
            None
        },
        digest: digest(u)?,
        offset: num(u)?,
        end_offset: if u.arbitrary()? { num(u)? } else { 0 },
        chunk_size: if u.arbitrary()? { num(u)? } else { 0 },
        chunk_offset: if u.arbitrary()? { num(u)? } else { 0 },
        chunk_digest: digest(u)?,
        inner_offset: if u.int_in_range(0..=5)? == 0 {
            num(u)?
        } else {
            0
        },
        ..Default::default()
    })
}

fn arbitrary_toc(u: &mut Unstructured) -> arbitrary::Result<Toc> {
    let n = u.int_in_range(0..=12)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        entries.push(entry(u)?);
    }
    Ok(Toc {
        version: if u.int_in_range(0..=9)? == 0 { 2 } else { 1 },
        entries,
        tar_split_digest: String::new(),
    })
}

/// What every accepted index promises the chunk cache.
fn check_index(index: &LayerIndex, data_end: u64) {
    for e in &index.entries {
        assert!(!e.path.as_bytes().is_empty());
        if e.kind != FileKind::Regular {
            assert!(e.chunks.is_empty());
            continue;
        }
        let mut at = 0;
        for c in &e.chunks {
            assert_eq!(c.file_offset, at, "{}", e.path);
            assert!(c.len > 0);
            at += c.len;
            let ChunkLocation::Compressed {
                blob_offset,
                blob_len,
                digest,
                ..
            } = &c.location
            else {
                panic!("local chunk from a TOC")
            };
            assert!(*blob_offset > 0 && *blob_len > 0);
            assert!(blob_offset + blob_len <= data_end);
            assert!(digest.starts_with("sha256:") && digest.len() == 71);
        }
        assert_eq!(at, e.size, "{}", e.path);
    }
}

#[test]
fn zstd_chunked_footer_never_panics_and_round_trips() {
    arbtest::arbtest(|u| {
        let tail: Vec<u8> = u.arbitrary()?;
        let _ = footer::location_from_footer("l", &tail);
        let loc = footer::TocLocation {
            format: footer::ChunkedFormat::Current,
            offset: u.arbitrary()?,
            compressed_len: u.arbitrary()?,
            uncompressed_len: u.arbitrary()?,
            checksum: None,
            tarsplit: None,
        };
        let bytes = footer::encode_footer(&loc);
        let back = footer::location_from_footer("l", &bytes).unwrap();
        assert_eq!(
            (back.offset, back.compressed_len, back.uncompressed_len),
            (loc.offset, loc.compressed_len, loc.uncompressed_len)
        );
        Ok(())
    })
    .budget(BUDGET);
}

#[test]
fn zstd_chunked_toc_accepted_only_when_sound() {
    arbtest::arbtest(|u| {
        let toc = arbitrary_toc(u)?;
        let data_end = u.int_in_range(0..=8192)?;
        if let Ok(index) = toc::toc_to_layer_index("l", &toc, data_end) {
            check_index(&index, data_end);
        }
        Ok(())
    })
    .budget(BUDGET);
}

#[test]
fn estargz_footer_never_panics_and_round_trips() {
    arbtest::arbtest(|u| {
        let tail: Vec<u8> = u.arbitrary()?;
        let size: u64 = u.arbitrary()?;
        let _ = estargz::parse_footer("l", &tail, size);
        let offset: u64 = u.int_in_range(0..=u64::MAX >> 8)?;
        let size = offset + estargz::FOOTER_SIZE + 1 + u.int_in_range(0..=1000u64)?;
        let f = estargz::footer_bytes(offset);
        assert_eq!(
            estargz::parse_footer("l", &f, size).unwrap(),
            (estargz::FooterKind::Estargz, offset)
        );
        Ok(())
    })
    .budget(BUDGET);
}

#[test]
fn estargz_toc_accepted_only_when_sound() {
    arbtest::arbtest(|u| {
        let toc = arbitrary_toc(u)?;
        let toc_offset = u.int_in_range(0..=8192)?;
        if let Ok(parsed) = estargz::toc::parse_toc("l", toc, toc_offset) {
            check_index(&parsed.index, toc_offset);
            for e in &parsed.index.entries {
                let p = e.path.as_bytes();
                assert!(p != b".prefetch.landmark" && p != b"stargz.index.json");
            }
        }
        Ok(())
    })
    .budget(BUDGET);
}

#[test]
fn estargz_toc_member_never_panics() {
    arbtest::arbtest(|u| {
        let bytes: Vec<u8> = u.arbitrary()?;
        let _ = estargz::toc::toc_json_from_member("l", &bytes);
        // A real gzip member around arbitrary tar bytes.
        let inner: Vec<u8> = u.arbitrary()?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &inner).unwrap();
        let _ = estargz::toc::toc_json_from_member("l", &gz.finish().unwrap());
        Ok(())
    })
    .budget(BUDGET);
}
