use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use skiff_store::{ChunkLocation, ChunkRef, FileKind};

/// A fake reader over an in-memory "data file" (unit tests of pure logic only); it counts
/// calls so tests can prove metadata never reaches it, and fails on request.
#[derive(Default)]
struct MemReader {
    data: Vec<u8>,
    calls: AtomicUsize,
    fail: bool,
    /// Claims end of file immediately.
    eof: bool,
    /// Returns at most this many bytes per call, to exercise the read loop.
    max_per_call: usize,
}

impl ContentReader for MemReader {
    fn read_at(
        &self,
        layer: &str,
        chunks: &[ChunkRef],
        offset: u64,
        buf: &mut [u8],
    ) -> skiff_store::Result<usize> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail {
            return Err(StoreError::InvalidIndex {
                layer: layer.to_string(),
                reason: "injected".into(),
            });
        }
        if self.eof {
            return Ok(0);
        }
        let Some(c) = chunks
            .iter()
            .find(|c| c.file_offset <= offset && offset < c.file_offset + c.len)
        else {
            return Ok(0);
        };
        let ChunkLocation::Local { offset: base } = c.location else {
            panic!("test uses local chunks only");
        };
        let start = (base + offset - c.file_offset) as usize;
        let n = buf
            .len()
            .min((c.file_offset + c.len - offset) as usize)
            .min(self.max_per_call.max(1));
        buf[..n].copy_from_slice(&self.data[start..start + n]);
        Ok(n)
    }
}

fn e(path: &str, kind: FileKind, mode: u32) -> FileEntry {
    FileEntry {
        path: path.into(),
        kind,
        mode,
        uid: 1000,
        gid: 100,
        size: 0,
        mtime: 1_700_000_000,
        mtime_nsec: 5,
        link_target: Default::default(),
        dev_major: 0,
        dev_minor: 0,
        xattrs: BTreeMap::new(),
        chunks: vec![],
    }
}

/// A file whose bytes are `data[base..base+len]`, split into two chunks.
fn f(path: &str, base: u64, len: u64) -> FileEntry {
    let half = len / 2;
    FileEntry {
        size: len,
        chunks: vec![
            ChunkRef {
                file_offset: 0,
                len: half,
                location: ChunkLocation::Local { offset: base },
            },
            ChunkRef {
                file_offset: half,
                len: len - half,
                location: ChunkLocation::Local {
                    offset: base + half,
                },
            },
        ],
        ..e(path, FileKind::Regular, 0o4755)
    }
}

fn image(reader: MemReader) -> (ImageFs, Arc<MemReader>) {
    let mut link = e("bin/link", FileKind::Symlink, 0o777);
    link.link_target = "../etc/target".into();
    let mut dev = e("dev/null", FileKind::CharDevice, 0o666);
    dev.dev_major = 1;
    dev.dev_minor = 3;
    let mut x = f("etc/x", 0, 100);
    x.xattrs.insert("user.a".into(), b"1".to_vec());
    x.xattrs.insert("security.capability".into(), vec![1, 2, 3]);
    let layers = vec![LayerIndex {
        digest: "sha256:l0".into(),
        entries: vec![
            e("bin", FileKind::Directory, 0o755),
            link,
            dev,
            x,
            e("etc/fifo", FileKind::Fifo, 0o600),
            e("tmp", FileKind::Directory, 0o1777),
        ],
    }];
    let reader = Arc::new(reader);
    let fs = ImageFs::new(layers, reader.clone()).unwrap();
    (fs, reader)
}

fn data() -> MemReader {
    MemReader {
        data: (0..=255u8).cycle().take(1000).collect(),
        max_per_call: usize::MAX,
        ..Default::default()
    }
}

