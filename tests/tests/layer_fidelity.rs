//! Layer fidelity matrix: names as bytes and hard links across layers, in every format and
//! every path, checked against a plain unpack of the same layers.
//!
//! Image: a busybox rootfs layer (plus `a/orig`, `a/rew`, `a/dst`), a middle layer (rewrites
//! `a/rew`; non-UTF-8 file, directory and symlink targets; a hard link within the layer; the
//! first step of a chain), an upper layer (hard links to lower files, to the rewritten file,
//! the chain's third name) and a top layer (a non-UTF-8 hard link to a lower file, a whiteout
//! of a non-UTF-8 name). Formats: gzip, zstd, zstd:chunked written by
//! skiff's writer, by `convert_image` (`skiff image convert`), and by skopeo. Paths: pull
//! (full for gzip/zstd, lazy for zstd:chunked, so reads go through the FUSE mount to the
//! registry), `import` of the unpacked directory, convert. Each mount is compared with
//! GNU tar's extraction of the layer tars in order: names (bytes), kinds, modes, owners,
//! sizes, contents, symlink targets, link counts and which names share an inode.

mod chunked_support;
mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chunked_support::{client, sha256};
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use skiff_store::{Compression, ImageChanges, ImageReference, Store, StoreError};
use skiff_tests::registry::registry_unavailable;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{fixtures, require, Registry};

const CAFE: &[u8] = b"caf\xe9.txt";
const DIR: &[u8] = b"d\xff";
const DIR_FILE: &[u8] = b"d\xff/caf\xe9.txt";
const RAW_LINK: &[u8] = b"h\xe9";
const RAW_SYMLINK: &[u8] = b"lnk\xe9";
/// In the middle layer, whited out (`d\xff/.wh.gone\xe9`) by the top layer.
const GONE: &[u8] = b"d\xff/gone\xe9";
const ORIG: &[u8] = b"original, from the base layer\n";
const REW_V1: &[u8] = b"v1\n";
const REW_V2: &[u8] = b"rewritten by the middle layer\n";

fn p(b: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(b))
}

/// A tar built entry by entry with raw byte names.
struct TarW(tar::Builder<Vec<u8>>);

impl TarW {
    fn new() -> TarW {
        TarW(tar::Builder::new(Vec::new()))
    }
    fn head(t: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(t);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(fixtures::MTIME as u64);
        h
    }
    fn dir(&mut self, name: &[u8]) -> &mut Self {
        let mut h = Self::head(tar::EntryType::Directory, 0, 0o755);
        self.0.append_data(&mut h, p(name), &[][..]).unwrap();
        self
    }
    fn file(&mut self, name: &[u8], data: &[u8]) -> &mut Self {
        let mut h = Self::head(tar::EntryType::Regular, data.len() as u64, 0o644);
        self.0.append_data(&mut h, p(name), data).unwrap();
        self
    }
    fn symlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        let mut h = Self::head(tar::EntryType::Symlink, 0, 0o777);
        self.0.append_link(&mut h, p(name), p(target)).unwrap();
        self
    }
    fn hardlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        let mut h = Self::head(tar::EntryType::Link, 0, 0o644);
        self.0.append_link(&mut h, p(name), p(target)).unwrap();
        self
    }
    fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// The four layer tars, lowest first.
