//! `skiff image index` against the real registry (distribution, no Referrers API): the
//! SOCI index v1 is pushed with its zTOCs and found again through the referrers fallback
//! tag; a file of the indexed layer is then read through range requests of a few spans,
//! checked against the bytes the tar holds, while a proxy counts what was fetched. And the
//! committed zTOC fixtures rebuilt in soci-snapshotter's Go writer's order come back byte
//! for byte.

mod common;

use std::process::Command;

use skiff_store::registry::RegistryClient;
use skiff_store::soci::index::{fetch_ztoc, find_index, SOCI_INDEX_V1};
use skiff_store::{ImageReference, StoreError};
use skiff_tests::binary::skiff_bin;
use skiff_tests::registry::registry_unavailable;
use skiff_tests::{require, CountingProxy, Registry};

fn skiff(args: &[&str]) -> std::process::Output {
    Command::new(skiff_bin())
        .args(args)
        .output()
        .expect("running skiff")
}

#[test]
fn indexed_gzip_image_serves_a_file_from_a_few_spans() {
    require!(
        "indexed_gzip_image_serves_a_file_from_a_few_spans",
        registry_unavailable()
    );
    let registry = Registry::start().unwrap();
    let rt = common::rt();
    let common::SociImage {
        reference,
        wanted,
        layers,
        ..
    } = common::push_soci_image(&rt, &registry.host(), "soci/app");

    // 1 MiB spans: the unit a read fetches, so a small file costs about two of them.
    let out = skiff(&["image", "index", "--span-size", "1m", &reference]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let short = |d: &str| d["sha256:".len()..][..12].to_string();
    assert!(
        stdout.contains(&format!("{}: skipped, ", short(&layers[0]))),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{}: zTOC ", short(&layers[1]))),
        "{stdout}"
    );
    assert!(stdout.contains("SOCI index sha256:"), "{stdout}");

    // Read through a counting proxy, as a lazy pull would.
    let proxy = CountingProxy::start(&registry.host()).unwrap();
    let r = ImageReference::parse(&format!("{}/soci/app:1", proxy.host())).unwrap();
    let client = RegistryClient::new(Default::default());
    let resolved = rt.block_on(client.resolve_manifest(&r)).unwrap();
    let index = rt
        .block_on(find_index(
            &client,
            &resolved.reference,
            &resolved.manifest_digest,
        ))
        .unwrap()
        .expect("the SOCI index is found through the fallback tag");
    assert_eq!(index.ztocs.len(), 1, "only the large layer is indexed");
    let layer = &resolved.manifest.layers[1];
    let desc = &index.ztocs[&layer.digest];
    let ztoc = rt
        .block_on(fetch_ztoc(&client, &r, &layer.digest, layer.size, desc))
        .unwrap();
    assert!(ztoc.zinfo.checkpoints.len() >= 12);
    assert_eq!(ztoc.zinfo.span_size, 1 << 20);
    let file = ztoc
        .files
        .iter()
        .find(|f| f.name == b"data/wanted.bin")
        .unwrap();
    proxy.clear();
    let got = ztoc
        .extract(&layer.digest, file, |range| {
            let bytes = rt.block_on(client.fetch_range(
                &r,
                &layer.digest,
                range.start,
                range.end - range.start,
            ))?;
            Ok(bytes.to_vec())
        })
        .unwrap();
    assert!(got == wanted, "the file's bytes, as the tar holds them");
    let fetched: u64 = proxy
        .requests()
        .iter()
        .filter_map(|q| q.range.as_deref())
        .map(|range| {
            let (a, b) = range.trim_start_matches("bytes=").split_once('-').unwrap();
            b.parse::<u64>().unwrap() + 1 - a.parse::<u64>().unwrap()
        })
        .sum();
    eprintln!(
        "zTOC {} bytes ({} spans), file read fetched {fetched} of the layer's {} bytes",
        desc.size,
        ztoc.zinfo.checkpoints.len(),
        layer.size
    );
    // 300 KiB straddle at most two 4 MiB spans of a 14 MiB layer.
    assert!(
        fetched > 0 && fetched * 2 < layer.size,
        "{fetched} of {}",
        layer.size
    );

    // The zTOC of another layer size is refused.
    let e = rt
        .block_on(fetch_ztoc(&client, &r, &layer.digest, layer.size + 1, desc))
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::InvalidZtoc { reason, .. } if reason.contains("made for a blob of")),
        "{e}"
    );
    // The fallback tag lists the index under SOCI's v1 type.
    let tag = format!(
        "{}/soci/app:{}",
        proxy.host(),
        resolved.manifest_digest.replacen(':', "-", 1)
    );
    let (body, _, _) = rt
        .block_on(client.fetch_manifest(&ImageReference::parse(&tag).unwrap()))
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(listed["manifests"][0]["artifactType"], SOCI_INDEX_V1);
    assert_eq!(listed["manifests"][0]["digest"], index.digest.as_str());
}

#[test]
fn index_refuses_bad_flags_and_images_with_nothing_to_index() {
    require!(
        "index_refuses_bad_flags_and_images_with_nothing_to_index",
        registry_unavailable()
    );
    let registry = Registry::start().unwrap();
    let rt = common::rt();
    let reference = format!("{}/soci/small:1", registry.host());
    common::push_tars(&rt, &reference, &[common::raw_tar(&[("a", b"a")])]);
    let out = skiff(&["image", "index", "--span-size", "1k", &reference]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid --span-size \"1k\""));
    let out = skiff(&["image", "index", &reference]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no gzip layer of at least 10485760 bytes"),
        "{err}"
    );
    // With the minimum lowered, the small layer is indexed.
    let out = skiff(&["image", "index", "--min-layer-size", "0", &reference]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("zTOC") && stdout.contains("1 files"),
        "{stdout}"
    );
}

/// Why the reference flatbuffers builder cannot run here, if it cannot.
fn python_flatbuffers_unavailable() -> Option<String> {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import flatbuffers"])
        .output()
        .is_ok_and(|o| o.status.success());
    (!ok).then(|| "python3-flatbuffers not installed (scripts/install-deps.sh)".to_string())
}

#[test]
fn ztoc_fixtures_are_laid_out_as_soci_snapshotters_go_writer_lays_them_out() {
    require!(
        "ztoc_fixtures_are_laid_out_as_soci_snapshotters_go_writer_lays_them_out",
        python_flatbuffers_unavailable()
    );
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../store/tests/fixtures/soci");
    let dir = tempfile::tempdir().unwrap();
    for name in ["layer.ztoc", "layer-v1.ztoc"] {
        let out = dir.path().join(name);
        let run = Command::new("/usr/bin/python3")
            .arg(fixtures.join("go_order.py"))
            .arg(fixtures.join(name))
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let go = std::fs::read(&out).unwrap();
        let ours = std::fs::read(fixtures.join(name)).unwrap();
        assert_eq!(go.len(), ours.len(), "{name}");
        assert!(
            go == ours,
            "{name}: the Go-order rebuild differs from skiff's bytes"
        );
    }
}
