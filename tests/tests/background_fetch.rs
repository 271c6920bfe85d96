//! Background fetch: after a lazy image is mounted, the rest of its layer comes at low
//! priority until the image is local, or until the cache budget, never past it.

use skiff_tests::registry::registry_unavailable;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{fixtures, require, Daemon, Registry};

#[test]
fn background_fetch_makes_the_image_local_and_stops_at_the_budget() {
    require!(
        "background_fetch_makes_the_image_local_and_stops_at_the_budget",
        root_unavailable(),
        registry_unavailable()
    );
    let mut reg = Registry::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let big = fixtures::random_bytes(6 << 20, 31);
    std::fs::write(rootfs.path().join("data/big"), &big).unwrap();
    let gzip = format!("{}/bg:gzip", reg.host());
    let chunked = format!("{}/bg:chunked", reg.host());
    {
        let d = Daemon::start().unwrap();
        d.ok(&["image", "import", rootfs.path().to_str().unwrap(), &gzip]);
        d.ok(&["push", &gzip]);
        d.ok(&["image", "convert", &gzip, &chunked]);
    }

    // A 2 MiB budget: the background fetch stops short of it.
    {
        let d = Daemon::start_with_background_fetch(&["--cache-size", "2m"]).unwrap();
        d.ok(&["pull", &chunked]);
        d.ok(&["create", "--name", "bg-small", &chunked, "true"]);
        let (bytes, _) = d.settled_chunk_cache();
        assert!(bytes <= 2 << 20, "{bytes} bytes over a 2 MiB budget");
        assert!(
            d.log_text().contains("background fetch done"),
            "{}",
            d.log_text()
        );
        d.ok(&["rm", "bg-small"]);
    }

    // Room enough: the whole layer comes, and the container then runs with the registry
    // gone.
    let d = Daemon::start_with_background_fetch(&[]).unwrap();
    d.ok(&["pull", &chunked]);
    d.ok(&[
        "create",
        "--name",
        "bg-all",
        &chunked,
        "sha256sum",
        "/data/big",
    ]);
    let (bytes, _) = d.settled_chunk_cache();
    assert!(bytes >= big.len() as u64, "{bytes}");
    reg.stop().unwrap();
    let out = d.ok(&["start", "-a", "bg-all"]);
    use sha2::Digest;
    assert_eq!(
        out.split_whitespace().next(),
        Some(hex::encode(sha2::Sha256::digest(&big)).as_str())
    );
    d.ok(&["rm", "bg-all"]);
}
