//! Pulling a converted copy of a local image (zstd:chunked convert keeps the config, so the
//! image ID is the same) keeps the local layers: the original can still be saved and pushed.

use skiff_tests::fixtures::{self, busybox_unavailable};
use skiff_tests::registry::registry_unavailable;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{require, Daemon, Registry};

#[test]
fn pulling_a_converted_copy_keeps_the_local_original() {
    require!(
        "pulling_a_converted_copy_keeps_the_local_original",
        root_unavailable(),
        registry_unavailable(),
        busybox_unavailable()
    );
    let registry = Registry::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    let gzip = format!("{}/local/base:gzip", registry.host());
    let chunked = format!("{}/local/base:chunked", registry.host());
    let d = Daemon::start().unwrap();
    d.ok(&["image", "import", rootfs.path().to_str().unwrap(), &gzip]);
    d.ok(&["push", &gzip]);
    d.ok(&["image", "convert", &gzip, &chunked]);
    d.ok(&["pull", &chunked]);
    let out = d.ok(&["image", "inspect", &gzip, &chunked]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["Id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{out}");
    assert_eq!(ids[0], ids[1], "convert keeps the config, so the image ID");
    // Still local: save works and a push to another repository sends the layers.
    let archive = tempfile::NamedTempFile::new().unwrap();
    d.ok(&["save", "-o", archive.path().to_str().unwrap(), &gzip]);
    assert!(std::fs::metadata(archive.path()).unwrap().len() > 100_000);
    let copy = format!("{}/local/copy:1", registry.host());
    d.ok(&["tag", &gzip, &copy]);
    d.ok(&["push", &copy]);
    let out = d.ok(&["run", "--rm", &chunked, "/bin/echo", "ran"]);
    assert_eq!(out, "ran\n");
}
