//! `<root>/skiff.db`: the SQLite index of images, tags, layers and per-layer file lists.
//!
//! WAL mode, foreign keys on, schema versioned by `PRAGMA user_version`. An image becomes
//! visible in a single transaction ([`Db::commit_image`]) after all its layers are stored,
//! so an interrupted pull never leaves half an image.

mod holds;
mod images;
mod index_blob;
pub mod schema;
mod sources;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

pub use images::{ImageRow, LayerRow};
pub use index_blob::IndexBlob;

use crate::{Result, StoreError};

pub struct Db {
    conn: Mutex<Connection>,
}

impl Db {
    pub fn open(path: &Path) -> Result<Db> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&conn, schema::MIGRATIONS, path)?;
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    /// The connection, for modules (like the chunk cache) that keep their own tables here.
    pub fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().expect("db mutex poisoned")
    }
}

/// Applies the steps after the database's `user_version`, each in its own transaction.
pub fn migrate(conn: &Connection, steps: &[&str], path: &Path) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version as usize > steps.len() {
        return Err(StoreError::Corrupt {
            what: path.display().to_string(),
            reason: format!(
                "schema version {version} is newer than this skiff ({})",
                steps.len()
            ),
        });
    }
    for (i, step) in steps.iter().enumerate().skip(version as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("skiff.db");
        drop(Db::open(&p).unwrap());
        let db = Db::open(&p).unwrap();
        let v: i64 = db
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, schema::MIGRATIONS.len());
        let mode: String = db
            .conn()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        db.conn().pragma_update(None, "user_version", 999).unwrap();
        drop(db);
        assert!(matches!(Db::open(&p), Err(StoreError::Corrupt { .. })));
    }
}
