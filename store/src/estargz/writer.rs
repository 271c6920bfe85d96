//! Writing eStargz blobs from tar streams, as stargz-snapshotter's `estargz.Writer` does:
//! every regular file's payload (each chunk of a large one) starts a gzip member of its own,
//! tar headers ride in the member before; then the TOC member (a tar holding
//! `stargz.index.json` and the end-of-archive blocks) and the 51-byte footer. Decompressed,
//! the blob is the input tar (without its end-of-archive blocks) followed by the TOC entry:
//! that is the layer's diff_id.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use base64::Engine;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use super::footer::footer_bytes;
use super::toc::{NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_TAR_NAME};
use super::{TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION};
use crate::chunked::{Toc, TocEntry};
use crate::{Result, StoreError};

/// stargz-snapshotter's default chunk size (4 MiB).
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;
/// The landmark files' one byte of content.
const LANDMARK_CONTENTS: u8 = 0xf;

/// Which landmark the writer adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landmark {
    None,
    /// `.no.prefetch.landmark` first: the image asks for no prefetch.
    NoPrefetch,
    /// `.prefetch.landmark` after the first `n` tar entries (put the files a container
    /// needs first at the front of the tar): they form the prefetch region.
    PrefetchAfter(usize),
}

#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Largest payload per gzip member (bytes, > 0).
    pub chunk_size: u64,
    pub level: flate2::Compression,
    pub landmark: Landmark,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            level: flate2::Compression::best(),
            landmark: Landmark::None,
        }
    }
}

/// A written eStargz layer.
#[derive(Debug, Clone)]
pub struct EstargzLayer {
    /// `sha256:<hex>` of the blob.
    pub digest: String,
    /// `sha256:<hex>` of the decompressed blob (the tar, TOC entry included).
    pub diff_id: String,
    pub size: u64,
    /// `sha256:<hex>` of the TOC JSON.
    pub toc_digest: String,
    /// Blob offset of the TOC member.
    pub toc_offset: u64,
    /// The layer descriptor's annotations: the TOC digest and the uncompressed size.
    pub annotations: BTreeMap<String, String>,
}

/// The compressed output: counted and hashed, members written whole.
struct Blob<'a, W: Write> {
    out: &'a mut W,
    n: u64,
    hash: Sha256,
    member: Option<GzEncoder<Vec<u8>>>,
    level: flate2::Compression,
    diff: Sha256,
    uncompressed: u64,
}

impl<W: Write> Blob<'_, W> {
    fn io(e: std::io::Error) -> StoreError {
        StoreError::InvalidIndex {
            layer: "estargz writer".into(),
            reason: e.to_string(),
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        let level = self.level;
        let m = self
            .member
            .get_or_insert_with(|| GzEncoder::new(Vec::new(), level));
        m.write_all(data).map_err(Self::io)?;
        self.diff.update(data);
        self.uncompressed += data.len() as u64;
        Ok(())
    }

    fn raw(&mut self, data: &[u8]) -> Result<()> {
        self.out.write_all(data).map_err(Self::io)?;
        self.hash.update(data);
        self.n += data.len() as u64;
        Ok(())
    }

    /// Ends the open member, so the next byte written starts a new one at `self.n`.
    fn close(&mut self) -> Result<()> {
        if let Some(m) = self.member.take() {
            let bytes = m.finish().map_err(Self::io)?;
            self.raw(&bytes)?;
        }
        Ok(())
    }
}

fn bad(name: &str, reason: impl Into<String>) -> StoreError {
    StoreError::BadLayerEntry {
        layer: "estargz input".into(),
        path: name.to_string(),
        reason: reason.into(),
    }
}

fn modtime(secs: u64) -> Option<String> {
    if secs == 0 {
        return None;
    }
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A ustar header of a regular file of `size` bytes.
fn reg_header(name: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).expect("a short ASCII name");
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    h
}

