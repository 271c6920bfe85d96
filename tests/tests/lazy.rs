//! Lazy zstd:chunked images end to end: import + push + `skiff image convert`, then a fresh
//! daemon pulls only manifest, config and TOCs, and file bytes come from the registry on
//! demand through the chunk cache (real registry, real daemon, real FUSE).

use std::process::Command;

use sha2::{Digest, Sha256};
use skiff_tests::registry::registry_unavailable;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{fixtures, require, Daemon, Registry};

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Bytes the registry sent for blob GETs in its access log after byte `from` of the log.
fn blob_bytes_served(reg: &Registry, from: usize) -> u64 {
    let log = std::fs::read_to_string(reg.log_path()).unwrap();
    log[from..]
        .lines()
        .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/"))
        .filter_map(|l| {
            let rest = &l[l.find("HTTP/1.1\" ")? + 10..];
            let mut it = rest.split_whitespace();
            let _status = it.next()?;
            it.next()?.parse::<u64>().ok()
        })
        .sum()
}

fn log_len(reg: &Registry) -> usize {
    std::fs::metadata(reg.log_path()).unwrap().len() as usize
}

/// `(bytes, chunks, fetched)` of the chunk cache as `skiff info` prints them.
fn cache_info(d: &Daemon) -> (u64, u64, u64) {
    let info = d.ok(&["info"]);
    let field = |label: &str| -> Vec<u64> {
        let line = info
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label} in info:\n{info}"));
        line.split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect()
    };
    let cache = field("Chunk cache:");
    let fetched = field("Fetched from registries:");
    (cache[0], cache[1], fetched[0])
}

#[test]
fn lazy_pull_fetches_on_demand_and_prune_reclaims() {
    require!(
        "lazy_pull_fetches_on_demand_and_prune_reclaims",
        root_unavailable(),
        registry_unavailable()
    );
    let reg = Registry::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let big = fixtures::random_bytes(6 << 20, 42);
    let medium = fixtures::random_bytes(700 << 10, 7);
    let small = b"hello lazy world\n".repeat(40);
    let late = fixtures::random_bytes(300 << 10, 99);
    std::fs::write(rootfs.path().join("data/file"), &big).unwrap();
    std::fs::write(rootfs.path().join("data/medium"), &medium).unwrap();
    std::fs::write(rootfs.path().join("data/small.txt"), &small).unwrap();
    // In a directory of its own: read-ahead of the /data files stays within /data.
    std::fs::create_dir_all(rootfs.path().join("later")).unwrap();
    std::fs::write(rootfs.path().join("later/late"), &late).unwrap();
    let gzip = format!("{}/x:gzip", reg.host());
    let chunked = format!("{}/x:chunked", reg.host());

    // Publish and convert with one daemon.
    {
        let d = Daemon::start().unwrap();
        d.ok(&["image", "import", rootfs.path().to_str().unwrap(), &gzip]);
        d.ok(&["push", &gzip]);
        let out = d.ok(&["image", "convert", &gzip, &chunked]);
        assert!(
            out.contains("zstd:chunked") && out.contains("digest: sha256:"),
            "{out}"
        );
    }

    // skopeo reads the converted image; its layer decompresses to the config's diff_id.
    let dir = tempfile::tempdir().unwrap();
    let dest = format!("dir:{}", dir.path().join("img").display());
    let st = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{chunked}"))
        .arg(&dest)
        .status()
        .expect("running skopeo");
    assert!(st.success(), "skopeo copy failed");
    let img = dir.path().join("img");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(img.join("manifest.json")).unwrap()).unwrap();
    let hex_of = |d: &serde_json::Value| {
        d.as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string()
    };
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(img.join(hex_of(&manifest["config"]["digest"]))).unwrap(),
    )
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let layer_hex = hex_of(&layers[0]["digest"]);
    let tar = Command::new("zstd")
        .args(["-d", "-c"])
        .arg(img.join(&layer_hex))
        .output()
        .unwrap();
    assert!(tar.status.success());
    assert_eq!(
        format!("sha256:{}", sha256_hex(&tar.stdout)),
        config["rootfs"]["diff_ids"][0].as_str().unwrap()
    );
    let blob_size = std::fs::metadata(reg.blob_path(&format!("sha256:{layer_hex}")))
        .unwrap()
        .len();

    // A fresh daemon pulls lazily: far less than the layer.
    let mut d = Daemon::start().unwrap();
    let mark = log_len(&reg);
    let out = d.ok(&["pull", &chunked]);
    assert!(out.contains("Lazy image"), "{out}");
    let pulled = blob_bytes_served(&reg, mark);
    eprintln!("lazy pull: {pulled} blob bytes served of a {blob_size}-byte layer");
    assert!(
        pulled > 0 && pulled < blob_size / 10,
        "{pulled} of {blob_size}"
    );
    // Beside the TOC, the pull fetches (in the background) only what every container create
    // reads: the image's etc/passwd and etc/group (with the other small files of etc/ read
    // ahead and behind in the same requests), a few hundred bytes.
    let mut info = cache_info(&d);
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let again = cache_info(&d);
        if again == info {
            break;
        }
        info = again;
    }
    let (bytes0, chunks0, fetched0) = info;
    assert!(bytes0 < 8192, "{bytes0} bytes in {chunks0} chunks");

    // File bytes come on demand and are exact.
    let mark = log_len(&reg);
    let sum = d.ok(&["run", "--rm", &chunked, "sha256sum", "/data/file"]);
    assert_eq!(
        sum.split_whitespace().next(),
        Some(sha256_hex(&big).as_str())
    );
    for (path, want) in [
        ("/data/medium", &medium[..]),
        ("/data/small.txt", &small[..]),
    ] {
        let out = d.run(&["run", "--rm", &chunked, "cat", path]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == want, "{path} differs");
    }
    let on_demand = blob_bytes_served(&reg, mark);
    let (bytes1, chunks1, fetched1) = cache_info(&d);
    eprintln!("on demand: {on_demand} blob bytes; cache {bytes1} bytes in {chunks1} chunks, fetched {fetched1}");
    assert!(bytes1 >= (big.len() + medium.len()) as u64, "{bytes1}");
    assert!(chunks1 > chunks0 && fetched1 > fetched0 && on_demand >= fetched1 - fetched0);

    let df = d.ok(&["system", "df"]);
    assert!(
        df.lines()
            .any(|l| l.starts_with("Chunk Cache") && !l.contains(" 0B")),
        "{df}"
    );

    // After a restart the lazy layer is registered again: a file never read before arrives.
    d.restart().unwrap();
    let out = d.run(&["run", "--rm", &chunked, "cat", "/later/late"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == late, "/later/late differs after a restart");
    let (bytes3, _, fetched3) = cache_info(&d);
    assert!(bytes3 > bytes1 && fetched3 > 0, "{bytes3} {fetched3}");

    // Removing the image and pruning frees the cache.
    d.ok(&["rmi", &chunked]);
    let out = d.ok(&["system", "prune", "-f"]);
    let (bytes2, chunks2, _) = cache_info(&d);
    assert_eq!((bytes2, chunks2), (0, 0), "{out}");
}
