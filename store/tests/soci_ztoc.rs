//! SOCI zTOC interop on committed fixtures, and property tests (arbtest, bounded time) for
//! the zTOC and zinfo parsers.
//!
//! Fixtures (`tests/fixtures/soci/`): `layer.tar.gz` (a small tar+gzip layer), and its zTOCs
//! built with a 32 KiB span: `layer.ztoc` (zinfo v2, what skiff and current
//! soci-snapshotter write) and `layer-v1.ztoc` (zinfo v1, the first checkpoint implied, as
//! soci-snapshotter wrote before). `go_order.py` beside them reads a zTOC with flatbuffers'
//! generic table API and rebuilds it with the reference builder (Debian's
//! python3-flatbuffers; Go's builder is a port of the same algorithm) in the calls and order
//! of soci-snapshotter's Go writer: both fixtures come back byte for byte (checked by
//! `tests/tests/soci_index.rs`, which can require the package), so skiff writes what soci
//! writes and reads soci's layout. `SKIFF_REGEN_FIXTURES=1` rewrites them.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use arbitrary::Unstructured;
use skiff_store::soci::zinfo::{Zinfo, ZinfoVersion, CHECKPOINT_SIZE, HEADER_SIZE};
use skiff_store::soci::zran::{Checkpoint, WINDOW};
use skiff_store::soci::{build_ztoc, FileMetadata, Ztoc};
use skiff_store::StoreError;

const LAYER: &str = "sha256:fixture";
const SPAN: u64 = 32 << 10;
const BUDGET: Duration = Duration::from_secs(3);

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/soci")
        .join(name)
}

fn regen() -> bool {
    std::env::var_os("SKIFF_REGEN_FIXTURES").is_some()
}

/// The fixture layer's tar: a directory, a symlink, a hard link, a file with PAX records,
/// and ~160 KiB of poorly compressible data so there are several spans.
fn make_layer() -> Vec<u8> {
    let mut x: u32 = 7;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8 & 0x7f
            })
            .collect()
    };
    let mut t = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_ustar();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_mtime(1_600_000_000);
    dir.set_size(0);
    t.append_data(&mut dir, "app/", &[][..]).unwrap();
    for (name, data) in [
        ("app/data.bin", noise(160 << 10)),
        ("app/hello.txt", b"hello from a zTOC\n".to_vec()),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_username("app").unwrap();
        h.set_groupname("app").unwrap();
        h.set_mtime(1_600_000_001);
        h.set_size(data.len() as u64);
        t.append_data(&mut h, name, &data[..]).unwrap();
    }
    t.append_pax_extensions([("SCHILY.xattr.user.k", &b"v"[..])])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o600);
    h.set_mtime(1_600_000_002);
    h.set_size(3);
    t.append_data(&mut h, "app/with-xattr", &b"xyz"[..])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    t.append_link(&mut h, "app/link", "hello.txt").unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    t.append_link(&mut h, "app/hard", "app/hello.txt").unwrap();
    let tar = t.into_inner().unwrap();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&tar).unwrap();
    e.finish().unwrap()
}

fn load_or_write(name: &str, make: impl FnOnce() -> Vec<u8>) -> Vec<u8> {
    let path = fixture(name);
    if regen() {
        let bytes = make();
        std::fs::write(&path, &bytes).unwrap();
        return bytes;
    }
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn layer() -> Vec<u8> {
    load_or_write("layer.tar.gz", make_layer)
}

/// Each file's bytes as the tar holds them.
fn tar_files(gz: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (name, data)
        })
        .collect()
}

fn v1(z: &Ztoc) -> Ztoc {
    let mut z = z.clone();
    z.zinfo.version = ZinfoVersion::V1;
    z
}

#[test]
fn writer_reproduces_the_fixtures_byte_for_byte() {
    let gz = layer();
    let built = build_ztoc(LAYER, &gz, SPAN).unwrap();
    let want = load_or_write("layer.ztoc", || built.to_bytes());
    assert!(
        built.to_bytes() == want,
        "layer.ztoc differs from what the writer makes"
    );
    let want_v1 = load_or_write("layer-v1.ztoc", || v1(&built).to_bytes());
    assert!(v1(&built).to_bytes() == want_v1, "layer-v1.ztoc differs");
    // The v1 zinfo blob is one checkpoint (32 KiB + 17 bytes) shorter.
    assert_eq!(
        built.zinfo.to_bytes().len() - v1(&built).zinfo.to_bytes().len(),
        CHECKPOINT_SIZE
    );
}

