//! Copies a whole Bakend database from one store to another, table by table through
//! [`Conn`]: `bak backup create` on PostgreSQL (into a fresh SQLite file, the archive's format)
//! and `bak backup restore` into a PostgreSQL project (from the archive's SQLite file) — which
//! is also how a SQLite project moves to PostgreSQL.
//!
//! What is copied: the system tables (settings, collection definitions, accounts, sessions,
//! file metadata, job history), every collection's rows, and the event journal's segments with
//! their seqs. Collection tables, their indexes and their count triggers are made on the
//! target from the definitions, exactly as creating the collection makes them, and counts are
//! taken afresh; values keep their storage classes, which both stores share.
//!
//! The caller holds a transaction on the target (so a failed copy leaves it as it was) and, on
//! a live source, a consistent snapshot (PostgreSQL `REPEATABLE READ`). Rows are read in pages
//! by primary key (the PostgreSQL client buffers a whole result) and written in multi-row
//! inserts.

use crate::collections::{counts, schema, sync::load_all};
use crate::error::StoreError;
use crate::sql::{Backend, Conn, Value, params_from_iter};

use super::{journal, migrations};

/// The system tables, parents before children (`_sessions` refers to `_users`). Row counts
/// are not copied: the target counts its own tables.
const SYSTEM_TABLES: &[&str] = &[
    "_bakend_meta",
    "_collections",
    "_users",
    "_sessions",
    "_files",
    "_job_runs",
];

/// Rows read per page.
const PAGE: i64 = 1000;
/// Values per insert statement (below SQLite's and PostgreSQL's parameter limits).
const MAX_VALUES: usize = 30_000;
/// Rows per insert statement.
const MAX_ROWS: usize = 500;

/// What a copy wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Copied {
    pub collections: usize,
    pub records: u64,
    pub events: u64,
    /// Rows of every table, system tables included.
    pub rows: u64,
}

/// Whether the database holds anything a restore would replace: collections, accounts, files,
/// job history or journaled events.
pub fn holds_data(conn: &Conn) -> Result<bool, StoreError> {
    if migrations::current_version(conn)? == 0 {
        return Ok(false);
    }
    for table in ["_collections", "_users", "_files", "_job_runs"] {
        let sql = format!("SELECT COUNT(*) FROM {}", schema::quote(table));
        if conn.query_row(&sql, (), |r| r.get::<i64>(0))? > 0 {
            return Ok(true);
        }
    }
    Ok(journal::last_seq(conn)? > 0)
}

/// Replaces everything Bakend keeps in `to` with what `from` holds. Both must be at this
/// build's schema version (migrate the source first); `to` inside the caller's transaction.
pub fn copy_database(from: &Conn, to: &Conn) -> Result<Copied, StoreError> {
    for (conn, which) in [(from, "source"), (to, "target")] {
        let version = migrations::current_version(conn)?;
        if version != migrations::SCHEMA_VERSION {
            return Err(StoreError::Internal(format!(
                "the {which} database is at schema version {version}, this bak copies version {}",
                migrations::SCHEMA_VERSION
            )));
        }
    }
    clear(to)?;
    let mut copied = Copied::default();
    for table in SYSTEM_TABLES {
        copied.rows += copy_table(from, to, table)?;
    }
    if to.backend() == Backend::Postgres {
        // `rowid` is a serial column there: new runs number on from the copied ones.
        to.query_row(
            "SELECT setval(pg_get_serial_sequence('_job_runs', 'rowid'), \
             COALESCE((SELECT max(rowid) FROM _job_runs), 0) + 1, false)",
            (),
            |_| Ok(()),
        )?;
    }
    for c in load_all(from)? {
        schema::create(to, &c.def)?;
        let n = copy_table(from, to, &c.def.name)?;
        counts::sync(to, &c.def.name)?;
        copied.collections += 1;
        copied.records += n;
        copied.rows += n;
    }
    for segment in journal::segments(from)? {
        schema::run(to, &journal::create_segment_sql(segment, to.backend()))?;
        let n = copy_table(from, to, &journal::table(segment))?;
        copied.events += n;
        copied.rows += n;
    }
    Ok(copied)
}

