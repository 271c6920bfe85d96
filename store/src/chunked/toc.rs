//! The zstd:chunked TOC (CRFS-style JSON) and its conversion into a [`LayerIndex`].
//!
//! The TOC comes from the network, so every field is checked: names are normalized as tar
//! names are (a relative `..` escape refused; a repeated name replaces the earlier entry, as
//! in tar), chunks must tile each file exactly and lie inside the blob's data, sizes must not overflow. Anything else is a clear error naming the layer and
//! the entry.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::footer::is_sha256_digest;
use crate::layer_index::{ChunkLocation, ChunkRef, Codec, FileEntry, FileKind, LayerIndex};
use crate::layer_path::LayerPath;
use crate::{Result, StoreError};

/// Largest decompressed chunk accepted: bounds the memory one read can make us allocate.
pub const MAX_CHUNK_SIZE: u64 = 64 << 20;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Toc {
    pub version: i64,
    #[serde(default)]
    pub entries: Vec<TocEntry>,
    #[serde(
        rename = "tarSplitDigest",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub tar_split_digest: String,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// One TOC entry, with the field names and omissions containers/storage uses.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TocEntry {
    #[serde(rename = "type")]
    pub typ: String,
    pub name: String,
    #[serde(rename = "linkName", default, skip_serializing_if = "String::is_empty")]
    pub link_name: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mode: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uid: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gid: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modtime: Option<String>,
    #[serde(rename = "devMajor", default, skip_serializing_if = "is_zero")]
    pub dev_major: i64,
    #[serde(rename = "devMinor", default, skip_serializing_if = "is_zero")]
    pub dev_minor: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: i64,
    #[serde(rename = "endOffset", default, skip_serializing_if = "is_zero")]
    pub end_offset: i64,
    #[serde(rename = "chunkSize", default, skip_serializing_if = "is_zero")]
    pub chunk_size: i64,
    #[serde(rename = "chunkOffset", default, skip_serializing_if = "is_zero")]
    pub chunk_offset: i64,
    #[serde(
        rename = "chunkDigest",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub chunk_digest: String,
    /// eStargz: decoded bytes before this payload in the gzip stream starting at
    /// `offset` (several small payloads may share one stream). zstd:chunked never sets it.
    #[serde(rename = "innerOffset", default, skip_serializing_if = "is_zero")]
    pub inner_offset: i64,
    #[serde(
        rename = "chunkType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub chunk_type: String,
}

/// Normalizes a tar/TOC name to the [`FileEntry::path`] form. `None` for the root itself.
/// The rule is the tar reader's (`layer::tar_index::normalize_path`, Docker's): `.` and empty
/// parts vanish, `..` is resolved, a relative name climbing above the root is refused, so a
/// layer pulled from its TOC and the same layer pulled in full (or converted) agree. Empty
/// names and NUL bytes are refused.
pub fn normalize_name(name: &str) -> std::result::Result<Option<String>, &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.contains('\0') {
        return Err("NUL byte in name");
    }
    let absolute = name.starts_with('/');
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() && !absolute {
                    return Err("'..' component climbs out of the layer root");
                }
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    Ok(Some(parts.join("/")))
}

struct Ctx<'a> {
    layer: &'a str,
    codec: Codec,
    /// Offsets of chunk frames must end at or before this (start of the TOC's frame).
    data_end: u64,
}

impl Ctx<'_> {
    fn err(&self, entry: &str, reason: impl Into<String>) -> StoreError {
        StoreError::InvalidToc {
            layer: self.layer.to_string(),
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }
}

fn to_u32(ctx: &Ctx, name: &str, what: &str, v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| ctx.err(name, format!("{what} {v} out of range")))
}

fn to_u64(ctx: &Ctx, name: &str, what: &str, v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| ctx.err(name, format!("{what} {v} is negative")))
}

fn parse_mtime(ctx: &Ctx, name: &str, t: &Option<String>) -> Result<(i64, u32)> {
    match t {
        None => Ok((0, 0)),
        Some(s) => {
            let dt = chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|e| ctx.err(name, format!("bad modtime {s:?}: {e}")))?;
            Ok((dt.timestamp(), dt.timestamp_subsec_nanos()))
        }
    }
}

/// One piece of a regular file, collected from the main entry and its `chunk` entries.
struct RawChunk {
    file_offset: u64,
    size: u64,
    blob_offset: u64,
    blob_end: Option<u64>,
    inner_offset: u64,
    digest: String,
}

