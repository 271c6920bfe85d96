use super::*;
use skiff_store::{ChunkLocation, ChunkRef};

fn entry(path: &str, kind: FileKind) -> FileEntry {
    FileEntry {
        path: path.into(),
        kind,
        mode: if kind == FileKind::Directory {
            0o755
        } else {
            0o644
        },
        uid: 0,
        gid: 0,
        size: 0,
        mtime: 0,
        mtime_nsec: 0,
        link_target: Default::default(),
        dev_major: 0,
        dev_minor: 0,
        xattrs: Default::default(),
        chunks: Vec::new(),
    }
}

fn dir(path: &str) -> FileEntry {
    entry(path, FileKind::Directory)
}

fn file(path: &str) -> FileEntry {
    entry(path, FileKind::Regular)
}

fn file_sized(path: &str, size: u64) -> FileEntry {
    FileEntry {
        size,
        chunks: vec![ChunkRef {
            file_offset: 0,
            len: size,
            location: ChunkLocation::Local { offset: 0 },
        }],
        ..file(path)
    }
}

fn hardlink(path: &str, target: &str) -> FileEntry {
    FileEntry {
        link_target: target.into(),
        ..entry(path, FileKind::Hardlink)
    }
}

fn layer(name: &str, entries: Vec<FileEntry>) -> LayerIndex {
    LayerIndex {
        digest: format!("sha256:{name}"),
        entries,
    }
}

