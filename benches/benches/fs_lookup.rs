//! Metadata speed of skiff-fs on a large image (100k files, paths 9 components deep):
//! merging the layer indexes, lookups in the core, and `stat` through a real FUSE mount.

#[path = "../../fs/tests/common/mod.rs"]
mod common;

use std::ffi::OsStr;

use common::{dir, file, layer, DataFile, UnmountGuard};
use criterion::{criterion_group, criterion_main, Criterion};
use skiff_fs::{ImageFs, MountOptions, Tree};
use skiff_store::LayerIndex;

const PKGS: usize = 50;
const SUBS: usize = 20;
const FILES: usize = 100;

fn deep_dir(p: usize, s: usize) -> String {
    format!("usr/lib/pkg{p}/sub{s}/x/y/z/w")
}

/// Two layers: the tree, and an update replacing every tenth file.
fn layers(data: &mut DataFile) -> Vec<LayerIndex> {
    let mut base = Vec::new();
    let mut update = Vec::new();
    for p in 0..PKGS {
        for s in 0..SUBS {
            let d = deep_dir(p, s);
            base.push(dir(&d));
            for f in 0..FILES {
                base.push(file(data, &format!("{d}/file{f}.py"), b"x"));
                if f % 10 == 0 {
                    update.push(file(data, &format!("{d}/file{f}.py"), b"y"));
                }
            }
        }
    }
    vec![layer("sha256:base", base), layer("sha256:update", update)]
}

fn deep_paths() -> Vec<String> {
    (0..64)
        .map(|i| {
            format!(
                "{}/file{}.py",
                deep_dir(i * 7 % PKGS, i * 3 % SUBS),
                i % FILES
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let mut data = DataFile::create(tmp.path());
    let layers = layers(&mut data);
    let reader = data.reader();

    let mut g = c.benchmark_group("fs_merge");
    g.sample_size(10);
    g.bench_function("tree_build_100k", |b| b.iter(|| Tree::build(&layers)));
    g.finish();

    let fs = ImageFs::new(layers.clone(), reader.clone()).unwrap();
    let paths = deep_paths();
    c.bench_function("fs_core_lookup_deep_path_x64", |b| {
        b.iter(|| {
            for p in &paths {
                let mut ino = fs.root();
                for part in p.split('/') {
                    ino = fs.lookup(ino, OsStr::new(part)).unwrap().ino;
                }
                std::hint::black_box(ino);
            }
        })
    });

    if !nix::unistd::geteuid().is_root() || !std::path::Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED: fs_mount_stat_deep_path_x64: needs root and /dev/fuse");
        return;
    }
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _guard = UnmountGuard(mnt.clone());
    let handle = skiff_fs::mount(
        ImageFs::new(layers, reader).unwrap(),
        &mnt,
        &MountOptions::default(),
    )
    .unwrap();
    let full: Vec<_> = paths.iter().map(|p| mnt.join(p)).collect();
    c.bench_function("fs_mount_stat_deep_path_x64", |b| {
        b.iter(|| {
            for p in &full {
                std::hint::black_box(std::fs::symlink_metadata(p).unwrap());
            }
        })
    });
    handle.unmount().unwrap();
}

criterion_group!(benches, bench);
criterion_main!(benches);
