//! The chunk cache's own SQLite index (`cache.db`): which chunks are on disk, where (a
//! pack place, or none for a chunk file of an older cache), their sizes, and their LRU
//! order. Kept apart from skiff.db so the cache can be wiped or moved alone.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::packs::PackPlace;
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
    // 2: where in a pack a chunk's bytes are (NULL: a chunk file under sha256/).
    "ALTER TABLE chunks ADD COLUMN pack INTEGER;
     ALTER TABLE chunks ADD COLUMN pack_offset INTEGER;
     ALTER TABLE chunks ADD COLUMN pack_len INTEGER;
     CREATE INDEX chunks_pack ON chunks(pack);",
];

/// A chunk on record: digest, size (decompressed bytes, what the budget counts) and place.
pub type Recorded = (String, u64, Option<PackPlace>);

fn place_at(r: &Row, i: usize) -> rusqlite::Result<Option<PackPlace>> {
    let pack: Option<i64> = r.get(i)?;
    let offset: Option<i64> = r.get(i + 1)?;
    let len: Option<i64> = r.get(i + 2)?;
    Ok(match (pack, offset, len) {
        (Some(pack), Some(offset), Some(len)) => Some(PackPlace {
            pack: pack as u64,
            offset: offset as u64,
            len: len as u64,
        }),
        _ => None,
    })
}

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

    /// A second, read-only connection to the same database (WAL: reads do not wait for the
    /// writer), for the readers' lookups. Opened after [`open`](Self::open) migrated it.
    pub fn open_reader(path: &Path) -> Result<CacheDb> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "query_only", true)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(CacheDb { conn, next_seq: 0 })
    }

    /// Size and place of a chunk on record.
    pub fn place(&self, digest: &str) -> Result<Option<(u64, Option<PackPlace>)>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT size, pack, pack_offset, pack_len FROM chunks WHERE digest = ?1",
            )?
            .query_row(params![digest], |r| {
                Ok((r.get::<_, i64>(0)? as u64, place_at(r, 1)?))
            })
            .optional()?)
    }

    /// Whether any chunk is recorded in pack `pack`.
    pub fn pack_in_use(&self, pack: u64) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM chunks WHERE pack = ?1 LIMIT 1")?
            .query_row(params![pack as i64], |_| Ok(()))
            .optional()?
            .is_some())
    }

    pub fn total_size(&self) -> Result<u64> {
        let s: Option<i64> = self
            .conn
            .query_row("SELECT SUM(size) FROM chunks", [], |r| r.get(0))?;
        Ok(s.unwrap_or(0) as u64)
    }

    /// Records chunks just stored at their places (or, with no place, refreshes chunks on
    /// record already) in one transaction. Returns the bytes newly added and the places
    /// not recorded because their chunk was on record already (the caller frees them).
    pub fn insert_many(
        &mut self,
        chunks: &[(&str, u64, Option<PackPlace>)],
    ) -> Result<(u64, Vec<PackPlace>)> {
        let tx = self.conn.transaction()?;
        let mut added = 0;
        let mut unused = Vec::new();
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR IGNORE INTO chunks (digest, size, last_access, pack, pack_offset, pack_len)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut up =
                tx.prepare_cached("UPDATE chunks SET last_access = ?1 WHERE digest = ?2")?;
            for (d, size, at) in chunks {
                self.next_seq += 1;
                let inserted = match at {
                    Some(p) => {
                        ins.execute(params![
                            d,
                            *size as i64,
                            self.next_seq,
                            p.pack as i64,
                            p.offset as i64,
                            p.len as i64
                        ])? == 1
                    }
                    None => false,
                };
                if inserted {
                    added += size;
                } else {
                    up.execute(params![self.next_seq, d])?;
                    unused.extend(*at);
                }
            }
        }
        tx.commit()?;
        Ok((added, unused))
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

    /// Removes the rows of `digests` in one transaction.
    pub fn remove_many<'d>(&mut self, digests: impl Iterator<Item = &'d str>) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut del = tx.prepare_cached("DELETE FROM chunks WHERE digest = ?1")?;
            for d in digests {
                del.execute(params![d])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn remove(&mut self, digest: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM chunks WHERE digest = ?1", params![digest])?;
        Ok(())
    }

    /// Chunks from least to most recently used, at most `limit`.
    pub fn lru(&self, limit: usize) -> Result<Vec<Recorded>> {
        let mut st = self.conn.prepare_cached(
            "SELECT digest, size, pack, pack_offset, pack_len FROM chunks
             ORDER BY last_access ASC LIMIT ?1",
        )?;
        let rows = st.query_map(params![limit as i64], recorded)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

fn recorded(r: &Row) -> rusqlite::Result<Recorded> {
    Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, place_at(r, 2)?))
}

impl CacheDb {
    /// Every chunk on record.
    pub fn all(&self) -> Result<Vec<Recorded>> {
        let mut st = self
            .conn
            .prepare("SELECT digest, size, pack, pack_offset, pack_len FROM chunks")?;
        let rows = st.query_map([], recorded)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}
