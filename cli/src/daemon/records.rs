//! The daemon's container records in SQLite: what was asked at create time (Docker's create
//! body), the name, the image, and when. Live state (running, exit code) comes from the
//! runtime's state files, so a daemon restart reads the truth rather than a stale copy.

use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// Schema steps; `PRAGMA user_version` counts how many have run.
const MIGRATIONS: &[&str] = &["CREATE TABLE containers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created INTEGER NOT NULL,
        record TEXT NOT NULL
    );"];

/// What the daemon keeps per container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    /// Unix seconds.
    pub created: i64,
    /// As the user wrote it.
    pub image: String,
    /// The image's id (`sha256:...`).
    pub image_id: String,
    /// The create body, with the image's defaults merged in.
    pub config: bollard::models::ContainerConfig,
    pub host_config: bollard::models::HostConfig,
    /// The resolved command line (entrypoint + cmd).
    pub path: String,
    pub args: Vec<String>,
    /// Network details once attached: ip, gateway, mac, published ports.
    #[serde(default)]
    pub network: Option<serde_json::Value>,
    #[serde(default)]
    pub restart_count: i64,
}

pub struct Records {
    conn: Mutex<Connection>,
}

impl Records {
    pub fn open(path: &Path) -> Result<Records> {
        let mut conn =
            Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let tx = conn.transaction()?;
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(step)
                .with_context(|| format!("migrating {} to version {}", path.display(), i + 1))?;
        }
        tx.pragma_update(None, "user_version", MIGRATIONS.len())?;
        tx.commit()?;
        Ok(Records {
            conn: Mutex::new(conn),
        })
    }

    /// Inserts a new record; fails if the name is taken.
    pub fn insert(&self, r: &Record) -> Result<()> {
        let conn = self.conn.lock().expect("records lock");
        conn.execute(
            "INSERT INTO containers (id, name, created, record) VALUES (?1, ?2, ?3, ?4)",
            params![r.id, r.name, r.created, serde_json::to_string(r)?],
        )?;
        Ok(())
    }

    pub fn remove(&self, id: &str) -> Result<()> {
        let conn = self.conn.lock().expect("records lock");
        conn.execute("DELETE FROM containers WHERE id = ?1", params![id])?;
        Ok(())
    }

    pub fn exists(&self, id: &str) -> Result<bool> {
        let conn = self.conn.lock().expect("records lock");
        Ok(conn
            .query_row("SELECT 1 FROM containers WHERE id = ?1", params![id], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .is_some())
    }

    pub fn name_taken(&self, name: &str) -> Result<Option<String>> {
        let conn = self.conn.lock().expect("records lock");
        Ok(conn
            .query_row(
                "SELECT id FROM containers WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn all(&self) -> Result<Vec<Record>> {
        let conn = self.conn.lock().expect("records lock");
        let mut stmt = conn.prepare("SELECT record FROM containers ORDER BY created DESC")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row?)?);
        }
        Ok(out)
    }
}
