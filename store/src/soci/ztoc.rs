//! The zTOC: SOCI's per-layer index of an unmodified tar+gzip blob, a flatbuffers document
//! (schema `ztoc/fbs/ztoc.fbs` of soci-snapshotter, see [`super::ztoc_fbs`]) holding the
//! layer's file table (tar headers with the uncompressed offset of each file's data) and
//! its zran checkpoints (the gzip zinfo blob, see [`super::zinfo`]) with the sha256 of each
//! span's compressed bytes.
//!
//! [`Ztoc::parse`] refuses a zTOC that lies: checkpoints past the blob, spans that overlap
//! or run backwards, span digests that are not sha256 digests or do not match the
//! checkpoint count, files past the uncompressed stream, sizes that overflow. What it
//! accepts can still fail per span (a checkpoint that does not inflate, bytes that do not
//! hash to the span digest): [`Ztoc::read_span`] checks both before returning a byte.

use sha2::{Digest, Sha256};

use super::zinfo::{Zinfo, ZinfoVersion};
use super::zran::{self, SpanIndex};
use super::ztoc_fbs as fbs;
use crate::chunked::footer::is_sha256_digest;
use crate::{Result, StoreError};

/// The zTOC version soci-snapshotter writes and reads (its only one).
pub const ZTOC_VERSION: &str = "0.9";
/// `build_tool_identifier` of zTOCs skiff writes.
pub const BUILD_TOOL: &str = concat!("skiff ", env!("CARGO_PKG_VERSION"));
/// soci-snapshotter's default span size (4 MiB of uncompressed data between checkpoints);
/// skiff's too, see docs/formats.md for the measurement.
pub const DEFAULT_SPAN_SIZE: u64 = 4 << 20;
/// Largest zTOC document skiff reads: a checkpoint costs 32 KiB, so this allows ~2000
/// spans (8 GiB of layer at the default span size).
pub const MAX_ZTOC_SIZE: u64 = 64 << 20;

/// One tar entry of the layer, as the zTOC records it (Go's `tar.Header` fields).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileMetadata {
    /// The tar name, bytes as in the archive.
    pub name: Vec<u8>,
    /// `reg`, `dir`, `symlink`, `hardlink`, `char`, `block` or `fifo`.
    pub kind: String,
    /// Offset of the file's data in the uncompressed tar stream.
    pub uncompressed_offset: u64,
    pub uncompressed_size: u64,
    pub linkname: Vec<u8>,
    /// The tar header's mode field.
    pub mode: i64,
    pub uid: u32,
    pub gid: u32,
    pub uname: String,
    pub gname: String,
    /// RFC 3339 with sub-second digits when present (Go's `time.Time.MarshalText`).
    pub mod_time: String,
    pub dev_major: i64,
    pub dev_minor: i64,
    /// The entry's PAX records (the schema calls them xattrs), sorted by key.
    pub pax_records: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The file types a zTOC may carry.
pub const FILE_TYPES: &[&str] = &["reg", "dir", "symlink", "hardlink", "char", "block", "fifo"];

/// A decoded and checked zTOC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ztoc {
    pub version: String,
    pub build_tool_identifier: String,
    /// Size of the layer blob (the gzip stream) in bytes.
    pub compressed_archive_size: u64,
    /// Size of the tar stream in bytes.
    pub uncompressed_archive_size: u64,
    pub files: Vec<FileMetadata>,
    /// The checkpoints; span `i` starts at checkpoint `i`.
    pub zinfo: Zinfo,
    /// `sha256:<hex>` of each span's compressed bytes ([`SpanIndex::span_range`]).
    pub span_digests: Vec<String>,
}

fn bad(layer: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidZtoc {
        layer: layer.to_string(),
        reason: reason.into(),
    }
}

