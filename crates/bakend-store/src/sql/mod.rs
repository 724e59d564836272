//! One SQL interface over both stores: SQLite (the embedded default) and PostgreSQL.
//!
//! Everything that talks to the database — records, accounts, files, jobs, the journal —
//! receives a [`Conn`] and writes its SQL once, with `?`/`?N` placeholders. On SQLite the calls
//! go straight to rusqlite; on PostgreSQL the placeholders become `$N`, statements are cached
//! per connection, and values cross in SQLite's storage classes (integer, real, text, blob,
//! null): the PostgreSQL schema uses `BIGINT`, `DOUBLE PRECISION`, `TEXT` and `BYTEA` so that a
//! value reads back the same from either store and every `FromSql` the code already uses works
//! on both. Where the SQL itself must differ (DDL, upserts, locking), the caller asks
//! [`Conn::backend`].
//!
//! The per-row and per-column functions (`Rows::next`, `Row::get_ref`, binding) are
//! `#[inline]`: they are not generic, so without it release builds cannot inline them into the
//! record JSON loop in another codegen unit — measured, a list of 100 cost 4 % more.

mod error;
mod pg;
mod placeholders;

use std::fmt;

pub use error::{Constraint, Error, OptionalExtension, Result};
pub use pg::{PgConn, quote_ident};
pub use rusqlite::types::{FromSql, FromSqlError, Type, Value, ValueRef};
pub use rusqlite::{ToSql, params};

/// Which database a connection talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection to either store. Like rusqlite's, its methods take `&self`; a connection is
/// used by one thread at a time (it is `Send`, not `Sync`).
pub struct Conn {
    inner: Inner,
}

enum Inner {
    Sqlite(rusqlite::Connection),
    Postgres(Box<PgConn>),
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Conn({:?})", self.backend())
    }
}

impl From<rusqlite::Connection> for Conn {
    fn from(c: rusqlite::Connection) -> Conn {
        Conn {
            inner: Inner::Sqlite(c),
        }
    }
}

impl From<PgConn> for Conn {
    fn from(c: PgConn) -> Conn {
        Conn {
            inner: Inner::Postgres(Box::new(c)),
        }
    }
}

impl Conn {
    /// A private in-memory SQLite database (tests and scratch work).
    pub fn open_in_memory() -> Result<Conn> {
        Ok(rusqlite::Connection::open_in_memory()?.into())
    }

    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Sqlite(_) => Backend::Sqlite,
            Inner::Postgres(_) => Backend::Postgres,
        }
    }

    /// The SQLite connection, for what only SQLite has (pragmas, the online backup, the
    /// authorizer); `None` on PostgreSQL.
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.inner {
            Inner::Sqlite(c) => Some(c),
            Inner::Postgres(_) => None,
        }
    }

    /// The PostgreSQL connection; `None` on SQLite.
    pub fn postgres(&self) -> Option<&PgConn> {
        match &self.inner {
            Inner::Sqlite(_) => None,
            Inner::Postgres(c) => Some(c),
        }
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, params: impl Params) -> Result<usize> {
        self.prepare(sql)?.execute(params)
    }

    /// Runs several `;`-separated statements without parameters.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Inner::Postgres(c) => c.batch_execute(sql),
        }
    }

    /// The first row of a query through `f`; [`Error::no_rows`] when there is none.
    pub fn query_row<T, F>(&self, sql: &str, params: impl Params, f: F) -> Result<T>
    where
        F: FnOnce(Row<'_>) -> Result<T>,
    {
        self.prepare(sql)?.query_row(params, f)
    }

    /// A statement for this call only (SQLite) — on PostgreSQL every statement is cached, as
    /// preparing one costs a round trip.
    pub fn prepare(&self, sql: &str) -> Result<Stmt<'_>> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(Stmt::Sqlite(c.prepare(sql)?)),
            Inner::Postgres(c) => Ok(Stmt::Postgres(c.prepare(sql)?)),
        }
    }

    /// A statement from the connection's cache (prepared on first use).
    #[inline]
    pub fn prepare_cached(&self, sql: &str) -> Result<Stmt<'_>> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(Stmt::SqliteCached(c.prepare_cached(sql)?)),
            Inner::Postgres(c) => Ok(Stmt::Postgres(c.prepare(sql)?)),
        }
    }

    /// Begins a read transaction: the statements until the guard is dropped see one snapshot
    /// of the database (PostgreSQL: `REPEATABLE READ READ ONLY`).
    pub fn read_snapshot(&self) -> Result<ReadSnapshot<'_>> {
        match &self.inner {
            // Cached statements: `execute_batch` would parse `BEGIN` and `COMMIT` anew every
            // time, on the hot path of every list.
            Inner::Sqlite(c) => {
                c.prepare_cached("BEGIN")?.execute([])?;
            }
            Inner::Postgres(c) => {
                c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
            }
        }
        Ok(ReadSnapshot(self))
    }

    /// Whether the connection can still be used (a PostgreSQL connection whose server went
    /// away cannot; the caller opens a new one).
    pub fn is_usable(&self) -> bool {
        match &self.inner {
            Inner::Sqlite(_) => true,
            Inner::Postgres(c) => !c.is_closed(),
        }
    }

    /// Closes the connection, reporting what closing found (SQLite checkpoints the WAL).
    pub fn close(self) -> Result<()> {
        match self.inner {
            Inner::Sqlite(c) => c.close().map_err(|(_, e)| e.into()),
            Inner::Postgres(_) => Ok(()),
        }
    }
}