/// Converts a parsed zstd:chunked TOC into a [`LayerIndex`] for the blob `layer` whose
/// chunk data ends at `data_end` (the TOC frame's start), validating everything on the way.
pub fn toc_to_layer_index(layer: &str, toc: &Toc, data_end: u64) -> Result<LayerIndex> {
    toc_to_layer_index_with(layer, toc, data_end, Codec::Zstd)
}

/// [`toc_to_layer_index`] for a TOC of the same schema whose chunks are decoded with
/// `codec` (eStargz: gzip, after filling in each chunk's `endOffset`).
pub fn toc_to_layer_index_with(
    layer: &str,
    toc: &Toc,
    data_end: u64,
    codec: Codec,
) -> Result<LayerIndex> {
    let ctx = Ctx {
        layer,
        codec,
        data_end,
    };
    if toc.version != 1 {
        return Err(ctx.err("", format!("unsupported TOC version {}", toc.version)));
    }
    let mut entries: Vec<FileEntry> = Vec::new();
    let mut seen: HashMap<String, FileKind> = HashMap::new();
    let mut i = 0;
    while i < toc.entries.len() {
        let e = &toc.entries[i];
        i += 1;
        let path = match normalize_name(&e.name) {
            Ok(Some(p)) => p,
            Ok(None) => {
                if e.typ != "dir" {
                    return Err(ctx.err(&e.name, "root entry that is not a directory"));
                }
                continue;
            }
            Err(reason) => return Err(ctx.err(&e.name, reason)),
        };
        let kind = match (e.typ.as_str(), FileKind::from_toc_type(&e.typ)) {
            (_, Some(k)) => k,
            ("chunk", None) => return Err(ctx.err(&e.name, "chunk entry without a preceding file")),
            (t, None) => return Err(ctx.err(&e.name, format!("unknown entry type {t:?}"))),
        };
        // A name may repeat, as in tar: the later entry replaces the earlier one when the
        // layers are merged (the full-pull path accepts it too).
        seen.insert(path.clone(), kind);
        let (mtime, mtime_nsec) = parse_mtime(&ctx, &e.name, &e.modtime)?;
        let mut xattrs = BTreeMap::new();
        for (k, v) in &e.xattrs {
            let val = base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|err| ctx.err(&e.name, format!("xattr {k}: bad base64: {err}")))?;
            xattrs.insert(k.clone(), val);
        }
        let link_target = match kind {
            FileKind::Symlink => {
                if e.link_name.is_empty() {
                    return Err(ctx.err(&e.name, "symlink without a target"));
                }
                LayerPath::from(e.link_name.as_str())
            }
            FileKind::Hardlink => {
                let target = match normalize_name(&e.link_name) {
                    Ok(Some(t)) => t,
                    Ok(None) => return Err(ctx.err(&e.name, "hard link to the root")),
                    Err(reason) => return Err(ctx.err(&e.name, format!("link target: {reason}"))),
                };
                // A target that is not an earlier entry of this layer may be a file of a lower
                // layer (as in any tar layer): the pull checks it across the layer stack.
                // Lossy names (U+FFFD) may stand for other bytes: checked once restored.
                let lossy = target.contains('\u{fffd}') || path.contains('\u{fffd}');
                if seen.get(&target) == Some(&FileKind::Directory) && !lossy {
                    return Err(ctx.err(&e.name, "hard link to a directory"));
                }
                if target == path && !lossy {
                    return Err(ctx.err(&e.name, "hard link to itself"));
                }
                LayerPath::from(target)
            }
            _ => LayerPath::default(),
        };
        let is_dev = matches!(kind, FileKind::CharDevice | FileKind::BlockDevice);
        let size = if kind == FileKind::Regular {
            to_u64(&ctx, &e.name, "size", e.size)?
        } else {
            0
        };
        let mut chunks = Vec::new();
        if kind == FileKind::Regular {
            let mut raw = vec![RawChunk {
                file_offset: 0,
                size: if e.chunk_size == 0 {
                    size
                } else {
                    to_u64(&ctx, &e.name, "chunkSize", e.chunk_size)?
                },
                blob_offset: to_u64(&ctx, &e.name, "offset", e.offset)?,
                // eStargz gives each payload entry the end of its own stream (filled in
                // by its reader); zstd:chunked's `endOffset` of a file is its last chunk's.
                blob_end: (ctx.codec == Codec::Gzip)
                    .then(|| to_u64(&ctx, &e.name, "endOffset", e.end_offset))
                    .transpose()?,
                inner_offset: to_u64(&ctx, &e.name, "innerOffset", e.inner_offset)?,
                digest: if e.chunk_digest.is_empty() {
                    e.digest.clone()
                } else {
                    e.chunk_digest.clone()
                },
            }];
            while i < toc.entries.len() && toc.entries[i].typ == "chunk" {
                let c = &toc.entries[i];
                i += 1;
                if c.name != e.name {
                    return Err(ctx.err(&c.name, format!("chunk entry follows {:?}", e.name)));
                }
                raw.push(RawChunk {
                    file_offset: to_u64(&ctx, &c.name, "chunkOffset", c.chunk_offset)?,
                    size: to_u64(&ctx, &c.name, "chunkSize", c.chunk_size)?,
                    blob_offset: to_u64(&ctx, &c.name, "offset", c.offset)?,
                    blob_end: (c.end_offset != 0)
                        .then(|| to_u64(&ctx, &c.name, "endOffset", c.end_offset))
                        .transpose()?,
                    inner_offset: to_u64(&ctx, &c.name, "innerOffset", c.inner_offset)?,
                    digest: c.chunk_digest.clone(),
                });
            }
            let file_end = to_u64(&ctx, &e.name, "endOffset", e.end_offset)?;
            if size > 0 {
                chunks = build_chunks(&ctx, &e.name, size, file_end, raw)?;
            }
        }
        entries.push(FileEntry {
            path: LayerPath::from(path),
            kind,
            mode: (e.mode & 0o7777) as u32,
            uid: to_u32(&ctx, &e.name, "uid", e.uid)?,
            gid: to_u32(&ctx, &e.name, "gid", e.gid)?,
            size,
            mtime,
            mtime_nsec,
            link_target,
            dev_major: if is_dev {
                to_u32(&ctx, &e.name, "devMajor", e.dev_major)?
            } else {
                0
            },
            dev_minor: if is_dev {
                to_u32(&ctx, &e.name, "devMinor", e.dev_minor)?
            } else {
                0
            },
            xattrs,
            chunks,
        });
    }
    Ok(LayerIndex {
        digest: layer.to_string(),
        entries,
    })
}

