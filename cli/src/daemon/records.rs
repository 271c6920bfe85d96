//! The daemon's container records in SQLite (`containers.db`), one JSON [`ContainerRecord`]
//! per row in skiff's own schema. `PRAGMA user_version` counts the migration steps run;
//! step 2 rewrites schema-1 rows (bollard's JSON) into schema 2, in one transaction.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::error::DaemonError;
use super::record::{decode, ContainerRecord};

type Step = fn(&Transaction) -> Result<(), String>;

fn create_table(tx: &Transaction) -> Result<(), String> {
    tx.execute_batch(
        "CREATE TABLE containers (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created INTEGER NOT NULL,
            record TEXT NOT NULL
        );",
    )
    .map_err(|e| e.to_string())
}

/// Schema 1 (bollard types) to schema 2 (skiff's own).
fn rewrite_v1(tx: &Transaction) -> Result<(), String> {
    let rows: Vec<(String, String)> = {
        let mut stmt = tx
            .prepare("SELECT id, record FROM containers")
            .map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<_, _>>().map_err(|e| e.to_string())?
    };
    for (id, json) in rows {
        let r = decode(&json).map_err(|e| format!("record {id}: {e}"))?;
        let json = serde_json::to_string(&r).map_err(|e| e.to_string())?;
        tx.execute(
            "UPDATE containers SET record = ?1 WHERE id = ?2",
            params![json, id],
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Migration steps; `PRAGMA user_version` counts how many have run.
const MIGRATIONS: &[Step] = &[create_table, rewrite_v1];

fn db_error(e: rusqlite::Error) -> DaemonError {
    DaemonError::Records(e.to_string())
}

/// The first column of the first row `sql` (one `?1`, bound to `arg`) selects, through the
/// connection's statement cache (preparing took as long as running these lookups).
fn first_column<T: rusqlite::types::FromSql>(
    conn: &Connection,
    sql: &str,
    arg: &str,
) -> Result<Option<T>, DaemonError> {
    conn.prepare_cached(sql)
        .and_then(|mut st| st.query_row(params![arg], |r| r.get(0)))
        .optional()
        .map_err(db_error)
}

pub struct Records {
    conn: Mutex<Connection>,
}

impl Records {
    /// Opens (creating or migrating) the records database at `path`.
    pub fn open(path: &Path) -> Result<Records, DaemonError> {
        let fail = |e: String| DaemonError::Records(format!("{}: {e}", path.display()));
        let mut conn = Connection::open(path).map_err(|e| fail(e.to_string()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| fail(e.to_string()))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| fail(e.to_string()))?;
        let version: usize = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| fail(e.to_string()))?;
        let tx = conn.transaction().map_err(|e| fail(e.to_string()))?;
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version) {
            step(&tx).map_err(|e| fail(format!("migrating to version {}: {e}", i + 1)))?;
        }
        tx.pragma_update(None, "user_version", MIGRATIONS.len())
            .map_err(|e| fail(e.to_string()))?;
        tx.commit().map_err(|e| fail(e.to_string()))?;
        Ok(Records {
            conn: Mutex::new(conn),
        })
    }

    /// Inserts a new record; fails if the name is taken.
    pub fn insert(&self, r: &ContainerRecord) -> Result<(), DaemonError> {
        let conn = self.conn.lock().expect("records lock");
        let json = serde_json::to_string(r).map_err(|e| DaemonError::Records(e.to_string()))?;
        conn.prepare_cached(
            "INSERT INTO containers (id, name, created, record) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut st| st.execute(params![r.id, r.name, r.created, json]))
        .map_err(db_error)?;
        Ok(())
    }

    /// Replaces an existing record (same id).
    pub fn update(&self, r: &ContainerRecord) -> Result<(), DaemonError> {
        let conn = self.conn.lock().expect("records lock");
        let json = serde_json::to_string(r).map_err(|e| DaemonError::Records(e.to_string()))?;
        conn.prepare_cached("UPDATE containers SET record = ?1 WHERE id = ?2")
            .and_then(|mut st| st.execute(params![json, r.id]))
            .map_err(db_error)?;
        Ok(())
    }

    /// Replaces a record whose name changed (`rename`); fails if the new name is taken.
    pub fn update_renamed(&self, r: &ContainerRecord) -> Result<(), DaemonError> {
        let conn = self.conn.lock().expect("records lock");
        let json = serde_json::to_string(r).map_err(|e| DaemonError::Records(e.to_string()))?;
        conn.prepare_cached("UPDATE containers SET record = ?1, name = ?2 WHERE id = ?3")
            .and_then(|mut st| st.execute(params![json, r.name, r.id]))
            .map_err(db_error)?;
        Ok(())
    }

    pub fn remove(&self, id: &str) -> Result<(), DaemonError> {
        let conn = self.conn.lock().expect("records lock");
        conn.prepare_cached("DELETE FROM containers WHERE id = ?1")
            .and_then(|mut st| st.execute(params![id]))
            .map_err(db_error)?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<ContainerRecord>, DaemonError> {
        let conn = self.conn.lock().expect("records lock");
        let json: Option<String> =
            first_column(&conn, "SELECT record FROM containers WHERE id = ?1", id)?;
        json.map(|j| decode(&j).map_err(DaemonError::Records))
            .transpose()
    }

    /// The record whose id is `key`, else whose name is `key`, else the one whose id
    /// starts with `key` (Docker's lookup order). Errors: [`DaemonError::AmbiguousId`]
    /// when several ids start with `key`, [`DaemonError::NoSuchContainer`] when none
    /// matches (or `key` is empty).
    pub fn lookup(&self, key: &str) -> Result<ContainerRecord, DaemonError> {
        let conn = self.conn.lock().expect("records lock");
        let mut json: Option<String> =
            first_column(&conn, "SELECT record FROM containers WHERE id = ?1", key)?;
        if json.is_none() {
            json = first_column(&conn, "SELECT record FROM containers WHERE name = ?1", key)?;
        }
        if json.is_none() && !key.is_empty() {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT record FROM containers WHERE substr(id, 1, length(?1)) = ?1 LIMIT 2",
                )
                .map_err(db_error)?;
            let mut rows: Vec<String> = stmt
                .query_map(params![key], |r| r.get(0))
                .map_err(db_error)?
                .collect::<Result<_, _>>()
                .map_err(db_error)?;
            match rows.len() {
                1 => json = rows.pop(),
                0 => {}
                _ => return Err(DaemonError::AmbiguousId(key.to_string())),
            }
        }
        let json = json.ok_or_else(|| DaemonError::NoSuchContainer(key.to_string()))?;
        decode(&json).map_err(DaemonError::Records)
    }

    pub fn exists(&self, id: &str) -> Result<bool, DaemonError> {
        let conn = self.conn.lock().expect("records lock");
        Ok(conn
            .prepare_cached("SELECT 1 FROM containers WHERE id = ?1")
            .and_then(|mut st| st.query_row(params![id], |r| r.get::<_, i64>(0)).optional())
            .map_err(db_error)?
            .is_some())
    }

    /// The id of the container named `name`, if any.
    pub fn name_taken(&self, name: &str) -> Result<Option<String>, DaemonError> {
        let conn = self.conn.lock().expect("records lock");
        first_column(&conn, "SELECT id FROM containers WHERE name = ?1", name)
    }

    /// Every record, newest first.
    pub fn all(&self) -> Result<Vec<ContainerRecord>, DaemonError> {
        let conn = self.conn.lock().expect("records lock");
        let mut stmt = conn
            .prepare("SELECT record FROM containers ORDER BY created DESC, rowid DESC")
            .map_err(db_error)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(db_error)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(decode(&row.map_err(db_error)?).map_err(DaemonError::Records)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str) -> ContainerRecord {
        ContainerRecord::for_test(id, name)
    }

    #[test]
    fn lookup_takes_id_then_name_then_a_unique_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::open(&dir.path().join("containers.db")).unwrap();
        records.insert(&record("abc123", "web")).unwrap();
        records.insert(&record("abd456", "abc123x")).unwrap();
        // A container named like another's id: the id wins (Docker's order).
        records.insert(&record("fff000", "abd456")).unwrap();
        assert_eq!(records.lookup("abc123").unwrap().name, "web");
        assert_eq!(records.lookup("web").unwrap().id, "abc123");
        assert_eq!(records.lookup("abd456").unwrap().name, "abc123x");
        assert_eq!(records.lookup("abc123x").unwrap().id, "abd456");
        assert_eq!(records.lookup("abc").unwrap().id, "abc123");
        assert_eq!(records.lookup("ff").unwrap().name, "abd456");
        assert!(matches!(records.lookup("ab"), Err(DaemonError::AmbiguousId(k)) if k == "ab"));
        assert!(matches!(records.lookup("zz"), Err(DaemonError::NoSuchContainer(k)) if k == "zz"));
        // An empty key is nobody, not every container's prefix.
        assert!(matches!(
            records.lookup(""),
            Err(DaemonError::NoSuchContainer(_))
        ));
        // `%` and `_` are not patterns.
        assert!(matches!(
            records.lookup("a%"),
            Err(DaemonError::NoSuchContainer(_))
        ));
        assert!(matches!(
            records.lookup("_bc"),
            Err(DaemonError::NoSuchContainer(_))
        ));
    }

    #[test]
    fn a_claimed_name_is_taken_until_released() {
        use crate::daemon::claims::Claims;
        let dir = tempfile::tempdir().unwrap();
        let records = Records::open(&dir.path().join("containers.db")).unwrap();
        records.insert(&record("abc123", "web")).unwrap();
        let claims = Claims::default();
        assert!(matches!(
            claims.claim_name(&records, "web", "new1"),
            Err(DaemonError::NameInUse { name, id }) if name == "web" && id == "abc123"
        ));
        let held = claims.claim_name(&records, "db", "new1").unwrap();
        assert_eq!(held.key(), "db");
        assert!(matches!(
            claims.claim_name(&records, "db", "new2"),
            Err(DaemonError::NameInUse { id, .. }) if id == "new1"
        ));
        drop(held);
        assert_eq!(
            claims.claim_name(&records, "db", "new2").unwrap().key(),
            "db"
        );
        // Generated names skip the claimed ones.
        let a = claims.claim_generated_name(&records, "g1").unwrap();
        let b = claims.claim_generated_name(&records, "g2").unwrap();
        assert_ne!(a.key(), b.key());
        // A removal claim: a second one is refused while the first is held.
        let removing = claims.claim_removal("abc123").unwrap();
        assert!(matches!(
            claims.claim_removal("abc123"),
            Err(DaemonError::RemovalInProgress { id }) if id == "abc123"
        ));
        drop(removing);
        claims.claim_removal("abc123").unwrap();
    }

    #[test]
    fn a_schema1_database_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("containers.db");
        {
            // What the previous daemon left: version 1, a bollard-shaped record.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE containers (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                 created INTEGER NOT NULL, record TEXT NOT NULL); PRAGMA user_version = 1;",
            )
            .unwrap();
            let old = r#"{"id":"abc","name":"old","created":5,"image":"i","image_id":"sha256:1",
                "config":{"Cmd":["sh"],"Tty":true},"host_config":{"AutoRemove":true},
                "path":"sh","args":[],"network":null,"restart_count":0}"#;
            conn.execute(
                "INSERT INTO containers VALUES ('abc', 'old', 5, ?1)",
                params![old],
            )
            .unwrap();
        }
        let records = Records::open(&path).unwrap();
        let r = records.get("abc").unwrap().unwrap();
        assert!(r.spec.tty && r.spec.host.auto_remove);
        let conn = records.conn.lock().unwrap();
        let raw: String = conn
            .query_row("SELECT record FROM containers", [], |r| r.get(0))
            .unwrap();
        assert!(raw.contains("\"schema\":2"), "{raw}");
        let v: usize = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, 2);
    }
}