fn layer_tars() -> Vec<Vec<u8>> {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fixtures::build_busybox_rootfs(root).unwrap();
    std::fs::create_dir(root.join("a")).unwrap();
    std::fs::write(root.join("a/orig"), ORIG).unwrap();
    std::fs::write(root.join("a/rew"), REW_V1).unwrap();
    std::fs::write(root.join("a/dst"), b"replaced by a hard link\n").unwrap();
    let mut b = tar::Builder::new(Vec::new());
    skiff_store::layer::tar_builder::append_tree(&mut b, root).unwrap();
    let base = b.into_inner().unwrap();

    let mut middle = TarW::new();
    middle
        .file(b"a/rew", REW_V2)
        .dir(DIR)
        .file(DIR_FILE, b"in a latin-1 directory\n")
        .file(CAFE, b"latin-1 name\n")
        .file(GONE, b"whited out by the top layer\n")
        .symlink(b"lnk", CAFE)
        .symlink(RAW_SYMLINK, DIR_FILE)
        .dir(b"in")
        .file(b"in/one", b"one inode, two names\n")
        .hardlink(b"in/two", b"in/one")
        .dir(b"b")
        .hardlink(b"b/two", b"a/orig");
    // UTF-8 names only, so even a TOC without tar-split (skopeo 1.9) serves it lazily.
    let mut upper = TarW::new();
    upper
        .hardlink(b"a/dst", b"a/orig")
        .hardlink(b"a/rl", b"a/rew")
        .hardlink(b"b/three", b"b/two");
    let mut top = TarW::new();
    top.hardlink(RAW_LINK, DIR_FILE)
        .file(b"d\xff/.wh.gone\xe9", b"");
    vec![base, middle.finish(), upper.finish(), top.finish()]
}

/// Plain unpack: GNU tar extracts the layers in order into `dest`; after each layer its
/// whiteouts (`.wh.<name>`, all for lower layers here) remove their name and themselves.
fn plain_unpack(tars: &[Vec<u8>], dest: &Path) {
    fn whiteouts(dir: &Path) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name();
            if let Some(hidden) = name.as_bytes().strip_prefix(b".wh.") {
                let victim = dir.join(OsStr::from_bytes(hidden));
                if victim.is_dir() {
                    std::fs::remove_dir_all(&victim).unwrap();
                } else {
                    std::fs::remove_file(&victim).unwrap();
                }
                std::fs::remove_file(e.path()).unwrap();
            } else if e.file_type().unwrap().is_dir() {
                whiteouts(&e.path());
            }
        }
    }
    for t in tars {
        let mut child = Command::new("tar")
            .args(["-x", "-p", "--numeric-owner", "-f", "-", "-C"])
            .arg(dest)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(t).unwrap();
        assert!(child.wait().unwrap().success(), "tar -x failed");
        whiteouts(dest);
    }
}

/// What `stat`, `readlink` and `read` say about one name.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    perm: u32,
    uid: u32,
    gid: u32,
    size: u64,
    content: Option<String>,
    target: Option<Vec<u8>>,
    nlink: Option<u64>,
    rdev: u64,
}

/// Every name under `root` (bytes) and the groups of names sharing an inode.
type Snapshot = (BTreeMap<Vec<u8>, Node>, BTreeSet<Vec<Vec<u8>>>);

fn snapshot(root: &Path) -> Snapshot {
    let mut nodes = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<Vec<u8>>> = HashMap::new();
    let mut stack = vec![(root.to_path_buf(), Vec::<u8>::new())];
    while let Some((dir, rel)) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name();
            let mut r = rel.clone();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(name.as_bytes());
            let path = e.path();
            let md = std::fs::symlink_metadata(&path).unwrap();
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                stack.push((path.clone(), r.clone()));
                "dir"
            } else if ft.is_file() {
                "file"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_char_device() {
                "char"
            } else if ft.is_fifo() {
                "fifo"
            } else {
                "other"
            };
            if kind != "dir" {
                inodes
                    .entry((md.dev(), md.ino()))
                    .or_default()
                    .push(r.clone());
            }
            nodes.insert(
                r,
                Node {
                    kind,
                    perm: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    size: if kind == "dir" { 0 } else { md.len() },
                    content: (kind == "file").then(|| sha256(&std::fs::read(&path).unwrap())),
                    target: (kind == "symlink").then(|| {
                        std::fs::read_link(&path)
                            .unwrap()
                            .into_os_string()
                            .into_vec()
                    }),
                    nlink: (kind != "dir").then(|| md.nlink()),
                    rdev: md.rdev(),
                },
            );
        }
    }
    let groups = inodes
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    (nodes, groups)
}

