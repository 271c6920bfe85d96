//! Writes a tar stream as a zstd:chunked blob in the current format, so `zstd -d` of the
//! blob gives back the tar byte for byte while every regular file's data starts its own zstd
//! frames that can be fetched and decompressed alone.
//!
//! Layout: `[frame: tar bytes up to a file's data][frames: the file's chunks]...[frame: the
//! rest of the tar][skippable: TOC][skippable: tar-split][skippable: 64-byte footer]`.

use std::collections::BTreeMap;
use std::io::Write;

use base64::Engine;
use sha2::{Digest, Sha256};

use super::footer::{self, ChunkedFormat, TocLocation};
use super::tarsplit::TarSplitWriter;
use super::toc::{Toc, TocEntry};
use crate::{Result, StoreError};

/// Fixed chunk size for file data: 256 KiB.
///
/// A lazy read fetches whole chunks, so the chunk size bounds how much more than asked a
/// cold read fetches (design target: within 1.1x of what containers read, who mostly read
/// whole small files and scattered pages of big ones). Smaller chunks cost more TOC entries
/// (~250 bytes each), more cache files and a worse compression ratio; at 256 KiB a 400 MB
/// image has ~1600 chunk entries, zstd loses little, and one chunk is a cheap unit to
/// decompress and verify per read. Fixed rather than content-defined: we do not dedup
/// chunks across images yet, and fixed sizes make reads map to chunks predictably.
pub const CHUNK_SIZE: usize = 256 << 10;

/// How the writer compresses.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// zstd level for data, TOC and tar-split frames.
    pub level: i32,
    pub chunk_size: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            level: 3,
            chunk_size: CHUNK_SIZE,
        }
    }
}

/// What the writer produced: enough for the layer descriptor and the config's diff_ids.
#[derive(Debug, Clone)]
pub struct ChunkedLayer {
    /// `sha256:<hex>` of the blob.
    pub digest: String,
    pub size: u64,
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// The layer descriptor's annotations (TOC checksum and position, tar-split position).
    pub annotations: BTreeMap<String, String>,
    /// `sha256:<hex>` of the compressed TOC.
    pub toc_digest: String,
}

/// The OCI media type of zstd:chunked layers (they are valid tar+zstd).
pub const MEDIA_TYPE_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

fn tar_err(reason: impl Into<String>) -> StoreError {
    StoreError::InvalidIndex {
        layer: "tar stream being converted".into(),
        reason: reason.into(),
    }
}

/// A writer that hashes and counts what passes through.
struct Counting<W: Write> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Counting<W> {
    fn put(&mut self, data: &[u8]) -> Result<()> {
        self.inner
            .write_all(data)
            .map_err(|e| StoreError::io("<zstd:chunked output>", e))?;
        self.hasher.update(data);
        self.count += data.len() as u64;
        Ok(())
    }

    fn frame(&mut self, data: &[u8], level: i32) -> Result<()> {
        let c = zstd::bulk::compress(data, level)
            .map_err(|e| StoreError::io("<zstd compressor>", e))?;
        self.put(&c)
    }

    fn skippable(&mut self, data: &[u8]) -> Result<()> {
        let len = u32::try_from(data.len()).map_err(|_| tar_err("metadata frame over 4 GiB"))?;
        self.put(&footer::SKIPPABLE_FRAME_MAGIC)?;
        self.put(&len.to_le_bytes())?;
        self.put(data)
    }
}