/// An open read transaction ([`Conn::read_snapshot`]); ends when dropped. A read-only
/// transaction has nothing to undo: ending it either way is the same.
pub struct ReadSnapshot<'c>(&'c Conn);

impl Drop for ReadSnapshot<'_> {
    fn drop(&mut self) {
        let end = |sql: &str| -> Result<()> {
            match &self.0.inner {
                Inner::Sqlite(c) => {
                    c.prepare_cached(sql)?.execute([])?;
                    Ok(())
                }
                Inner::Postgres(c) => c.batch_execute(sql),
            }
        };
        // A connection left inside a transaction would hold its snapshot (and, on SQLite, WAL
        // checkpoints) forever.
        if let Err(e) = end("COMMIT").or_else(|_| end("ROLLBACK")) {
            tracing::error!("Ending a read transaction failed: {e}");
        }
    }
}

/// The parameters of a statement, in order: `params![a, b]`, `[a, b]`, `&values[..]`,
/// [`params_from_iter`], or `()` for none.
pub trait Params {
    fn each(&self, f: &mut dyn FnMut(&dyn ToSql));
}

impl Params for () {
    fn each(&self, _: &mut dyn FnMut(&dyn ToSql)) {}
}

impl<T: ToSql> Params for &[T] {
    fn each(&self, f: &mut dyn FnMut(&dyn ToSql)) {
        self.iter().for_each(|p| f(p));
    }
}

impl<T: ToSql, const N: usize> Params for [T; N] {
    fn each(&self, f: &mut dyn FnMut(&dyn ToSql)) {
        self.iter().for_each(|p| f(p));
    }
}

impl<T: ToSql, const N: usize> Params for &[T; N] {
    fn each(&self, f: &mut dyn FnMut(&dyn ToSql)) {
        self.iter().for_each(|p| f(p));
    }
}

macro_rules! tuple_params {
    ($($name:ident $i:tt),+) => {
        impl<$($name: ToSql),+> Params for ($($name,)+) {
            fn each(&self, f: &mut dyn FnMut(&dyn ToSql)) {
                $(f(&self.$i);)+
            }
        }
    };
}
tuple_params!(A 0);
tuple_params!(A 0, B 1);
tuple_params!(A 0, B 1, C 2);
tuple_params!(A 0, B 1, C 2, D 3);
tuple_params!(A 0, B 1, C 2, D 3, E 4);
tuple_params!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_params!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_params!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