#[test]
fn metadata_is_exact_and_never_reads_content() {
    let (fs, reader) = image(data());
    let etc = fs.lookup(ROOT_INO, OsStr::new("etc")).unwrap();
    assert_eq!(etc.kind, NodeKind::Directory);
    assert_eq!(etc.perm, 0o755, "implicit dir");
    assert_eq!(etc.nlink, 2);
    let x = fs.lookup(etc.ino, OsStr::new("x")).unwrap();
    assert_eq!(x.mode(), libc::S_IFREG | 0o4755);
    assert_eq!((x.uid, x.gid, x.size, x.blocks), (1000, 100, 100, 1));
    assert_eq!((x.mtime, x.mtime_nsec, x.nlink), (1_700_000_000, 5, 1));
    let dev = fs.lookup(
        fs.lookup(1, OsStr::new("dev")).unwrap().ino,
        OsStr::new("null"),
    );
    let dev = dev.unwrap();
    assert_eq!(
        (dev.mode(), dev.dev_major, dev.dev_minor),
        (libc::S_IFCHR | 0o666, 1, 3)
    );
    let tmp = fs.lookup(1, OsStr::new("tmp")).unwrap();
    assert_eq!(tmp.mode(), libc::S_IFDIR | 0o1777);
    let bin = fs.lookup(1, OsStr::new("bin")).unwrap();
    let link = fs.lookup(bin.ino, OsStr::new("link")).unwrap();
    assert_eq!(link.size, "../etc/target".len() as u64);
    assert_eq!(fs.readlink(link.ino).unwrap(), b"../etc/target");
    assert_eq!(fs.getxattr(x.ino, OsStr::new("user.a")).unwrap(), b"1");
    assert_eq!(
        fs.listxattr(x.ino).unwrap(),
        b"security.capability\0user.a\0".to_vec()
    );
    assert_eq!(fs.getattr(1).unwrap().nlink, 6);
    assert_eq!(fs.statfs().files, 9);
    assert_eq!(reader.calls.load(Ordering::SeqCst), 0);
}

#[test]
fn errors_are_typed() {
    let (fs, _) = image(data());
    let x = fs.tree().resolve("etc/x").unwrap();
    assert!(matches!(
        fs.lookup(1, OsStr::new("nope")),
        Err(FsError::NotFound { parent: 1, .. })
    ));
    assert!(matches!(
        fs.lookup(x, OsStr::new("a")),
        Err(FsError::NotADirectory { .. })
    ));
    assert!(matches!(
        fs.getattr(999),
        Err(FsError::NoInode { ino: 999 })
    ));
    assert!(matches!(fs.getattr(0), Err(FsError::NoInode { ino: 0 })));
    assert!(matches!(fs.readlink(x), Err(FsError::NotASymlink { .. })));
    assert!(matches!(
        fs.getxattr(x, OsStr::new("user.b")),
        Err(FsError::NoXattr { .. })
    ));
    assert!(matches!(
        fs.readdir(x, 0),
        Err(FsError::NotADirectory { .. })
    ));
    assert!(matches!(
        fs.read(1, 0, 10),
        Err(FsError::IsADirectory { .. })
    ));
}

#[test]
fn readdir_lists_dots_then_children_and_resumes_at_cookies() {
    let (fs, _) = image(data());
    let etc = fs.tree().resolve("etc").unwrap();
    let all: Vec<_> = fs.readdir(etc, 0).unwrap().collect();
    let names: Vec<_> = all.iter().map(|d| d.name).collect();
    assert_eq!(names, [".", "..", "fifo", "x"]);
    assert_eq!(all[0].ino, etc);
    assert_eq!(all[1].ino, ROOT_INO);
    assert_eq!(all[2].kind, NodeKind::Fifo);
    let rest: Vec<_> = fs
        .readdir(etc, all[1].next_offset)
        .unwrap()
        .map(|d| d.name)
        .collect();
    assert_eq!(rest, ["fifo", "x"]);
    assert_eq!(fs.readdir(etc, all[3].next_offset).unwrap().count(), 0);
    assert_eq!(fs.readdir(etc, u64::MAX).unwrap().count(), 0);
}

