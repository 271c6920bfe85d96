//! Access profiles end to end: a lazily pulled image records what its container read; after
//! the cache is emptied, mounting the image again prefetches exactly that in a few large
//! requests, and the container then reads without going to the registry (real registry,
//! daemon, FUSE).

use skiff_tests::registry::registry_unavailable;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{fixtures, require, Daemon, Registry};

/// Blob GET lines in the registry's access log after byte `from`.
fn blob_gets(reg: &Registry, from: usize) -> usize {
    let log = std::fs::read_to_string(reg.log_path()).unwrap();
    log[from..]
        .lines()
        .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/"))
        .count()
}

fn log_len(reg: &Registry) -> usize {
    std::fs::metadata(reg.log_path()).unwrap().len() as usize
}

/// Chunks in the daemon's cache, from `skiff info`.
fn cached_chunks(d: &Daemon) -> u64 {
    let info = d.ok(&["info"]);
    let line = info
        .lines()
        .find(|l| l.trim_start().starts_with("Chunk cache:"))
        .unwrap_or_else(|| panic!("no chunk cache line in:\n{info}"));
    line.split_whitespace()
        .filter_map(|w| w.parse().ok())
        .nth(1)
        .unwrap()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn recorded_profile_drives_prefetch_on_an_empty_cache() {
    require!(
        "recorded_profile_drives_prefetch_on_an_empty_cache",
        root_unavailable(),
        registry_unavailable()
    );
    let reg = Registry::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let a = fixtures::random_bytes(700 << 10, 1);
    let b = fixtures::random_bytes(300 << 10, 2);
    let unread = fixtures::random_bytes(3 << 20, 3);
    std::fs::create_dir_all(rootfs.path().join("data/x")).unwrap();
    std::fs::write(rootfs.path().join("data/a"), &a).unwrap();
    std::fs::write(rootfs.path().join("data/unread"), &unread).unwrap();
    std::fs::write(rootfs.path().join("data/x/b"), &b).unwrap();
    let gzip = format!("{}/prof:gzip", reg.host());
    let chunked = format!("{}/prof:chunked", reg.host());
    {
        let d = Daemon::start().unwrap();
        d.ok(&["image", "import", rootfs.path().to_str().unwrap(), &gzip]);
        d.ok(&["push", &gzip]);
        d.ok(&["image", "convert", &gzip, &chunked]);
    }

    let d = Daemon::start().unwrap();
    d.ok(&["pull", &chunked]);
    let cmd = ["cat", "/data/a", "/data/x/b"];
    let mut args = vec!["run", "--rm", chunked.as_str()];
    args.extend(cmd);
    let out = d.run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.len() == a.len() + b.len());
    // Saved once the container is gone.
    wait_for("the profile", || {
        d.ok(&["image", "profile", "ls"]).lines().count() == 2
    });
    let profile: serde_json::Value =
        serde_json::from_str(&d.ok(&["image", "profile", "inspect", &chunked])).unwrap();
    let paths: Vec<&str> = profile[0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"data/a") && paths.contains(&"data/x/b"),
        "{paths:?}"
    );
    assert!(!paths.contains(&"data/unread"), "{paths:?}");
    let profiled: u64 = profile[0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["chunks"].as_array().unwrap().len() as u64)
        .sum();

    // Empty the cache (the profile stays), pull again, and only create the container:
    // mounting the image prefetches what the profile names.
    d.ok(&["rmi", &chunked]);
    d.ok(&["system", "prune", "-f"]);
    assert_eq!(cached_chunks(&d), 0);
    d.ok(&["pull", &chunked]);
    // The pull fetches the image's etc/passwd and etc/group in the background (every create
    // reads them): let that settle so only the prefetch is counted.
    let mut before = cached_chunks(&d);
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = cached_chunks(&d);
        if now == before {
            break;
        }
        before = now;
    }
    let mark = log_len(&reg);
    let mut args = vec!["create", "--name", "pf", chunked.as_str()];
    args.extend(cmd);
    d.ok(&args);
    wait_for("the prefetch", || cached_chunks(&d) >= profiled);
    let prefetch_gets = blob_gets(&reg, mark);
    eprintln!("prefetch: {profiled} chunks in {prefetch_gets} requests");
    // A few large requests, not one per chunk (the two files are far apart in the blob).
    assert!((1..=3).contains(&prefetch_gets), "{prefetch_gets}");
    assert!(
        cached_chunks(&d) < before + profiled + 4,
        "the unread file was fetched too"
    );
    // The container reads everything from the cache.
    let mark = log_len(&reg);
    let out = d.run(&["start", "-a", "pf"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.len() == a.len() + b.len());
    assert_eq!(blob_gets(&reg, mark), 0);
    d.ok(&["rm", "pf"]);

    // Removing the profile: gone from the list; removing it again is an error.
    d.ok(&["image", "profile", "rm", &chunked]);
    assert_eq!(d.ok(&["image", "profile", "ls"]).lines().count(), 1);
    let again = d.run(&["image", "profile", "rm", &chunked]);
    assert!(!again.status.success());
}

