//! `skiff bench` on a lazily pullable image: private daemons started and removed by the
//! bench, one round per mode, the table, markdown and SVG chart it writes.

use std::process::Command;

use skiff_tests::binary::skiff_bin;
use skiff_tests::registry::registry_unavailable;
use skiff_tests::skip::root_unavailable;
use skiff_tests::{fixtures, require, Daemon, Registry};

#[test]
fn bench_reports_cold_profile_warm_and_full() {
    require!(
        "bench_reports_cold_profile_warm_and_full",
        root_unavailable(),
        registry_unavailable()
    );
    let reg = Registry::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    fixtures::build_busybox_rootfs(rootfs.path()).unwrap();
    std::fs::write(
        rootfs.path().join("data/blob"),
        fixtures::random_bytes(1 << 20, 5),
    )
    .unwrap();
    let gzip = format!("{}/bench:gzip", reg.host());
    let chunked = format!("{}/bench:chunked", reg.host());
    {
        let d = Daemon::start().unwrap();
        d.ok(&["image", "import", rootfs.path().to_str().unwrap(), &gzip]);
        d.ok(&["push", &gzip]);
        d.ok(&["image", "convert", &gzip, &chunked]);
    }
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(skiff_bin())
        .args(["bench", "--rounds", "1", "--full", "--out"])
        .arg(out_dir.path())
        .arg(&chunked)
        .args(["--", "sh", "-c", "cat /data/blob >/dev/null; echo hello"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Progress while running, one line per run.
    assert_eq!(stderr.matches("round 1:").count(), 4, "{stderr}");
    let row = |mode: &str| -> Vec<f64> {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {mode} |")))
            .unwrap_or_else(|| panic!("no {mode} row in\n{stdout}"));
        line.split('|')
            .skip(2)
            .filter_map(|c| c.trim().parse().ok())
            .collect()
    };
    // pull, first output, exit, MB, MB of metadata, MB of chunks read, requests
    let cold = row("cold");
    let profiled = row("cold+profile");
    let warm = row("warm");
    let full = row("full pull");
    assert_eq!(cold.len(), 7, "{stdout}");
    assert!(cold[1] > 0.0 && cold[1] <= cold[2], "{cold:?}");
    // A cold run fetches the file (1 MiB of random bytes), a warm one nothing.
    assert!(cold[3] >= 1.0 && cold[6] >= 3.0, "{cold:?}");
    // The pull fetched metadata only; the reads needed the file's compressed chunks (random
    // bytes: about 1 MiB), and fetched at most 1.5x that beyond the pull.
    assert!(cold[4] < 0.5, "{cold:?}");
    assert!(cold[5] >= 1.0, "{cold:?}");
    assert!(cold[3] - cold[4] <= 1.5 * cold[5], "{cold:?}");
    assert_eq!((warm[0], warm[3], warm[6]), (0.0, 0.0, 0.0), "{warm:?}");
    // The profile prefetch fetched it too, in no more requests than on demand.
    assert!(
        profiled[3] >= 1.0 && profiled[6] <= cold[6],
        "{profiled:?} vs {cold:?}"
    );
    // The full pull fetched the whole layer (busybox + the file), more than lazy did.
    assert!(full[3] > cold[3], "{full:?} vs {cold:?}");
    let md = std::fs::read_to_string(out_dir.path().join("bench.md")).unwrap();
    assert!(
        md.contains("| cold+profile |") && md.contains("bench.svg"),
        "{md}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.path().join("bench.json")).unwrap()).unwrap();
    assert_eq!(json["modes"][0]["mode"], "cold", "{json}");
    assert_eq!(json["modes"][0]["samples"].as_array().unwrap().len(), 1);
    let svg = std::fs::read_to_string(out_dir.path().join("bench.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("first output"),
        "{svg}"
    );
    // The private daemons and their data roots are gone.
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("skiff-bench-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