/// Drops the collections' tables and the journal's segments and empties the system tables.
fn clear(to: &Conn) -> Result<(), StoreError> {
    for c in load_all(to)? {
        schema::run(
            to,
            &format!("DROP TABLE IF EXISTS {}", schema::quote(&c.def.name)),
        )?;
    }
    for segment in journal::segments(to)? {
        schema::run(to, &format!("DROP TABLE {}", journal::table(segment)))?;
    }
    for table in SYSTEM_TABLES.iter().rev().chain(&["_record_counts"]) {
        to.execute(&format!("DELETE FROM {}", schema::quote(table)), ())?;
    }
    Ok(())
}

/// Copies every row of `table` (the columns both sides have) and returns how many.
fn copy_table(from: &Conn, to: &Conn, table: &str) -> Result<u64, StoreError> {
    let source = schema::column_names(from, table)?;
    let target = schema::column_names(to, table)?;
    let mut columns: Vec<String> = source
        .iter()
        .filter(|c| target.contains(c))
        .cloned()
        .collect();
    // PostgreSQL's `_job_runs.rowid` stands for SQLite's implicit rowid (the history's order).
    let sqlite_side = from.backend() == Backend::Sqlite || to.backend() == Backend::Sqlite;
    if sqlite_side
        && !columns.iter().any(|c| c == "rowid")
        && (source.iter().chain(&target)).any(|c| c == "rowid")
    {
        columns.insert(0, "rowid".into());
    }
    if columns.is_empty() {
        return Ok(0);
    }
    let key = schema::primary_key(from, table)?;
    let list = columns
        .iter()
        .map(|c| schema::quote(c))
        .collect::<Vec<_>>()
        .join(", ");
    let t = schema::quote(table);
    let mut writer = Inserter::new(to, table, &list, columns.len());
    let Some(key) = key else {
        // No single-column key to page by: one read (only tables Bakend made without one).
        let mut stmt = from.prepare(&format!("SELECT {list} FROM {t}"))?;
        let mut rows = stmt.query(())?;
        while let Some(row) = rows.next()? {
            writer.push(row)?;
        }
        return writer.finish();
    };
    let key_index = columns.iter().position(|c| *c == key);
    let (select, key_at) = match key_index {
        Some(i) => (list.clone(), i),
        None => (format!("{list}, {}", schema::quote(&key)), columns.len()),
    };
    let k = schema::quote(&key);
    let first = format!("SELECT {select} FROM {t} ORDER BY {k} LIMIT {PAGE}");
    let next = format!("SELECT {select} FROM {t} WHERE {k} > ?1 ORDER BY {k} LIMIT {PAGE}");
    let mut after: Option<Value> = None;
    loop {
        let mut stmt = from.prepare(if after.is_some() { &next } else { &first })?;
        let mut rows = match &after {
            Some(v) => stmt.query([v])?,
            None => stmt.query(())?,
        };
        let mut n = 0;
        while let Some(row) = rows.next()? {
            n += 1;
            after = Some(row.get::<Value>(key_at)?);
            writer.push(row)?;
        }
        if n < PAGE {
            break;
        }
    }
    writer.finish()
}

/// Buffers rows and writes them as multi-row `INSERT`s.
struct Inserter<'c> {
    conn: &'c Conn,
    table: &'c str,
    /// `INSERT INTO "table" ("a", "b") VALUES `
    head: String,
    width: usize,
    per_statement: usize,
    values: Vec<Value>,
    written: u64,
}

