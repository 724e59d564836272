//! Opening SQLite connections with the pragmas every Bakend connection needs.

use std::path::Path;
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

/// A read connection: like [`open`], and refusing writes (`query_only`).
pub fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = open(path)?;
    conn.pragma_update(None, "query_only", "ON")?;
    Ok(conn)
}
