//! Writes a directory tree as a layer tar, keeping what images need: modes including
//! setuid/setgid/sticky, owners, mtimes, symlinks, hard links (as tar links), device
//! nodes, fifos and extended attributes (as PAX `SCHILY.xattr.*` records). Names and link
//! targets are written as the bytes the filesystem has (the tar crate uses GNU long-name
//! records past 100 bytes), never converted to text.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::{Result, StoreError};

/// Appends `root`'s contents (not `root` itself) to `builder`, in sorted order so the
/// same tree always gives the same tar.
pub fn append_tree<W: Write>(builder: &mut tar::Builder<W>, root: &Path) -> Result<()> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    walk(builder, root, root, &mut links, &Walk::default())
}

/// How [`walk`] reads the tree: an overlayfs upper directory has its whiteouts (0:0
/// character devices, `trusted.overlay.opaque=y` directories) written as the OCI layer
/// spec's `.wh.<name>` and `.wh..wh..opq` files; `skip` names top-level entries left out.
#[derive(Default)]
struct Walk<'a> {
    overlay: bool,
    skip: &'a [&'a str],
}

/// Appends an overlayfs upper directory as an OCI layer diff: whiteouts become
/// `.wh.<name>` files, opaque directories get `.wh..wh..opq`, overlay's own xattrs are
/// dropped, and the relative paths in `skip` (mount points the runtime made, such as
/// `etc/hosts`) are left out (image-spec "Representing Changes").
pub fn append_overlay_upper<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    skip: &[&str],
) -> Result<()> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    walk(
        builder,
        root,
        root,
        &mut links,
        &Walk {
            overlay: true,
            skip,
        },
    )
}

/// A whiteout file entry (`.wh.<name>` or `.wh..wh..opq`) at `rel`.
fn append_whiteout<W: Write>(b: &mut tar::Builder<W>, rel: &Path, path: &Path) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    h.set_mtime(0);
    b.append_data(&mut h, rel, std::io::empty())
        .map_err(|e| StoreError::io(path, e))
}

fn is_opaque(path: &Path) -> bool {
    list_xattrs(path)
        .map(|x| {
            x.iter()
                .any(|(k, v)| k == "trusted.overlay.opaque" && v.as_slice() == b"y")
        })
        .unwrap_or(false)
}

fn walk<W: Write>(
    b: &mut tar::Builder<W>,
    root: &Path,
    dir: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
    how: &Walk<'_>,
) -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| StoreError::io(dir, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| StoreError::io(dir, e))?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let rel = path
            .strip_prefix(root)
            .expect("walk stays under root")
            .to_path_buf();
        if how.skip.iter().any(|s| rel.as_os_str() == *s) {
            continue;
        }
        let md = std::fs::symlink_metadata(&path).map_err(|e| StoreError::io(&path, e))?;
        let ft = md.file_type();
        if ft.is_socket() {
            continue; // Docker drops sockets too.
        }
        if how.overlay && ft.is_char_device() && md.rdev() == 0 {
            let mut wh = std::ffi::OsString::from(".wh.");
            wh.push(&name);
            append_whiteout(b, &rel.with_file_name(wh), &path)?;
            continue;
        }
        write_xattrs(b, &path)?;
        let mut h = tar::Header::new_gnu();
        h.set_mode(md.mode() & 0o7777);
        h.set_uid(md.uid() as u64);
        h.set_gid(md.gid() as u64);
        h.set_mtime(md.mtime().max(0) as u64);
        h.set_size(0);
        let io = |e| StoreError::io(&path, e);
        if !ft.is_dir() && md.nlink() > 1 {
            if let Some(first) = links.get(&(md.dev(), md.ino())) {
                h.set_entry_type(tar::EntryType::Link);
                b.append_link(&mut h, &rel, first).map_err(io)?;
                continue;
            }
            links.insert((md.dev(), md.ino()), rel.clone());
        }
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            let mut with_slash = rel.clone().into_os_string();
            with_slash.push("/");
            b.append_data(&mut h, with_slash, std::io::empty())
                .map_err(io)?;
            if how.overlay && is_opaque(&path) {
                append_whiteout(b, &rel.join(".wh..wh..opq"), &path)?;
            }
            walk(b, root, &path, links, how)?;
        } else if ft.is_file() {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(md.len());
            let f = File::open(&path).map_err(io)?;
            // `take` guards against a file growing while we read it.
            b.append_data(&mut h, &rel, std::io::Read::take(f, md.len()))
                .map_err(io)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(io)?;
            h.set_entry_type(tar::EntryType::Symlink);
            b.append_link(&mut h, &rel, &target).map_err(io)?;
        } else if ft.is_char_device() || ft.is_block_device() {
            h.set_entry_type(if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            let rdev = md.rdev();
            h.set_device_major(libc::major(rdev)).map_err(io)?;
            h.set_device_minor(libc::minor(rdev)).map_err(io)?;
            b.append_data(&mut h, &rel, std::io::empty()).map_err(io)?;
        } else if ft.is_fifo() {
            h.set_entry_type(tar::EntryType::Fifo);
            b.append_data(&mut h, &rel, std::io::empty()).map_err(io)?;
        }
    }
    Ok(())
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut rec = format!("{len} {key}=").into_bytes();
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

fn write_xattrs<W: Write>(b: &mut tar::Builder<W>, path: &Path) -> Result<()> {
    // overlayfs' own attributes describe the upper directory, not the image.
    let xattrs: Vec<_> = list_xattrs(path)?
        .into_iter()
        .filter(|(k, _)| !k.starts_with("trusted.overlay."))
        .collect();
    if xattrs.is_empty() {
        return Ok(());
    }
    let mut data = Vec::new();
    for (k, v) in &xattrs {
        data.extend(pax_record(&format!("SCHILY.xattr.{k}"), v));
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_path("PaxHeader")
        .map_err(|e| StoreError::io(path, e))?;
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &data[..]).map_err(|e| StoreError::io(path, e))
}

/// The extended attributes of `path` (not following symlinks).
pub fn list_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        StoreError::io(path, std::io::Error::from(std::io::ErrorKind::InvalidInput))
    })?;
    let err = || StoreError::io(path, std::io::Error::last_os_error());
    // SAFETY: c is a valid NUL-terminated path; a null buffer with size 0 queries the size.
    let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOTSUP) {
            return Ok(Vec::new());
        }
        return Err(StoreError::io(path, e));
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut names = vec![0u8; n as usize];
    // SAFETY: the buffer has `names.len()` writable bytes.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        return Err(err());
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).expect("no NUL inside an xattr name");
        // SAFETY: valid C strings; a null buffer with size 0 queries the size.
        let len = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            return Err(err());
        }
        let mut val = vec![0u8; len as usize];
        // SAFETY: the buffer has `val.len()` writable bytes.
        let len = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                val.as_mut_ptr().cast(),
                val.len(),
            )
        };
        if len < 0 {
            return Err(err());
        }
        val.truncate(len as usize);
        out.push((String::from_utf8_lossy(name).into_owned(), val));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let r = pax_record("SCHILY.xattr.user.a", b"b");
        let s = String::from_utf8(r.clone()).unwrap();
        let len: usize = s.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(len, r.len());
        let r = pax_record("k", &[b'x'; 95]);
        let len: usize = String::from_utf8_lossy(&r)
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, r.len());
    }
}
