//! Consistent copies of a live database, for `bak backup`.
//!
//! `VACUUM INTO` reads the whole database inside one read transaction, so the copy is exactly
//! the database as of one commit — including what is still only in the WAL, which a plain file
//! copy misses — and a running server's writer is never blocked (WAL readers do not block the
//! writer). The copy is a fresh, compact, self-contained file with no `-wal` of its own.
//! On PostgreSQL the backup is the same kind of file, written table by table from one
//! snapshot ([`snapshot_postgres`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::migrations;
use crate::collections::sync::load_all;
use crate::error::StoreError;
use crate::sql::Conn;

/// What a database holds, for a backup's manifest.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub schema_version: usize,
    pub collections: usize,
    /// Records per collection.
    pub records: BTreeMap<String, u64>,
    pub users: u64,
    pub files: u64,
    /// Ids of the stored files (`_files`), whose blobs a backup must hold.
    pub file_ids: Vec<String>,
}

fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(30))?;
    Ok(conn)
}

/// Writes a consistent copy of the database at `source` to `dest` (which must not exist).
pub fn snapshot(source: &Path, dest: &Path) -> Result<(), StoreError> {
    // Read-write open: a read-only connection cannot recover a WAL left by a crashed server.
    let conn = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(30))?;
    let dest = dest
        .to_str()
        .ok_or_else(|| StoreError::Internal("backup path is not valid UTF-8".into()))?;
    conn.execute("VACUUM INTO ?1", [dest])?;
    Ok(())
}

/// Writes the PostgreSQL store as of one moment into a new SQLite file at `dest` (which must
/// not exist): one `REPEATABLE READ` transaction reads every table, so the copy is consistent
/// while servers keep writing, and the file is what a SQLite backup holds.
pub fn snapshot_postgres(
    settings: &bakend_core::config::PostgresSettings,
    dest: &Path,
) -> Result<super::copy::Copied, StoreError> {
    // Read only: a backup needs no more than SELECT on the schema.
    let from = Conn::from(crate::sql::PgConn::connect(settings)?);
    let to = Conn::from(Connection::open(dest)?);
    migrations::migrate(&to)?;
    from.execute_batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
    to.execute_batch("BEGIN")?;
    let copied = super::copy::copy_database(&from, &to)?;
    to.execute_batch("COMMIT")?;
    from.execute_batch("COMMIT")?;
    to.close()?;
    Ok(copied)
}

fn count(conn: &Conn, table: &str) -> Result<u64, StoreError> {
    let sql = format!(
        "SELECT COUNT(*) FROM {}",
        crate::collections::schema::quote(table)
    );
    Ok(conn.query_row(&sql, (), |r| r.get::<i64>(0))? as u64)
}

/// Counts what the database at `path` holds (read-only).
pub fn counts(path: &Path) -> Result<Counts, StoreError> {
    let conn = Conn::from(open_read_only(path)?);
    let mut out = Counts {
        schema_version: migrations::current_version(&conn)?,
        ..Counts::default()
    };
    if out.schema_version == 0 {
        return Ok(out);
    }
    for c in load_all(&conn)? {
        out.records
            .insert(c.def.name.clone(), count(&conn, &c.def.name)?);
    }
    out.collections = out.records.len();
    out.users = count(&conn, "_users")?;
    out.files = count(&conn, "_files")?;
    out.file_ids = conn
        .prepare("SELECT id FROM _files ORDER BY id")?
        .query_map((), |r| r.get(0))?
        .collect::<crate::sql::Result<_>>()?;
    Ok(out)
}

/// `PRAGMA integrity_check` on the database at `path`: `Ok(())` or the problems it reports.
pub fn integrity_check(path: &Path) -> Result<(), StoreError> {
    let conn = open_read_only(path)?;
    let lines: Vec<String> = conn
        .prepare("PRAGMA integrity_check")?
        .query_map((), |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if lines == ["ok"] {
        Ok(())
    } else {
        Err(StoreError::Internal(format!(
            "integrity check failed: {}",
            lines.join("; ")
        )))
    }
}

/// Folds the WAL of the database at `path` into the main file and empties it, so the database
/// file alone is complete (before it is replaced or its `-wal` removed).
pub fn checkpoint(path: &Path) -> Result<(), StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", (), |_| Ok(()))?;
    conn.close().map_err(|(_, e)| StoreError::from(e))?;
    Ok(())
}
