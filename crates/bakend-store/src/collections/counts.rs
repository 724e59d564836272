//! Row counts per collection, so an unfiltered list's `totalItems` is one row read instead of
//! a walk over the whole table (SQLite keeps no row count; PostgreSQL's `count(*)` reads the
//! table too).
//!
//! The count lives in `_record_counts` and is kept by triggers on the collection's table, so
//! it stays right whatever writes the rows: the writer, functions' and jobs' `ctx.db` (on
//! SQLite its authorizer lets these triggers, and only them, touch the table), deletes of
//! every row. What bypasses triggers — a table rebuilt by a migration, a database from before
//! the counts, a restored archive of either — is recounted by [`sync`] or [`ensure`]; a
//! collection without a count row is counted the slow way ([`read`] says `None`).
//!
//! SQLite: two row triggers, `INSERT OR REPLACE` included (its implicit deletes fire the
//! delete trigger under `recursive_triggers`). PostgreSQL: three statement triggers — insert,
//! delete, truncate — calling one PL/pgSQL function that adds the size of the statement's
//! transition table (an upsert's inserted rows only), so a bulk delete is one update.
//!
//! One counter row per collection serializes the writers of that collection on PostgreSQL:
//! the row stays locked from a write's trigger until its transaction commits. That is fine
//! with one writer thread per server (a group commit takes the lock once); across servers a
//! group writing two collections would take their rows in its own order, so each group first
//! takes the servers' write lock (`db::writer::run_batch`) — without it two servers deadlock
//! (`crates/bak/tests/it/servers.rs` found it). Should a
//! cluster ever need writers of one collection to commit in parallel, the triggers would
//! insert one delta row per transaction instead, [`read`] would sum them, and a background
//! step would fold them into the base row.

use crate::error::StoreError;
use crate::sql::{Backend, Conn, OptionalExtension};

use super::schema::{self, quote};

/// The table is created by system migration step 6.
pub const TABLE: &str = "_record_counts";

/// Trigger names start with this: the functions' authorizer recognises the server's own
/// triggers by it (user code cannot create `_`-prefixed triggers).
pub const TRIGGER_PREFIX: &str = "_count_";

/// PostgreSQL: the one trigger function, versioned in its name (a changed body gets a new
/// name, so an old server's function is never replaced under it).
const PG_FUNCTION: &str = "_bakend_count_rows_v1";

/// PostgreSQL: the triggers, as `(name, when)`. Names are per table there.
const PG_TRIGGERS: [(&str, &str); 3] = [
    (
        "_count_insert",
        "AFTER INSERT ON {t} REFERENCING NEW TABLE AS changed FOR EACH STATEMENT",
    ),
    (
        "_count_delete",
        "AFTER DELETE ON {t} REFERENCING OLD TABLE AS changed FOR EACH STATEMENT",
    ),
    (
        "_count_truncate",
        "AFTER TRUNCATE ON {t} FOR EACH STATEMENT",
    ),
];

/// The function behind [`PG_TRIGGERS`]: the statement's rows are its transition table
/// `changed`; the collection is the trigger's table. It runs with its owner's rights
/// (`SECURITY DEFINER`), so a session that may write a collection but not `_record_counts`
/// (functions' `ctx.db` under a restricted role) still keeps the count — as SQLite's
/// authorizer lets these triggers, and only them, touch the table. `SET search_path FROM
/// CURRENT` pins the schema it was created in, whatever the session that fires it has set
/// (which is also what makes a definer's function safe to call).
const PG_FUNCTION_BODY: &str = r#"() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE k BIGINT;
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    UPDATE _record_counts SET n = 0 WHERE collection = TG_TABLE_NAME::text;
    RETURN NULL;
  END IF;
  SELECT count(*) INTO k FROM changed;
  IF k > 0 THEN
    UPDATE _record_counts SET n = n + CASE WHEN TG_OP = 'INSERT' THEN k ELSE -k END
      WHERE collection = TG_TABLE_NAME::text;
  END IF;
  RETURN NULL;
END
$$"#;

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

/// SQLite: the statements that create the two triggers on `table`.
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

/// SQLite: statements for a new, empty table: its triggers and a count of zero.
fn create_sql(table: &str) -> Vec<String> {
    let mut out: Vec<String> = trigger_sql(table).into();
    out.push(format!(
        "INSERT OR REPLACE INTO {TABLE}(collection, n) VALUES({}, 0)",
        literal(table)
    ));
    out
}

/// PostgreSQL: creates the trigger function unless it exists. Collection DDL takes turns
/// (`schema::lock_collections`), so two servers never both find it missing.
fn pg_function(conn: &Conn) -> Result<(), StoreError> {
    schema::lock_collections(conn)?;
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname = current_schema() AND p.proname = ?1)",
        [PG_FUNCTION],
        |r| r.get(0),
    )?;
    if !exists {
        conn.execute_batch(&format!(
            "CREATE FUNCTION {}{PG_FUNCTION_BODY}",
            quote(PG_FUNCTION)
        ))?;
    }
    Ok(())
}

