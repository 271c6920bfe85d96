//! Snapshot metadata in SQLite (`<root>/metadata.db`, WAL, `PRAGMA user_version` = schema
//! version): one row per snapshot, keyed by its key (active, view) or name (committed),
//! with its parent's name, labels, kind and, for lazily served layers, the layer digest and
//! image reference. Every change is one transaction, so a crash leaves the old or the new
//! state, never half of a commit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::error::{Result, SnapshotError};

const SCHEMA_VERSION: i64 = 1;

/// The kind of a snapshot, as containerd's `snapshots.Kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Active,
    View,
    Committed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Active => "active",
            Kind::View => "view",
            Kind::Committed => "committed",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "active" => Kind::Active,
            "view" => Kind::View,
            "committed" => Kind::Committed,
            _ => return None,
        })
    }
}

/// Where a lazily served snapshot's files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteLayer {
    /// The image reference the layer was resolved through (for its registry and credentials).
    pub image: String,
    /// The layer's blob digest, `sha256:<hex>`.
    pub digest: String,
}

/// One snapshot row.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Also the name of its directory under `snapshots/`.
    pub id: i64,
    pub key: String,
    pub kind: Kind,
    /// The parent's name, `""` for none.
    pub parent: String,
    pub labels: HashMap<String, String>,
    pub created: SystemTime,
    pub updated: SystemTime,
    /// Bytes and inodes of the snapshot's own directory, measured at commit.
    pub size: i64,
    pub inodes: i64,
    pub remote: Option<RemoteLayer>,
}

/// The metadata database.
pub struct MetaStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

fn to_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

fn from_nanos(n: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(n.max(0) as u64)
}

impl MetaStore {
    /// Opens (creating) the database at `path`.
    pub fn open(path: &Path) -> Result<MetaStore> {
        let db = |source| SnapshotError::Db {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db)?;
        match version {
            0 => {
                conn.execute_batch(
                    "BEGIN;
                     CREATE TABLE snapshots (
                       id INTEGER PRIMARY KEY AUTOINCREMENT,
                       key TEXT NOT NULL UNIQUE,
                       kind TEXT NOT NULL,
                       parent TEXT NOT NULL,
                       labels TEXT NOT NULL,
                       created INTEGER NOT NULL,
                       updated INTEGER NOT NULL,
                       size INTEGER NOT NULL DEFAULT 0,
                       inodes INTEGER NOT NULL DEFAULT 0,
                       remote_image TEXT,
                       remote_layer TEXT
                     );
                     CREATE INDEX snapshots_parent ON snapshots(parent);
                     CREATE TABLE kept_mounts (
                       id INTEGER PRIMARY KEY REFERENCES snapshots(id) ON DELETE CASCADE,
                       keeper_pid INTEGER NOT NULL,
                       connection INTEGER NOT NULL,
                       fingerprint INTEGER NOT NULL
                     );
                     PRAGMA user_version = 1;
                     COMMIT;",
                )
                .map_err(db)?;
            }
            SCHEMA_VERSION => {}
            v => {
                return Err(SnapshotError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!(
                        "schema version {v} is newer than this skiff knows ({SCHEMA_VERSION})"
                    ),
                })
            }
        }
        Ok(MetaStore {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    fn db_err(&self, source: rusqlite::Error) -> SnapshotError {
        SnapshotError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs `f` in one transaction, committed only if it returns `Ok`.
    pub fn write<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction().map_err(|e| self.db_err(e))?;
        let out = f(&Tx {
            tx: &tx,
            meta: self,
        })?;
        tx.commit().map_err(|e| self.db_err(e))?;
        Ok(out)
    }

    /// Reads under one (read) transaction.
    pub fn read<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.write(f)
    }
}

/// A transaction over the snapshot table.
pub struct Tx<'a> {
    tx: &'a Transaction<'a>,
    meta: &'a MetaStore,
}

const COLUMNS: &str =
    "id, key, kind, parent, labels, created, updated, size, inodes, remote_image, remote_layer";

