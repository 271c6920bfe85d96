//! `inspect`: containers or images as Docker's JSON.

use anyhow::Result;
use bollard::Docker;

use super::template::Inspector;
use crate::args::InspectArgs;

pub async fn inspect(docker: &Docker, args: &InspectArgs) -> Result<()> {
    let mut out = Inspector::new(args.format.as_deref())?;
    for name in &args.names {
        let kind = args.kind.as_deref();
        if kind != Some("image") {
            let size = args
                .size
                .then_some(bollard::container::InspectContainerOptions { size: true });
            if let Ok(c) = docker.inspect_container(name, size).await {
                out.add(&c)?;
                continue;
            }
        }
        if kind != Some("container") {
            if let Ok(i) = docker.inspect_image(name).await {
                out.add(&i)?;
                continue;
            }
        }
        out.error(&format!("Error: No such object: {name}"));
    }
    out.finish()
}
