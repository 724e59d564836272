//! Row counts per collection, so an unfiltered list's `totalItems` is one row read instead of
//! a walk over the whole table (SQLite keeps no row count).
//!
//! The count lives in `_record_counts` and is kept by two triggers on the collection's table,
//! so it stays right whatever writes the rows: the writer, functions' and jobs' `ctx.db` (its
//! authorizer lets these triggers, and only them, touch the table), deletes of every row.
//! What bypasses triggers — a table rebuilt by a migration, a database from before the
//! counts, a restored archive of either — is recounted by [`sync`] or [`ensure`]; a
//! collection without a count row is counted the slow way ([`read`] says `None`).
//!
//! On PostgreSQL one counter row would serialize every writer of a collection; the plan there
//! is one delta row per writer transaction, summed and folded in by a background task.

use crate::sql::{Conn, OptionalExtension};

use super::schema::quote;

/// The table is created by system migration step 6.
pub const TABLE: &str = "_record_counts";

/// Trigger names start with this: the functions' authorizer recognises the server's own
/// triggers by it (user code cannot create `_`-prefixed triggers).
pub const TRIGGER_PREFIX: &str = "_count_";

fn trigger_names(table: &str) -> [String; 2] {
    [
        format!("{TRIGGER_PREFIX}{table}_insert"),
        format!("{TRIGGER_PREFIX}{table}_delete"),
    ]
}

/// A string literal for `s` (trigger bodies cannot take parameters).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The statements that create the two triggers on `table`.
fn trigger_sql(table: &str) -> [String; 2] {
    let [ins, del] = trigger_names(table);
    let (t, key) = (quote(table), literal(table));
    [
        format!(
            "CREATE TRIGGER IF NOT EXISTS {} AFTER INSERT ON {t} BEGIN \
             UPDATE {TABLE} SET n = n + 1 WHERE collection = {key}; END",
            quote(&ins)
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS {} AFTER DELETE ON {t} BEGIN \
             UPDATE {TABLE} SET n = n - 1 WHERE collection = {key}; END",
            quote(&del)
        ),
    ]
}

/// Statements for a new, empty table: its triggers and a count of zero.
pub fn create_sql(table: &str) -> Vec<String> {
    let mut out: Vec<String> = trigger_sql(table).into();
    out.push(format!(
        "INSERT OR REPLACE INTO {TABLE}(collection, n) VALUES({}, 0)",
        literal(table)
    ));
    out
}

/// Makes the triggers exist and recounts the table: after anything that wrote rows without
/// them (a rebuild copies rows into a fresh table, then renames it).
pub fn sync(conn: &Conn, table: &str) -> crate::sql::Result<()> {
    for sql in trigger_sql(table) {
        conn.execute(&sql, ())?;
    }
    conn.execute(
        &format!(
            "INSERT OR REPLACE INTO {TABLE}(collection, n) SELECT ?1, COUNT(*) FROM {}",
            quote(table)
        ),
        [table],
    )?;
    Ok(())
}

/// At start-up: recounts only a table whose triggers or count row are missing (a database
/// from an older `bak`, or restored from one), so a normal start reads no table.
pub fn ensure(conn: &Conn, table: &str) -> crate::sql::Result<bool> {
    let names = trigger_names(table);
    let triggers: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?1 AND name IN (?2, ?3)",
        (table, &names[0], &names[1]),
        |r| r.get(0),
    )?;
    if triggers == 2 && read(conn, table)?.is_some() {
        return Ok(false);
    }
    sync(conn, table)?;
    Ok(true)
}

/// Forgets a dropped collection's count.
pub fn remove(conn: &Conn, table: &str) -> crate::sql::Result<()> {
    conn.execute(
        &format!("DELETE FROM {TABLE} WHERE collection = ?1"),
        [table],
    )?;
    Ok(())
}

/// The table's row count, if it is kept.
pub fn read(conn: &Conn, table: &str) -> crate::sql::Result<Option<u64>> {
    conn.prepare_cached(&format!("SELECT n FROM {TABLE} WHERE collection = ?1"))?
        .query_row([table], |r| r.get::<i64>(0))
        .optional()
        .map(|n| n.map(|n| n.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Conn {
        let conn = Conn::open_in_memory().unwrap();
        // As every server connection has it (db::connection::open).
        conn.execute_batch("PRAGMA recursive_triggers = ON")
            .unwrap();
        conn.execute_batch(
            "CREATE TABLE _record_counts (collection TEXT PRIMARY KEY NOT NULL, n INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE \"it's\" (id TEXT PRIMARY KEY);",
        )
        .unwrap();
        conn
    }

    fn count(conn: &Conn) -> Option<u64> {
        read(conn, "it's").unwrap()
    }

    #[test]
    fn inserts_and_deletes_keep_the_count_whoever_writes() {
        let conn = db();
        for s in create_sql("it's") {
            conn.execute(&s, ()).unwrap();
        }
        assert_eq!(count(&conn), Some(0));
        conn.execute_batch(
            "INSERT INTO \"it's\" VALUES ('a'), ('b'), ('c');
             DELETE FROM \"it's\" WHERE id = 'b';
             INSERT OR REPLACE INTO \"it's\" VALUES ('a');",
        )
        .unwrap();
        assert_eq!(count(&conn), Some(2));
        // Without a WHERE, SQLite would truncate in one step; the triggers prevent that.
        conn.execute("DELETE FROM \"it's\"", ()).unwrap();
        assert_eq!(count(&conn), Some(0));
    }

    #[test]
    fn ensure_recounts_only_what_is_missing() {
        let conn = db();
        conn.execute_batch("INSERT INTO \"it's\" VALUES ('a'), ('b');")
            .unwrap();
        assert_eq!(count(&conn), None, "an older database keeps no count");
        assert!(ensure(&conn, "it's").unwrap());
        assert_eq!(count(&conn), Some(2));
        assert!(
            !ensure(&conn, "it's").unwrap(),
            "nothing to do the second time"
        );
        conn.execute("INSERT INTO \"it's\" VALUES ('c')", ())
            .unwrap();
        assert_eq!(count(&conn), Some(3));
        remove(&conn, "it's").unwrap();
        assert_eq!(count(&conn), None);
        assert!(ensure(&conn, "it's").unwrap());
        assert_eq!(count(&conn), Some(3));
    }
}