/// PostgreSQL: the names of the triggers `table` has.
fn pg_triggers(conn: &Conn, table: &str) -> crate::sql::Result<Vec<String>> {
    conn.prepare(
        "SELECT g.tgname::text FROM pg_trigger g JOIN pg_class t ON t.oid = g.tgrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = current_schema() AND t.relname = ?1 AND NOT g.tgisinternal",
    )?
    .query_map([table], |r| r.get(0))?
    .collect()
}

/// PostgreSQL: creates the count triggers `table` lacks.
fn pg_create_triggers(conn: &Conn, table: &str) -> Result<(), StoreError> {
    pg_function(conn)?;
    let existing = pg_triggers(conn, table)?;
    for (name, when) in PG_TRIGGERS {
        if !existing.iter().any(|e| e == name) {
            conn.execute_batch(&format!(
                "CREATE TRIGGER {} {} EXECUTE FUNCTION {}()",
                quote(name),
                when.replace("{t}", &quote(table)),
                quote(PG_FUNCTION)
            ))?;
        }
    }
    Ok(())
}

/// For a new, empty table: its triggers and a count of zero.
pub fn create(conn: &Conn, table: &str) -> Result<(), StoreError> {
    match conn.backend() {
        Backend::Sqlite => {
            for sql in create_sql(table) {
                conn.execute(&sql, ())?;
            }
        }
        Backend::Postgres => {
            pg_create_triggers(conn, table)?;
            conn.execute(
                "INSERT INTO _record_counts(collection, n) VALUES(?1, 0) \
                 ON CONFLICT (collection) DO UPDATE SET n = 0",
                [table],
            )?;
        }
    }
    Ok(())
}