#[test]
fn fixtures_parse_to_the_layer_and_serve_every_file() {
    let gz = layer();
    for name in ["layer.ztoc", "layer-v1.ztoc"] {
        let z = Ztoc::parse(LAYER, &std::fs::read(fixture(name)).unwrap()).unwrap();
        assert_eq!(z.version, "0.9", "{name}");
        assert!(z.build_tool_identifier.starts_with("skiff "), "{name}");
        assert_eq!(z.compressed_archive_size, gz.len() as u64, "{name}");
        assert_eq!(z.zinfo.span_size, SPAN, "{name}");
        assert!(
            z.zinfo.checkpoints.len() >= 3,
            "{name}: {:?}",
            z.zinfo.checkpoints
        );
        assert_eq!(z.zinfo.checkpoints[0].compressed_offset, 10, "{name}");
        let names: Vec<String> = z
            .files
            .iter()
            .map(|f| format!("{} {}", f.kind, String::from_utf8_lossy(&f.name)))
            .collect();
        assert_eq!(
            names,
            [
                "dir app/",
                "reg app/data.bin",
                "reg app/hello.txt",
                "reg app/with-xattr",
                "symlink app/link",
                "hardlink app/hard"
            ],
            "{name}"
        );
        let x = &z.files[3];
        assert_eq!(
            x.pax_records,
            vec![(b"SCHILY.xattr.user.k".to_vec(), b"v".to_vec())]
        );
        assert_eq!(x.mode, 0o600);
        assert_eq!(x.mod_time, "2020-09-13T12:26:42Z");
        assert_eq!(z.files[2].uname, "app");
        assert_eq!(z.files[4].linkname, b"hello.txt");
        assert_eq!(z.files[5].linkname, b"app/hello.txt");
        for (path, data) in tar_files(&gz) {
            let f = z.files.iter().find(|f| f.name == path.as_bytes()).unwrap();
            let got = z
                .extract(LAYER, f, |r| {
                    Ok(gz[r.start as usize..r.end as usize].to_vec())
                })
                .unwrap();
            assert!(got == data, "{name}: {path}");
        }
    }
}

#[test]
fn fixture_layout_follows_the_schema() {
    // Spot checks of the flatbuffers layout, independent of the reader: the root offset,
    // and the zinfo blob stored verbatim as the `checkpoints` byte vector.
    let bytes = std::fs::read(fixture("layer.ztoc")).unwrap();
    let root = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    assert!(root < bytes.len());
    let z = Ztoc::parse(LAYER, &bytes).unwrap();
    let blob = z.zinfo.to_bytes();
    let at = bytes
        .windows(HEADER_SIZE)
        .position(|w| w == &blob[..HEADER_SIZE])
        .expect("zinfo header in the document");
    assert_eq!(
        u32::from_le_bytes(bytes[at - 4..at].try_into().unwrap()) as usize,
        blob.len(),
        "a [ubyte] vector: length, then the bytes"
    );
    assert!(bytes[at..at + blob.len()] == blob[..]);
}

