//! The file indexes of layers a pull just stored, kept in memory for a short while: a pull
//! is usually followed by a container of the image, whose mount would otherwise parse
//! them back from the database (tens of milliseconds for a large image, on the cold
//! start's path). Taken by the first reader; bounded in count and age.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::layer_index::LayerIndex;

/// Indexes kept at most.
const MAX_KEPT: usize = 16;
/// An index not taken within this long is dropped.
const KEEP_FOR: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(crate) struct FreshIndexes {
    kept: Mutex<Vec<(Instant, LayerIndex)>>,
}

impl FreshIndexes {
    /// Keeps `indexes` (replacing older copies of the same layers).
    pub(crate) fn keep(&self, indexes: Vec<LayerIndex>) {
        let now = Instant::now();
        let mut kept = self.kept.lock().unwrap();
        kept.retain(|(at, i)| {
            now.duration_since(*at) < KEEP_FOR && !indexes.iter().any(|n| n.digest == i.digest)
        });
        kept.extend(indexes.into_iter().map(|i| (now, i)));
        let over = kept.len().saturating_sub(MAX_KEPT);
        kept.drain(..over);
    }

    /// Takes the kept index of layer `digest`, if any (it is the stored one: layers are
    /// content-addressed).
    pub(crate) fn take(&self, digest: &str) -> Option<LayerIndex> {
        let mut kept = self.kept.lock().unwrap();
        let now = Instant::now();
        kept.retain(|(at, _)| now.duration_since(*at) < KEEP_FOR);
        let pos = kept.iter().position(|(_, i)| i.digest == digest)?;
        Some(kept.swap_remove(pos).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(d: &str) -> LayerIndex {
        LayerIndex {
            digest: d.into(),
            entries: Vec::new(),
        }
    }

    #[test]
    fn an_index_is_taken_once_and_the_count_is_bounded() {
        let f = FreshIndexes::default();
        f.keep(vec![index("sha256:a"), index("sha256:b")]);
        assert_eq!(f.take("sha256:a").unwrap().digest, "sha256:a");
        assert!(f.take("sha256:a").is_none());
        f.keep(
            (0..MAX_KEPT)
                .map(|i| index(&format!("sha256:n{i}")))
                .collect(),
        );
        // The oldest went first.
        assert!(f.take("sha256:b").is_none());
        assert!(f.take("sha256:n0").is_some());
    }
}
