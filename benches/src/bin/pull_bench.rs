//! pull-bench: times `Store::pull` of a generated multi-layer image against
//! `skopeo copy docker://… dir:…` from the same local registry, in the same run.
//!
//! Usage: pull-bench [--mb 300] [--layers 4] [--rounds 3] [--compression gzip|zstd]

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use skiff_store::{Compression, ImageChanges, ImageReference, Store, StoreOptions};
use skiff_tests::Registry;

struct Args {
    mb: usize,
    layers: usize,
    rounds: usize,
    compression: Compression,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        mb: 300,
        layers: 4,
        rounds: 3,
        compression: Compression::Gzip,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--mb" => a.mb = val.parse()?,
            "--layers" => a.layers = val.parse()?,
            "--rounds" => a.rounds = val.parse()?,
            "--compression" => {
                a.compression = match val.as_str() {
                    "gzip" => Compression::Gzip,
                    "zstd" => Compression::Zstd,
                    other => bail!("unknown compression {other}"),
                }
            }
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

/// Writes `mb` MiB of files into `dir`: half pseudo-random (incompressible), half
/// repetitive text, in files of 64 KiB to 4 MiB, like a mix of binaries and data.
fn generate_layer(dir: &Path, mb: usize, seed: u64) -> Result<()> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut left = mb << 20;
    let mut i = 0;
    while left > 0 {
        let size = (((next() % 64) + 1) as usize * 64 * 1024).min(left);
        let sub = dir.join(format!("d{}", i % 16));
        std::fs::create_dir_all(&sub)?;
        let mut data = Vec::with_capacity(size);
        if i % 2 == 0 {
            while data.len() < size {
                data.extend_from_slice(&next().to_le_bytes());
            }
        } else {
            let line = format!("line {i} of generated text for the pull benchmark {seed}\n");
            while data.len() < size {
                data.extend_from_slice(line.as_bytes());
            }
        }
        data.truncate(size);
        std::fs::write(sub.join(format!("f{i}.bin")), &data)?;
        left -= size;
        i += 1;
    }
    Ok(())
}

/// Imports each layer as its own image, then pushes one image with all layers.
async fn build_and_push(args: &Args, registry: &str, work: &Path) -> Result<String> {
    let store = Store::open(&work.join("build-store"), StoreOptions::default())?;
    let reference = format!("{registry}/bench/big:latest");
    let r = ImageReference::parse(&reference)?;
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for l in 0..args.layers {
        let dir = work.join(format!("layer{l}"));
        std::fs::create_dir_all(&dir)?;
        generate_layer(&dir, args.mb / args.layers, l as u64 + 1)?;
        let img = store
            .import(
                &dir,
                &format!("{registry}/bench/part:{l}"),
                &ImageChanges::default(),
                args.compression,
            )
            .await?;
        std::fs::remove_dir_all(&dir)?;
        let layer = img.layers[0].clone();
        store
            .registry()
            .push_blob_file(&r, &layer.digest, &store.blobs().path(&layer.digest)?)
            .await?;
        diff_ids.push(layer.diff_id.clone());
        layers.push(serde_json::json!({
            "mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}}))?;
    let config_digest = skiff_store::content::sha256_digest(&config);
    store
        .registry()
        .push_blob(&r, &config_digest, config.clone().into())
        .await?;
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": layers});
    store
        .registry()
        .push_manifest(
            &r,
            serde_json::to_vec(&manifest)?.into(),
            "application/vnd.oci.image.manifest.v1+json",
        )
        .await?;
    Ok(reference)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let rt = tokio::runtime::Runtime::new()?;
    let reg = Registry::start()?;
    let work = tempfile::Builder::new()
        .prefix("skiff-pull-bench-")
        .tempdir()?;
    eprintln!(
        "generating {} MiB in {} layers ({:?})...",
        args.mb, args.layers, args.compression
    );
    let reference = rt.block_on(build_and_push(&args, &reg.host(), work.path()))?;
    let mut skiff = Vec::new();
    let mut skopeo = Vec::new();
    let mut bytes = 0;
    for round in 0..args.rounds {
        let root = work.path().join(format!("skiff-{round}"));
        let store = Store::open(&root, StoreOptions::default())?;
        let t = Instant::now();
        let img = rt.block_on(store.pull(&reference, &|_| {}))?;
        let d = t.elapsed();
        bytes = store.bytes_downloaded();
        eprintln!(
            "round {round}: skiff pull {:.3}s ({} layers, {} MB unpacked)",
            d.as_secs_f64(),
            img.layers.len(),
            img.size >> 20
        );
        skiff.push(d);
        drop(store);
        std::fs::remove_dir_all(&root)?;

        let dest = work.path().join(format!("skopeo-{round}"));
        let t = Instant::now();
        let st = std::process::Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("dir:{}", dest.display()))
            .status()
            .context("running skopeo")?;
        let d = t.elapsed();
        if !st.success() {
            bail!("skopeo copy failed: {st}");
        }
        eprintln!("round {round}: skopeo copy {:.3}s", d.as_secs_f64());
        skopeo.push(d);
        std::fs::remove_dir_all(&dest)?;
    }
    let (a, b) = (median(skiff), median(skopeo));
    println!(
        "pull-bench: {} MiB, {} layers, {:?}, {} rounds, {} bytes fetched by skiff",
        args.mb, args.layers, args.compression, args.rounds, bytes
    );
    println!(
        "median skiff pull {:.3}s | skopeo copy (dir:) {:.3}s | skiff/skopeo {:.2}",
        a.as_secs_f64(),
        b.as_secs_f64(),
        a.as_secs_f64() / b.as_secs_f64()
    );
    Ok(())
}