impl Tx<'_> {
    fn err(&self, e: rusqlite::Error) -> SnapshotError {
        self.meta.db_err(e)
    }

    fn row(&self, r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Snapshot>> {
        let kind: String = r.get(2)?;
        let labels: String = r.get(4)?;
        let key: String = r.get(1)?;
        let image: Option<String> = r.get(9)?;
        let layer: Option<String> = r.get(10)?;
        let corrupt = |reason: String| SnapshotError::Corrupt {
            path: self.meta.path.clone(),
            reason: format!("snapshot {key:?}: {reason}"),
        };
        let Some(kind) = Kind::parse(&kind) else {
            return Ok(Err(corrupt(format!("unknown kind {kind:?}"))));
        };
        let labels = match serde_json::from_str(&labels) {
            Ok(l) => l,
            Err(e) => return Ok(Err(corrupt(format!("labels: {e}")))),
        };
        Ok(Ok(Snapshot {
            id: r.get(0)?,
            key: key.clone(),
            kind,
            parent: r.get(3)?,
            labels,
            created: from_nanos(r.get(5)?),
            updated: from_nanos(r.get(6)?),
            size: r.get(7)?,
            inodes: r.get(8)?,
            remote: image
                .zip(layer)
                .map(|(image, digest)| RemoteLayer { image, digest }),
        }))
    }

    /// The snapshot `key`, if any.
    pub fn get(&self, key: &str) -> Result<Option<Snapshot>> {
        self.tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM snapshots WHERE key = ?1"),
                [key],
                |r| self.row(r),
            )
            .optional()
            .map_err(|e| self.err(e))?
            .transpose()
    }

    /// The snapshot `key`, or NotFound.
    pub fn require(&self, key: &str) -> Result<Snapshot> {
        self.get(key)?.ok_or_else(|| SnapshotError::NotFound {
            key: key.to_string(),
        })
    }

    /// The remote layer snapshot `id` serves, if it is a lazily served one.
    pub fn remote_of(&self, id: i64) -> Result<Option<RemoteLayer>> {
        let row: Option<(Option<String>, Option<String>)> = self
            .tx
            .query_row(
                "SELECT remote_image, remote_layer FROM snapshots WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(row
            .and_then(|(i, l)| i.zip(l))
            .map(|(image, digest)| RemoteLayer { image, digest }))
    }

    /// Every snapshot, by id.
    pub fn all(&self) -> Result<Vec<Snapshot>> {
        let mut stmt = self
            .tx
            .prepare(&format!("SELECT {COLUMNS} FROM snapshots ORDER BY id"))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| self.row(r))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r.map_err(|e| self.err(e))??);
        }
        Ok(out)
    }

    /// The ids of `parent` and its ancestors, nearest first (`[]` for `""`).
    pub fn chain(&self, parent: &str) -> Result<Vec<i64>> {
        let mut ids = Vec::new();
        let mut next = parent.to_string();
        while !next.is_empty() {
            let s = self
                .get(&next)?
                .ok_or_else(|| SnapshotError::ParentNotFound {
                    parent: next.clone(),
                })?;
            if ids.contains(&s.id) {
                return Err(SnapshotError::Corrupt {
                    path: self.meta.path.clone(),
                    reason: format!("parent chain of {parent:?} loops at {next:?}"),
                });
            }
            ids.push(s.id);
            next = s.parent;
        }
        Ok(ids)
    }

    /// Creates an active or view snapshot; its parent must be committed.
    pub fn create(
        &self,
        key: &str,
        kind: Kind,
        parent: &str,
        labels: &HashMap<String, String>,
    ) -> Result<Snapshot> {
        if self.get(key)?.is_some() {
            return Err(SnapshotError::AlreadyExists {
                key: key.to_string(),
            });
        }
        if !parent.is_empty() {
            let p = self
                .get(parent)?
                .ok_or_else(|| SnapshotError::ParentNotFound {
                    parent: parent.to_string(),
                })?;
            if p.kind != Kind::Committed {
                return Err(SnapshotError::ParentNotCommitted {
                    parent: parent.to_string(),
                });
            }
        }
        let now = to_nanos(SystemTime::now());
        let labels_json = serde_json::to_string(labels).expect("string map serializes");
        self.tx
            .execute(
                "INSERT INTO snapshots (key, kind, parent, labels, created, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![key, kind.as_str(), parent, labels_json, now],
            )
            .map_err(|e| self.err(e))?;
        self.require(key)
    }

    /// Turns active `key` into committed `name` (same id, so the same directory), with
    /// `labels` and the measured usage.
    pub fn commit(
        &self,
        key: &str,
        name: &str,
        labels: &HashMap<String, String>,
        usage: (i64, i64),
        remote: Option<&RemoteLayer>,
    ) -> Result<Snapshot> {
        let s = self.require(key)?;
        if s.kind != Kind::Active {
            return Err(SnapshotError::NotActive {
                key: key.to_string(),
                kind: s.kind.as_str(),
            });
        }
        if self.get(name)?.is_some() {
            return Err(SnapshotError::AlreadyExists {
                key: name.to_string(),
            });
        }
        let labels_json = serde_json::to_string(labels).expect("string map serializes");
        self.tx
            .execute(
                "UPDATE snapshots SET key = ?1, kind = 'committed', labels = ?2, updated = ?3,
                   size = ?4, inodes = ?5, remote_image = ?6, remote_layer = ?7
                 WHERE id = ?8",
                params![
                    name,
                    labels_json,
                    to_nanos(SystemTime::now()),
                    usage.0,
                    usage.1,
                    remote.map(|r| r.image.as_str()),
                    remote.map(|r| r.digest.as_str()),
                    s.id
                ],
            )
            .map_err(|e| self.err(e))?;
        self.require(name)
    }

    /// Replaces the labels of `key`.
    pub fn set_labels(&self, key: &str, labels: &HashMap<String, String>) -> Result<Snapshot> {
        let s = self.require(key)?;
        let labels_json = serde_json::to_string(labels).expect("string map serializes");
        self.tx
            .execute(
                "UPDATE snapshots SET labels = ?1, updated = ?2 WHERE id = ?3",
                params![labels_json, to_nanos(SystemTime::now()), s.id],
            )
            .map_err(|e| self.err(e))?;
        self.require(key)
    }

    /// Records the descriptor keeper of snapshot `id`'s lazy mount (replacing any).
    pub fn set_kept(&self, id: i64, kept: &skiff_fs::KeptMount) -> Result<()> {
        self.tx
            .execute(
                "INSERT OR REPLACE INTO kept_mounts (id, keeper_pid, connection, fingerprint)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    id,
                    kept.keeper_pid,
                    kept.connection,
                    // SQLite integers are signed: the fingerprint's bits, as i64.
                    kept.fingerprint as i64
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The recorded keeper of snapshot `id`'s lazy mount, if any.
    pub fn kept(&self, id: i64) -> Result<Option<skiff_fs::KeptMount>> {
        self.tx
            .query_row(
                "SELECT keeper_pid, connection, fingerprint FROM kept_mounts WHERE id = ?1",
                [id],
                |r| {
                    Ok(skiff_fs::KeptMount {
                        keeper_pid: r.get(0)?,
                        connection: r.get(1)?,
                        fingerprint: r.get::<_, i64>(2)? as u64,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Forgets snapshot `id`'s keeper.
    pub fn clear_kept(&self, id: i64) -> Result<()> {
        self.tx
            .execute("DELETE FROM kept_mounts WHERE id = ?1", [id])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Deletes `key`, refused while a snapshot names it as parent.
    pub fn remove(&self, key: &str) -> Result<Snapshot> {
        let s = self.require(key)?;
        let children: i64 = self
            .tx
            .query_row(
                "SELECT count(*) FROM snapshots WHERE parent = ?1",
                [key],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if children > 0 {
            return Err(SnapshotError::HasChildren {
                key: key.to_string(),
            });
        }
        self.tx
            .execute("DELETE FROM snapshots WHERE id = ?1", [s.id])
            .map_err(|e| self.err(e))?;
        Ok(s)
    }
}