use std::os::unix::ffi::OsStringExt;

/// Compares a mounted image with the reference, entry by entry (for readable failures).
fn assert_same(what: &str, got: &Snapshot, want: &Snapshot) {
    let show =
        |k: &Vec<u8>| String::from_utf8_lossy(&k.escape_ascii().collect::<Vec<u8>>()).into_owned();
    let got_names: BTreeSet<String> = got.0.keys().map(show).collect();
    let want_names: BTreeSet<String> = want.0.keys().map(show).collect();
    assert_eq!(got_names, want_names, "{what}: names differ");
    for (k, w) in &want.0 {
        assert_eq!(&got.0[k], w, "{what}: {} differs", show(k));
    }
    assert_eq!(got.1, want.1, "{what}: hard-link groups differ");
}

/// The values the issue names, asserted directly on a mounted image.
fn assert_issue_cases(what: &str, root: &Path) {
    let read = |b: &[u8]| std::fs::read(root.join(p(b))).unwrap();
    let ino = |b: &[u8]| std::fs::symlink_metadata(root.join(p(b))).unwrap();
    assert_eq!(read(CAFE), b"latin-1 name\n", "{what}");
    assert_eq!(read(DIR_FILE), b"in a latin-1 directory\n", "{what}");
    assert!(
        !root.join("caf\u{fffd}.txt").exists(),
        "{what}: renamed file served"
    );
    assert!(
        std::fs::symlink_metadata(root.join(p(GONE))).is_err(),
        "{what}: whited-out name still there"
    );
    assert_eq!(
        std::fs::read_link(root.join(p(RAW_SYMLINK)))
            .unwrap()
            .into_os_string()
            .into_vec(),
        DIR_FILE,
        "{what}"
    );
    assert_eq!(read(b"a/dst"), ORIG, "{what}");
    assert_eq!(read(b"a/rl"), REW_V2, "{what}");
    assert_eq!(ino(b"a/dst").ino(), ino(b"a/orig").ino(), "{what}");
    assert_eq!(ino(b"b/three").ino(), ino(b"a/orig").ino(), "{what}");
    assert_eq!(
        ino(b"a/orig").nlink(),
        4,
        "{what}: a/orig, a/dst, b/two, b/three"
    );
    assert_eq!(ino(b"a/rew").nlink(), 2, "{what}");
    assert_eq!(ino(RAW_LINK).ino(), ino(DIR_FILE).ino(), "{what}");
}

/// Mounts `reference` of `store` at a fresh directory and checks it against `want`.
fn check_mount(
    rt: &tokio::runtime::Runtime,
    store: &Store,
    reference: &str,
    want: &Snapshot,
    what: &str,
) {
    let _guard = rt.enter();
    let img = store.image(reference).unwrap();
    let layers = store.layer_indexes(&img.id).unwrap();
    let fs = skiff_fs::ImageFs::new(layers, store.content_reader()).unwrap();
    assert!(
        fs.tree().warnings().is_empty(),
        "{what}: {:?}",
        fs.tree().warnings()
    );
    let at = tempfile::tempdir().unwrap();
    let handle = skiff_fs::mount(fs, at.path(), &skiff_fs::MountOptions::default()).unwrap();
    let got = snapshot(at.path());
    assert_issue_cases(what, at.path());
    handle.unmount().unwrap();
    assert_same(what, &got, want);
}

const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// A layer blob ready to push.
struct Blob {
    data: Vec<u8>,
    media_type: &'static str,
    annotations: BTreeMap<String, String>,
}

fn gzip(tar: &[u8]) -> Blob {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(tar).unwrap();
    Blob {
        data: e.finish().unwrap(),
        media_type: GZIP,
        annotations: BTreeMap::new(),
    }
}

fn zstd_blob(tar: &[u8]) -> Blob {
    Blob {
        data: zstd::encode_all(tar, 3).unwrap(),
        media_type: ZSTD,
        annotations: BTreeMap::new(),
    }
}

