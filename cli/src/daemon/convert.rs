//! `skiff image convert SRC DST`: registry to registry, any image to zstd:chunked.

use anyhow::Result;

use crate::args::ConvertArgs;

pub async fn convert_command(args: &ConvertArgs) -> Result<()> {
    anyhow::bail!(
        "image convert {} -> {}: not wired yet (insecure registries: {:?})",
        args.source,
        args.destination,
        args.insecure_registries
    )
}
