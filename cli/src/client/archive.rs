//! `skiff save`, `skiff load` and `skiff commit`: images out of and into the daemon
//! without a registry (docs/build.md).

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use bollard::image::ImportImageOptions;
use bollard::Docker;
use futures::StreamExt;

use crate::args::{CommitArgs, LoadArgs, SaveArgs};

pub async fn save(docker: &Docker, args: &SaveArgs) -> Result<()> {
    let names: Vec<&str> = args.images.iter().map(String::as_str).collect();
    if args.output.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
    }
    let mut stream = docker.export_images(&names);
    // The daemon refuses before sending any byte: then no file is created, as with docker.
    let first = stream
        .next()
        .await
        .transpose()
        .map_err(|e| anyhow::anyhow!(super::error_message(&e)))?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let copied: Result<()> = async {
        if let Some(chunk) = first {
            out.write_all(&chunk)?;
        }
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| anyhow::anyhow!(super::error_message(&e)))?;
            out.write_all(&chunk)?;
        }
        out.flush()?;
        Ok(())
    }
    .await;
    if copied.is_err() {
        // A truncated archive is worse than none.
        if let Some(p) = &args.output {
            let _ = std::fs::remove_file(p);
        }
    }
    copied
}

pub async fn load(docker: &Docker, args: &LoadArgs) -> Result<()> {
    let data = match &args.input {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
            v
        }
    };
    let mut stream =
        docker.import_image(ImportImageOptions { quiet: args.quiet }, data.into(), None);
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| anyhow::anyhow!(super::error_message(&e)))?;
        if let Some(err) = info.error {
            bail!("{err}");
        }
        if let Some(s) = info.stream {
            print!("{s}");
        }
    }
    Ok(())
}

/// `application/x-www-form-urlencoded` value encoding.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub async fn commit(socket: &Path, args: &CommitArgs) -> Result<()> {
    let mut q = format!("container={}&pause={}", enc(&args.container), args.pause);
    if let Some(r) = &args.repository {
        let (repo, tag) = super::images::split_tag(r);
        q.push_str(&format!("&repo={}&tag={}", enc(&repo), enc(&tag)));
    }
    if let Some(m) = &args.message {
        q.push_str(&format!("&comment={}", enc(m)));
    }
    if let Some(a) = &args.author {
        q.push_str(&format!("&author={}", enc(a)));
    }
    for c in &args.changes {
        q.push_str(&format!("&changes={}", enc(c)));
    }
    let (status, body) = super::profiles::call(socket, "POST", &format!("/commit?{q}")).await?;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if status != 201 {
        let msg = v["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        eprintln!("Error response from daemon: {msg}");
        return Err(crate::exit::Exit(1).into());
    }
    println!("{}", v["Id"].as_str().unwrap_or_default());
    Ok(())
}

/// `skiff push --compression`: `POST /images/{repo}/push?tag=&compression=` (a skiff
/// extension bollard cannot send), printing Docker's push lines.
pub async fn push_stream(
    socket: &Path,
    repo: &str,
    tag: &str,
    compression: Option<&str>,
    credentials: Option<bollard::auth::DockerCredentials>,
    quiet: bool,
) -> Result<()> {
    use base64::Engine as _;
    use http_body_util::BodyExt;
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to the skiff daemon at {}", socket.display()))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method("POST")
        .uri(match compression {
            Some(c) => format!(
                "/images/{repo}/push?tag={}&compression={}",
                enc(tag),
                enc(c)
            ),
            None => format!("/images/{repo}/push?tag={}", enc(tag)),
        })
        .header("Host", "skiff");
    if let Some(c) = credentials {
        let json = serde_json::to_vec(&c)?;
        req = req.header(
            "X-Registry-Auth",
            base64::engine::general_purpose::URL_SAFE.encode(json),
        );
    }
    let resp = sender
        .send_request(req.body(http_body_util::Empty::<bytes::Bytes>::new())?)
        .await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        bail!(
            "{}",
            v["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned())
        );
    }
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(line)?;
        if let Some(e) = v["error"].as_str() {
            bail!("{e}");
        }
        if let (false, Some(s)) = (quiet, v["status"].as_str()) {
            match v["id"].as_str() {
                Some(id) => println!("{id}: {s}"),
                None => println!("{s}"),
            }
        }
    }
    Ok(())
}
