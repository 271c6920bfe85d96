//! Many cold starts of one lazy image at once: the image is mounted once and every chunk is
//! fetched once, however many containers read it (requests counted at a relay in front of
//! the real registry).

use sha2::Digest;
use skiff_tests::registry::registry_unavailable;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{fixtures, require, CountingProxy, Daemon, Registry};

#[test]
fn twenty_concurrent_cold_runs_fetch_each_chunk_once() {
    require!(
        "twenty_concurrent_cold_runs_fetch_each_chunk_once",
        root_unavailable(),
        registry_unavailable()
    );
    let reg = Registry::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let a = fixtures::random_bytes(1 << 20, 11);
    let b = fixtures::random_bytes(600 << 10, 12);
    std::fs::create_dir_all(rootfs.path().join("srv")).unwrap();
    std::fs::write(rootfs.path().join("data/a"), &a).unwrap();
    std::fs::write(rootfs.path().join("srv/b"), &b).unwrap();
    let gzip = format!("{}/many:gzip", reg.host());
    let chunked = format!("{}/many:chunked", reg.host());
    {
        let d = Daemon::start().unwrap();
        d.ok(&["image", "import", rootfs.path().to_str().unwrap(), &gzip]);
        d.ok(&["push", &gzip]);
        d.ok(&["image", "convert", &gzip, &chunked]);
    }
    let proxy = CountingProxy::start(&reg.host()).unwrap();
    let image = format!("{}/many:chunked", proxy.host());
    let d = Daemon::start_with(&["--no-profile-prefetch"]).unwrap();
    d.ok(&["pull", &image]);
    proxy.clear();
    let outputs: Vec<std::process::Output> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..20)
            .map(|_| {
                s.spawn(|| {
                    d.run(&[
                        "run",
                        "--rm",
                        "--network",
                        "none",
                        &image,
                        "sh",
                        "-c",
                        "cat /data/a /srv/b | sha256sum",
                    ])
                })
            })
            .collect();
        runs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let want = {
        let mut all = a.clone();
        all.extend_from_slice(&b);
        hex::encode(sha2::Sha256::digest(&all))
    };
    for o in &outputs {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).split_whitespace().next(),
            Some(want.as_str())
        );
    }
    // Every request a Range GET of the layer; no byte range asked for twice.
    let seen = proxy.requests();
    let mut ranges: Vec<(u64, u64)> = seen
        .iter()
        .map(|r| {
            assert_eq!(r.method, "GET");
            assert!(r.path.contains("/blobs/sha256:"), "{r:?}");
            let v = r.range.as_deref().expect("a Range request");
            let (lo, hi) = v.trim_start_matches("bytes=").split_once('-').unwrap();
            (lo.parse().unwrap(), hi.parse().unwrap())
        })
        .collect();
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        assert!(w[0].1 < w[1].0, "overlapping fetches {w:?} in {ranges:?}");
    }
    let fetched: u64 = ranges.iter().map(|(lo, hi)| hi - lo + 1).sum();
    eprintln!(
        "20 concurrent cold runs: {} requests, {fetched} bytes",
        ranges.len()
    );
    // Random data does not compress: what was fetched is about the two files, once, and
    // the shell's binary (busybox, which a miss reads ahead to its end).
    let files = (a.len() + b.len()) as u64;
    let shell = std::fs::metadata(rootfs.path().join("bin/busybox"))
        .unwrap()
        .len();
    assert!(
        fetched >= files && fetched < files * 3 / 2 + shell,
        "{fetched} for {files} + {shell}"
    );
}