fn skiff_chunked(tar: &[u8]) -> Blob {
    let mut data = Vec::new();
    let l = skiff_store::chunked::write_zstd_chunked(tar, &mut data, &Default::default()).unwrap();
    Blob {
        data,
        media_type: ZSTD,
        annotations: l.annotations,
    }
}

/// Pushes an image of `blobs` (whose tars are `tars`) as `<registry>/<repo>:latest`.
fn push(
    rt: &tokio::runtime::Runtime,
    reg: &Registry,
    repo: &str,
    tars: &[Vec<u8>],
    blobs: &[Blob],
) -> String {
    let name = format!("{}/{repo}:latest", reg.host());
    let reference: Reference = name.parse().unwrap();
    let client = client();
    rt.block_on(async {
        client
            .auth(
                &reference,
                &RegistryAuth::Anonymous,
                oci_client::RegistryOperation::Push,
            )
            .await
            .ok();
        let mut layers = Vec::new();
        for b in blobs {
            let digest = sha256(&b.data);
            client
                .push_blob(&reference, b.data.clone(), &digest)
                .await
                .unwrap();
            layers.push(OciDescriptor {
                media_type: b.media_type.into(),
                digest,
                size: b.data.len() as i64,
                annotations: (!b.annotations.is_empty())
                    .then(|| b.annotations.clone().into_iter().collect()),
                ..Default::default()
            });
        }
        let diff_ids: Vec<String> = tars.iter().map(|t| sha256(t)).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let config_digest = sha256(&config);
        client
            .push_blob(&reference, config.clone(), &config_digest)
            .await
            .unwrap();
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
            config: OciDescriptor {
                media_type: "application/vnd.oci.image.config.v1+json".into(),
                digest: config_digest,
                size: config.len() as i64,
                ..Default::default()
            },
            layers,
            ..Default::default()
        };
        client
            .push_manifest(&reference, &OciManifest::Image(manifest))
            .await
            .unwrap();
    });
    name
}

/// Everything a matrix test needs: registry, layers, reference tree.
struct Setup {
    rt: tokio::runtime::Runtime,
    reg: Registry,
    tars: Vec<Vec<u8>>,
    reference_dir: tempfile::TempDir,
    want: Snapshot,
}

fn setup() -> Setup {
    let tars = layer_tars();
    let reference_dir = tempfile::tempdir().unwrap();
    plain_unpack(&tars, reference_dir.path());
    let want = snapshot(reference_dir.path());
    assert_issue_cases("plain unpack", reference_dir.path());
    Setup {
        rt: common::rt(),
        reg: Registry::start().unwrap(),
        tars,
        reference_dir,
        want,
    }
}

/// Pulls `name` into a fresh store, checks each layer's storage, and the mount.
fn pull_and_check(s: &Setup, name: &str, states: &[&str], what: &str) {
    let (_dir, store) = common::new_store();
    s.rt.block_on(store.pull(name, common::QUIET))
        .unwrap_or_else(|e| panic!("{what}: pull: {e}"));
    let img = store.image(name).unwrap();
    let got: Vec<&str> = img.layers.iter().map(|l| l.state.as_str()).collect();
    assert_eq!(got, states, "{what}: how layers are stored");
    check_mount(&s.rt, &store, name, &s.want, what);
}

macro_rules! requires {
    ($name:expr) => {
        require!(
            $name,
            root_unavailable(),
            registry_unavailable(),
            fixtures::busybox_unavailable()
        )
    };
}

#[test]
fn gzip_and_zstd_full_pull() {
    requires!("gzip_and_zstd_full_pull");
    let s = setup();
    let blobs: Vec<Blob> = s.tars.iter().map(|t| gzip(t)).collect();
    let name = push(&s.rt, &s.reg, "fidelity/gzip", &s.tars, &blobs);
    pull_and_check(&s, &name, &["local"; 4], "gzip pull");
    let blobs: Vec<Blob> = s.tars.iter().map(|t| zstd_blob(t)).collect();
    let name = push(&s.rt, &s.reg, "fidelity/zstd", &s.tars, &blobs);
    pull_and_check(&s, &name, &["local"; 4], "zstd pull");
}

