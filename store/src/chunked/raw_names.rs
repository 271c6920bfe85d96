//! Exact name bytes for TOC entries whose names are not UTF-8.
//!
//! A zstd:chunked TOC is JSON, which holds text only: Go writers (containers/storage, skopeo,
//! stargz, via `encoding/json`) turn each invalid UTF-8 byte into U+FFFD, and skiff's writer
//! does the same (lossily), so `caf\xe9.txt` arrives as `caf\u{fffd}.txt`. Serving that
//! would rename the file. The layer's tar-split (vbatts/tar-split JSON lines, current format
//! only) keeps every raw tar header byte in its `segment` entries and each member's size in
//! its `file` entries, so the header stream can be rebuilt with zeros for file data and read
//! with the tar crate: that gives the exact name and link-name bytes (PAX `path`/`linkpath`
//! and GNU long names included). They are matched to the TOC's entries in tar order by their
//! lossy form. The tar-split is pinned by the TOC's `tarSplitDigest` (the TOC by the manifest).
//!
//! When the names cannot be restored (older format without tar-split, no digest, a mismatch)
//! the caller pulls the layer in full instead; a renamed file is never served.

use std::io::Read;

use base64::Engine;
use sha2::{Digest, Sha256};

use super::footer::{self, TocLocation};
use super::source::{BlobSource, RetryPolicy};
use super::toc::Toc;
use crate::layer::tar_index::normalize_path;
use crate::layer_index::{FileKind, LayerIndex};
use crate::layer_path::LayerPath;
use crate::{Result, StoreError};

/// Largest decompressed tar-split accepted.
pub const MAX_TARSPLIT_SIZE: u64 = 256 << 20;

const REPLACEMENT: char = '\u{fffd}';

/// How many tar members may be skipped looking for a TOC entry's member.
const MATCH_WINDOW: usize = 64;

/// Whether some TOC name or link name may stand for bytes that are not UTF-8.
pub fn has_lossy_names(toc: &Toc) -> bool {
    toc.entries
        .iter()
        .any(|e| e.name.contains(REPLACEMENT) || e.link_name.contains(REPLACEMENT))
}

fn err(layer: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidToc {
        layer: layer.to_string(),
        entry: "tar-split".to_string(),
        reason: reason.into(),
    }
}

/// Fetches the tar-split frame, checks it against `expected` (`sha256:` of the compressed
/// frame payload) and returns it decompressed.
pub fn fetch_tarsplit(
    source: &dyn BlobSource,
    layer: &str,
    loc: &TocLocation,
    expected: &str,
    retry: &RetryPolicy,
) -> Result<Vec<u8>> {
    let (offset, len, ulen) = loc.tarsplit.ok_or_else(|| err(layer, "no tar-split"))?;
    if len == 0 || len > MAX_TARSPLIT_SIZE || ulen > MAX_TARSPLIT_SIZE {
        return Err(err(layer, format!("tar-split size {len}/{ulen} refused")));
    }
    if offset < footer::SKIPPABLE_FRAME_HEADER {
        return Err(err(layer, format!("tar-split offset {offset} refused")));
    }
    let frame = source.read_range_retry(
        offset - footer::SKIPPABLE_FRAME_HEADER,
        len + footer::SKIPPABLE_FRAME_HEADER,
        retry,
    )?;
    if frame[..4] != footer::SKIPPABLE_FRAME_MAGIC {
        return Err(err(layer, "tar-split is not a skippable frame"));
    }
    let compressed = &frame[footer::SKIPPABLE_FRAME_HEADER as usize..];
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(compressed)));
    if digest != expected {
        return Err(StoreError::DigestMismatch {
            what: format!("tar-split of layer {layer}"),
            expected: expected.to_string(),
            actual: digest,
        });
    }
    let mut json = Vec::new();
    zstd::stream::read::Decoder::new(compressed)
        .and_then(|d| d.take(MAX_TARSPLIT_SIZE + 1).read_to_end(&mut json))
        .map_err(|e| err(layer, format!("decompression: {e}")))?;
    Ok(json)
}

