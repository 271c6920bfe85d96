//! `layer_sources`: the registry repository and size of each lazy layer, so its chunks can
//! be fetched again after a daemon restart; and the chunk digests stored indexes reference.

use std::collections::HashSet;

use rusqlite::{params, OptionalExtension};

use super::Db;
use crate::layer_index::ChunkLocation;
use crate::Result;

impl Db {
    /// Records a lazy layer, its file index and where its blob lives, in one transaction.
    pub fn put_lazy_layer(
        &self,
        layer: &super::LayerRow,
        index: &super::IndexBlob,
        reference: &str,
    ) -> Result<()> {
        self.put_layer_blob(layer, index)?;
        self.conn().execute(
            "INSERT OR REPLACE INTO layer_sources (layer_digest, reference, size)
             VALUES (?1, ?2, ?3)",
            params![layer.digest, reference, layer.size as i64],
        )?;
        Ok(())
    }

    /// `(reference, size)` of a lazy layer's blob.
    pub fn layer_source(&self, digest: &str) -> Result<Option<(String, u64)>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT reference, size FROM layer_sources WHERE layer_digest = ?1",
                [digest],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)),
            )
            .optional()?)
    }

    /// Every compressed-chunk digest some stored layer index references.
    pub fn referenced_chunks(&self) -> Result<HashSet<String>> {
        let rows: Vec<(String, String, Vec<u8>)> = {
            let conn = self.conn();
            let mut st = conn.prepare(
                "SELECT f.layer_digest, f.format, f.data FROM layer_files f
                 JOIN layers l ON l.digest = f.layer_digest WHERE l.state = 'lazy'",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut out = HashSet::new();
        for (layer, format, data) in rows {
            let index = super::index_blob::decode(&layer, &format, &data)?;
            for e in index.entries {
                for c in e.chunks {
                    if let ChunkLocation::Compressed { digest, .. } = c.location {
                        out.insert(digest);
                    }
                }
            }
        }
        Ok(out)
    }
}