#[test]
fn skiff_written_zstd_chunked_lazy() {
    requires!("skiff_written_zstd_chunked_lazy");
    let s = setup();
    let blobs: Vec<Blob> = s.tars.iter().map(|t| skiff_chunked(t)).collect();
    // `zstd -d` of each blob is the layer tar (what Go readers' full pulls see).
    for (b, t) in blobs.iter().zip(&s.tars) {
        assert!(zstd::decode_all(&b.data[..]).unwrap() == *t);
    }
    let name = push(&s.rt, &s.reg, "fidelity/chunked", &s.tars, &blobs);
    // Names restored from the tar-split: every layer stays lazy.
    pull_and_check(&s, &name, &["lazy"; 4], "skiff zstd:chunked lazy");
}

#[test]
fn converted_image_pulls_and_matches() {
    requires!("converted_image_pulls_and_matches");
    require!("converted_image_pulls_and_matches", skopeo_unavailable());
    let s = setup();
    let blobs: Vec<Blob> = s.tars.iter().map(|t| gzip(t)).collect();
    let src = push(&s.rt, &s.reg, "fidelity/src", &s.tars, &blobs);
    let dst = format!("{}/fidelity/converted:latest", s.reg.host());
    let (_dir, store) = common::new_store();
    let tmp = tempfile::tempdir().unwrap();
    let report =
        s.rt.block_on(skiff_store::convert::convert_image(
            store.registry(),
            &ImageReference::parse(&src).unwrap(),
            &ImageReference::parse(&dst).unwrap(),
            tmp.path(),
            &|_| {},
        ))
        .unwrap();
    assert_eq!(report.layers.len(), 4);
    pull_and_check(&s, &dst, &["lazy"; 4], "convert then lazy pull");
    // Readers that decompress whole layers (containers/image, then the real `zstd -d`) get
    // each layer tar back byte for byte, raw names and links included.
    {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy");
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{dst}"),
            &format!("dir:{}", copy.display()),
        ]);
        for (layer, tar) in report.layers.iter().zip(&s.tars) {
            let out = Command::new("zstd")
                .args(["-d", "-c"])
                .arg(copy.join(layer.digest.trim_start_matches("sha256:")))
                .output()
                .unwrap();
            assert!(out.status.success());
            assert!(out.stdout == *tar, "zstd -d of {} differs", layer.digest);
        }
    }
}

#[test]
fn import_of_a_directory_keeps_names_and_links() {
    requires!("import_of_a_directory_keeps_names_and_links");
    let s = setup();
    let (_dir, store) = common::new_store();
    let name = "localhost/fidelity/imported:latest";
    s.rt.block_on(store.import(
        s.reference_dir.path(),
        name,
        &ImageChanges::default(),
        Compression::Gzip,
    ))
    .unwrap();
    check_mount(&s.rt, &store, name, &s.want, "import");
    // And the imported image survives push, convert and a lazy pull too.
    let pushed = format!("{}/fidelity/imported:latest", s.reg.host());
    store.tag(name, &pushed).unwrap();
    s.rt.block_on(store.push(&pushed)).unwrap();
    pull_and_check(&s, &pushed, &["local"], "import, push, pull");
}

