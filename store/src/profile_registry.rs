//! Access profiles shared through the registry as OCI artifacts (OCI distribution 1.1):
//! a manifest whose `artifactType` is [`PROFILE_ARTIFACT_TYPE`], whose one layer is the
//! profile document and whose `subject` is the image's platform manifest. Pushing also
//! updates the referrers fallback tag `sha256-<hex of the subject>` (an image index of the
//! subject's referrers) when the registry has no Referrers API; fetching asks the Referrers
//! API first and falls back to that tag. See `docs/profiles.md`.

use std::collections::HashSet;
use std::sync::Mutex;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::content::sha256_digest;
use crate::profile::{Profile, MAX_PROFILE_BYTES};
use crate::reference::ImageReference;
use crate::registry::manifest::OCI_MANIFEST;
use crate::store::Store;
use crate::{Result, StoreError};

/// `artifactType` of a profile artifact, and the media type of its one layer.
pub const PROFILE_ARTIFACT_TYPE: &str = "application/vnd.skiff.access-profile.v1+json";
/// The OCI empty descriptor's media type, digest and content (`{}`), used as config.
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_JSON: &[u8] = b"{}";

/// Profile artifacts already reported as bad, so each is logged once per process.
static REPORTED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn report_once(digest: &str, what: &str, e: &StoreError) {
    let mut g = REPORTED.lock().unwrap();
    if g.get_or_insert_with(HashSet::new)
        .insert(digest.to_string())
    {
        tracing::warn!(artifact = digest, error = %e, "ignoring a {what}");
    }
}

pub use crate::registry::referrers::fallback_tag;

impl Store {
    /// Publishes the profile of local image `reference` to its repository as an artifact
    /// referring to the image's manifest. Returns the artifact manifest's digest.
    pub async fn push_profile(&self, reference: &str) -> Result<String> {
        let r = ImageReference::parse(reference)?;
        let id = self.resolve_id(reference)?;
        let row = self
            .inner
            .db
            .image(&id)?
            .ok_or_else(|| StoreError::ImageNotFound {
                name: reference.to_string(),
            })?;
        let profile = self.profile(reference)?;
        let doc = Bytes::from(profile.to_json());
        let doc_digest = sha256_digest(&doc);
        let empty_digest = sha256_digest(EMPTY_JSON);
        let reg = &self.inner.registry;
        reg.push_blob(&r, &empty_digest, Bytes::from_static(EMPTY_JSON))
            .await?;
        reg.push_blob(&r, &doc_digest, doc.clone()).await?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": PROFILE_ARTIFACT_TYPE,
            "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": empty_digest, "size": EMPTY_JSON.len()},
            "layers": [{"mediaType": PROFILE_ARTIFACT_TYPE, "digest": doc_digest, "size": doc.len()}],
            "subject": {"mediaType": row.manifest_media_type, "digest": row.manifest_digest, "size": row.manifest.len()},
            "annotations": {"org.opencontainers.image.created": profile.created},
        });
        let body = Bytes::from(serde_json::to_vec(&manifest).expect("JSON"));
        let digest = sha256_digest(&body);
        let pinned = ImageReference {
            tag: None,
            ..r.with_digest(&digest)
        };
        reg.push_manifest(&pinned, body.clone(), OCI_MANIFEST)
            .await?;
        // Registries without the Referrers API learn of it through the fallback tag.
        reg.attach_referrer(
            &r,
            &row.manifest_digest,
            &digest,
            body.len(),
            PROFILE_ARTIFACT_TYPE,
        )
        .await?;
        Ok(digest)
    }

    /// The newest profile artifact referring to manifest `subject` of `r`'s repository,
    /// if any: Referrers API, else the fallback tag. A bad artifact (digest mismatch,
    /// unparsable, too large) is ignored and logged once.
    pub(crate) async fn fetch_profile_artifact(
        &self,
        r: &ImageReference,
        subject: &str,
    ) -> Result<Option<Profile>> {
        let candidates = self
            .inner
            .registry
            .referrers_of_type(r, subject, PROFILE_ARTIFACT_TYPE)
            .await?;
        // The last listed is the newest push.
        for digest in candidates.iter().rev() {
            match self.fetch_one_profile(r, digest, subject).await {
                Ok(p) => return Ok(Some(p)),
                Err(e) => report_once(digest, "profile artifact", &e),
            }
        }
        Ok(None)
    }

    async fn fetch_one_profile(
        &self,
        r: &ImageReference,
        digest: &str,
        subject: &str,
    ) -> Result<Profile> {
        let reg = &self.inner.registry;
        let pinned = ImageReference {
            tag: None,
            ..r.with_digest(digest)
        };
        // fetch_manifest checks the digest of what it got against the pinned one.
        let (body, _, _) = reg.fetch_manifest(&pinned).await?;
        let m: Value = serde_json::from_slice(&body).map_err(|e| StoreError::InvalidManifest {
            reference: pinned.to_string(),
            reason: e.to_string(),
        })?;
        let bad = |reason: &str| StoreError::InvalidManifest {
            reference: pinned.to_string(),
            reason: reason.to_string(),
        };
        if m["subject"]["digest"] != subject {
            return Err(bad("its subject is another manifest"));
        }
        let layer = &m["layers"][0];
        let (Some(blob), Some(size)) = (layer["digest"].as_str(), layer["size"].as_u64()) else {
            return Err(bad("no profile layer"));
        };
        if size > MAX_PROFILE_BYTES {
            return Err(bad("profile layer over the size cap"));
        }
        let mut doc = Vec::new();
        reg.pull_blob(r, blob, &mut doc, &|_| {}).await?;
        Profile::from_json(&doc, blob)
    }
}