/// Writes `tar` as an eStargz blob to `out`. Non-UTF-8 names and sparse files are refused
/// (the TOC's JSON cannot carry the former exactly).
pub fn write_estargz(
    tar: &[u8],
    out: &mut impl Write,
    opts: &WriterOptions,
) -> Result<EstargzLayer> {
    if opts.chunk_size == 0 {
        return Err(bad("", "chunk size 0"));
    }
    let mut blob = Blob {
        out,
        n: 0,
        hash: Sha256::new(),
        member: None,
        level: opts.level,
        diff: Sha256::new(),
        uncompressed: 0,
    };
    let mut entries: Vec<TocEntry> = Vec::new();
    let landmark = |blob: &mut Blob<_>, entries: &mut Vec<TocEntry>, name: &str| -> Result<()> {
        blob.write(reg_header(name, 1).as_bytes())?;
        blob.close()?;
        let offset = blob.n;
        blob.write(&[LANDMARK_CONTENTS])?;
        blob.write(&[0u8; 511])?;
        entries.push(TocEntry {
            typ: "reg".into(),
            name: name.into(),
            mode: 0o644,
            size: 1,
            offset: offset as i64,
            digest: sha(&[LANDMARK_CONTENTS]),
            chunk_digest: sha(&[LANDMARK_CONTENTS]),
            ..Default::default()
        });
        Ok(())
    };
    if opts.landmark == Landmark::NoPrefetch {
        landmark(&mut blob, &mut entries, NO_PREFETCH_LANDMARK)?;
    }
    let mut archive = tar::Archive::new(tar);
    let mut prev_end = 0u64;
    let iter = archive
        .entries()
        .map_err(|e| bad("", format!("reading the tar: {e}")))?;
    for (k, entry) in iter.enumerate() {
        if opts.landmark == Landmark::PrefetchAfter(k) {
            landmark(&mut blob, &mut entries, PREFETCH_LANDMARK)?;
        }
        let mut entry = entry.map_err(|e| bad("", format!("reading the tar: {e}")))?;
        let name = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|e| bad(&String::from_utf8_lossy(e.as_bytes()), "name is not UTF-8"))?;
        let start = entry.raw_file_position();
        let size = entry.size();
        let h = entry.header().clone();
        let header_start = prev_end;
        prev_end = start + size.div_ceil(512) * 512;
        // An input that was eStargz already: its TOC and landmarks are not carried over
        // (stargz-snapshotter's writer drops them too).
        let clean = crate::chunked::toc::normalize_name(&name).ok().flatten();
        if matches!(
            clean.as_deref(),
            Some(TOC_TAR_NAME | PREFETCH_LANDMARK | NO_PREFETCH_LANDMARK)
        ) {
            continue;
        }
        // Headers (PAX and GNU long-name blocks included) go into the open member as read.
        blob.write(&tar[header_start as usize..start as usize])?;
        // Unreadable numeric fields count as 0, as the zstd:chunked writer reads them.
        let mut e = TocEntry {
            name: name.clone(),
            mode: h.mode().unwrap_or(0) as i64,
            uid: h.uid().unwrap_or(0) as i64,
            gid: h.gid().unwrap_or(0) as i64,
            modtime: modtime(h.mtime().unwrap_or(0)),
            ..Default::default()
        };
        // PAX records override the header (uid, gid, mtime in whole seconds) and carry
        // the xattrs.
        if let Some(pax) = entry
            .pax_extensions()
            .map_err(|e| bad(&name, e.to_string()))?
        {
            for ext in pax.flatten() {
                let Ok(key) = ext.key() else { continue };
                let value = ext.value().ok();
                let int = || value.and_then(|v| v.split('.').next()?.parse::<u64>().ok());
                match key {
                    "uid" => e.uid = int().ok_or_else(|| bad(&name, "bad PAX uid"))? as i64,
                    "gid" => e.gid = int().ok_or_else(|| bad(&name, "bad PAX gid"))? as i64,
                    "mtime" => {
                        e.modtime = modtime(int().ok_or_else(|| bad(&name, "bad PAX mtime"))?)
                    }
                    _ => {
                        if let Some(k) = key.strip_prefix("SCHILY.xattr.") {
                            e.xattrs.insert(
                                k.to_string(),
                                base64::engine::general_purpose::STANDARD.encode(ext.value_bytes()),
                            );
                        }
                    }
                }
            }
        }
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8(l.into_owned()))
            .transpose()
            .map_err(|_| bad(&name, "link target is not UTF-8"))?;
        let link = || {
            link.clone()
                .ok_or_else(|| bad(&name, "link without a target"))
        };
        use tar::EntryType as T;
        match h.entry_type() {
            T::Regular | T::Continuous => e.typ = "reg".into(),
            T::Directory => e.typ = "dir".into(),
            T::Symlink => {
                e.typ = "symlink".into();
                e.link_name = link()?;
            }
            T::Link => {
                e.typ = "hardlink".into();
                e.link_name = link()?;
            }
            T::Char | T::Block => {
                e.typ = if h.entry_type() == T::Char {
                    "char"
                } else {
                    "block"
                }
                .into();
                e.dev_major = h.device_major().ok().flatten().unwrap_or(0) as i64;
                e.dev_minor = h.device_minor().ok().flatten().unwrap_or(0) as i64;
            }
            T::Fifo => e.typ = "fifo".into(),
            T::XGlobalHeader => {
                // Kept in the stream, not a file.
                blob.write(&tar[start as usize..prev_end as usize])?;
                continue;
            }
            t => return Err(bad(&name, format!("unsupported tar entry type {t:?}"))),
        }
        if e.typ != "reg" || size == 0 {
            entries.push(e);
            continue;
        }
        e.size = size as i64;
        let mut file_hash = Sha256::new();
        let mut written = 0u64;
        let mut buf = vec![0u8; opts.chunk_size.min(size) as usize];
        while written < size {
            let n = opts.chunk_size.min(size - written);
            let chunk = &mut buf[..n as usize];
            entry
                .read_exact(chunk)
                .map_err(|err| bad(&name, format!("reading the payload: {err}")))?;
            blob.close()?;
            let mut c = if written == 0 {
                std::mem::take(&mut e)
            } else {
                TocEntry {
                    typ: "chunk".into(),
                    name: name.clone(),
                    chunk_offset: written as i64,
                    ..Default::default()
                }
            };
            if n == opts.chunk_size && size > n {
                c.chunk_size = n as i64;
            }
            c.offset = blob.n as i64;
            c.chunk_digest = sha(chunk);
            blob.write(chunk)?;
            file_hash.update(&*chunk);
            entries.push(c);
            written += n;
        }
        let first = entries.len() - size.div_ceil(opts.chunk_size) as usize;
        entries[first].digest = format!("sha256:{}", hex::encode(file_hash.finalize()));
        let pad = (prev_end - start - size) as usize;
        blob.write(&vec![0u8; pad])?;
    }
    blob.close()?;
    // The TOC member: its own tar, closed with the end-of-archive blocks.
    let toc_offset = blob.n;
    let toc = Toc {
        version: 1,
        entries,
        tar_split_digest: String::new(),
    };
    let json = serde_json::to_vec_pretty(&toc).map_err(|e| bad(TOC_TAR_NAME, e.to_string()))?;
    let mut toc_tar = reg_header(TOC_TAR_NAME, json.len() as u64)
        .as_bytes()
        .to_vec();
    toc_tar.extend_from_slice(&json);
    toc_tar.resize(toc_tar.len().div_ceil(512) * 512 + 1024, 0);
    blob.write(&toc_tar)?;
    blob.close()?;
    blob.raw(&footer_bytes(toc_offset))?;
    let toc_digest = sha(&json);
    let mut annotations = BTreeMap::new();
    annotations.insert(TOC_DIGEST_ANNOTATION.to_string(), toc_digest.clone());
    annotations.insert(
        UNCOMPRESSED_SIZE_ANNOTATION.to_string(),
        blob.uncompressed.to_string(),
    );
    Ok(EstargzLayer {
        digest: format!("sha256:{}", hex::encode(blob.hash.finalize())),
        diff_id: format!("sha256:{}", hex::encode(blob.diff.finalize())),
        size: blob.n,
        toc_digest,
        toc_offset,
        annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunked::{BlobSource, FileBlobSource, RetryPolicy};
    use crate::lazy_format::{LayerDescriptor, LazyFormat, Opened};

    fn sample_tar() -> (Vec<u8>, Vec<u8>) {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, "bin/", std::io::empty()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(big.len() as u64);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, "bin/big", &big[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_link(&mut h, "bin/sh", "big").unwrap();
        (b.into_inner().unwrap(), big)
    }

    #[test]
    fn blob_decompresses_to_the_tar_plus_toc_and_opens_lazily() {
        let (tar, big) = sample_tar();
        let opts = WriterOptions {
            chunk_size: 100_000,
            landmark: Landmark::PrefetchAfter(2),
            ..Default::default()
        };
        let mut blob = Vec::new();
        let layer = write_estargz(&tar, &mut blob, &opts).unwrap();
        assert_eq!(layer.size, blob.len() as u64);
        assert_eq!(layer.digest, sha(&blob));
        let mut plain = Vec::new();
        flate2::read::MultiGzDecoder::new(&blob[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(layer.diff_id, sha(&plain));
        // Every header reads back (numeric fields written, as Go's tar writer does).
        for e in tar::Archive::new(&plain[..]).entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert!(
                h.uid().is_ok() && h.gid().is_ok() && h.mtime().is_ok(),
                "{:?}",
                e.path()
            );
        }
        // The decompressed blob is a tar with the files, the landmark, then the TOC.
        let mut a = tar::Archive::new(&plain[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "bin/",
                "bin/big",
                ".prefetch.landmark",
                "bin/sh",
                TOC_TAR_NAME
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("blob");
        std::fs::write(&p, &blob).unwrap();
        let src = FileBlobSource::open(&p, &layer.digest).unwrap();
        let desc = LayerDescriptor {
            digest: layer.digest.clone(),
            media_type: crate::layer::compression::OCI_LAYER_GZIP.into(),
            size: src.size(),
            annotations: layer.annotations.clone(),
        };
        assert!(super::super::Estargz.claims(&desc));
        let Opened::Lazy(l) = super::super::Estargz
            .open(&src, &desc, &RetryPolicy::default())
            .unwrap()
        else {
            panic!("not lazy")
        };
        let names: Vec<String> = l.index.entries.iter().map(|e| e.path.to_string()).collect();
        assert_eq!(names, ["bin", "bin/big", "bin/sh"]);
        let f = &l.index.entries[1];
        assert_eq!(f.chunks.len(), 3);
        assert_eq!(l.prefetch.len(), 3, "bin/big precedes the landmark");
        // Every chunk decodes from its blob range to the file's bytes.
        for c in &f.chunks {
            let crate::ChunkLocation::Compressed {
                blob_offset,
                blob_len,
                codec,
                inner_offset,
                ..
            } = &c.location
            else {
                panic!()
            };
            let bytes = &blob[*blob_offset as usize..(*blob_offset + *blob_len) as usize];
            let data = codec.decode(bytes, *inner_offset, c.len).unwrap();
            let lo = c.file_offset as usize;
            assert_eq!(data, &big[lo..lo + c.len as usize]);
        }
        // Written again from its own decompressed tar: the old TOC and landmark are dropped.
        let mut again = Vec::new();
        let opts2 = WriterOptions {
            chunk_size: 100_000,
            ..Default::default()
        };
        let l2 = write_estargz(&plain, &mut again, &opts2).unwrap();
        let mut plain2 = Vec::new();
        flate2::read::MultiGzDecoder::new(&again[..])
            .read_to_end(&mut plain2)
            .unwrap();
        let names2: Vec<String> = tar::Archive::new(&plain2[..])
            .entries()
            .unwrap()
            .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
            .collect();
        assert_eq!(names2, ["bin/", "bin/big", "bin/sh", TOC_TAR_NAME]);
        assert_eq!(l2.diff_id, sha(&plain2));
        // A TOC digest that does not match is refused.
        let mut lying = desc.clone();
        lying
            .annotations
            .insert(TOC_DIGEST_ANNOTATION.into(), sha(b"other"));
        let err = super::super::Estargz
            .open(&src, &lying, &RetryPolicy::default())
            .unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    }
}