#[test]
fn dangling_hard_link_is_refused_by_pull_and_convert() {
    requires!("dangling_hard_link_is_refused_by_pull_and_convert");
    let s = setup();
    let mut bad = TarW::new();
    bad.hardlink(b"x/link", b"a/nowhere");
    let tars = vec![s.tars[0].clone(), bad.finish()];
    let blobs: Vec<Blob> = tars.iter().map(|t| gzip(t)).collect();
    let src = push(&s.rt, &s.reg, "fidelity/dangling", &tars, &blobs);
    let (_dir, store) = common::new_store();
    let check = |e: StoreError, what: &str| match e {
        StoreError::DanglingHardlink { path, target, .. } => {
            assert_eq!(
                (path, target),
                ("x/link".into(), "a/nowhere".into()),
                "{what}"
            )
        }
        other => panic!("{what}: expected DanglingHardlink, got {other}"),
    };
    check(
        s.rt.block_on(store.pull(&src, common::QUIET)).unwrap_err(),
        "pull",
    );
    assert!(store.image(&src).is_err(), "no image after a refused pull");
    let tmp = tempfile::tempdir().unwrap();
    let dst = format!("{}/fidelity/dangling-c:latest", s.reg.host());
    let err =
        s.rt.block_on(skiff_store::convert::convert_image(
            store.registry(),
            &ImageReference::parse(&src).unwrap(),
            &ImageReference::parse(&dst).unwrap(),
            tmp.path(),
            &|_| {},
        ))
        .unwrap_err();
    check(err, "convert");
}

fn skopeo_unavailable() -> Option<String> {
    (!Path::new("/usr/bin/skopeo").exists()).then(|| "skopeo not installed".to_string())
}

fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An OCI layout of uncompressed layers, for skopeo to compress.
fn write_oci_layout(dir: &Path, tars: &[Vec<u8>]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let d = sha256(data);
        std::fs::write(blobs.join(d.trim_start_matches("sha256:")), data).unwrap();
        d
    };
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for t in tars {
        let d = put(t);
        diff_ids.push(d.clone());
        layers.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": t.len()}));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_d = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d, "size": config.len()},
        "layers": layers,
    }))
    .unwrap();
    let manifest_d = put(&manifest);
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_d,
                "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "latest"}}],
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

#[test]
fn skopeo_written_zstd_chunked() {
    require!(
        "skopeo_written_zstd_chunked",
        root_unavailable(),
        registry_unavailable(),
        fixtures::busybox_unavailable(),
        skopeo_unavailable()
    );
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let (src, out) = (dir.path().join("src"), dir.path().join("out"));
    write_oci_layout(&src, &s.tars);
    skopeo(&[
        "copy",
        "--dest-compress-format",
        "zstd:chunked",
        &format!("oci:{}:latest", src.display()),
        &format!("oci:{}:latest", out.display()),
    ]);
    let name = format!("{}/fidelity/skopeo:latest", s.reg.host());
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", out.display()),
        &format!("docker://{name}"),
    ]);
    // skopeo 1.9 writes the older form without tar-split: its TOCs cannot carry the Latin-1
    // names of the middle and top layers, so those are pulled in full; the others stay lazy,
    // the upper one with its hard links to lower layers. (A newer skopeo writes a tar-split,
    // and then every layer stays lazy.)
    let (_dir, store) = common::new_store();
    s.rt.block_on(store.pull(&name, common::QUIET)).unwrap();
    let img = store.image(&name).unwrap();
    let states: Vec<&str> = img.layers.iter().map(|l| l.state.as_str()).collect();
    let version = Command::new("skopeo")
        .arg("--version")
        .output()
        .unwrap()
        .stdout;
    let legacy = String::from_utf8_lossy(&version).contains(" 1.9.");
    let want: &[&str] = if legacy {
        &["lazy", "local", "lazy", "local"]
    } else {
        &["lazy"; 4]
    };
    assert_eq!(states, want, "skopeo {}", String::from_utf8_lossy(&version));
    check_mount(&s.rt, &store, &name, &s.want, "skopeo zstd:chunked");
}