fn non_negative(layer: &str, what: &str, v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| bad(layer, format!("{what} is {v}")))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Ztoc {
    /// Decodes and checks the zTOC `bytes` of layer `layer` (`sha256:<hex>`, for errors).
    /// Errors: [`StoreError::InvalidZtoc`] naming what is wrong.
    pub fn parse(layer: &str, bytes: &[u8]) -> Result<Ztoc> {
        if bytes.len() as u64 > MAX_ZTOC_SIZE {
            return Err(bad(layer, format!("{} bytes over the cap", bytes.len())));
        }
        let root = fbs::root(bytes).map_err(|e| bad(layer, format!("flatbuffers: {e}")))?;
        let info = root
            .compression_info()
            .ok_or_else(|| bad(layer, "no compression_info"))?;
        if info.compression_algorithm() != fbs::ALGORITHM_GZIP {
            return Err(bad(
                layer,
                format!(
                    "compression algorithm {} (only gzip is served)",
                    info.compression_algorithm()
                ),
            ));
        }
        let zinfo = Zinfo::parse(info.checkpoints()).map_err(|e| bad(layer, e))?;
        let files = root
            .toc()
            .ok_or_else(|| bad(layer, "no toc"))?
            .metadata()
            .map(|f| {
                let mut pax_records: Vec<(Vec<u8>, Vec<u8>)> = f
                    .xattrs()
                    .map(|x| (x.key().to_vec(), x.value().to_vec()))
                    .collect();
                pax_records.sort();
                let name = lossy(f.name());
                Ok(FileMetadata {
                    name: f.name().to_vec(),
                    kind: f.type_().to_string(),
                    uncompressed_offset: non_negative(layer, &name, f.uncompressed_offset())?,
                    uncompressed_size: non_negative(layer, &name, f.uncompressed_size())?,
                    linkname: f.linkname().to_vec(),
                    mode: f.mode(),
                    uid: f.uid(),
                    gid: f.gid(),
                    uname: f.uname().to_string(),
                    gname: f.gname().to_string(),
                    mod_time: f.mod_time().to_string(),
                    dev_major: f.devmajor(),
                    dev_minor: f.devminor(),
                    pax_records,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let z = Ztoc {
            version: root.version().to_string(),
            build_tool_identifier: root.build_tool_identifier().to_string(),
            compressed_archive_size: non_negative(
                layer,
                "compressed_archive_size",
                root.compressed_archive_size(),
            )?,
            uncompressed_archive_size: non_negative(
                layer,
                "uncompressed_archive_size",
                root.uncompressed_archive_size(),
            )?,
            files,
            span_digests: info.span_digests().map(str::to_string).collect(),
            zinfo,
        };
        if i64::from(info.max_span_id()) + 1 != z.zinfo.checkpoints.len() as i64 {
            return Err(bad(
                layer,
                format!(
                    "max_span_id {} for {} checkpoints",
                    info.max_span_id(),
                    z.zinfo.checkpoints.len()
                ),
            ));
        }
        z.check(layer)?;
        Ok(z)
    }

    /// The checks [`Ztoc::parse`] makes beyond decoding.
    fn check(&self, layer: &str) -> Result<()> {
        if self.version != ZTOC_VERSION {
            return Err(bad(layer, format!("zTOC version {:?}", self.version)));
        }
        let cps = &self.zinfo.checkpoints;
        if self.span_digests.len() != cps.len() {
            return Err(bad(
                layer,
                format!(
                    "{} span digests for {} spans",
                    self.span_digests.len(),
                    cps.len()
                ),
            ));
        }
        if let Some(d) = self.span_digests.iter().find(|d| !is_sha256_digest(d)) {
            return Err(bad(layer, format!("span digest {d:?}")));
        }
        if cps[0].uncompressed_offset != 0 {
            return Err(bad(layer, "the first span does not start the stream"));
        }
        for (i, c) in cps.iter().enumerate() {
            if c.bits > 0 && c.compressed_offset == 0 {
                return Err(bad(layer, format!("span {i} has bits before the blob")));
            }
            if c.compressed_offset >= self.compressed_archive_size {
                return Err(bad(
                    layer,
                    format!(
                        "span {i} starts at {} past the blob's {} bytes",
                        c.compressed_offset, self.compressed_archive_size
                    ),
                ));
            }
            if c.uncompressed_offset > self.uncompressed_archive_size {
                return Err(bad(
                    layer,
                    format!("span {i} starts past the uncompressed stream"),
                ));
            }
            if let Some(p) = i.checked_sub(1).map(|p| &cps[p]) {
                if c.compressed_offset <= p.compressed_offset
                    || c.uncompressed_offset <= p.uncompressed_offset
                {
                    return Err(bad(layer, format!("span {i} overlaps span {}", i - 1)));
                }
            }
        }
        for f in &self.files {
            let name = lossy(&f.name);
            if !FILE_TYPES.contains(&f.kind.as_str()) {
                return Err(bad(layer, format!("{name}: file type {:?}", f.kind)));
            }
            let end = f.uncompressed_offset.checked_add(f.uncompressed_size);
            if end.is_none_or(|e| e > self.uncompressed_archive_size) {
                return Err(bad(
                    layer,
                    format!("{name}: data past the uncompressed stream"),
                ));
            }
        }
        Ok(())
    }

    /// Serializes to the flatbuffers document (deterministic).
    pub fn to_bytes(&self) -> Vec<u8> {
        let files = self
            .files
            .iter()
            .map(|f| fbs::FileMetadataArgs {
                name: &f.name,
                type_: &f.kind,
                uncompressed_offset: f.uncompressed_offset as i64,
                uncompressed_size: f.uncompressed_size as i64,
                linkname: &f.linkname,
                mode: f.mode,
                uid: f.uid,
                gid: f.gid,
                uname: &f.uname,
                gname: &f.gname,
                mod_time: &f.mod_time,
                devmajor: f.dev_major,
                devminor: f.dev_minor,
                xattrs: f
                    .pax_records
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_slice()))
                    .collect(),
            })
            .collect();
        let checkpoints = self.zinfo.to_bytes();
        fbs::write(&fbs::ZtocArgs {
            version: &self.version,
            build_tool_identifier: &self.build_tool_identifier,
            compressed_archive_size: self.compressed_archive_size as i64,
            uncompressed_archive_size: self.uncompressed_archive_size as i64,
            files,
            compression_algorithm: fbs::ALGORITHM_GZIP,
            max_span_id: self.zinfo.checkpoints.len() as i32 - 1,
            span_digests: self.span_digests.iter().map(String::as_str).collect(),
            checkpoints: &checkpoints,
        })
    }

    /// The checkpoints as a [`SpanIndex`] over the blob, to locate and inflate spans.
    pub fn span_index(&self) -> SpanIndex {
        SpanIndex {
            span_size: self.zinfo.span_size,
            checkpoints: self.zinfo.checkpoints.clone(),
            compressed_size: self.compressed_archive_size,
            uncompressed_size: self.uncompressed_archive_size,
        }
    }

    /// The span holding uncompressed offset `off` (the last span for offsets at or past
    /// the end).
    pub fn span_of(&self, off: u64) -> usize {
        self.zinfo
            .checkpoints
            .partition_point(|c| c.uncompressed_offset <= off)
            .saturating_sub(1)
    }

    /// Checks span `i`'s compressed bytes (exactly [`SpanIndex::span_range`] of the blob)
    /// against its digest, then inflates them from the span's checkpoint. Errors:
    /// [`StoreError::DigestMismatch`] or [`StoreError::InvalidZtoc`] (the checkpoint does
    /// not inflate to the span's length); never unverified bytes.
    pub fn read_span(
        &self,
        layer: &str,
        spans: &SpanIndex,
        i: usize,
        compressed: &[u8],
    ) -> Result<Vec<u8>> {
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(compressed)));
        if actual != self.span_digests[i] {
            return Err(StoreError::DigestMismatch {
                what: format!("span {i} of layer {layer} (zTOC span digest)"),
                expected: self.span_digests[i].clone(),
                actual,
            });
        }
        spans
            .inflate_span(i, compressed)
            .map_err(|e| bad(layer, format!("span {i}: {e}")))
    }
}