fn refused(r: Result<Ztoc, StoreError>) {
    match r {
        Err(StoreError::InvalidZtoc { .. }) | Ok(_) => {}
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

/// What an accepted zTOC promises: spans inside the blob, in order, one digest each, files
/// inside the uncompressed stream.
fn check_sound(z: &Ztoc) {
    let c = &z.zinfo.checkpoints;
    assert_eq!(c.len(), z.span_digests.len());
    assert_eq!(c[0].uncompressed_offset, 0);
    for w in c.windows(2) {
        assert!(w[0].compressed_offset < w[1].compressed_offset);
        assert!(w[0].uncompressed_offset < w[1].uncompressed_offset);
    }
    assert!(c
        .iter()
        .all(|c| c.compressed_offset < z.compressed_archive_size));
    assert!(z
        .files
        .iter()
        .all(|f| f.uncompressed_offset + f.uncompressed_size <= z.uncompressed_archive_size));
    let spans = z.span_index();
    for i in 0..c.len() {
        let r = spans.span_range(i);
        assert!(r.start < r.end && r.end <= z.compressed_archive_size);
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    arbtest::arbtest(|u| {
        let bytes: Vec<u8> = u.arbitrary()?;
        if let Ok(z) = Ztoc::parse(LAYER, &bytes) {
            check_sound(&z);
        }
        let _ = Zinfo::parse(&bytes);
        Ok(())
    })
    .budget(BUDGET);
}

#[test]
fn mutated_fixture_never_panics_and_is_sound_when_accepted() {
    let good = std::fs::read(fixture("layer.ztoc")).unwrap();
    // The document without most of its windows, so mutations hit the tables.
    arbtest::arbtest(|u| {
        let mut b = good.clone();
        for _ in 0..u.int_in_range(1..=8)? {
            let i = u.choose_index(b.len())?;
            // Favour the tables and the zinfo header over the window bytes.
            let i = if u.arbitrary()? {
                b.len() - 1 - (i % 2048)
            } else {
                i % 4096
            };
            b[i] = u.arbitrary()?;
        }
        let r = Ztoc::parse(LAYER, &b);
        if let Ok(z) = &r {
            check_sound(z);
        }
        refused(r);
        Ok(())
    })
    .budget(BUDGET);
}

fn arbitrary_ztoc(u: &mut Unstructured) -> arbitrary::Result<Ztoc> {
    let n = u.int_in_range(1..=4usize)?;
    let (mut cin, mut out) = (u.int_in_range(1..=100u64)?, 0u64);
    let mut checkpoints = Vec::new();
    for i in 0..n {
        if i > 0 {
            cin += u.int_in_range(1..=1 << 40)?;
            out += u.int_in_range(1..=1 << 40)?;
        }
        let fill: u8 = u.arbitrary()?;
        checkpoints.push(Checkpoint {
            compressed_offset: cin,
            uncompressed_offset: out,
            bits: u.int_in_range(0..=7)?,
            window: vec![fill; WINDOW],
        });
    }
    let uncompressed = out + u.int_in_range(0..=1 << 40)?;
    let mut files = Vec::new();
    for _ in 0..u.int_in_range(0..=5)? {
        let off = u.int_in_range(0..=uncompressed)?;
        files.push(FileMetadata {
            name: u.arbitrary()?,
            kind: u.choose(skiff_store::soci::ztoc::FILE_TYPES)?.to_string(),
            uncompressed_offset: off,
            uncompressed_size: u.int_in_range(0..=uncompressed - off)?,
            linkname: u.arbitrary()?,
            mode: u.arbitrary()?,
            uid: u.arbitrary()?,
            gid: u.arbitrary()?,
            uname: u.arbitrary()?,
            gname: u.arbitrary()?,
            mod_time: u.arbitrary()?,
            dev_major: u.arbitrary()?,
            dev_minor: u.arbitrary()?,
            pax_records: {
                let mut p: Vec<(Vec<u8>, Vec<u8>)> = u.arbitrary()?;
                p.sort();
                p
            },
        });
    }
    Ok(Ztoc {
        version: "0.9".into(),
        build_tool_identifier: u.arbitrary()?,
        compressed_archive_size: cin + u.int_in_range(1..=1 << 20)?,
        uncompressed_archive_size: uncompressed,
        files,
        zinfo: Zinfo {
            version: ZinfoVersion::V2,
            span_size: u.int_in_range(0..=i64::MAX as u64)?,
            checkpoints,
        },
        span_digests: (0..n)
            .map(|_| Ok(format!("sha256:{:064x}", u.arbitrary::<u128>()?)))
            .collect::<arbitrary::Result<_>>()?,
    })
}

#[test]
fn generated_ztocs_round_trip() {
    arbtest::arbtest(|u| {
        let z = arbitrary_ztoc(u)?;
        let bytes = z.to_bytes();
        let back = Ztoc::parse(LAYER, &bytes).unwrap_or_else(|e| panic!("{e}: {z:?}"));
        assert_eq!(back, z);
        assert!(back.to_bytes() == bytes);
        Ok(())
    })
    .budget(BUDGET);
}