impl<'c> Inserter<'c> {
    fn new(conn: &'c Conn, table: &'c str, list: &str, width: usize) -> Inserter<'c> {
        Inserter {
            conn,
            table,
            head: format!("INSERT INTO {} ({list}) VALUES ", schema::quote(table)),
            width,
            per_statement: (MAX_VALUES / width).clamp(1, MAX_ROWS),
            values: Vec::new(),
            written: 0,
        }
    }

    fn push(&mut self, row: crate::sql::Row<'_>) -> Result<(), StoreError> {
        for i in 0..self.width {
            self.values.push(row.get::<Value>(i)?);
        }
        if self.values.len() >= self.per_statement * self.width {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        let rows = self.values.len() / self.width;
        if rows == 0 {
            return Ok(());
        }
        let mut sql = self.head.clone();
        for r in 0..rows {
            sql.push_str(if r == 0 { "(" } else { ", (" });
            for c in 0..self.width {
                if c > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("?{}", r * self.width + c + 1));
            }
            sql.push(')');
        }
        self.conn
            .prepare_cached(&sql)?
            .execute(params_from_iter(self.values.iter()))
            .map_err(|e| {
                StoreError::Internal(format!(
                    "copying the rows of \"{}\" failed: {e}",
                    self.table
                ))
            })?;
        self.written += rows as u64;
        self.values.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<u64, StoreError> {
        self.flush()?;
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collections::definition::parse;
    use crate::collections::sync::create_in;
    use crate::collections::testing::conns;
    use crate::sql::params;

    /// Every row of every table Bakend keeps, in key order, as printable values (the
    /// `_job_runs` order column included).
    fn dump(conn: &Conn) -> Vec<(String, Vec<String>)> {
        let mut tables: Vec<String> = SYSTEM_TABLES.iter().map(|t| t.to_string()).collect();
        tables.extend(load_all(conn).unwrap().into_iter().map(|c| c.def.name));
        tables.extend(
            journal::segments(conn)
                .unwrap()
                .into_iter()
                .map(journal::table),
        );
        tables.push("_record_counts".into());
        let mut out = Vec::new();
        for t in tables {
            let mut cols = schema::column_names(conn, &t).unwrap();
            if t == "_job_runs" && !cols.iter().any(|c| c == "rowid") {
                cols.insert(0, "rowid".into());
            }
            let key = schema::primary_key(conn, &t).unwrap().unwrap();
            let list: Vec<String> = cols.iter().map(|c| schema::quote(c)).collect();
            let sql = format!(
                "SELECT {} FROM {} ORDER BY {}",
                list.join(", "),
                schema::quote(&t),
                schema::quote(&key)
            );
            let mut stmt = conn.prepare(&sql).unwrap();
            let mut rows = stmt.query(()).unwrap();
            while let Some(r) = rows.next().unwrap() {
                let values = (0..cols.len())
                    .map(|i| format!("{}={:?}", cols[i], r.get::<Value>(i).unwrap()))
                    .collect();
                out.push((t.clone(), values));
            }
        }
        out
    }

    /// Fills a fresh database: a collection with values at the edges of each type (more rows
    /// than one page), an account with a session, a file, job runs, journal segments.
    fn fill(conn: &Conn) {
        let parsed = parse(&serde_json::json!({"name": "things", "fields": [
            {"name": "s", "type": "string", "unique": true},
            {"name": "i", "type": "integer"},
            {"name": "f", "type": "float"},
            {"name": "b", "type": "boolean"},
            {"name": "j", "type": "json"}
        ], "indexes": [{"fields": ["i", "-f"]}]}))
        .unwrap();
        create_in(conn, &parsed).unwrap();
        let texts = ["", "ünïcødé 😀", "it's \"quoted\"", "line\nbreak", "Σσς"];
        for n in 0..2_345i64 {
            let i = match n {
                0 => Some(i64::MAX),
                1 => Some(i64::MIN),
                2 => None,
                _ => Some(n),
            };
            let f = match n {
                0 => Some(f64::MAX),
                1 => Some(-0.1 + 0.2),
                2 => None,
                _ => Some(n as f64 / 7.0),
            };
            conn.execute(
                "INSERT INTO things (id, created_at, updated_at, s, i, f, b, j) VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    format!("rec_{n:05}"),
                    format!("2026-12-0{}T00:00:00.{:03}Z", 1 + n % 3, n % 1000),
                    format!("{}#{n}", texts[n as usize % texts.len()]),
                    i,
                    f,
                    n % 2,
                    format!("{{\"n\": {n}}}"),
                ],
            )
            .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO _users (id, email, password_hash, role, created_at, token_gen) VALUES ('usr_1', 'a@example.com', '$argon2id$x', 'admin', 't', 3);
             INSERT INTO _sessions (id, user_id, refresh_token_hash, expires_at, created_at, family_id, rotated_at) VALUES ('ses_1', 'usr_1', 'h', 'e', 'c', 'ses_1', NULL);
             INSERT INTO _files (id, filename, mime_type, size, visibility, user_id, created_at) VALUES ('fil_1', 'a.png', 'image/png', 12, 'public', 'usr_1', 't');
             INSERT INTO _job_runs (run_id, job, status, attempt, trigger, started_at, ended_at, duration_ms, error) VALUES ('run_2', 'tidy', 'completed', 1, 'manual', 't1', 't2', 5, NULL);
             INSERT INTO _job_runs (run_id, job, status, attempt, trigger, started_at, ended_at, duration_ms, error) VALUES ('run_1', 'tidy', 'failed', 2, 'schedule', 't1', 't3', 7, 'boom');",
        )
        .unwrap();
        migrations::meta_set(conn, journal::SEGMENT_KEY, "16").unwrap();
        migrations::meta_set(conn, journal::LAST_KEY, "40").unwrap();
        for segment in 1..=2u64 {
            schema::run(conn, &journal::create_segment_sql(segment, conn.backend())).unwrap();
            for seq in segment * 16..segment * 16 + 16 {
                conn.execute(
                    &format!(
                        "INSERT INTO {} (seq, type, subject, record, envelope, created_ms, previous) VALUES (?1, 'things.created', 'x', '{{}}', '{{\"seq\": 1}}', ?2, NULL)",
                        journal::table(segment)
                    ),
                    (seq as i64, 1_700_000_000_000i64 + seq as i64),
                )
                .unwrap();
            }
        }
    }

    /// SQLite → PostgreSQL → SQLite: every table arrives the same, counts recounted, and new
    /// job runs number on from the copied ones.
    #[test]
    fn a_database_copies_to_the_other_store_and_back_unchanged() {
        let stores = conns("copy round trip");
        let [sqlite, pg] = &stores[..] else {
            return; // no PostgreSQL reachable (a line said so)
        };
        let (source, pg) = (&sqlite.conn, &pg.conn);
        fill(source);
        let original = dump(source);
        assert!(original.len() > 2_345 + 6 + 32, "{}", original.len());

        pg.execute_batch("BEGIN").unwrap();
        let copied = copy_database(source, pg).unwrap();
        pg.execute_batch("COMMIT").unwrap();
        assert_eq!(
            copied,
            Copied {
                collections: 1,
                records: 2_345,
                events: 32,
                rows: copied.rows
            }
        );
        assert_eq!(dump(pg), original);
        assert_eq!(counts::read(pg, "things").unwrap(), Some(2_345));
        assert!(holds_data(pg).unwrap());

        let back = &conns("copy round trip, back")[0].conn;
        assert!(!holds_data(back).unwrap());
        back.execute_batch("BEGIN").unwrap();
        copy_database(pg, back).unwrap();
        back.execute_batch("COMMIT").unwrap();
        assert_eq!(dump(back), original);

        // PostgreSQL's serial order column continues after the copied rows.
        pg.execute(
            "INSERT INTO _job_runs (run_id, job, status, attempt, trigger, started_at) VALUES ('run_3', 'tidy', 'running', 1, 'manual', 't4')",
            (),
        )
        .unwrap();
        let rowid: i64 = pg
            .query_row(
                "SELECT rowid FROM _job_runs WHERE run_id = 'run_3'",
                (),
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rowid, 3);
    }

    /// A value the target cannot hold stops the copy with the table's name; the caller's
    /// transaction then rolls back and the target is as it was.
    #[test]
    fn a_failed_copy_names_the_table_and_changes_nothing() {
        let stores = conns("failed copy");
        let [sqlite, pg] = &stores[..] else {
            return;
        };
        let (source, pg) = (&sqlite.conn, &pg.conn);
        fill(source);
        let before = dump(pg);
        // SQLite keeps a text in an integer column; PostgreSQL's BIGINT cannot.
        source
            .execute(
                "UPDATE things SET i = 'not a number' WHERE id = 'rec_01000'",
                (),
            )
            .unwrap();
        pg.execute_batch("BEGIN").unwrap();
        let err = copy_database(source, pg).unwrap_err().to_string();
        pg.execute_batch("ROLLBACK").unwrap();
        assert!(
            err.contains("copying the rows of \"things\" failed"),
            "{err}"
        );
        assert_eq!(dump(pg), before);
        assert!(!holds_data(pg).unwrap());
    }
}
