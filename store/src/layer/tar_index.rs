//! Builds a [`LayerIndex`] from a layer tar's headers.
//!
//! Entry paths are normalised the way Docker extracts layers: a leading `/` is dropped, `.`
//! components vanish, `..` is resolved, and a relative path that climbs above the root is
//! refused (as Docker refuses a "breakout"). Sizes come from the tar reader, which fails
//! on a truncated stream, and payload offsets from the bytes actually consumed.

use std::collections::BTreeMap;
use std::io::Read;

use crate::layer_index::{ChunkLocation, ChunkRef, FileEntry, FileKind, LayerIndex};
use crate::layer_path::LayerPath;
use crate::{Result, StoreError};

/// Normalises a tar entry path (or hard link target), given as the tar's bytes. `None` means
/// the root itself. Names are bytes: nothing here needs them to be UTF-8.
pub fn normalize_path(layer: &str, raw: &[u8]) -> Result<Option<LayerPath>> {
    let absolute = raw.starts_with(b"/");
    let mut parts: Vec<&[u8]> = Vec::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() && !absolute {
                    return Err(StoreError::BadLayerEntry {
                        layer: layer.to_string(),
                        path: String::from_utf8_lossy(raw).into_owned(),
                        reason: "path escapes the layer root".to_string(),
                    });
                }
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        Ok(None)
    } else {
        Ok(Some(LayerPath::new(parts.join(&b'/'))))
    }
}