impl Ztoc {
    /// The spans holding bytes `lo..hi` of the uncompressed stream (at least one).
    pub fn spans_of(&self, lo: u64, hi: u64) -> std::ops::RangeInclusive<usize> {
        self.span_of(lo)..=self.span_of(hi.saturating_sub(1).max(lo))
    }

    /// The data of `file`, read span by span: `fetch(range)` returns bytes `range` of the
    /// blob (a range read), each span is verified and inflated by [`Ztoc::read_span`].
    pub fn extract(
        &self,
        layer: &str,
        file: &FileMetadata,
        mut fetch: impl FnMut(std::ops::Range<u64>) -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let spans = self.span_index();
        let lo = file.uncompressed_offset;
        let hi = lo + file.uncompressed_size;
        let mut out = Vec::with_capacity(file.uncompressed_size as usize);
        for i in self.spans_of(lo, hi) {
            let data = self.read_span(layer, &spans, i, &fetch(spans.span_range(i))?)?;
            let start = spans.checkpoints[i].uncompressed_offset;
            let a = lo.max(start) - start;
            let b = (hi.min(start + data.len() as u64) - start).max(a);
            out.extend_from_slice(&data[a as usize..b as usize]);
        }
        if out.len() as u64 != file.uncompressed_size {
            return Err(bad(
                layer,
                format!(
                    "{}: spans hold {} of its {} bytes",
                    lossy(&file.name),
                    out.len(),
                    file.uncompressed_size
                ),
            ));
        }
        Ok(out)
    }
}

