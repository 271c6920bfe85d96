//! `skiff image convert [--format zstd:chunked|estargz] SRC DST`: registry to registry, any
//! image to a lazy format. Runs in
//! the CLI process: it needs a registry, not a daemon.

use anyhow::{Context, Result};
use skiff_store::convert::{convert_image_to, ConvertedLayer};
use skiff_store::registry::{RegistryClient, RegistryOptions};
use skiff_store::ImageReference;

use crate::args::ConvertArgs;

pub async fn convert_command(args: &ConvertArgs) -> Result<()> {
    let src = ImageReference::parse(&args.source)?;
    let dst = ImageReference::parse(&args.destination)?;
    anyhow::ensure!(
        dst.digest.is_none(),
        "destination {dst} must name a tag, not a digest"
    );
    let registry = RegistryClient::try_new(RegistryOptions {
        insecure_registries: args.insecure_registries.clone(),
        certs_dir: Some(args.certs_dir.clone()),
        ..Default::default()
    })
    .context("--insecure-registry")?;
    // convert_image keeps each layer's files in a temporary directory it removes itself.
    let tmp = std::env::temp_dir();
    let format = args.format;
    let on_layer = |l: &ConvertedLayer| {
        println!(
            "{}: {} bytes -> {}: {} bytes ({})",
            short(&l.source_digest),
            l.source_size,
            short(&l.digest),
            l.size,
            format.name()
        );
    };
    let report = convert_image_to(&registry, &src, &dst, format, &tmp, &on_layer)
        .await
        .with_context(|| format!("converting {src} to {dst}"))?;
    println!("{dst}: digest: {}", report.manifest_digest);
    Ok(())
}

/// The first 12 hex digits of a digest, for progress lines.
pub(crate) fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}