fn build_chunks(
    ctx: &Ctx,
    name: &str,
    size: u64,
    file_end: u64,
    raw: Vec<RawChunk>,
) -> Result<Vec<ChunkRef>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut expect_file_offset = 0u64;
    for (k, c) in raw.iter().enumerate() {
        let blob_end = match (c.blob_end, raw.get(k + 1)) {
            (Some(end), _) => end,
            (None, Some(next)) => next.blob_offset,
            (None, None) => file_end,
        };
        if c.file_offset != expect_file_offset {
            return Err(ctx.err(
                name,
                format!(
                    "chunk {k} starts at file offset {} instead of {expect_file_offset}",
                    c.file_offset
                ),
            ));
        }
        if c.size == 0 || c.size > MAX_CHUNK_SIZE {
            return Err(ctx.err(name, format!("chunk {k} has size {}", c.size)));
        }
        expect_file_offset = c
            .file_offset
            .checked_add(c.size)
            .filter(|end| *end <= size)
            .ok_or_else(|| ctx.err(name, format!("chunk {k} runs past the file size {size}")))?;
        if c.blob_offset == 0 || blob_end <= c.blob_offset || blob_end > ctx.data_end {
            return Err(ctx.err(
                name,
                format!(
                    "chunk {k} has blob range {}..{blob_end} outside the data (ends at {})",
                    c.blob_offset, ctx.data_end
                ),
            ));
        }
        if c.inner_offset > 0 && ctx.codec == Codec::Zstd {
            return Err(ctx.err(name, format!("chunk {k} has an innerOffset")));
        }
        if c.inner_offset > MAX_CHUNK_SIZE {
            return Err(ctx.err(
                name,
                format!("chunk {k} has innerOffset {}", c.inner_offset),
            ));
        }
        if blob_end - c.blob_offset > MAX_CHUNK_SIZE {
            return Err(ctx.err(name, format!("chunk {k} is too large compressed")));
        }
        if !is_sha256_digest(&c.digest) {
            return Err(ctx.err(name, format!("chunk {k} has bad digest {:?}", c.digest)));
        }
        out.push(ChunkRef {
            file_offset: c.file_offset,
            len: c.size,
            location: ChunkLocation::Compressed {
                blob_offset: c.blob_offset,
                blob_len: blob_end - c.blob_offset,
                digest: c.digest.clone(),
                codec: ctx.codec,
                inner_offset: c.inner_offset,
            },
        });
    }
    if expect_file_offset != size {
        return Err(ctx.err(
            name,
            format!("chunks cover {expect_file_offset} of {size} bytes"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn reg(name: &str, size: i64, off: i64, end: i64) -> TocEntry {
        TocEntry {
            typ: "reg".into(),
            name: name.into(),
            size,
            offset: off,
            end_offset: end,
            digest: d('a'),
            mode: 0o100644,
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

    fn refused(entries: Vec<TocEntry>) -> String {
        toc_to_layer_index("sha256:layer", &toc(entries), 1000)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn normalizes_names() {
        assert_eq!(normalize_name("./a//b/").unwrap().as_deref(), Some("a/b"));
        assert_eq!(normalize_name("/etc/x").unwrap().as_deref(), Some("etc/x"));
        assert_eq!(normalize_name("./").unwrap(), None);
        assert!(normalize_name("a/../../etc").is_err());
        // As the tar reader resolves them, so TOC and full pulls agree.
        assert_eq!(normalize_name("./a/../b").unwrap().as_deref(), Some("b"));
        assert_eq!(normalize_name("/../etc").unwrap().as_deref(), Some("etc"));
    }

    #[test]
    fn chunked_file_converts() {
        let mut main = reg("./f", 10, 100, 300);
        main.chunk_size = 4;
        main.chunk_digest = d('b');
        let chunk = TocEntry {
            typ: "chunk".into(),
            name: "./f".into(),
            chunk_offset: 4,
            chunk_size: 6,
            offset: 200,
            chunk_digest: d('c'),
            ..Default::default()
        };
        let idx = toc_to_layer_index("l", &toc(vec![main, chunk]), 1000).unwrap();
        let f = &idx.entries[0];
        assert_eq!(f.path, "f");
        assert_eq!(f.mode, 0o644);
        assert_eq!(f.chunks.len(), 2);
        assert_eq!(
            f.chunks[1].location,
            ChunkLocation::Compressed {
                blob_offset: 200,
                blob_len: 100,
                digest: d('c'),
                codec: Codec::Zstd,
                inner_offset: 0,
            }
        );
    }

    #[test]
    fn hostile_tocs_refused() {
        assert!(refused(vec![reg("../../etc/passwd", 1, 1, 2)]).contains(".."));
        // A repeated name is kept, as the tar reader keeps it (the later one wins when merged).
        let twice = toc(vec![reg("a", 1, 1, 2), reg("./a", 1, 2, 3)]);
        assert_eq!(
            toc_to_layer_index("l", &twice, 1000).unwrap().entries.len(),
            2
        );
        assert!(refused(vec![reg("a", 1, 900, 2000)]).contains("outside"));
        assert!(refused(vec![reg("a", -1, 1, 2)]).contains("negative"));
        let mut big = reg("a", 10, 1, 2);
        big.chunk_size = 4; // one chunk of 4 bytes for a 10-byte file
        assert!(refused(vec![big]).contains("cover"));
        let mut over = reg("a", i64::MAX, 1, 2);
        over.chunk_size = i64::MAX;
        assert!(refused(vec![over]).contains("size"));
        let mut nodigest = reg("a", 1, 1, 2);
        nodigest.digest.clear();
        assert!(refused(vec![nodigest]).contains("digest"));
        let orphan = TocEntry {
            typ: "chunk".into(),
            name: "a".into(),
            ..Default::default()
        };
        assert!(refused(vec![orphan]).contains("chunk"));
        let link = TocEntry {
            typ: "hardlink".into(),
            name: "l".into(),
            link_name: "./l".into(),
            ..Default::default()
        };
        assert!(refused(vec![link]).contains("itself"));
        let dir = TocEntry {
            typ: "dir".into(),
            name: "d".into(),
            ..Default::default()
        };
        let link = TocEntry {
            typ: "hardlink".into(),
            name: "l".into(),
            link_name: "d".into(),
            ..Default::default()
        };
        assert!(refused(vec![dir, link]).contains("directory"));
        let mut bad_x = reg("a", 1, 1, 2);
        bad_x.xattrs.insert("user.x".into(), "!!!".into());
        assert!(refused(vec![bad_x]).contains("base64"));
        let mut t = toc(vec![]);
        t.version = 2;
        assert!(toc_to_layer_index("l", &t, 10).is_err());
    }
}
