//! `skiff image profile ls|inspect|rm`: skiff's `/skiff/profiles` endpoints (Docker's API
//! has no such thing, so these go over the socket directly rather than through bollard).

use std::path::Path;

use anyhow::{bail, Context, Result};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use crate::args::{ProfileCommand, ProfileNames, ProfilePush};

/// `method path` on the daemon's socket: the status and the body.
pub async fn call(socket: &Path, method: &str, path: &str) -> Result<(u16, bytes::Bytes)> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to the skiff daemon at {}", socket.display()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("Host", "skiff")
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

fn message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// Path segment for an image name or key (names may hold `/` and `:`, which axum's
/// wildcard route takes as they are).
fn target(name: &str) -> String {
    name.trim_start_matches('/').to_string()
}

pub async fn run(socket: &Path, cmd: &ProfileCommand) -> Result<()> {
    match cmd {
        ProfileCommand::Ls => {
            let (status, body) = call(socket, "GET", "/skiff/profiles").await?;
            if status != 200 {
                bail!("{}", message(&body));
            }
            let list: Vec<serde_json::Value> = serde_json::from_slice(&body)?;
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|p| {
                    let s = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
                    let n = |k: &str| p.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
                    let layers = p
                        .get("layers")
                        .and_then(|v| v.as_array())
                        .map_or(0, Vec::len);
                    vec![
                        s("key").chars().take(12).collect(),
                        s("created"),
                        n("files").to_string(),
                        n("chunks").to_string(),
                        crate::client::format::human_size(n("bytes") as i64),
                        layers.to_string(),
                    ]
                })
                .collect();
            crate::client::format::print_table(
                &["KEY", "CREATED", "FILES", "CHUNKS", "SIZE", "LAYERS"],
                &rows,
            );
            Ok(())
        }
        ProfileCommand::Inspect(ProfileNames { names }) => {
            let mut out = Vec::new();
            for n in names {
                let (status, body) =
                    call(socket, "GET", &format!("/skiff/profiles/{}", target(n))).await?;
                if status != 200 {
                    bail!("{}", message(&body));
                }
                out.push(serde_json::from_slice::<serde_json::Value>(&body)?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        ProfileCommand::Push(ProfilePush { reference }) => {
            let (status, body) = call(
                socket,
                "POST",
                &format!("/skiff/profiles/{}", target(reference)),
            )
            .await?;
            if status != 200 {
                bail!("{}", message(&body));
            }
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            println!(
                "{}: profile pushed as {}",
                reference,
                v.get("Digest").and_then(|d| d.as_str()).unwrap_or("?")
            );
            Ok(())
        }
        ProfileCommand::Rm(ProfileNames { names }) => {
            let mut failed = false;
            for n in names {
                let (status, body) =
                    call(socket, "DELETE", &format!("/skiff/profiles/{}", target(n))).await?;
                if status == 200 {
                    let v: serde_json::Value = serde_json::from_slice(&body)?;
                    println!("{}", v.get("Deleted").and_then(|d| d.as_str()).unwrap_or(n));
                } else {
                    eprintln!("Error: {}", message(&body));
                    failed = true;
                }
            }
            if failed {
                bail!("failed to remove one or more profiles");
            }
            Ok(())
        }
    }
}
