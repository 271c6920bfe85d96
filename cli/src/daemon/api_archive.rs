//! `docker save` (`GET /images/get`, `GET /images/{name}/get`) and `docker load` (`POST
//! /images/load`): image archives in and out without a registry (skiff_store::archive).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::api_images::url_pairs;
use super::error::{ApiResult, DaemonError};
use super::services::Daemon;

/// A `Write` feeding a response body from a blocking thread.
struct ChannelWriter(tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(buf.to_vec()))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Streams the archive of `names`. Everything that can fail is done before the first byte
/// is sent, so a failure is an HTTP error and not a truncated tar: a missing image is a
/// 404, and lazily pulled layers are fetched whole from their registry first (a registry
/// that cannot serve them is a 500 naming the layer and the registry's error).
pub async fn save_names(d: &Daemon, names: Vec<String>) -> ApiResult<Response> {
    if names.is_empty() {
        return Err(DaemonError::invalid("no image names given"));
    }
    let store = d.images.store().clone();
    for n in &names {
        store
            .image(n)
            .map_err(|_| DaemonError::NoSuchImage(n.clone()))?;
    }
    store.fetch_whole_layers(&names).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    tokio::task::spawn_blocking(move || {
        let err_tx = tx.clone();
        let w = std::io::BufWriter::with_capacity(1 << 20, ChannelWriter(tx));
        match store.save(&names, w) {
            Ok(mut w) => {
                let _ = std::io::Write::flush(&mut w);
            }
            Err(e) => {
                tracing::warn!("saving {names:?}: {e}");
                let _ = err_tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/x-tar")
        .body(Body::from_stream(futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
        })))
        .expect("valid response"))
}

pub async fn save(State(d): State<Arc<Daemon>>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let names = url_pairs(raw.as_deref().unwrap_or(""))
        .into_iter()
        .filter(|(k, v)| k == "names" && !v.is_empty())
        .map(|(_, v)| v)
        .collect();
    save_names(&d, names).await
}

/// `POST /images/load`: Docker's JSON lines (`Loaded image: name:tag` per tag, or
/// `Loaded image ID: sha256:...` for an untagged image).
pub async fn load(
    State(d): State<Arc<Daemon>>,
    RawQuery(raw): RawQuery,
    body: Body,
) -> ApiResult<Response> {
    // `quiet` only silences progress bars, which a load here does not draw.
    let _ = raw;
    let tmp = d
        .paths
        .data_root
        .join("tmp")
        .join(format!("load-{}.tar", super::names::new_id()));
    let res = async {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let mut f = tokio::fs::File::create(&tmp).await?;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            f.write_all(&chunk.map_err(std::io::Error::other)?).await?;
        }
        f.flush().await
    }
    .await;
    if let Err(e) = res {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(DaemonError::io("receiving the image archive to", &tmp, e));
    }
    let loaded = d.images.store().load(&tmp).await;
    let _ = tokio::fs::remove_file(&tmp).await;
    let loaded =
        loaded.map_err(|e| DaemonError::Invalid(format!("loading the image archive: {e}")))?;
    let mut lines = Vec::new();
    for l in &loaded {
        if l.tags.is_empty() {
            lines.push(format!("Loaded image ID: {}\n", l.id));
        }
        for t in &l.tags {
            let name = skiff_store::ImageReference::parse(t)
                .map(|r| r.familiar())
                .unwrap_or_else(|_| t.clone());
            lines.push(format!("Loaded image: {name}\n"));
        }
        d.containers.monitor.events.emit(
            "image",
            "load",
            &l.id,
            [("name".to_string(), l.id.clone())],
        );
    }
    let mut body = Vec::new();
    for s in lines {
        body.extend(serde_json::to_vec(&json!({"stream": s})).expect("json"));
        body.push(b'\n');
    }
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json")
        .body(Body::from(body))
        .expect("valid response"))
}