#[derive(serde::Deserialize)]
struct SplitEntry {
    #[serde(rename = "type")]
    typ: u8,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    payload: Option<String>,
}

/// One piece of the rebuilt header stream.
enum Piece {
    Bytes(Vec<u8>),
    Zeros(u64),
}

/// Reads the pieces in order: header bytes as they were, file data as zeros.
struct Pieces {
    pieces: std::vec::IntoIter<Piece>,
    cur: Option<Piece>,
    pos: usize,
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match &mut self.cur {
                None => match self.pieces.next() {
                    Some(p) => {
                        self.cur = Some(p);
                        self.pos = 0;
                    }
                    None => return Ok(0),
                },
                Some(Piece::Bytes(b)) if self.pos < b.len() => {
                    let n = buf.len().min(b.len() - self.pos);
                    buf[..n].copy_from_slice(&b[self.pos..self.pos + n]);
                    self.pos += n;
                    return Ok(n);
                }
                Some(Piece::Zeros(left)) if *left > 0 => {
                    let n = (buf.len() as u64).min(*left) as usize;
                    buf[..n].fill(0);
                    *left -= n as u64;
                    return Ok(n);
                }
                Some(_) => self.cur = None,
            }
        }
    }
}

/// One tar member's exact names, normalized like the index's paths.
#[derive(Debug)]
struct RawMember {
    path: LayerPath,
    link: Vec<u8>,
}

/// The members of the tar that `tarsplit` (decompressed JSON lines) describes.
fn members(layer: &str, tarsplit: &[u8]) -> Result<Vec<RawMember>> {
    let mut pieces = Vec::new();
    for line in tarsplit.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let e: SplitEntry =
            serde_json::from_slice(line).map_err(|e| err(layer, format!("bad entry: {e}")))?;
        match e.typ {
            1 => pieces.push(Piece::Zeros(e.size)),
            2 => {
                let b = base64::engine::general_purpose::STANDARD
                    .decode(e.payload.unwrap_or_default())
                    .map_err(|e| err(layer, format!("bad segment: {e}")))?;
                pieces.push(Piece::Bytes(b));
            }
            t => return Err(err(layer, format!("unknown entry type {t}"))),
        }
    }
    let mut archive = tar::Archive::new(Pieces {
        pieces: pieces.into_iter(),
        cur: None,
        pos: 0,
    });
    let mut out = Vec::new();
    let iter = archive
        .entries()
        .map_err(|e| err(layer, format!("rebuilt headers: {e}")))?;
    for entry in iter {
        let entry = entry.map_err(|e| err(layer, format!("rebuilt headers: {e}")))?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let Some(path) = normalize_path(layer, &entry.path_bytes())? else {
            continue;
        };
        let link = entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default();
        out.push(RawMember { path, link });
    }
    Ok(out)
}

/// Go's `encoding/json` form of `bytes`: each byte of an invalid sequence becomes U+FFFD.
/// skiff's writer puts names into TOCs this way too, so its TOCs match Go writers'.
pub fn go_lossy(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                break;
            }
            Err(e) => {
                let good = e.valid_up_to();
                out.push_str(std::str::from_utf8(&rest[..good]).expect("valid prefix"));
                out.push(REPLACEMENT);
                rest = &rest[good + 1..];
            }
        }
    }
    out
}

/// Whether the TOC text `shown` can stand for `bytes` (Go's or Rust's lossy form).
fn stands_for(shown: &[u8], bytes: &[u8]) -> bool {
    shown == bytes
        || shown == String::from_utf8_lossy(bytes).as_bytes()
        || shown == go_lossy(bytes).as_bytes()
}