/// Metadata of one tar member, gathered while walking the archive.
struct Member {
    name: Vec<u8>,
    file_pos: usize,
    size: usize,
    toc: Option<TocEntry>,
}

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn walk(tar_bytes: &[u8]) -> Result<Vec<Member>> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut members = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| tar_err(format!("reading tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| tar_err(format!("reading tar: {e}")))?;
        let name = entry.path_bytes().into_owned();
        // JSON holds text only: names that are not UTF-8 go into the TOC as Go writers put
        // them (U+FFFD per bad byte); the tar-split keeps the exact header bytes, from which
        // readers restore them (see `raw_names`).
        let shown = super::raw_names::go_lossy(&name);
        let h = entry.header();
        let et = h.entry_type();
        if et.is_gnu_sparse() {
            return Err(tar_err(format!("{shown}: sparse files are not supported")));
        }
        let size = usize::try_from(entry.size()).map_err(|_| tar_err("member too large"))?;
        let file_pos = entry.raw_file_position() as usize;
        if file_pos
            .checked_add(size)
            .is_none_or(|e| e > tar_bytes.len())
        {
            return Err(tar_err(format!("{shown}: data runs past the end")));
        }
        let typ = match et {
            tar::EntryType::Regular | tar::EntryType::Continuous => Some("reg"),
            tar::EntryType::Directory => Some("dir"),
            tar::EntryType::Symlink => Some("symlink"),
            tar::EntryType::Link => Some("hardlink"),
            tar::EntryType::Char => Some("char"),
            tar::EntryType::Block => Some("block"),
            tar::EntryType::Fifo => Some("fifo"),
            // Global PAX headers and the like carry no file: tar-split keeps their bytes.
            _ => None,
        };
        let toc = match typ {
            None => None,
            Some(typ) => {
                let mut xattrs = BTreeMap::new();
                if let Some(exts) = entry
                    .pax_extensions()
                    .map_err(|e| tar_err(format!("{shown}: PAX: {e}")))?
                {
                    for ext in exts {
                        let ext = ext.map_err(|e| tar_err(format!("{shown}: PAX: {e}")))?;
                        if let Some(k) =
                            ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr."))
                        {
                            xattrs.insert(
                                k.to_string(),
                                base64::engine::general_purpose::STANDARD.encode(ext.value_bytes()),
                            );
                        }
                    }
                }
                let h = entry.header();
                let mtime = h.mtime().unwrap_or(0);
                let modtime = chrono::DateTime::from_timestamp(mtime as i64, 0)
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
                let link_name = entry
                    .link_name_bytes()
                    .map(|l| super::raw_names::go_lossy(&l))
                    .unwrap_or_default();
                let is_dev = matches!(typ, "char" | "block");
                Some(TocEntry {
                    typ: typ.to_string(),
                    name: shown.clone(),
                    link_name,
                    mode: h.mode().unwrap_or(0) as i64,
                    size: if typ == "reg" { size as i64 } else { 0 },
                    uid: h.uid().unwrap_or(0) as i64,
                    gid: h.gid().unwrap_or(0) as i64,
                    modtime,
                    dev_major: if is_dev {
                        h.device_major().ok().flatten().unwrap_or(0) as i64
                    } else {
                        0
                    },
                    dev_minor: if is_dev {
                        h.device_minor().ok().flatten().unwrap_or(0) as i64
                    } else {
                        0
                    },
                    xattrs,
                    ..Default::default()
                })
            }
        };
        members.push(Member {
            name,
            file_pos,
            size,
            toc,
        });
    }
    Ok(members)
}

