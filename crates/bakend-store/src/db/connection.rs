//! Opening SQLite connections with the pragmas every Bakend connection needs.

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
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
    // The query planner stability guarantee: a plan never depends on a bound value. Without
    // it, SQLite marks a statement whose `LIMIT ?` it read while planning as expired on every
    // bind, and each list re-parsed and re-planned its cached statement (~9 % of a list-100).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.set_prepared_statement_cache_capacity(256);
    // `~` in filters lowercases with the same function as the in-memory evaluator.
    bakend_filter::register_sqlite_functions(&conn)?;
    Ok(conn)
}

/// A read connection: like [`open`], and refusing writes (`query_only`).
pub fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = open(path)?;
    conn.pragma_update(None, "query_only", "ON")?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::StatementStatus;

    /// A cached list statement is planned once: binding its `LIMIT` again must not expire it
    /// (SQLite re-parses such a statement on every bind unless QPSG is on).
    #[test]
    fn binding_a_limit_does_not_re_prepare_a_cached_statement() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("t.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (a TEXT); INSERT INTO t VALUES ('x'), ('y');")
            .unwrap();
        let sql = "SELECT a FROM t ORDER BY a LIMIT ?1 OFFSET ?2";
        for (limit, offset) in [(1, 0), (2, 0), (1, 1), (1, 1)] {
            let mut stmt = conn.prepare_cached(sql).unwrap();
            let n = stmt.query_map([limit, offset], |_| Ok(())).unwrap().count();
            assert_eq!(n as i64, limit.min(2 - offset));
            assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0);
        }
    }
}