/// Replaces the lossy names and link targets of `index` with the exact bytes from
/// `tarsplit`; fails (leaving `index` unusable) when an entry has no matching tar member.
pub fn restore_names(layer: &str, index: &mut LayerIndex, tarsplit: &[u8]) -> Result<()> {
    let members = members(layer, tarsplit)?;
    let mut next = 0;
    for e in &mut index.entries {
        // Members without a TOC entry are rare (global headers are already dropped): a short
        // window keeps a hostile pair of TOC and tar-split from costing quadratic time.
        let found = members[next.min(members.len())..]
            .iter()
            .take(MATCH_WINDOW)
            .position(|m| stands_for(e.path.as_bytes(), m.path.as_bytes()))
            .ok_or_else(|| err(layer, format!("no tar member for TOC entry {:?}", e.path)))?;
        let m = &members[next + found];
        next += found + 1;
        e.path = m.path.clone();
        match e.kind {
            FileKind::Symlink => e.link_target = LayerPath::new(m.link.clone()),
            FileKind::Hardlink => {
                e.link_target = normalize_path(layer, &m.link)?
                    .ok_or_else(|| err(layer, format!("hard link {:?} to the root", m.path)))?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossy_forms() {
        assert_eq!(go_lossy(b"a\xe2\x82b"), "a\u{fffd}\u{fffd}b");
        assert!(stands_for("a\u{fffd}b".as_bytes(), b"a\xe2\x82b"));
        assert!(stands_for("a\u{fffd}\u{fffd}b".as_bytes(), b"a\xe2\x82b"));
        assert!(!stands_for(b"ab", b"a\xe9b"));
    }

    /// A tar with raw (non-UTF-8) names: two that share one lossy form, a directory, a
    /// symlink target, a hard link and a long (GNU long-name) path.
    fn raw_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let head = |t: tar::EntryType, size: u64| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(t);
            h.set_size(size);
            h.set_mode(0o644);
            h
        };
        let p = |b: &[u8]| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b));
        use std::os::unix::ffi::OsStrExt;
        b.append_data(
            &mut head(tar::EntryType::Directory, 0),
            p(b"d\xff/"),
            &[][..],
        )
        .unwrap();
        b.append_data(
            &mut head(tar::EntryType::Regular, 2),
            p(b"d\xff/caf\xe9"),
            &b"e9"[..],
        )
        .unwrap();
        b.append_data(
            &mut head(tar::EntryType::Regular, 2),
            p(b"d\xff/caf\xe8"),
            &b"e8"[..],
        )
        .unwrap();
        b.append_link(&mut head(tar::EntryType::Symlink, 0), "s", p(b"caf\xe9"))
            .unwrap();
        b.append_link(
            &mut head(tar::EntryType::Link, 0),
            p(b"h\xe9"),
            p(b"d\xff/caf\xe9"),
        )
        .unwrap();
        let long = [&[b'x'; 150][..], b"\xe9"].concat();
        b.append_data(&mut head(tar::EntryType::Regular, 1), p(&long), &b"L"[..])
            .unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn skiff_written_layers_keep_raw_names_lazily() {
        let tar = raw_tar();
        let mut blob = Vec::new();
        let w = crate::chunked::write_zstd_chunked(&tar, &mut blob, &Default::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, &blob).unwrap();
        let src = crate::chunked::FileBlobSource::open(&path, &w.digest).unwrap();
        let (index, info) = crate::chunked::open_lazy_layer(
            &src,
            &w.digest,
            &w.annotations,
            &RetryPolicy::default(),
        )
        .unwrap();
        assert!(info.exact_names);
        let names: Vec<&[u8]> = index.entries.iter().map(|e| e.path.as_bytes()).collect();
        let long = [&[b'x'; 150][..], b"\xe9"].concat();
        assert_eq!(
            names,
            vec![
                &b"d\xff"[..],
                b"d\xff/caf\xe9",
                b"d\xff/caf\xe8",
                b"s",
                b"h\xe9",
                &long[..]
            ]
        );
        assert_eq!(index.entries[3].link_target, &b"caf\xe9"[..]);
        assert_eq!(index.entries[4].link_target, &b"d\xff/caf\xe9"[..]);
        // Without the tar-split the names cannot be recovered: the caller must pull in full.
        let mut no_split = w.annotations.clone();
        no_split.remove(crate::chunked::footer::TARSPLIT_POSITION_KEY);
        let (_, info) =
            crate::chunked::open_lazy_layer(&src, &w.digest, &no_split, &RetryPolicy::default())
                .unwrap();
        assert!(!info.exact_names);
    }
}
