//! `GET /images/{name}/history`: the image's config history, newest first, each entry with
//! the size of the layer it made (Docker's `HistoryResponseItem`). An image without history
//! (some imports) shows one entry per layer.

use serde_json::{json, Value};

use super::error::DaemonError;

/// Unix seconds of an RFC 3339 time (0 when absent or malformed).
fn unix(t: Option<&str>) -> i64 {
    t.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| t.timestamp())
}

/// `parent_of` gives the image an image was built or committed from: the rows are given
/// the image's id, then its parent's, and so on (as dockerd fills them), `<missing>` where
/// the chain ends (pulled images' history).
pub fn history(
    store: &skiff_store::Store,
    name: &str,
    parent_of: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Value>, DaemonError> {
    let img = store
        .image(name)
        .map_err(|_| DaemonError::NoSuchImage(name.to_string()))?;
    let mut layers = img.layers.iter().map(|l| l.tar_size as i64);
    let mut out: Vec<Value> = Vec::new();
    let history = img.config.history().clone().unwrap_or_default();
    if history.is_empty() {
        for size in layers.by_ref() {
            out.push(json!({
                "Created": unix(img.created.as_deref()), "CreatedBy": "", "Size": size,
                "Comment": "", "Tags": null,
            }));
        }
    } else {
        for h in &history {
            let empty = h.empty_layer().unwrap_or(false);
            out.push(json!({
                "Created": unix(h.created().as_deref()),
                "CreatedBy": h.created_by().clone().unwrap_or_default(),
                "Size": if empty { 0 } else { layers.next().unwrap_or(0) },
                "Comment": h.comment().clone().unwrap_or_default(),
                "Tags": null,
            }));
        }
    }
    out.reverse();
    let mut next = Some(img.id.clone());
    for e in out.iter_mut() {
        let Some(id) = next.take() else {
            e["Id"] = json!("<missing>");
            continue;
        };
        let tags: Vec<String> = store
            .image(&id)
            .map(|i| i.repo_tags)
            .unwrap_or_default()
            .iter()
            .map(|t| {
                skiff_store::ImageReference::parse(t)
                    .map(|r| r.familiar())
                    .unwrap_or_else(|_| t.clone())
            })
            .collect();
        // dockerd leaves an untagged image's `Tags` null.
        e["Tags"] = if tags.is_empty() {
            Value::Null
        } else {
            json!(tags)
        };
        next = parent_of(&id);
        e["Id"] = json!(id);
    }
    Ok(out)
}
