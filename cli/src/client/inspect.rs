//! `inspect`: containers or images as Docker's JSON.

use anyhow::{bail, Result};
use bollard::Docker;

use crate::args::InspectArgs;

pub async fn inspect(docker: &Docker, args: &InspectArgs) -> Result<()> {
    let mut out = Vec::new();
    let mut failed = false;
    for name in &args.names {
        let kind = args.kind.as_deref();
        if kind != Some("image") {
            if let Ok(c) = docker.inspect_container(name, None).await {
                out.push(serde_json::to_value(c)?);
                continue;
            }
        }
        if kind != Some("container") {
            if let Ok(i) = docker.inspect_image(name).await {
                out.push(serde_json::to_value(i)?);
                continue;
            }
        }
        eprintln!("Error: No such object: {name}");
        failed = true;
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    if failed {
        bail!("inspect failed");
    }
    Ok(())
}