/// Builds the zTOC of the tar+gzip blob `gz` (layer `layer`, for errors) with spans of at
/// least `span_size` uncompressed bytes: one inflate pass for the checkpoints, one for the
/// file table. Errors: [`StoreError::InvalidZtoc`] when the blob is not one gzip member
/// holding a tar of the entry types a zTOC can carry.
pub fn build(layer: &str, gz: &[u8], span_size: u64) -> Result<Ztoc> {
    let index = zran::build_index(gz, span_size).map_err(|e| bad(layer, e))?;
    let span_digests = (0..index.checkpoints.len())
        .map(|i| {
            let r = index.span_range(i);
            format!(
                "sha256:{}",
                hex::encode(Sha256::digest(&gz[r.start as usize..r.end as usize]))
            )
        })
        .collect();
    let files = file_table(layer, gz)?;
    let z = Ztoc {
        version: ZTOC_VERSION.to_string(),
        build_tool_identifier: BUILD_TOOL.to_string(),
        compressed_archive_size: gz.len() as u64,
        uncompressed_archive_size: index.uncompressed_size,
        files,
        zinfo: Zinfo {
            version: ZinfoVersion::V2,
            span_size,
            checkpoints: index.checkpoints,
        },
        span_digests,
    };
    z.check(layer)?;
    Ok(z)
}

/// Go's `time.Time.MarshalText` of a tar mtime: RFC 3339 in UTC, fraction digits only
/// when there is a fraction (trailing zeros dropped).
fn mod_time(secs: i64, nanos: u32) -> String {
    let t = chrono::DateTime::from_timestamp(secs, nanos).unwrap_or_default();
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// `secs[.frac]` of a PAX `mtime` record.
fn pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let nanos = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        format!("{digits:0<9}").parse().ok()?
    };
    Some((secs.parse().ok()?, nanos))
}