#[test]
fn profile_round_trips_through_the_registry_and_a_bad_one_is_ignored() {
    require!(
        "profile_round_trips_through_the_registry_and_a_bad_one_is_ignored",
        root_unavailable(),
        registry_unavailable()
    );
    let reg = Registry::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let a = fixtures::random_bytes(500 << 10, 21);
    std::fs::write(rootfs.path().join("data/a"), &a).unwrap();
    let gzip = format!("{}/shared:gzip", reg.host());
    let chunked = format!("{}/shared:chunked", reg.host());
    {
        let d = Daemon::start().unwrap();
        d.ok(&["image", "import", rootfs.path().to_str().unwrap(), &gzip]);
        d.ok(&["push", &gzip]);
        d.ok(&["image", "convert", &gzip, &chunked]);
    }

    // Record on one machine and publish.
    {
        let d = Daemon::start().unwrap();
        d.ok(&["pull", &chunked]);
        d.ok(&["run", "--rm", &chunked, "cat", "/data/a"]);
        wait_for("the profile", || {
            d.ok(&["image", "profile", "ls"]).lines().count() == 2
        });
        let out = d.ok(&["image", "profile", "push", &chunked]);
        assert!(out.contains("profile pushed as sha256:"), "{out}");
    }
    // The registry has no Referrers API: the fallback tag lists the artifact, whose
    // subject is the image's manifest.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = skiff_store::RegistryClient::new(Default::default());
    let image = skiff_store::ImageReference::parse(&chunked).unwrap();
    let subject = rt.block_on(client.resolve(&image)).unwrap().manifest_digest;
    let tag = skiff_store::ImageReference::parse(&format!(
        "{}/shared:{}",
        reg.host(),
        subject.replacen(':', "-", 1)
    ))
    .unwrap();
    let (index, _, media_type) = rt.block_on(client.fetch_manifest(&tag)).unwrap();
    assert_eq!(media_type, "application/vnd.oci.image.index.v1+json");
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["artifactType"],
        "application/vnd.skiff.access-profile.v1+json"
    );
    let artifact = image.with_digest(entry["digest"].as_str().unwrap());
    let (artifact, _, _) = rt.block_on(client.fetch_manifest(&artifact)).unwrap();
    let artifact: serde_json::Value = serde_json::from_slice(&artifact).unwrap();
    assert_eq!(artifact["subject"]["digest"], subject.as_str());
    let doc_digest = artifact["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();

    // A fresh machine: the pull brings the profile, the mount prefetches it, the
    // container reads nothing from the registry.
    {
        let d = Daemon::start().unwrap();
        d.ok(&["pull", &chunked]);
        assert_eq!(d.ok(&["image", "profile", "ls"]).lines().count(), 2);
        d.ok(&["create", "--name", "shared1", &chunked, "cat", "/data/a"]);
        wait_for("the prefetch", || cached_chunks(&d) >= 2);
        let mark = log_len(&reg);
        let out = d.run(&["start", "-a", "shared1"]);
        assert!(out.status.success());
        assert!(out.stdout == a);
        assert_eq!(blob_gets(&reg, mark), 0);
        d.ok(&["rm", "shared1"]);
    }

    // The profile blob damaged in the registry's storage: ignored, logged once, the pull
    // and the container unaffected.
    let blob = reg.blob_path(&doc_digest);
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    std::fs::write(&blob, &bytes).unwrap();
    let d = Daemon::start().unwrap();
    d.ok(&["pull", &chunked]);
    assert_eq!(d.ok(&["image", "profile", "ls"]).lines().count(), 1);
    d.ok(&["rmi", &chunked]);
    d.ok(&["pull", &chunked]);
    let out = d.run(&["run", "--rm", &chunked, "cat", "/data/a"]);
    assert!(out.status.success() && out.stdout == a);
    assert_eq!(
        d.log_text().matches("ignoring a profile artifact").count(),
        1,
        "{}",
        d.log_text()
    );
}
