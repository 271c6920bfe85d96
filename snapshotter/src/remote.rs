//! Which layer a Prepare names, from the labels containerd passes to remote snapshotters:
//! the CRI plugin's (with `disable_snapshot_annotations = false`) or those stargz's
//! `ctr-remote image rpull` sets. containerd forwards only `containerd.io/snapshot/`
//! labels and `containerd.io/snapshot.ref` to a proxy snapshotter.

use std::collections::HashMap;

/// The chain ID the caller wants committed; a remote snapshotter commits under it.
pub const TARGET_REF: &str = "containerd.io/snapshot.ref";
pub const CRI_IMAGE_REF: &str = "containerd.io/snapshot/cri.image-ref";
pub const CRI_LAYER_DIGEST: &str = "containerd.io/snapshot/cri.layer-digest";
pub const CRI_IMAGE_LAYERS: &str = "containerd.io/snapshot/cri.image-layers";
pub const STARGZ_REF: &str = "containerd.io/snapshot/remote/stargz.reference";
pub const STARGZ_DIGEST: &str = "containerd.io/snapshot/remote/stargz.digest";

/// A layer that may be served lazily.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRequest {
    /// The name to commit under (`containerd.io/snapshot.ref`).
    pub target: String,
    /// Image reference, as the kubelet (or ctr-remote) named it.
    pub image: String,
    /// The layer's blob digest.
    pub digest: String,
}

/// The remote layer a Prepare asks for, if its labels name one.
pub fn remote_request(labels: &HashMap<String, String>) -> Option<RemoteRequest> {
    let target = labels.get(TARGET_REF).filter(|t| !t.is_empty())?;
    let pick = |a: &str, b: &str| {
        labels
            .get(a)
            .or_else(|| labels.get(b))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    Some(RemoteRequest {
        target: target.clone(),
        image: pick(CRI_IMAGE_REF, STARGZ_REF)?,
        digest: pick(CRI_LAYER_DIGEST, STARGZ_DIGEST)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn cri_and_stargz_labels_name_the_layer_and_the_target_is_required() {
        let cri = labels(&[
            (TARGET_REF, "sha256:c"),
            (CRI_IMAGE_REF, "127.0.0.1:5000/a:1"),
            (CRI_LAYER_DIGEST, "sha256:l"),
        ]);
        assert_eq!(
            remote_request(&cri),
            Some(RemoteRequest {
                target: "sha256:c".into(),
                image: "127.0.0.1:5000/a:1".into(),
                digest: "sha256:l".into()
            })
        );
        let stargz = labels(&[
            (TARGET_REF, "sha256:c"),
            (STARGZ_REF, "r/a:1"),
            (STARGZ_DIGEST, "sha256:l"),
        ]);
        assert_eq!(remote_request(&stargz).unwrap().image, "r/a:1");
        let no_target = labels(&[(CRI_IMAGE_REF, "r/a:1"), (CRI_LAYER_DIGEST, "sha256:l")]);
        assert_eq!(remote_request(&no_target), None);
        assert_eq!(remote_request(&labels(&[(TARGET_REF, "sha256:c")])), None);
    }
}
