//! Read throughput through a real skiff-fs FUSE mount next to reading the same files from an
//! unpacked directory, in the same run: page-cache hits (FOPEN_KEEP_CACHE), and reads that
//! reach the daemon (page cache dropped with fadvise before each pass).

#[path = "../../fs/tests/common/mod.rs"]
mod common;

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use common::{file, layer, noise, DataFile, UnmountGuard};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use skiff_fs::{ImageFs, MountOptions};

const FILES: usize = 32;
const FILE_SIZE: usize = 2 << 20;

fn read_all(paths: &[PathBuf], drop_cache: bool, buf: &mut [u8]) -> u64 {
    let mut total = 0;
    for p in paths {
        let mut f = File::open(p).unwrap();
        if drop_cache {
            // SAFETY: a valid open fd; advisory call only.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
        loop {
            let n = f.read(buf).unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    total
}

fn bench(c: &mut Criterion) {
    if !nix::unistd::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED: fs_read: needs root and /dev/fuse");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut data = DataFile::create(tmp.path());
    let unpacked = tmp.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let mut entries = Vec::new();
    for i in 0..FILES {
        let bytes = noise(FILE_SIZE, i as u64 + 1);
        std::fs::write(unpacked.join(format!("f{i}")), &bytes).unwrap();
        entries.push(file(&mut data, &format!("f{i}"), &bytes));
    }
    let reader = data.reader();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _guard = UnmountGuard(mnt.clone());
    let fs = ImageFs::new(vec![layer("sha256:bench", entries)], reader).unwrap();
    let handle = skiff_fs::mount(fs, &mnt, &MountOptions::default()).unwrap();

    let names: Vec<String> = (0..FILES).map(|i| format!("f{i}")).collect();
    let in_mount: Vec<PathBuf> = names.iter().map(|n| mnt.join(n)).collect();
    let in_dir: Vec<PathBuf> = names.iter().map(|n| unpacked.join(n)).collect();
    let mut buf = vec![0u8; 128 << 10];
    assert_eq!(
        read_all(&in_mount, false, &mut buf),
        (FILES * FILE_SIZE) as u64
    );

    let mut g = c.benchmark_group("fs_read_64MiB");
    g.sample_size(20);
    g.throughput(Throughput::Bytes((FILES * FILE_SIZE) as u64));
    g.bench_function("unpacked_dir_cached", |b| {
        b.iter(|| read_all(&in_dir, false, &mut buf))
    });
    g.bench_function("fuse_mount_cached", |b| {
        b.iter(|| read_all(&in_mount, false, &mut buf))
    });
    g.bench_function("fuse_mount_through_daemon", |b| {
        b.iter(|| read_all(&in_mount, true, &mut buf))
    });
    g.finish();
    handle.unmount().unwrap();
}

criterion_group!(benches, bench);
criterion_main!(benches);