/// Writes `tar_bytes` to `out` as a zstd:chunked blob (current format).
pub fn write_zstd_chunked(
    tar_bytes: &[u8],
    out: impl Write,
    opts: &WriterOptions,
) -> Result<ChunkedLayer> {
    let chunk_size = opts.chunk_size.max(1);
    let members = walk(tar_bytes)?;
    let mut w = Counting {
        inner: out,
        hasher: Sha256::new(),
        count: 0,
    };
    let mut split = TarSplitWriter::default();
    let mut toc_entries = Vec::new();
    let mut cursor = 0usize; // tar bytes already written into frames
    let mut split_cursor = 0usize; // tar bytes already recorded in tar-split
    for m in members {
        let data = &tar_bytes[m.file_pos..m.file_pos + m.size];
        split.segment(&tar_bytes[split_cursor..m.file_pos]);
        split.file(&m.name, m.size as u64, data);
        split_cursor = m.file_pos + m.size;
        let Some(mut entry) = m.toc else {
            // Keep its bytes (if any) in the next metadata frame.
            continue;
        };
        if entry.typ == "reg" && m.size > 0 {
            w.frame(&tar_bytes[cursor..m.file_pos], opts.level)?;
            entry.digest = sha256_digest(data);
            let mut pieces = Vec::new();
            for (k, piece) in data.chunks(chunk_size).enumerate() {
                let start = w.count;
                w.frame(piece, opts.level)?;
                pieces.push((k * chunk_size, piece.len(), start, sha256_digest(piece)));
            }
            entry.offset = pieces[0].2 as i64;
            entry.end_offset = w.count as i64;
            let many = pieces.len() > 1;
            if many {
                entry.chunk_size = pieces[0].1 as i64;
                entry.chunk_digest = pieces[0].3.clone();
            }
            let name = entry.name.clone();
            toc_entries.push(entry);
            if many {
                for (file_off, len, start, digest) in pieces.into_iter().skip(1) {
                    toc_entries.push(TocEntry {
                        typ: "chunk".into(),
                        name: name.clone(),
                        chunk_offset: file_off as i64,
                        chunk_size: len as i64,
                        offset: start as i64,
                        chunk_digest: digest,
                        ..Default::default()
                    });
                }
            }
            cursor = m.file_pos + m.size;
        } else {
            toc_entries.push(entry);
        }
    }
    let tail_start = cursor;
    if tail_start < tar_bytes.len() {
        w.frame(&tar_bytes[tail_start..], opts.level)?;
    }
    // tar-split keeps everything after the last member (padding, end blocks, trailing data).
    split.segment(&tar_bytes[split_cursor..]);

    let split_json = split.finish();
    let split_z = zstd::bulk::compress(&split_json, opts.level)
        .map_err(|e| StoreError::io("<zstd compressor>", e))?;
    let toc = Toc {
        version: 1,
        entries: toc_entries,
        tar_split_digest: sha256_digest(&split_z),
    };
    let toc_json = serde_json::to_vec(&toc).expect("TOC serializes");
    let toc_z = zstd::bulk::compress(&toc_json, opts.level)
        .map_err(|e| StoreError::io("<zstd compressor>", e))?;
    let toc_offset = w.count + footer::SKIPPABLE_FRAME_HEADER;
    w.skippable(&toc_z)?;
    let split_offset = w.count + footer::SKIPPABLE_FRAME_HEADER;
    w.skippable(&split_z)?;
    let loc = TocLocation {
        format: ChunkedFormat::Current,
        offset: toc_offset,
        compressed_len: toc_z.len() as u64,
        uncompressed_len: toc_json.len() as u64,
        checksum: Some(sha256_digest(&toc_z)),
        tarsplit: Some((split_offset, split_z.len() as u64, split_json.len() as u64)),
    };
    w.put(&footer::encode_footer(&loc))?;
    w.inner
        .flush()
        .map_err(|e| StoreError::io("<zstd:chunked output>", e))?;
    let toc_digest = sha256_digest(&toc_z);
    let annotations = layer_annotations(&loc, &toc_digest);
    Ok(ChunkedLayer {
        digest: format!("sha256:{}", hex::encode(w.hasher.finalize())),
        size: w.count,
        diff_id: sha256_digest(tar_bytes),
        annotations,
        toc_digest,
    })
}

/// Converts the tar file `tar` into a zstd:chunked blob at `out`, written atomically (a
/// temporary file beside `out`, fsync, rename). The tar is read into memory whole.
pub fn convert_tar_file(
    tar: &std::path::Path,
    out: &std::path::Path,
    opts: &WriterOptions,
) -> Result<ChunkedLayer> {
    let bytes = std::fs::read(tar).map_err(|e| StoreError::io(tar, e))?;
    write_chunked_file(&bytes, out, opts)
}

/// Writes the tar `bytes` as a zstd:chunked blob at `out`, atomically (a temporary file beside
/// `out`, fsync, rename).
pub fn write_chunked_file(
    bytes: &[u8],
    out: &std::path::Path,
    opts: &WriterOptions,
) -> Result<ChunkedLayer> {
    let tmp = out.with_extension(format!("tmp.{}", std::process::id()));
    let res = (|| {
        let file = std::fs::File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        let mut w = std::io::BufWriter::new(file);
        let layer = write_zstd_chunked(bytes, &mut w, opts)?;
        let file = w
            .into_inner()
            .map_err(|e| StoreError::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
        std::fs::rename(&tmp, out).map_err(|e| StoreError::io(out, e))?;
        Ok(layer)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// The layer descriptor annotations that locate and pin the TOC (current key names).
pub fn layer_annotations(loc: &TocLocation, toc_digest: &str) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert(
        footer::MANIFEST_CHECKSUM_KEY.to_string(),
        toc_digest.to_string(),
    );
    a.insert(
        footer::MANIFEST_POSITION_KEY.to_string(),
        format!(
            "{}:{}:{}:{}",
            loc.offset,
            loc.compressed_len,
            loc.uncompressed_len,
            footer::MANIFEST_TYPE_CRFS
        ),
    );
    if let Some((o, l, u)) = loc.tarsplit {
        a.insert(
            footer::TARSPLIT_POSITION_KEY.to_string(),
            format!("{o}:{l}:{u}"),
        );
    }
    a
}
