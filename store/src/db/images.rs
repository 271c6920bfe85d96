//! Queries on images, tags, layers and layer file indexes.

use rusqlite::{params, OptionalExtension, Row};

use super::Db;
use crate::layer_index::LayerIndex;
use crate::Result;

#[derive(Debug, Clone)]
pub struct ImageRow {
    pub id: String,
    pub manifest_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_media_type: String,
    pub config: Vec<u8>,
    pub created: Option<String>,
    pub size: u64,
    pub added: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRow {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub diff_id: String,
    pub format: String,
    pub state: String,
    pub tar_size: u64,
}

const IMAGE_COLS: &str =
    "id, manifest_digest, manifest, manifest_media_type, config, created, size, added";
const LAYER_COLS: &str = "digest, media_type, size, diff_id, format, state, tar_size";

fn image_row(r: &Row<'_>) -> rusqlite::Result<ImageRow> {
    Ok(ImageRow {
        id: r.get(0)?,
        manifest_digest: r.get(1)?,
        manifest: r.get(2)?,
        manifest_media_type: r.get(3)?,
        config: r.get(4)?,
        created: r.get(5)?,
        size: r.get::<_, i64>(6)? as u64,
        added: r.get(7)?,
    })
}

fn layer_row(r: &Row<'_>) -> rusqlite::Result<LayerRow> {
    Ok(LayerRow {
        digest: r.get(0)?,
        media_type: r.get(1)?,
        size: r.get::<_, i64>(2)? as u64,
        diff_id: r.get(3)?,
        format: r.get(4)?,
        state: r.get(5)?,
        tar_size: r.get::<_, i64>(6)? as u64,
    })
}

impl Db {
    /// Records a stored layer and its file index (replacing an earlier record).
    pub fn put_layer(&self, layer: &LayerRow, index: &LayerIndex) -> Result<()> {
        self.put_layer_blob(layer, &super::IndexBlob::of_index(index)?)
    }

    /// [`put_layer`](Self::put_layer) with the index in its stored form already.
    pub fn put_layer_blob(&self, layer: &LayerRow, index: &super::IndexBlob) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO layers (digest, media_type, size, diff_id, format, state, tar_size)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(digest) DO UPDATE SET media_type = ?2, size = ?3, diff_id = ?4,
               format = ?5, state = ?6, tar_size = ?7",
            params![
                layer.digest,
                layer.media_type,
                layer.size as i64,
                layer.diff_id,
                layer.format,
                layer.state,
                layer.tar_size as i64
            ],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO layer_files (layer_digest, format, data) VALUES (?1, ?2, ?3)",
            params![layer.digest, index.format, index.data],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records a layer's exact uncompressed size (learnt when a lazy layer is fetched whole).
    pub fn set_layer_tar_size(&self, digest: &str, tar_size: u64) -> Result<()> {
        self.conn().execute(
            "UPDATE layers SET tar_size = ?2 WHERE digest = ?1",
            params![digest, tar_size as i64],
        )?;
        Ok(())
    }

