//! Artifacts that refer to an image manifest (OCI distribution 1.1 `subject`): listing them
//! through the Referrers API, or its fallback tag `sha256-<hex>` (an image index of the
//! subject's referrers) on registries without it, such as distribution 2.8; and keeping
//! that tag up to date after a push. Used by access profiles and SOCI indexes.

use bytes::Bytes;
use serde_json::{json, Value};

use super::manifest::{OCI_INDEX, OCI_MANIFEST};
use super::RegistryClient;
use crate::reference::ImageReference;
use crate::{Result, StoreError};

/// The referrers fallback tag of `digest` (`sha256:<hex>` → `sha256-<hex>`).
pub fn fallback_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

fn fallback_ref(r: &ImageReference, subject: &str) -> ImageReference {
    ImageReference {
        tag: Some(fallback_tag(subject)),
        digest: None,
        ..r.clone()
    }
}

impl RegistryClient {
    /// Records manifest `artifact` (`digest`, `size` bytes, of `artifact_type`), already
    /// pushed to `r`'s repository with `subject` as its subject, in the fallback tag when
    /// the registry has no Referrers API (which indexes it by itself otherwise).
    pub async fn attach_referrer(
        &self,
        r: &ImageReference,
        subject: &str,
        digest: &str,
        size: usize,
        artifact_type: &str,
    ) -> Result<()> {
        if self.referrers(r, subject).await?.is_some() {
            return Ok(());
        }
        let tag = fallback_ref(r, subject);
        let mut index = match self.fetch_manifest(&tag).await {
            Ok((b, _, _)) => serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null),
            Err(StoreError::NotFound { .. }) => Value::Null,
            Err(e) => return Err(e),
        };
        if !index["manifests"].is_array() {
            index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []});
        }
        let list = index["manifests"].as_array_mut().expect("an array");
        list.retain(|m| m["digest"] != digest);
        list.push(json!({
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": size,
            "artifactType": artifact_type,
        }));
        let body = Bytes::from(serde_json::to_vec(&index).expect("JSON"));
        self.push_manifest(&tag, body, OCI_INDEX).await?;
        Ok(())
    }

    /// Digests of the manifests of `artifact_type` referring to `subject` in `r`'s
    /// repository, oldest first: the Referrers API's answer, else the fallback tag's;
    /// empty when neither lists any.
    pub async fn referrers_of_type(
        &self,
        r: &ImageReference,
        subject: &str,
        artifact_type: &str,
    ) -> Result<Vec<String>> {
        let tag = fallback_ref(r, subject);
        // Both asked at once: on a registry without the Referrers API (the common case
        // today) the fallback tag's answer is then one round trip away, not two.
        let (referrers, fallback) =
            futures::join!(self.referrers(r, subject), self.fetch_manifest(&tag));
        let index = match referrers? {
            Some(b) => b,
            None => match fallback {
                Ok((b, _, _)) => b,
                Err(StoreError::NotFound { .. }) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            },
        };
        let index: Value = serde_json::from_slice(&index).unwrap_or(Value::Null);
        Ok(index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["artifactType"] == artifact_type)
            .filter_map(|m| m["digest"].as_str().map(str::to_string))
            .collect())
    }
}