#[test]
fn reads_span_chunks_and_clamp_to_size() {
    let reader = MemReader {
        max_per_call: 7,
        ..data()
    };
    let (fs, _) = image(reader);
    let x = fs.tree().resolve("etc/x").unwrap();
    let want: Vec<u8> = (0..100u8).collect();
    assert_eq!(fs.read(x, 0, 4096).unwrap(), want);
    assert_eq!(fs.read(x, 45, 10).unwrap(), want[45..55]);
    assert_eq!(fs.read(x, 100, 10).unwrap(), b"");
    assert_eq!(fs.read(x, u64::MAX, u32::MAX).unwrap(), b"");
    let fifo = fs.tree().resolve("etc/fifo").unwrap();
    assert_eq!(fs.read(fifo, 0, 10).unwrap(), b"");
}

#[test]
fn read_failures_name_the_layer_and_offset() {
    let (fs, _) = image(MemReader {
        fail: true,
        ..data()
    });
    let x = fs.tree().resolve("etc/x").unwrap();
    let err = fs.read(x, 60, 10).unwrap_err();
    match &err {
        FsError::Read {
            layer,
            offset,
            path,
            ..
        } => assert_eq!(
            (layer.as_str(), *offset, path.to_str().unwrap()),
            ("sha256:l0", 60, "etc/x")
        ),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_reader_ending_early_is_an_error_not_zeros() {
    let (fs, _) = image(MemReader {
        eof: true,
        ..data()
    });
    let x = fs.tree().resolve("etc/x").unwrap();
    assert!(matches!(
        fs.read(x, 0, 50),
        Err(FsError::Read { offset: 0, .. })
    ));
}

#[test]
fn names_and_symlink_targets_are_bytes() {
    use std::os::unix::ffi::OsStrExt;
    let mut file = f("x", 0, 10);
    file.path = skiff_store::LayerPath::new(b"d\xff/caf\xe9".to_vec());
    let mut link = e("l", FileKind::Symlink, 0o777);
    link.link_target = skiff_store::LayerPath::new(b"d\xff/caf\xe9".to_vec());
    let layers = vec![LayerIndex {
        digest: "sha256:l0".into(),
        entries: vec![file, link],
    }];
    let fs = ImageFs::new(layers, Arc::new(data())).unwrap();
    let d = fs.lookup(ROOT_INO, OsStr::from_bytes(b"d\xff")).unwrap();
    let names: Vec<&[u8]> = fs
        .readdir(d.ino, 0)
        .unwrap()
        .map(|e| e.name.as_bytes())
        .collect();
    assert_eq!(names, [&b"."[..], b"..", b"caf\xe9"]);
    let f = fs.lookup(d.ino, OsStr::from_bytes(b"caf\xe9")).unwrap();
    assert_eq!(
        fs.read(f.ino, 0, 10).unwrap(),
        (0..10u8).collect::<Vec<_>>()
    );
    // The lossy spelling is another name, and absent.
    assert!(fs.lookup(d.ino, OsStr::new("caf\u{fffd}")).is_err());
    let l = fs.lookup(ROOT_INO, OsStr::new("l")).unwrap();
    assert_eq!(fs.readlink(l.ino).unwrap(), b"d\xff/caf\xe9");
    assert_eq!(l.size, 7, "symlink size counts bytes");
}

#[test]
fn has_xattrs_says_whether_any_entry_has_one() {
    let (with, _) = image(data());
    assert!(with.has_xattrs());
    let layers = vec![LayerIndex {
        digest: "sha256:l0".into(),
        entries: vec![e("bin", FileKind::Directory, 0o755), f("bin/x", 0, 10)],
    }];
    let without = ImageFs::new(layers, Arc::new(data())).unwrap();
    assert!(!without.has_xattrs());
}