/// Makes the triggers exist and recounts the table: after anything that wrote rows without
/// them (a rebuild copies rows into a fresh table, then renames it).
pub fn sync(conn: &Conn, table: &str) -> Result<(), StoreError> {
    if conn.backend() == Backend::Postgres {
        // Other servers may write the table meanwhile: the lock waits for their open
        // transactions and holds off new writes until ours commits, so the count taken here
        // misses no row a trigger did not count. (Self-conflicting: two recounts take turns.)
        conn.execute_batch(&format!(
            "LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
            quote(table)
        ))?;
        pg_create_triggers(conn, table)?;
        conn.execute(
            &format!(
                "INSERT INTO {TABLE}(collection, n) SELECT ?1::TEXT, COUNT(*) FROM {} \
                 ON CONFLICT (collection) DO UPDATE SET n = excluded.n",
                quote(table)
            ),
            [table],
        )?;
        return Ok(());
    }
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
pub fn ensure(conn: &Conn, table: &str) -> Result<bool, StoreError> {
    let complete = match conn.backend() {
        Backend::Sqlite => {
            let names = trigger_names(table);
            let triggers: i64 = conn.query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?1 AND name IN (?2, ?3)",
                (table, &names[0], &names[1]),
                |r| r.get(0),
            )?;
            triggers == 2
        }
        Backend::Postgres => {
            let existing = pg_triggers(conn, table)?;
            PG_TRIGGERS
                .iter()
                .all(|(name, _)| existing.iter().any(|e| e == name))
        }
    };
    if complete && read(conn, table)?.is_some() {
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
    use crate::collections::testing::{each_store, in_transaction};

    /// As every caller runs it: inside a write's transaction.
    fn ensure_now(conn: &Conn) -> bool {
        in_transaction(conn, || ensure(conn, "it's")).unwrap()
    }

    /// A table named awkwardly (a quote in it), on a database with the system schema.
    fn table(conn: &Conn) {
        conn.execute_batch("CREATE TABLE \"it's\" (id TEXT PRIMARY KEY)")
            .unwrap();
    }

    fn count(conn: &Conn) -> Option<u64> {
        read(conn, "it's").unwrap()
    }

    fn rows(conn: &Conn) -> u64 {
        conn.query_row("SELECT COUNT(*) FROM \"it's\"", (), |r| r.get::<i64>(0))
            .unwrap() as u64
    }

    #[test]
    fn inserts_and_deletes_keep_the_count_whoever_writes() {
        each_store(
            "inserts_and_deletes_keep_the_count_whoever_writes",
            |conn| {
                table(conn);
                create(conn, "it's").unwrap();
                assert_eq!(count(conn), Some(0));
                conn.execute_batch(
                    "INSERT INTO \"it's\" VALUES ('a'), ('b'), ('c');
                 DELETE FROM \"it's\" WHERE id = 'b';",
                )
                .unwrap();
                assert_eq!(count(conn), Some(2));
                // Each store's way of writing a row that may exist already.
                let upsert = match conn.backend() {
                    Backend::Sqlite => "INSERT OR REPLACE INTO \"it's\" VALUES ('a')",
                    Backend::Postgres => {
                        "INSERT INTO \"it's\" VALUES ('a'), ('d') ON CONFLICT (id) DO UPDATE SET id = excluded.id"
                    }
                };
                conn.execute(upsert, ()).unwrap();
                assert_eq!(count(conn), Some(rows(conn)));
                // A statement that changes nothing changes no count.
                conn.execute("DELETE FROM \"it's\" WHERE id = 'zz'", ())
                    .unwrap();
                assert_eq!(count(conn), Some(rows(conn)));
                // Without a WHERE, SQLite would truncate in one step; the triggers prevent that.
                conn.execute("DELETE FROM \"it's\"", ()).unwrap();
                assert_eq!(count(conn), Some(0));
                if conn.backend() == Backend::Postgres {
                    conn.execute_batch("INSERT INTO \"it's\" VALUES ('x'), ('y')")
                        .unwrap();
                    assert_eq!(count(conn), Some(2));
                    conn.execute_batch("TRUNCATE \"it's\"").unwrap();
                    assert_eq!(count(conn), Some(0));
                }
            },
        );
    }

    #[test]
    fn a_statement_that_fails_leaves_the_count_as_it_was() {
        each_store(
            "a_statement_that_fails_leaves_the_count_as_it_was",
            |conn| {
                table(conn);
                create(conn, "it's").unwrap();
                conn.execute_batch("INSERT INTO \"it's\" VALUES ('a')")
                    .unwrap();
                // The second row repeats the first's key: the whole statement fails.
                let dup = conn.execute_batch("INSERT INTO \"it's\" VALUES ('b'), ('a')");
                assert!(dup.is_err());
                assert_eq!(count(conn), Some(1));
            },
        );
    }

    #[test]
    fn ensure_recounts_only_what_is_missing() {
        each_store("ensure_recounts_only_what_is_missing", |conn| {
            table(conn);
            conn.execute_batch("INSERT INTO \"it's\" VALUES ('a'), ('b');")
                .unwrap();
            assert_eq!(count(conn), None, "an older database keeps no count");
            assert!(ensure_now(conn));
            assert_eq!(count(conn), Some(2));
            assert!(!ensure_now(conn), "nothing to do the second time");
            conn.execute("INSERT INTO \"it's\" VALUES ('c')", ())
                .unwrap();
            assert_eq!(count(conn), Some(3));
            remove(conn, "it's").unwrap();
            assert_eq!(count(conn), None);
            assert!(ensure_now(conn));
            assert_eq!(count(conn), Some(3));
        });
    }

    /// PostgreSQL: a role that may write the collection but not `_record_counts` (as
    /// functions' `ctx.db` may run) still keeps the count, through the definer's function.
    #[test]
    fn a_restricted_role_keeps_the_count_on_postgres() {
        each_store("a_restricted_role_keeps_the_count_on_postgres", |conn| {
            if conn.backend() != Backend::Postgres {
                return;
            }
            table(conn);
            create(conn, "it's").unwrap();
            let schema: String = conn
                .query_row("SELECT current_schema()::text", (), |r| r.get(0))
                .unwrap();
            let role = quote(&format!("{schema}_writer"));
            conn.execute_batch(&format!(
                "CREATE ROLE {role} NOLOGIN;
                 GRANT USAGE ON SCHEMA {s} TO {role};
                 GRANT SELECT, INSERT, DELETE ON \"it's\" TO {role};",
                s = quote(&schema)
            ))
            .unwrap();
            let as_role = conn.execute_batch(&format!(
                "SET ROLE {role};
                 INSERT INTO \"it's\" VALUES ('a'), ('b');
                 DELETE FROM \"it's\" WHERE id = 'a';"
            ));
            let denied = conn.execute_batch("UPDATE _record_counts SET n = 99");
            conn.execute_batch(&format!(
                "RESET ROLE; DROP OWNED BY {role}; DROP ROLE {role};"
            ))
            .unwrap();
            as_role.unwrap();
            assert!(denied.is_err(), "the role itself may not touch the counts");
            assert_eq!(count(conn), Some(1));
        });
    }

    /// PostgreSQL: a table whose triggers went missing (restored without them) is recounted,
    /// and the triggers come back without duplicates.
    #[test]
    fn ensure_restores_missing_triggers_on_postgres() {
        each_store("ensure_restores_missing_triggers_on_postgres", |conn| {
            if conn.backend() != Backend::Postgres {
                return;
            }
            table(conn);
            create(conn, "it's").unwrap();
            conn.execute_batch("DROP TRIGGER _count_delete ON \"it's\"")
                .unwrap();
            conn.execute_batch(
                "INSERT INTO \"it's\" VALUES ('a'), ('b'); DELETE FROM \"it's\" WHERE id = 'a'",
            )
            .unwrap();
            assert_eq!(count(conn), Some(2), "the delete went uncounted");
            assert!(ensure_now(conn));
            assert_eq!(count(conn), Some(1));
            let mut names = pg_triggers(conn, "it's").unwrap();
            names.sort();
            assert_eq!(names, ["_count_delete", "_count_insert", "_count_truncate"]);
            conn.execute_batch("DELETE FROM \"it's\"").unwrap();
            assert_eq!(count(conn), Some(0));
        });
    }
}