    pub fn layer(&self, digest: &str) -> Result<Option<LayerRow>> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {LAYER_COLS} FROM layers WHERE digest = ?1"),
                [digest],
                layer_row,
            )
            .optional()?)
    }

    pub fn layer_index(&self, digest: &str) -> Result<Option<LayerIndex>> {
        let row: Option<(String, Vec<u8>)> = self
            .conn()
            .query_row(
                "SELECT format, data FROM layer_files WHERE layer_digest = ?1",
                [digest],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(format, data)| super::index_blob::decode(digest, &format, &data))
            .transpose()
    }

    /// Makes an image visible: the image row, its layer order and its tag, in one
    /// transaction. All layers must already be recorded.
    pub fn commit_image(
        &self,
        image: &ImageRow,
        layers: &[String],
        tag: Option<&str>,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            &format!(
                "INSERT INTO images ({IMAGE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(id) DO UPDATE SET manifest_digest = ?2, manifest = ?3,
                   manifest_media_type = ?4, config = ?5, created = ?6, size = ?7"
            ),
            params![
                image.id,
                image.manifest_digest,
                image.manifest,
                image.manifest_media_type,
                image.config,
                image.created,
                image.size as i64,
                image.added
            ],
        )?;
        tx.execute("DELETE FROM image_layers WHERE image_id = ?1", [&image.id])?;
        for (i, l) in layers.iter().enumerate() {
            tx.execute(
                "INSERT INTO image_layers (image_id, position, layer_digest) VALUES (?1, ?2, ?3)",
                params![image.id, i as i64, l],
            )?;
        }
        if let Some(tag) = tag {
            tx.execute(
                "INSERT OR REPLACE INTO tags (name, image_id) VALUES (?1, ?2)",
                params![tag, image.id],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn image(&self, id: &str) -> Result<Option<ImageRow>> {
        // Cached statements: a container create looks its image up several times.
        Ok(self
            .conn()
            .prepare_cached(&format!("SELECT {IMAGE_COLS} FROM images WHERE id = ?1"))?
            .query_row([id], image_row)
            .optional()?)
    }

    pub fn all_images(&self) -> Result<Vec<ImageRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(&format!(
            "SELECT {IMAGE_COLS} FROM images ORDER BY added DESC, id"
        ))?;
        let rows = st.query_map([], image_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The id of the image a tag points at.
    pub fn tag_target(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .prepare_cached("SELECT image_id FROM tags WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?)
    }

    /// Image ids starting with `prefix` (`sha256:` added when missing).
    pub fn ids_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let full = if prefix.starts_with("sha256:") {
            prefix.to_string()
        } else {
            format!("sha256:{prefix}")
        };
        let conn = self.conn();
        let mut st = conn.prepare_cached("SELECT id FROM images WHERE substr(id, 1, ?2) = ?1")?;
        let rows = st.query_map(params![full, full.len() as i64], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn tags_of(&self, id: &str) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut st =
            conn.prepare_cached("SELECT name FROM tags WHERE image_id = ?1 ORDER BY name")?;
        let rows = st.query_map([id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn set_tag(&self, name: &str, id: &str) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO tags (name, image_id) VALUES (?1, ?2)",
            params![name, id],
        )?;
        Ok(())
    }

    /// Records that the image was tagged now (Docker's `Metadata.LastTagTime`).
    pub fn set_last_tag_time(&self, id: &str) -> Result<()> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        self.conn().execute(
            "UPDATE images SET last_tag_time = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        Ok(())
    }

    /// When the image was last tagged (RFC 3339), `None` when never.
    pub fn last_tag_time(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .prepare_cached("SELECT last_tag_time FROM images WHERE id = ?1")?
            .query_row([id], |r| r.get::<_, Option<String>>(0))
            .optional()?
            .flatten())
    }

    /// Records that the image is `name` (`registry/repository@digest`) in a registry.
    pub fn add_repo_digest(&self, name: &str, id: &str) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO repo_digests (name, image_id) VALUES (?1, ?2)",
            params![name, id],
        )?;
        Ok(())
    }

    /// The `registry/repository@digest` names of an image, sorted.
    pub fn repo_digests_of(&self, id: &str) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut st =
            conn.prepare("SELECT name FROM repo_digests WHERE image_id = ?1 ORDER BY name")?;
        let rows = st.query_map([id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Removes a tag; whether it existed.
    pub fn remove_tag(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM tags WHERE name = ?1", [name])?
            > 0)
    }

    /// The layers of an image, bottom first.
    pub fn image_layers(&self, id: &str) -> Result<Vec<LayerRow>> {
        let conn = self.conn();
        let cols = LAYER_COLS
            .split(", ")
            .map(|c| format!("l.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut st = conn.prepare(&format!(
            "SELECT {cols} FROM image_layers il JOIN layers l ON l.digest = il.layer_digest
             WHERE il.image_id = ?1 ORDER BY il.position"
        ))?;
        let rows = st.query_map([id], layer_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes an image with its tags; returns the layers no other image uses any more
    /// (their rows are deleted too; the caller removes their files).
    pub fn delete_image(&self, id: &str) -> Result<Vec<String>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let layers: Vec<String> = {
            let mut st = tx.prepare("SELECT layer_digest FROM image_layers WHERE image_id = ?1")?;
            let rows = st.query_map([id], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        tx.execute("DELETE FROM tags WHERE image_id = ?1", [id])?;
        tx.execute("DELETE FROM repo_digests WHERE image_id = ?1", [id])?;
        tx.execute("DELETE FROM image_layers WHERE image_id = ?1", [id])?;
        tx.execute("DELETE FROM images WHERE id = ?1", [id])?;
        let mut orphans = Vec::new();
        for l in layers {
            let used: i64 = tx.query_row(
                "SELECT (SELECT count(*) FROM image_layers WHERE layer_digest = ?1)
                      + (SELECT count(*) FROM layer_holds WHERE layer_digest = ?1)",
                [&l],
                |r| r.get(0),
            )?;
            if used == 0 && !orphans.contains(&l) {
                tx.execute("DELETE FROM layer_files WHERE layer_digest = ?1", [&l])?;
                tx.execute("DELETE FROM layers WHERE digest = ?1", [&l])?;
                orphans.push(l);
            }
        }
        tx.commit()?;
        Ok(orphans)
    }
}