/// Parameters from an iterator that can be walked more than once (`values.iter()`).
pub struct FromIter<I>(I);

pub fn params_from_iter<I>(iter: I) -> FromIter<I>
where
    I: IntoIterator + Clone,
    I::Item: ToSql,
{
    FromIter(iter)
}

impl<I> Params for FromIter<I>
where
    I: IntoIterator + Clone,
    I::Item: ToSql,
{
    fn each(&self, f: &mut dyn FnMut(&dyn ToSql)) {
        self.0.clone().into_iter().for_each(|p| f(&p));
    }
}

/// A prepared statement.
pub enum Stmt<'c> {
    Sqlite(rusqlite::Statement<'c>),
    SqliteCached(rusqlite::CachedStatement<'c>),
    Postgres(pg::PgStmt<'c>),
}

impl Stmt<'_> {
    pub fn execute(&mut self, params: impl Params) -> Result<usize> {
        match self {
            Stmt::Sqlite(s) => sqlite_execute(s, &params),
            Stmt::SqliteCached(s) => sqlite_execute(s, &params),
            Stmt::Postgres(s) => s.execute(&params),
        }
    }

    #[inline]
    pub fn query(&mut self, params: impl Params) -> Result<Rows<'_>> {
        match self {
            Stmt::Sqlite(s) => sqlite_query(s, &params),
            Stmt::SqliteCached(s) => sqlite_query(s, &params),
            Stmt::Postgres(s) => Ok(Rows::Postgres {
                rows: s.query(&params)?,
                next: 0,
            }),
        }
    }

    /// Every row through `f`, as an iterator.
    pub fn query_map<T, F>(&mut self, params: impl Params, f: F) -> Result<MappedRows<'_, F>>
    where
        F: FnMut(Row<'_>) -> Result<T>,
    {
        Ok(MappedRows {
            rows: self.query(params)?,
            f,
        })
    }

    pub fn query_row<T, F>(&mut self, params: impl Params, f: F) -> Result<T>
    where
        F: FnOnce(Row<'_>) -> Result<T>,
    {
        let mut rows = self.query(params)?;
        match rows.next()? {
            Some(row) => f(row),
            None => Err(Error::NoRows),
        }
    }

    /// Whether the query returns at least one row.
    pub fn exists(&mut self, params: impl Params) -> Result<bool> {
        Ok(self.query(params)?.next()?.is_some())
    }

    pub fn column_count(&self) -> usize {
        match self {
            Stmt::Sqlite(s) => s.column_count(),
            Stmt::SqliteCached(s) => s.column_count(),
            Stmt::Postgres(s) => s.column_names().len(),
        }
    }

    pub fn column_names(&self) -> Vec<String> {
        match self {
            Stmt::Sqlite(s) => s.column_names().map(str::to_string).collect(),
            Stmt::SqliteCached(s) => s.column_names().map(str::to_string).collect(),
            Stmt::Postgres(s) => s.column_names(),
        }
    }
}

/// Binds every parameter, checking their number (rusqlite's raw binding would keep a cached
/// statement's previous values for the ones not given).
#[inline]
fn bind_sqlite(s: &mut rusqlite::Statement<'_>, params: &impl Params) -> Result<()> {
    let mut n = 0;
    let mut failed = None;
    params.each(&mut |p| {
        n += 1;
        if failed.is_none()
            && let Err(e) = s.raw_bind_parameter(n, p)
        {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    let expected = s.parameter_count();
    if n != expected {
        return Err(rusqlite::Error::InvalidParameterCount(n, expected).into());
    }
    Ok(())
}

fn sqlite_execute(s: &mut rusqlite::Statement<'_>, params: &impl Params) -> Result<usize> {
    bind_sqlite(s, params)?;
    Ok(s.raw_execute()?)
}

#[inline]
fn sqlite_query<'s>(s: &'s mut rusqlite::Statement<'_>, params: &impl Params) -> Result<Rows<'s>> {
    bind_sqlite(s, params)?;
    Ok(Rows::Sqlite(s.raw_query()))
}

/// The rows of a query, read one at a time.
pub enum Rows<'s> {
    Sqlite(rusqlite::Rows<'s>),
    Postgres {
        rows: Vec<postgres::Row>,
        next: usize,
    },
}

impl Rows<'_> {
    #[allow(clippy::should_implement_trait)] // a lending iterator: rows borrow from `self`
    #[inline]
    pub fn next(&mut self) -> Result<Option<Row<'_>>> {
        match self {
            Rows::Sqlite(r) => Ok(r.next()?.map(Row::Sqlite)),
            Rows::Postgres { rows, next } => {
                let row = rows.get(*next);
                *next += 1;
                Ok(row.map(Row::Postgres))
            }
        }
    }
}

/// [`Stmt::query_map`]'s iterator.
pub struct MappedRows<'s, F> {
    rows: Rows<'s>,
    f: F,
}

impl<T, F> Iterator for MappedRows<'_, F>
where
    F: FnMut(Row<'_>) -> Result<T>,
{
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        match self.rows.next() {
            Ok(Some(row)) => Some((self.f)(row)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

/// One row of a result.
#[derive(Clone, Copy)]
pub enum Row<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r postgres::Row),
}

impl<'r> Row<'r> {
    /// Column `i` as SQLite would hand it over.
    #[inline]
    pub fn get_ref(&self, i: usize) -> Result<ValueRef<'r>> {
        match *self {
            Row::Sqlite(r) => Ok(r.get_ref(i)?),
            Row::Postgres(r) => pg::value_ref(r, i),
        }
    }

    /// Column `i` converted with `FromSql`, with the same conversions on both stores.
    #[inline]
    pub fn get<T: FromSql>(&self, i: usize) -> Result<T> {
        match *self {
            Row::Sqlite(r) => Ok(r.get(i)?),
            Row::Postgres(r) => {
                let v = pg::value_ref(r, i)?;
                T::column_result(v).map_err(|e| error::conversion(i, v, e))
            }
        }
    }

    pub fn column_count(&self) -> usize {
        match *self {
            Row::Sqlite(r) => r.as_ref().column_count(),
            Row::Postgres(r) => r.len(),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Connections for tests: a SQLite file in a temp dir, and — when `BAKEND_TEST_POSTGRES`
    //! names a server — a PostgreSQL connection in a schema of its own, dropped afterwards.

    use super::*;
    use bakend_core::config::PostgresSettings;

    pub struct PgSchema {
        pub cfg: PostgresSettings,
        admin: PgConn,
    }

    impl Drop for PgSchema {
        fn drop(&mut self) {
            let _ = self.admin.batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                pg::quote_ident(&self.cfg.options.schema)
            ));
        }
    }

    /// The server PostgreSQL tests run on: `BAKEND_TEST_POSTGRES`, or this machine's
    /// `postgres://postgres@127.0.0.1:5432/postgres` when that answers (`off` skips them).
    pub const ENV: &str = "BAKEND_TEST_POSTGRES";
    const LOCAL: &str = "postgres://postgres@127.0.0.1:5432/postgres?connect_timeout=2";

    /// A fresh schema on the test server; `None` (and a line saying why) without one.
    pub fn postgres(what: &str) -> Option<PgSchema> {
        let (url, explicit) = match std::env::var(ENV) {
            Ok(v) if v == "off" => {
                eprintln!("{what}: skipped on PostgreSQL ({ENV}=off)");
                return None;
            }
            Ok(v) if !v.is_empty() => (v, true),
            _ => (LOCAL.to_string(), false),
        };
        let admin_cfg = PostgresSettings {
            url,
            options: Default::default(),
        };
        let admin = match PgConn::connect(&admin_cfg) {
            Ok(c) => c,
            // A server named on purpose must be there; the local default may not be.
            Err(e) if !explicit => {
                eprintln!("{what}: skipped on PostgreSQL (none reachable: {e}; set {ENV})");
                return None;
            }
            Err(e) => panic!("{ENV}: {e}"),
        };
        let mut cfg = admin_cfg.clone();
        cfg.options.schema = bakend_core::ids::new_id("t_")
            .to_lowercase()
            .replace('-', "_");
        admin
            .batch_execute(&format!(
                "CREATE SCHEMA {}",
                pg::quote_ident(&cfg.options.schema)
            ))
            .expect("create the test schema");
        Some(PgSchema { cfg, admin })
    }

    /// A PostgreSQL server of the test's own (`initdb` + `pg_ctl` on a free port, password
    /// authentication), for tests that break the server — restart it, or log in wrongly —
    /// never the shared one. Stopped when dropped. `None` (and a line) without PostgreSQL's
    /// programs on this machine.
    pub struct PrivatePg {
        dir: tempfile::TempDir,
        bin: std::path::PathBuf,
        pub port: u16,
    }

    pub const PRIVATE_PASSWORD: &str = "s3cret-pg";

    impl PrivatePg {
        pub fn start(what: &str) -> Option<PrivatePg> {
            let bin = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .filter_map(|e| Some(e.ok()?.path().join("bin")))
                .find(|b| b.join("initdb").exists());
            let Some(bin) = bin else {
                eprintln!("{what}: skipped (PostgreSQL's initdb is not installed)");
                return None;
            };
            let dir = tempfile::tempdir().expect("temp dir");
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let pg = PrivatePg { dir, bin, port };
            std::fs::write(pg.dir.path().join("pw"), PRIVATE_PASSWORD).expect("password file");
            if Self::as_root() {
                // initdb refuses to run as root: the cluster belongs to `postgres`.
                let ok = std::process::Command::new("chown")
                    .args(["-R", "postgres"])
                    .arg(pg.dir.path())
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "chown the private cluster's folder");
            }
            let data = pg.dir.path().join("data");
            let pw = pg.dir.path().join("pw");
            pg.run(
                "initdb",
                &[
                    "-D",
                    &data.to_string_lossy(),
                    "-U",
                    "postgres",
                    "--auth=scram-sha-256",
                    &format!("--pwfile={}", pw.to_string_lossy()),
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
            );
            pg.ctl(&["start"]);
            Some(pg)
        }

        fn as_root() -> bool {
            std::process::Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
        }

        fn run(&self, program: &str, args: &[&str]) {
            let path = self.bin.join(program);
            let mut cmd = if Self::as_root() {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(&path);
                c
            } else {
                std::process::Command::new(&path)
            };
            let out = cmd.args(args).output().expect("run a PostgreSQL program");
            assert!(
                out.status.success(),
                "{program} {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        fn ctl(&self, action: &[&str]) {
            let data = self.dir.path().join("data");
            let log = self.dir.path().join("log");
            let opts = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                self.port,
                self.dir.path().to_string_lossy()
            );
            let mut args = vec!["-D", data.to_str().expect("utf-8 path"), "-w", "-t", "60"];
            args.extend(["-l", log.to_str().expect("utf-8 path"), "-o", &opts]);
            args.extend(action);
            self.run("pg_ctl", &args);
        }

        /// A URL for user `postgres` with `password`.
        pub fn url(&self, password: &str) -> String {
            format!(
                "postgres://postgres:{password}@127.0.0.1:{}/postgres",
                self.port
            )
        }

        /// Stops the server (`fast`: sessions are cut) and starts it again.
        pub fn restart(&self) {
            self.ctl(&["-m", "fast", "restart"]);
        }
    }

    impl Drop for PrivatePg {
        fn drop(&mut self) {
            let data = self.dir.path().join("data");
            let path = self.bin.join("pg_ctl");
            let data = data.to_string_lossy().to_string();
            let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
            let _ = if Self::as_root() {
                std::process::Command::new("runuser")
                    .args(["-u", "postgres", "--"])
                    .arg(&path)
                    .args(args)
                    .output()
            } else {
                std::process::Command::new(&path).args(args).output()
            };
        }
    }

    pub fn sqlite() -> (tempfile::TempDir, Conn) {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = rusqlite::Connection::open(dir.path().join("t.db")).expect("open");
        (dir, Conn::from(conn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same statements and values give the same answers on both stores.
    fn round_trip(conn: &Conn) {
        conn.execute_batch(
            "CREATE TABLE t (id TEXT PRIMARY KEY, n BIGINT, f DOUBLE PRECISION, s TEXT, b BYTEA);
             CREATE UNIQUE INDEX t_s ON t (s);",
        )
        .unwrap();
        let insert = "INSERT INTO t (id, n, f, s, b) VALUES (?1, ?2, ?3, ?4, ?5)";
        conn.execute(insert, params!["a", 42i64, 1.5f64, "ünï'?", vec![0u8, 255]])
            .unwrap();
        conn.execute(
            insert,
            params![
                "b",
                None::<i64>,
                None::<f64>,
                None::<String>,
                None::<Vec<u8>>
            ],
        )
        .unwrap();
        let row: (i64, f64, String, Vec<u8>) = conn
            .query_row("SELECT n, f, s, b FROM t WHERE id = ?", ["a"], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .unwrap();
        assert_eq!(row, (42, 1.5, "ünï'?".to_string(), vec![0, 255]));
        let nulls: (Option<i64>, Option<String>) = conn
            .query_row("SELECT n, s FROM t WHERE id = ?1", ["b"], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(nulls, (None, None));
        assert_eq!(
            conn.query_row("SELECT count(*) FROM t WHERE n > ?", [40], |r| r
                .get::<i64>(0))
                .unwrap(),
            1
        );
        // A boolean reads as SQLite stores one.
        assert!(
            conn.query_row("SELECT n = 42 FROM t WHERE id = 'a'", (), |r| r
                .get::<bool>(0))
                .unwrap()
        );
        let missing = conn
            .query_row("SELECT id FROM t WHERE id = ?", ["zz"], |r| {
                r.get::<String>(0)
            })
            .optional()
            .unwrap();
        assert_eq!(missing, None);
        let dup = conn
            .execute(insert, params!["c", 1i64, 0.0f64, "ünï'?", None::<Vec<u8>>])
            .unwrap_err();
        assert_eq!(dup.constraint(), Some(Constraint::Unique), "{dup}");
        assert_eq!(dup.unique_columns(), Some(vec!["s".to_string()]), "{dup}");
        let mut stmt = conn
            .prepare_cached("SELECT id FROM t ORDER BY id LIMIT ?")
            .unwrap();
        let ids: Vec<String> = stmt
            .query_map([5], |r| r.get(0))
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(ids, ["a", "b"]);
        let values = [Value::Text("a".into()), Value::Integer(42)];
        let n = conn
            .query_row(
                "SELECT count(*) FROM t WHERE id = ?1 AND n = ?2",
                params_from_iter(values.iter()),
                |r| r.get::<i64>(0),
            )
            .unwrap();
        assert_eq!(n, 1);
        let wrong = conn.execute("DELETE FROM t WHERE id = ?1", ["a", "b"]);
        assert!(wrong.is_err(), "too many parameters are refused");
    }

    #[test]
    fn values_round_trip_on_sqlite() {
        let (_dir, conn) = testing::sqlite();
        round_trip(&conn);
    }

    #[test]
    fn values_round_trip_on_postgres() {
        let Some(schema) = testing::postgres("values_round_trip_on_postgres") else {
            return;
        };
        let conn = Conn::from(PgConn::connect(&schema.cfg).unwrap());
        round_trip(&conn);
    }
}
