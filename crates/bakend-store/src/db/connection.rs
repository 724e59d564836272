//! Opening SQLite connections with the pragmas every Bakend connection needs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// WAL lets readers run beside the writer; `synchronous=FULL` fsyncs the WAL on every commit,
/// which is what makes an acknowledged write durable. Group commit keeps that affordable.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Row counts are kept by triggers (`collections::counts`): with this, the rows an
    // `INSERT OR REPLACE` deletes fire their delete triggers too, so the counts stay exact.
    conn.pragma_update(None, "recursive_triggers", "ON")?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

/// The r2d2 manager for read connections (the ready-made pool crates do not resolve next to
/// rusqlite 0.43).
pub struct ReadManager {
    pub path: PathBuf,
}

impl r2d2::ManageConnection for ReadManager {
    type Connection = Connection;
    type Error = rusqlite::Error;

    fn connect(&self) -> Result<Connection, rusqlite::Error> {
        let conn = open(&self.path)?;
        conn.pragma_update(None, "query_only", "ON")?;
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut Connection) -> Result<(), rusqlite::Error> {
        conn.execute_batch("")
    }

    fn has_broken(&self, _conn: &mut Connection) -> bool {
        false
    }
}