fn bad(layer: &str, path: &str, reason: impl Into<String>) -> StoreError {
    StoreError::BadLayerEntry {
        layer: layer.to_string(),
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// PAX records that override header fields, plus xattrs.
#[derive(Default)]
struct Pax {
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<(i64, u32)>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// Parses PAX `mtime` (`seconds[.fraction]`, possibly negative).
fn parse_pax_time(v: &str) -> Option<(i64, u32)> {
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos = 0u32;
    for (i, c) in frac.chars().take(9).enumerate() {
        nanos += c.to_digit(10)? * 10u32.pow(8 - i as u32);
    }
    Some((secs, nanos))
}

fn read_pax<R: Read>(layer: &str, path: &str, entry: &mut tar::Entry<'_, R>) -> Result<Pax> {
    let mut pax = Pax::default();
    let Some(exts) = entry
        .pax_extensions()
        .map_err(|e| bad(layer, path, format!("bad PAX header: {e}")))?
    else {
        return Ok(pax);
    };
    for ext in exts {
        let ext = ext.map_err(|e| bad(layer, path, format!("bad PAX record: {e}")))?;
        let Ok(key) = ext.key() else { continue };
        let value = ext.value_bytes();
        if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
            pax.xattrs.insert(name.to_string(), value.to_vec());
            continue;
        }
        let v = std::str::from_utf8(value).unwrap_or("");
        match key {
            "uid" => pax.uid = v.parse().ok(),
            "gid" => pax.gid = v.parse().ok(),
            "mtime" => pax.mtime = parse_pax_time(v),
            _ => {}
        }
    }
    Ok(pax)
}

/// Reads all headers of the tar `reader` (skipping payloads) into an index for `layer`.
/// Payload offsets are positions within the uncompressed tar stream.
pub fn index_tar<R: Read>(layer: &str, reader: R) -> Result<(LayerIndex, R)> {
    let mut archive = tar::Archive::new(reader);
    let mut entries = Vec::new();
    let iter = archive
        .entries()
        .map_err(|e| bad(layer, "", format!("cannot read tar: {e}")))?;
    for entry in iter {
        let mut entry = entry.map_err(|e| bad(layer, "", format!("cannot read tar entry: {e}")))?;
        let raw_bytes = entry.path_bytes().into_owned();
        // Shown in errors only; the index keeps the bytes.
        let raw_path = String::from_utf8_lossy(&raw_bytes).into_owned();
        let etype = entry.header().entry_type();
        let kind = match etype {
            tar::EntryType::Regular | tar::EntryType::Continuous => FileKind::Regular,
            tar::EntryType::Directory => FileKind::Directory,
            tar::EntryType::Symlink => FileKind::Symlink,
            tar::EntryType::Link => FileKind::Hardlink,
            tar::EntryType::Char => FileKind::CharDevice,
            tar::EntryType::Block => FileKind::BlockDevice,
            tar::EntryType::Fifo => FileKind::Fifo,
            tar::EntryType::XGlobalHeader => continue,
            other => {
                return Err(bad(
                    layer,
                    &raw_path,
                    format!("unsupported tar entry type {:?}", other.as_byte() as char),
                ))
            }
        };
        let Some(path) = normalize_path(layer, &raw_bytes)? else {
            // The root directory itself: its metadata is the mount's, not the layer's.
            continue;
        };
        let pax = read_pax(layer, &raw_path, &mut entry)?;
        let header = entry.header();
        let mode = header
            .mode()
            .map_err(|e| bad(layer, &raw_path, format!("bad mode: {e}")))?
            & 0o7777;
        let to_u32 = |v: u64, what: &str| {
            u32::try_from(v).map_err(|_| bad(layer, &raw_path, format!("{what} {v} out of range")))
        };
        let uid = to_u32(
            match pax.uid {
                Some(u) => u,
                None => header
                    .uid()
                    .map_err(|e| bad(layer, &raw_path, format!("bad uid: {e}")))?,
            },
            "uid",
        )?;
        let gid = to_u32(
            match pax.gid {
                Some(g) => g,
                None => header
                    .gid()
                    .map_err(|e| bad(layer, &raw_path, format!("bad gid: {e}")))?,
            },
            "gid",
        )?;
        let (mtime, mtime_nsec) = match pax.mtime {
            Some(t) => t,
            None => (
                header
                    .mtime()
                    .map_err(|e| bad(layer, &raw_path, format!("bad mtime: {e}")))?
                    as i64,
                0,
            ),
        };
        let (dev_major, dev_minor) = if matches!(kind, FileKind::CharDevice | FileKind::BlockDevice)
        {
            let major = header
                .device_major()
                .map_err(|e| bad(layer, &raw_path, format!("bad device major: {e}")))?
                .unwrap_or(0);
            let minor = header
                .device_minor()
                .map_err(|e| bad(layer, &raw_path, format!("bad device minor: {e}")))?
                .unwrap_or(0);
            (major, minor)
        } else {
            (0, 0)
        };
        let link_target = match kind {
            FileKind::Symlink | FileKind::Hardlink => {
                let raw = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad(layer, &raw_path, "link without a target"))?;
                if kind == FileKind::Hardlink {
                    normalize_path(layer, &raw)?
                        .ok_or_else(|| bad(layer, &raw_path, "hard link to the root"))?
                } else {
                    LayerPath::new(raw.into_owned())
                }
            }
            _ => LayerPath::default(),
        };
        let (size, chunks) = if kind == FileKind::Regular {
            let size = entry.size();
            let chunks = if size > 0 {
                vec![ChunkRef {
                    file_offset: 0,
                    len: size,
                    location: ChunkLocation::Local {
                        offset: entry.raw_file_position(),
                    },
                }]
            } else {
                Vec::new()
            };
            (size, chunks)
        } else {
            (0, Vec::new())
        };
        entries.push(FileEntry {
            path,
            kind,
            mode,
            uid,
            gid,
            size,
            mtime,
            mtime_nsec,
            link_target,
            dev_major,
            dev_minor,
            xattrs: pax.xattrs,
            chunks,
        });
    }
    Ok((
        LayerIndex {
            digest: layer.to_string(),
            entries,
        },
        archive.into_inner(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: &str = "sha256:layer";

    #[test]
    fn paths_are_normalised_like_docker() {
        let n = |p: &str| {
            normalize_path(L, p.as_bytes())
                .unwrap()
                .map(|p| p.display().into_owned())
        };
        assert_eq!(n("./etc/passwd").as_deref(), Some("etc/passwd"));
        assert_eq!(n("/etc//passwd").as_deref(), Some("etc/passwd"));
        assert_eq!(n("a/b/../c").as_deref(), Some("a/c"));
        assert_eq!(n("/../../etc").as_deref(), Some("etc"));
        assert_eq!(n("./"), None);
        assert_eq!(n("etc/.wh.foo").as_deref(), Some("etc/.wh.foo"));
        assert_eq!(
            normalize_path(L, b"./d\xff/caf\xe9.txt").unwrap().unwrap(),
            &b"d\xff/caf\xe9.txt"[..]
        );
        match normalize_path(L, b"a/../../etc/shadow") {
            Err(StoreError::BadLayerEntry { layer, path, .. }) => {
                assert_eq!(layer, L);
                assert_eq!(path, "a/../../etc/shadow");
            }
            r => panic!("expected refusal, got {r:?}"),
        }
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time("12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time("7"), Some((7, 0)));
        assert_eq!(parse_pax_time("x"), None);
    }

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    #[test]
    fn index_records_offsets_modes_and_links() {
        let data = tar_with(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(5);
            h.set_mode(0o4755);
            h.set_uid(7);
            h.set_gid(8);
            h.set_mtime(100);
            b.append_data(&mut h, "./bin/x", &b"hello"[..]).unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            b.append_link(&mut h, "bin/y", "./bin/x").unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            b.append_link(&mut h, "bin/z", "../x").unwrap();
        });
        let (idx, _) = index_tar(L, &data[..]).unwrap();
        let x = &idx.entries[0];
        assert_eq!(x.path, "bin/x");
        assert_eq!(x.mode, 0o4755);
        assert_eq!((x.uid, x.gid, x.mtime), (7, 8, 100));
        let ChunkLocation::Local { offset } = x.chunks[0].location else {
            panic!()
        };
        assert_eq!(&data[offset as usize..offset as usize + 5], b"hello");
        assert_eq!(idx.entries[1].kind, FileKind::Hardlink);
        assert_eq!(idx.entries[1].link_target, "bin/x");
        assert_eq!(idx.entries[2].kind, FileKind::Symlink);
        assert_eq!(idx.entries[2].link_target, "../x");
    }

    #[test]
    fn escaping_entries_and_truncation_are_refused() {
        let mut data = tar_with(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_size(3);
            h.set_entry_type(tar::EntryType::Regular);
            // `append_data` refuses `..`; write the name into the header directly.
            h.as_gnu_mut().unwrap().name[..10].copy_from_slice(b"../evil.sh");
            h.set_cksum();
            b.append(&h, &b"abc"[..]).unwrap();
        });
        assert!(matches!(
            index_tar(L, &data[..]),
            Err(StoreError::BadLayerEntry { .. })
        ));
        // A header promising more bytes than the stream has fails instead of indexing.
        data.truncate(600);
        let mut h = tar::Header::new_gnu();
        h.set_size(1 << 20);
        h.set_path("big").unwrap();
        h.set_cksum();
        let mut t = h.as_bytes().to_vec();
        t.extend_from_slice(&[1u8; 1024]);
        let r = index_tar(L, &t[..]);
        assert!(r.is_err(), "truncated tar must fail: {:?}", r.map(|x| x.0));
    }
}