/// All paths of the tree, sorted, directories with a trailing `/`.
fn paths(t: &Tree) -> Vec<String> {
    fn walk(t: &Tree, ino: u64, prefix: &str, out: &mut Vec<String>) {
        for (name, child) in &t.get(ino).unwrap().children {
            let p = format!("{prefix}{}", String::from_utf8_lossy(name));
            if t.get(*child).unwrap().kind == NodeKind::Directory {
                out.push(format!("{p}/"));
                walk(t, *child, &format!("{p}/"), out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(t, ROOT_INO, "", &mut out);
    out
}

fn source_layer(t: &Tree, path: &str) -> Option<usize> {
    t.get(t.resolve(path)?)?.source.map(|s| s.layer)
}

#[test]
fn single_layer_with_implicit_parents() {
    let t = Tree::build(&[layer("a", vec![file("usr/bin/sh"), dir("etc")])]);
    assert_eq!(paths(&t), ["etc/", "usr/", "usr/bin/", "usr/bin/sh"]);
    let usr = t.get(t.resolve("usr").unwrap()).unwrap();
    assert_eq!(usr.source, None, "implicit parent has no entry");
    assert_eq!(usr.nlink, 3);
    assert_eq!(t.get(ROOT_INO).unwrap().nlink, 4);
    assert_eq!(t.get(ROOT_INO).unwrap().parent, ROOT_INO);
    assert_eq!(usr.parent, ROOT_INO);
    assert!(t.warnings().is_empty());
}

#[test]
fn whiteout_removes_lower_entries_only() {
    let t = Tree::build(&[
        layer(
            "a",
            vec![
                dir("d"),
                file("d/x"),
                file("d/y"),
                dir("d/sub"),
                file("d/sub/z"),
            ],
        ),
        // tar order puts the new `x` before its whiteout: the whiteout still only hides `a`'s.
        layer("b", vec![file("d/x"), file("d/.wh.x"), file("d/.wh.sub")]),
    ]);
    assert_eq!(paths(&t), ["d/", "d/x", "d/y"]);
    assert_eq!(source_layer(&t, "d/x"), Some(1));
    assert_eq!(t.get(t.resolve("d").unwrap()).unwrap().nlink, 2);
}

#[test]
fn whiteout_of_missing_name_is_harmless() {
    let t = Tree::build(&[
        layer("a", vec![file("f")]),
        layer(
            "b",
            vec![file("nodir/.wh.f"), file(".wh.g"), file("f/.wh.x")],
        ),
    ]);
    // The whiteouts imply their directories in layer b (as a tar's extraction would).
    assert_eq!(paths(&t), ["f/", "nodir/"]);
}

#[test]
fn opaque_dir_hides_lower_children_and_keeps_itself() {
    let t = Tree::build(&[
        layer(
            "a",
            vec![dir("d"), file("d/old"), dir("d/olddir"), file("keep")],
        ),
        layer("b", vec![file("d/new"), file("d/.wh..wh..opq"), dir("d")]),
    ]);
    assert_eq!(paths(&t), ["d/", "d/new", "keep"]);
    assert_eq!(source_layer(&t, "d"), Some(1));
}

#[test]
fn opaque_marker_without_dir_entry_keeps_lower_metadata() {
    let t = Tree::build(&[
        layer("a", vec![dir("d"), file("d/old")]),
        layer("b", vec![file("d/.wh..wh..opq")]),
    ]);
    assert_eq!(paths(&t), ["d/"]);
    assert_eq!(source_layer(&t, "d"), Some(0));
}

#[test]
fn dir_over_dir_merges_children_with_newer_metadata() {
    let t = Tree::build(&[
        layer("a", vec![dir("d"), file("d/a")]),
        layer("b", vec![dir("d"), file("d/b")]),
    ]);
    assert_eq!(paths(&t), ["d/", "d/a", "d/b"]);
    assert_eq!(source_layer(&t, "d"), Some(1));
}

#[test]
fn file_over_dir_replaces_subtree_and_dir_over_file_replaces_file() {
    let t = Tree::build(&[
        layer("a", vec![dir("d"), file("d/a"), dir("d/s"), file("f")]),
        layer("b", vec![file("d"), dir("f"), file("f/inner")]),
    ]);
    assert_eq!(paths(&t), ["d", "f/", "f/inner"]);
    assert_eq!(
        t.get(t.resolve("d").unwrap()).unwrap().kind,
        NodeKind::Regular
    );
}

#[test]
fn later_file_replaces_earlier() {
    let t = Tree::build(&[
        layer("a", vec![file("f")]),
        layer("b", vec![entry("f", FileKind::Symlink)]),
    ]);
    assert_eq!(source_layer(&t, "f"), Some(1));
    assert_eq!(
        t.get(t.resolve("f").unwrap()).unwrap().kind,
        NodeKind::Symlink
    );
}

#[test]
fn entry_below_a_file_turns_it_into_a_directory() {
    let t = Tree::build(&[layer("a", vec![file("x")]), layer("b", vec![file("x/y")])]);
    assert_eq!(paths(&t), ["x/", "x/y"]);
}

#[test]
fn hardlinks_share_an_inode_and_count_links() {
    let t = Tree::build(&[layer(
        "a",
        vec![
            file_sized("bin/busybox", 10),
            hardlink("bin/sh", "bin/busybox"),
            hardlink("usr/ls", "bin/sh"),
        ],
    )]);
    let a = t.resolve("bin/busybox").unwrap();
    assert_eq!(t.resolve("bin/sh"), Some(a));
    assert_eq!(t.resolve("usr/ls"), Some(a));
    assert_eq!(t.get(a).unwrap().nlink, 3);
}

#[test]
fn hardlink_nlink_drops_when_a_name_is_whited_out_or_replaced() {
    let t = Tree::build(&[
        layer("a", vec![file("x"), hardlink("y", "x"), hardlink("z", "x")]),
        layer("b", vec![file(".wh.y"), file("z")]),
    ]);
    let x = t.get(t.resolve("x").unwrap()).unwrap();
    assert_eq!(x.nlink, 1);
    assert_eq!(t.get(t.resolve("z").unwrap()).unwrap().nlink, 1);
    assert_ne!(t.resolve("x"), t.resolve("z"));
}

#[test]
fn hostile_hardlinks_are_skipped_with_warnings() {
    let t = Tree::build(&[layer(
        "a",
        vec![
            dir("d"),
            hardlink("missing", "nope"),
            hardlink("todir", "d"),
            hardlink("toroot", ""),
            hardlink("self", "self"),
            hardlink("bad", "../etc/passwd"),
        ],
    )]);
    assert_eq!(paths(&t), ["d/"]);
    assert_eq!(t.warnings().len(), 5, "{:?}", t.warnings());
    assert!(t.warnings()[0].to_string().contains("missing"));
}

#[test]
fn unnormalized_paths_are_skipped() {
    let t = Tree::build(&[layer(
        "a",
        vec![
            file("../x"),
            file("a//b"),
            file("./c"),
            file("d/../e"),
            file(&"n".repeat(256)),
            file("nul\0name"),
            file("ok/"),
            file(&"m".repeat(255)),
        ],
    )]);
    assert_eq!(paths(&t), ["m".repeat(255), "ok".to_string()]);
    assert_eq!(t.warnings().len(), 6);
}

#[test]
fn root_entry_sets_root_metadata() {
    let t = Tree::build(&[
        layer("a", vec![dir(""), file("f")]),
        layer("b", vec![dir(".")]),
    ]);
    assert_eq!(
        t.get(ROOT_INO).unwrap().source,
        Some(EntryRef { layer: 1, entry: 0 })
    );
}

#[test]
fn files_with_gapped_chunks_are_skipped() {
    let mut f = file_sized("f", 10);
    f.chunks[0].len = 5;
    let t = Tree::build(&[layer("a", vec![f])]);
    assert!(paths(&t).is_empty());
    assert_eq!(t.warnings().len(), 1);
}

#[test]
fn whiteout_files_never_appear() {
    let t = Tree::build(&[layer(
        "a",
        vec![file(".wh.x"), file("d/.wh..wh..opq"), file(".wh..wh.plnk")],
    )]);
    assert_eq!(paths(&t), ["d/"]);
}

#[test]
fn inode_numbers_are_dense_and_lookups_work() {
    let t = Tree::build(&[layer("a", vec![file("a"), dir("b"), file("b/c")])]);
    assert_eq!(t.len(), 4);
    for ino in 1..=4 {
        assert!(t.get(ino).is_some());
    }
    assert!(t.get(0).is_none());
    assert!(t.get(5).is_none());
    assert!(t.get(u64::MAX).is_none());
    let b = t.get(t.resolve("b").unwrap()).unwrap();
    assert!(t.child(b, b"c").is_some());
    assert!(t.child(b, b"zz").is_none());
}

#[test]
fn a_replaced_directory_is_not_reused_for_later_entries() {
    let t = Tree::build(&[layer("a", vec![file("d/x/a"), file("d/x"), file("d/x/b")])]);
    assert_eq!(paths(&t), ["d/", "d/x/", "d/x/b"]);
    let t = Tree::build(&[
        layer("a", vec![file("d/x/a")]),
        // The whiteout hides layer a's `d` wherever it sits in layer b's tar order.
        layer("b", vec![file("d/x/c"), file(".wh.d")]),
    ]);
    assert_eq!(paths(&t), ["d/", "d/x/", "d/x/c"]);
    let t = Tree::build(&[layer(
        "a",
        vec![
            file("d/x/a"),
            file("f"),
            hardlink("d/x", "f"),
            file("d/x/b"),
        ],
    )]);
    assert_eq!(paths(&t), ["d/", "d/x/", "d/x/b", "f"]);
    assert_eq!(t.get(t.resolve("f").unwrap()).unwrap().nlink, 1);
}

#[test]
fn hardlinks_across_layers_resolve_as_unpacking_in_order() {
    let t = Tree::build(&[
        layer("0", vec![file("a/orig"), file("a/rew"), file("a/dst")]),
        // The middle layer rewrites a/rew and starts a chain to a/orig.
        layer("1", vec![file("a/rew"), hardlink("b/two", "a/orig")]),
        layer(
            "2",
            vec![
                hardlink("a/dst", "a/orig"),
                hardlink("a/rl", "a/rew"),
                hardlink("b/three", "b/two"),
            ],
        ),
    ]);
    assert!(t.warnings().is_empty(), "{:?}", t.warnings());
    let node = |p: &str| t.get(t.resolve(p).unwrap()).unwrap();
    let orig = t.resolve("a/orig").unwrap();
    for p in ["a/dst", "b/two", "b/three"] {
        assert_eq!(t.resolve(p), Some(orig), "{p}");
    }
    assert_eq!(node("a/orig").nlink, 4);
    assert_eq!(node("a/orig").source, Some(EntryRef { layer: 0, entry: 0 }));
    // The link takes the target as of its layer: the middle layer's a/rew.
    assert_eq!(t.resolve("a/rl"), t.resolve("a/rew"));
    assert_eq!(node("a/rl").source, Some(EntryRef { layer: 1, entry: 0 }));
    assert_eq!(node("a/rl").nlink, 2);
}

#[test]
fn names_are_bytes() {
    let raw = |b: &[u8]| FileEntry {
        path: skiff_store::LayerPath::new(b.to_vec()),
        ..file("x")
    };
    let mut link = hardlink("l", "x");
    link.link_target = skiff_store::LayerPath::new(b"d\xff/caf\xe9".to_vec());
    let t = Tree::build(&[layer(
        "0",
        vec![raw(b"d\xff/caf\xe9"), raw(b"d\xff/caf\xe8"), link],
    )]);
    assert!(t.warnings().is_empty(), "{:?}", t.warnings());
    let d = t.get(t.resolve(b"d\xff").unwrap()).unwrap();
    assert_eq!(d.children.len(), 2);
    let e9 = t.child(d, b"caf\xe9").unwrap();
    assert_ne!(Some(e9), t.child(d, b"caf\xe8"));
    assert_eq!(t.resolve("l"), Some(e9));
    assert_eq!(t.get(e9).unwrap().nlink, 2);
    assert!(t.resolve("d\u{fffd}/caf\u{fffd}").is_none());
}

/// Live restore rebuilds the tree after a restart and needs the inode numbers the kernel
/// holds: the numbering depends only on the layers, whatever order entries came in.
#[test]
fn numbering_is_a_function_of_the_layers_and_the_fingerprint_shows_it() {
    let lower = layer(
        "l",
        vec![
            dir("etc"),
            file("etc/b"),
            file("etc/a"),
            dir("usr"),
            file("usr/x"),
        ],
    );
    let upper = layer("u", vec![file("etc/c"), file("etc/.wh.b"), dir("opt")]);
    let a = Tree::build(&[lower.clone(), upper.clone()]);
    let b = Tree::build(&[lower.clone(), upper.clone()]);
    assert_eq!(a.fingerprint(), b.fingerprint());
    for p in ["etc", "etc/a", "etc/c", "usr/x", "opt"] {
        assert_eq!(a.resolve(p), b.resolve(p), "{p}");
    }
    // The same entries listed in another order number alike (children are name-sorted).
    let shuffled = layer(
        "l",
        vec![
            dir("usr"),
            file("usr/x"),
            dir("etc"),
            file("etc/a"),
            file("etc/b"),
        ],
    );
    let c = Tree::build(&[shuffled, upper.clone()]);
    assert_eq!(c.fingerprint(), a.fingerprint());
    // Another tree (one more name) has another fingerprint.
    let more = layer("u", vec![file("etc/c"), file("etc/d"), dir("opt")]);
    let d = Tree::build(&[lower, more]);
    assert_ne!(d.fingerprint(), a.fingerprint());
}
