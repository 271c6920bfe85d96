//! `skiff image index [--min-layer-size N] [--span-size N] REF`: builds the SOCI index of an
//! image in its registry (a zTOC per large gzip layer) and pushes it there. Runs in the CLI
//! process, like `image convert`: it needs a registry, not a daemon.

use anyhow::{Context, Result};
use skiff_store::registry::{RegistryClient, RegistryOptions};
use skiff_store::soci::index::{index_image, IndexOptions, LayerOutcome};
use skiff_store::ImageReference;

use super::convert::short;
use crate::args::IndexArgs;
use crate::client::format::parse_bytes;
use crate::exit::Exit;

fn size_flag(flag: &str, value: &str, least: u64) -> Result<u64> {
    match parse_bytes(value).and_then(|v| u64::try_from(v).ok()) {
        Some(v) if v >= least => Ok(v),
        _ => {
            eprintln!(
                "skiff: invalid {flag} {value:?}: a size of at least {least} bytes (e.g. 10m)"
            );
            Err(Exit(125).into())
        }
    }
}

pub async fn index_command(args: &IndexArgs) -> Result<()> {
    let opts = IndexOptions {
        min_layer_size: size_flag("--min-layer-size", &args.min_layer_size, 0)?,
        // A span under the deflate window would make checkpoints outweigh the data.
        span_size: size_flag("--span-size", &args.span_size, 32 << 10)?,
    };
    let r = ImageReference::parse(&args.reference)?;
    let registry = RegistryClient::new(RegistryOptions {
        insecure_registries: args.insecure_registries.clone(),
        certs_dir: Some(args.certs_dir.clone()),
        ..Default::default()
    });
    let on_layer = |l: &LayerOutcome| match l {
        LayerOutcome::Indexed {
            layer,
            ztoc,
            ztoc_size,
            spans,
            files,
        } => println!(
            "{}: zTOC {} ({ztoc_size} bytes, {spans} spans, {files} files)",
            short(layer),
            short(ztoc)
        ),
        LayerOutcome::Skipped { layer, reason } => {
            println!("{}: skipped, {reason}", short(layer))
        }
    };
    let report = index_image(&registry, &r, opts, &on_layer)
        .await
        .with_context(|| format!("indexing {r}"))?;
    println!(
        "{r}: SOCI index {} for manifest {}",
        report.index_digest, report.image_manifest
    );
    Ok(())
}
