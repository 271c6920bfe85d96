//! `layer_holds`: layers kept for something other than an image (a containerd snapshot the
//! snapshotter serves from the store). A held layer survives the removal of every image
//! that lists it; the last release of a layer no image lists deletes it.

use rusqlite::params;

use super::Db;
use crate::Result;

impl Db {
    /// Records that `holder` uses layer `digest` (idempotent). The layer must be stored.
    pub fn hold_layer(&self, digest: &str, holder: &str) -> Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO layer_holds (layer_digest, holder) VALUES (?1, ?2)",
            params![digest, holder],
        )?;
        Ok(())
    }

    /// Drops `holder`'s hold on `digest`; when nothing holds it and no image lists it, its
    /// rows go too (in the same transaction) and `true` says its files may be deleted.
    pub fn release_layer(&self, digest: &str, holder: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM layer_holds WHERE layer_digest = ?1 AND holder = ?2",
            params![digest, holder],
        )?;
        let used: i64 = tx.query_row(
            "SELECT (SELECT count(*) FROM image_layers WHERE layer_digest = ?1)
                  + (SELECT count(*) FROM layer_holds WHERE layer_digest = ?1)",
            [digest],
            |r| r.get(0),
        )?;
        let orphan = used == 0;
        if orphan {
            tx.execute("DELETE FROM layer_files WHERE layer_digest = ?1", [digest])?;
            tx.execute("DELETE FROM layers WHERE digest = ?1", [digest])?;
        }
        tx.commit()?;
        Ok(orphan)
    }
}