fn file_table(layer: &str, gz: &[u8]) -> Result<Vec<FileMetadata>> {
    use tar::EntryType as T;
    let terr = |e: std::io::Error| bad(layer, format!("layer tar: {e}"));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut files = Vec::new();
    for entry in archive.entries().map_err(terr)? {
        let mut entry = entry.map_err(terr)?;
        let h = entry.header().clone();
        let name = entry.path_bytes().into_owned();
        let kind = match h.entry_type() {
            T::Regular | T::Continuous => "reg",
            T::Directory => "dir",
            T::Symlink => "symlink",
            T::Link => "hardlink",
            T::Char => "char",
            T::Block => "block",
            T::Fifo => "fifo",
            other => {
                return Err(bad(
                    layer,
                    format!("{}: unsupported tar entry type {other:?}", lossy(&name)),
                ))
            }
        };
        let mut pax_records: Vec<(Vec<u8>, Vec<u8>)> = match entry.pax_extensions().map_err(terr)? {
            Some(exts) => exts
                .map(|e| e.map(|e| (e.key_bytes().to_vec(), e.value_bytes().to_vec())))
                .collect::<std::io::Result<_>>()
                .map_err(terr)?,
            None => Vec::new(),
        };
        pax_records.sort();
        let (secs, nanos) = pax_records
            .iter()
            .find(|(k, _)| k == b"mtime")
            .and_then(|(_, v)| pax_time(v))
            .unwrap_or((h.mtime().unwrap_or(0) as i64, 0));
        files.push(FileMetadata {
            linkname: entry
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default(),
            name,
            kind: kind.to_string(),
            uncompressed_offset: entry.raw_file_position(),
            uncompressed_size: entry.size(),
            mode: i64::from(h.mode().unwrap_or(0)),
            uid: h.uid().unwrap_or(0) as u32,
            gid: h.gid().unwrap_or(0) as u32,
            uname: lossy(h.username_bytes().unwrap_or_default()),
            gname: lossy(h.groupname_bytes().unwrap_or_default()),
            mod_time: mod_time(secs, nanos),
            dev_major: i64::from(h.device_major().ok().flatten().unwrap_or(0)),
            dev_minor: i64::from(h.device_minor().ok().flatten().unwrap_or(0)),
            pax_records,
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const LAYER: &str = "sha256:test";

    /// A tar+gzip layer: a directory, a symlink, two files of poorly compressible bytes.
    fn layer() -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Half-random bytes: compressible a little, so deflate makes blocks.
                    (x as u8) & 0x3f
                })
                .collect()
        };
        let files = vec![
            ("etc/big".to_string(), noise(700 << 10)),
            ("etc/small".to_string(), b"hello zTOC\n".to_vec()),
            ("usr/lib/blob".to_string(), noise(300 << 10)),
        ];
        let mut t = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        t.append_data(&mut h, "etc/", &[][..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        t.append_link(&mut h, "etc/link", "small").unwrap();
        for (name, data) in &files {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_uid(1000);
            h.set_mtime(1_700_000_001);
            h.set_size(data.len() as u64);
            t.append_data(&mut h, name, &data[..]).unwrap();
        }
        let tar = t.into_inner().unwrap();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&tar).unwrap();
        (e.finish().unwrap(), files)
    }

    fn read_file(z: &Ztoc, gz: &[u8], f: &FileMetadata) -> Result<Vec<u8>> {
        z.extract(LAYER, f, |r| {
            Ok(gz[r.start as usize..r.end as usize].to_vec())
        })
    }

    #[test]
    fn built_ztoc_round_trips_and_serves_every_file() {
        let (gz, files) = layer();
        let z = build(LAYER, &gz, 128 << 10).unwrap();
        assert!(z.zinfo.checkpoints.len() >= 5, "{:?}", z.zinfo.checkpoints);
        assert_eq!(z.span_digests.len(), z.zinfo.checkpoints.len());
        assert_eq!(z.compressed_archive_size, gz.len() as u64);
        let kinds: Vec<_> = z
            .files
            .iter()
            .map(|f| (lossy(&f.name), f.kind.clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("etc/", "dir"),
                ("etc/link", "symlink"),
                ("etc/big", "reg"),
                ("etc/small", "reg"),
                ("usr/lib/blob", "reg"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert_eq!(z.files[1].linkname, b"small");
        assert_eq!(z.files[2].mod_time, "2023-11-14T22:13:21Z");
        assert_eq!(z.files[2].uid, 1000);
        let bytes = z.to_bytes();
        assert_eq!(bytes, z.to_bytes(), "deterministic");
        let back = Ztoc::parse(LAYER, &bytes).unwrap();
        assert_eq!(back, z);
        for (name, data) in &files {
            let f = back.files.iter().find(|f| lossy(&f.name) == *name).unwrap();
            assert!(read_file(&back, &gz, f).unwrap() == *data, "{name}");
        }
    }

    #[test]
    fn a_span_whose_bytes_changed_is_refused() {
        let (gz, _) = layer();
        let z = build(LAYER, &gz, 128 << 10).unwrap();
        let spans = z.span_index();
        let r = spans.span_range(2);
        let mut bad = gz[r.start as usize..r.end as usize].to_vec();
        bad[100] ^= 1;
        let e = z.read_span(LAYER, &spans, 2, &bad).unwrap_err();
        assert!(matches!(e, StoreError::DigestMismatch { .. }), "{e}");
        // A checkpoint moved off its block boundary, digests recomputed to match: the span
        // does not inflate to its length, or the window makes other bytes, never silently.
        let mut lie = z.clone();
        lie.zinfo.checkpoints[2].compressed_offset += 3;
        let r = lie.span_index().span_range(2);
        let moved = &gz[r.start as usize..r.end as usize];
        lie.span_digests[2] = format!("sha256:{}", hex::encode(Sha256::digest(moved)));
        let lie = Ztoc::parse(LAYER, &lie.to_bytes()).unwrap();
        let e = lie
            .read_span(LAYER, &lie.span_index(), 2, moved)
            .unwrap_err();
        assert!(matches!(e, StoreError::InvalidZtoc { .. }), "{e}");
    }

    fn refused(z: &Ztoc, want: &str) {
        match Ztoc::parse(LAYER, &z.to_bytes()) {
            Err(StoreError::InvalidZtoc { reason, .. }) => {
                assert!(reason.contains(want), "{reason:?} lacks {want:?}")
            }
            other => panic!("expected refusal ({want}), got {other:?}"),
        }
    }

    #[test]
    fn lying_ztocs_are_refused() {
        let (gz, _) = layer();
        let good = build(LAYER, &gz, 128 << 10).unwrap();
        let mut z = good.clone();
        z.zinfo.checkpoints[3].compressed_offset = gz.len() as u64 + 10;
        refused(&z, "past the blob");
        let mut z = good.clone();
        z.zinfo.checkpoints[3].compressed_offset = z.zinfo.checkpoints[2].compressed_offset;
        refused(&z, "overlaps span 2");
        let mut z = good.clone();
        z.zinfo.checkpoints[3].uncompressed_offset = 1;
        refused(&z, "overlaps span 2");
        let mut z = good.clone();
        z.zinfo.checkpoints[0].uncompressed_offset = 5;
        refused(&z, "first span");
        let mut z = good.clone();
        z.span_digests.pop();
        refused(&z, "span digests for");
        let mut z = good.clone();
        z.span_digests[1] = "md5:00".into();
        refused(&z, "span digest \"md5:00\"");
        let mut z = good.clone();
        z.files[2].uncompressed_size = i64::MAX as u64;
        refused(&z, "etc/big: data past");
        let mut z = good.clone();
        z.files[0].kind = "socket".into();
        refused(&z, "file type");
        let mut z = good.clone();
        z.version = "1.0".into();
        refused(&z, "version");
        let mut z = good.clone();
        z.compressed_archive_size = u64::MAX;
        refused(&z, "compressed_archive_size is -1");
        let e = Ztoc::parse(LAYER, b"not a flatbuffer").unwrap_err();
        assert!(e.to_string().contains("flatbuffers"), "{e}");
        let e = build(LAYER, b"\x1f\x8b not gzip", 1 << 20).unwrap_err();
        assert!(matches!(e, StoreError::InvalidZtoc { .. }), "{e}");
    }

    #[test]
    fn mod_time_is_gos_rfc3339() {
        assert_eq!(mod_time(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            mod_time(1_700_000_000, 500_000_000),
            "2023-11-14T22:13:20.5Z"
        );
        assert_eq!(
            pax_time(b"1700000000.25"),
            Some((1_700_000_000, 250_000_000))
        );
        assert_eq!(pax_time(b"x"), None);
    }
}
