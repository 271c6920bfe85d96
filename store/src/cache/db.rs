//! The chunk cache's own SQLite index (`cache.db`): which chunks are on disk, their sizes,
//! and their LRU order. Kept apart from skiff.db so the cache can be wiped or moved alone.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::Result;

const MIGRATIONS: &[&str] = &[
    // 1: chunks by digest; last_access is a monotonically increasing sequence number, which
    // gives an exact LRU order without clock trouble.
    "CREATE TABLE chunks (
        digest TEXT PRIMARY KEY NOT NULL,
        size INTEGER NOT NULL,
        last_access INTEGER NOT NULL
     );
     CREATE INDEX chunks_lru ON chunks(last_access);",
];

pub struct CacheDb {
    conn: Connection,
    next_seq: i64,
}

impl CacheDb {
    pub fn open(path: &Path) -> Result<CacheDb> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Keep the WAL small: the cache may live on a small, nearly full filesystem.
        conn.pragma_update(None, "wal_autocheckpoint", 64)?;
        conn.pragma_update(None, "journal_size_limit", 256 * 1024)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(m)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        let max: Option<i64> =
            conn.query_row("SELECT MAX(last_access) FROM chunks", [], |r| r.get(0))?;
        Ok(CacheDb {
            conn,
            next_seq: max.unwrap_or(0) + 1,
        })
    }

    pub fn total_size(&self) -> Result<u64> {
        let s: Option<i64> = self
            .conn
            .query_row("SELECT SUM(size) FROM chunks", [], |r| r.get(0))?;
        Ok(s.unwrap_or(0) as u64)
    }

    pub fn contains(&self, digest: &str) -> Result<Option<u64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT size FROM chunks WHERE digest = ?1",
                params![digest],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|s| s as u64))
    }

    /// Records (or refreshes) chunks in one transaction; returns the bytes newly added.
    pub fn insert_many(&mut self, chunks: &[(&str, u64)]) -> Result<u64> {
        let tx = self.conn.transaction()?;
        let mut added = 0;
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR IGNORE INTO chunks (digest, size, last_access) VALUES (?1, ?2, ?3)",
            )?;
            let mut up =
                tx.prepare_cached("UPDATE chunks SET last_access = ?1 WHERE digest = ?2")?;
            for (d, size) in chunks {
                self.next_seq += 1;
                if ins.execute(params![d, *size as i64, self.next_seq])? == 1 {
                    added += size;
                } else {
                    up.execute(params![self.next_seq, d])?;
                }
            }
        }
        tx.commit()?;
        Ok(added)
    }

    /// Marks chunks as just used, in one transaction. `Some(size)` means the chunk's file was
    /// seen on disk, so a missing row is added back; returns the bytes so added.
    pub fn touch(&mut self, digests: &[(&str, Option<u64>)]) -> Result<u64> {
        let tx = self.conn.transaction()?;
        let mut added = 0;
        {
            let mut up =
                tx.prepare_cached("UPDATE chunks SET last_access = ?1 WHERE digest = ?2")?;
            let mut ins = tx.prepare_cached(
                "INSERT OR IGNORE INTO chunks (digest, size, last_access) VALUES (?1, ?2, ?3)",
            )?;
            for (d, size) in digests {
                self.next_seq += 1;
                if up.execute(params![self.next_seq, d])? == 0 {
                    if let Some(size) = size {
                        ins.execute(params![d, *size as i64, self.next_seq])?;
                        added += size;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(added)
    }

    pub fn remove(&mut self, digest: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM chunks WHERE digest = ?1", params![digest])?;
        Ok(())
    }

    /// Chunks from least to most recently used, at most `limit`.
    pub fn lru(&self, limit: usize) -> Result<Vec<(String, u64)>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT digest, size FROM chunks ORDER BY last_access ASC LIMIT ?1")?;
        let rows = st.query_map(params![limit as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

impl CacheDb {
    /// Every chunk on record with its size.
    pub fn all(&self) -> Result<Vec<(String, u64)>> {
        let mut st = self.conn.prepare("SELECT digest, size FROM chunks")?;
        let rows = st.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}