/// The issue's two cases through the real CLI and daemon: `skiff image import` of a directory,
/// `push`, `skiff image convert`, then a fresh daemon pulls (lazily) and runs containers that
/// read the names and links through overlayfs over the FUSE mount.
#[test]
fn issue_cases_through_the_cli() {
    requires!("issue_cases_through_the_cli");
    use skiff_tests::Daemon;
    let s = setup();
    // Three layers pushed as gzip (hard links across layers), and the plain unpack of them
    // imported as one directory (hard links within the layer).
    let blobs: Vec<Blob> = s.tars.iter().map(|t| gzip(t)).collect();
    let layered = push(&s.rt, &s.reg, "cli/layered", &s.tars, &blobs);
    let imported = format!("{}/cli/imported:gzip", s.reg.host());
    let (layered_c, imported_c) = (
        format!("{}/cli/layered:chunked", s.reg.host()),
        format!("{}/cli/imported:chunked", s.reg.host()),
    );
    {
        let d = Daemon::start().unwrap();
        d.ok(&[
            "image",
            "import",
            s.reference_dir.path().to_str().unwrap(),
            &imported,
        ]);
        d.ok(&["push", &imported]);
        d.ok(&["image", "convert", &imported, &imported_c]);
        d.ok(&["image", "convert", &layered, &layered_c]);
    }
    let d = Daemon::start().unwrap();
    let script = "cat /caf*; find / -xdev -name 'caf*' | sort; for l in /lnk*; do readlink \"$l\"; done; \
                  stat -c '%h %i %n' /a/dst /a/orig /b/three /h? /d*/caf* | sort -k3; cat /a/dst /a/rl";
    for image in [&imported, &imported_c, &layered, &layered_c] {
        let out = d.ok(&["pull", image]);
        assert!(!out.is_empty());
        let run = d.run(&["run", "--rm", image, "sh", "-c", script]);
        assert!(
            run.status.success(),
            "{image}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let out = run.stdout;
        let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
        assert_eq!(lines[0], b"latin-1 name", "{image}");
        assert_eq!(lines[1], b"/caf\xe9.txt", "{image}");
        assert_eq!(lines[2], b"/d\xff/caf\xe9.txt", "{image}");
        assert_eq!(lines[3], b"caf\xe9.txt", "{image}");
        assert_eq!(lines[4], b"d\xff/caf\xe9.txt", "{image}");
        let stat: Vec<Vec<&[u8]>> = lines[5..10]
            .iter()
            .map(|l| l.split(|&b| b == b' ').collect())
            .collect();
        let names: Vec<&[u8]> = stat.iter().map(|f| f[2]).collect();
        assert_eq!(
            names,
            [
                &b"/a/dst"[..],
                b"/a/orig",
                b"/b/three",
                b"/d\xff/caf\xe9.txt",
                b"/h\xe9"
            ],
            "{image}"
        );
        // a/dst, a/orig, b/three: one inode with four names; h\xe9 and d\xff/caf\xe9.txt: two.
        assert!(
            stat[..3].iter().all(|f| f[0] == b"4" && f[1] == stat[0][1]),
            "{image}"
        );
        assert!(
            stat[3..].iter().all(|f| f[0] == b"2" && f[1] == stat[3][1]),
            "{image}"
        );
        let tail = [ORIG, REW_V2].concat();
        assert!(
            out.ends_with(&tail),
            "{image}: {}",
            String::from_utf8_lossy(&out)
        );
    }
    // A hard link no layer provides a target for: pull and convert refuse it by name.
    let mut bad = TarW::new();
    bad.hardlink(b"x/link", b"a/nowhere");
    let tars = vec![s.tars[0].clone(), bad.finish()];
    let blobs: Vec<Blob> = tars.iter().map(|t| gzip(t)).collect();
    let dangling = push(&s.rt, &s.reg, "cli/dangling", &tars, &blobs);
    let converted = format!("{}/cli/dangling:chunked", s.reg.host());
    for args in [
        vec!["pull", dangling.as_str()],
        vec!["image", "convert", dangling.as_str(), converted.as_str()],
    ] {
        let out = d.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains(r#"hard link "x/link" to "a/nowhere""#),
            "{args:?}: {err}"
        );
    }
}
