//! Tests on both stores: each helper gives a fresh database with the system schema on SQLite
//! and, when `BAKEND_TEST_POSTGRES` names a server, on PostgreSQL too (in a schema of its
//! own, dropped afterwards; without a server the PostgreSQL half is skipped with a line
//! saying so). PostgreSQL's client is synchronous: call these, and drop what they return,
//! outside any async runtime.

use std::sync::Arc;

use bakend_core::config::DatabaseLocation;

use crate::db::{Database, migrations};
use crate::sql::{Backend, Conn, PgConn, testing};

/// What keeps a test database alive: its directory or its PostgreSQL schema (both removed
/// when dropped; nothing reads them).
#[allow(dead_code)]
pub enum Keep {
    Sqlite(tempfile::TempDir),
    Postgres(Box<testing::PgSchema>),
}

/// A connection to a fresh database. (Fields drop in order: the connection first.)
pub struct TestConn {
    pub conn: Conn,
    _keep: Keep,
}

/// One fresh connection per store this run can reach, SQLite first.
pub fn conns(what: &str) -> Vec<TestConn> {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = crate::db::open_connection(&dir.path().join("t.db")).expect("open SQLite");
    let conn = Conn::from(sqlite);
    migrations::migrate(&conn).expect("system schema on SQLite");
    let mut out = vec![TestConn {
        conn,
        _keep: Keep::Sqlite(dir),
    }];
    if let Some(schema) = testing::postgres(what) {
        let conn = Conn::from(PgConn::connect(&schema.cfg).expect("connect to PostgreSQL"));
        migrations::migrate(&conn).expect("system schema on PostgreSQL");
        out.push(TestConn {
            conn,
            _keep: Keep::Postgres(Box::new(schema)),
        });
    }
    out
}

/// Runs `body` on each store's fresh connection.
pub fn each_store(what: &str, body: impl Fn(&Conn)) {
    for t in conns(what) {
        body(&t.conn);
    }
}

/// `f` inside a transaction: committed if it succeeds, rolled back if not (as the writer
/// does; on PostgreSQL a failed statement leaves nothing else usable until then).
pub fn in_transaction<T, E>(conn: &Conn, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    conn.execute_batch("BEGIN").expect("begin");
    let out = f();
    let end = if out.is_ok() { "COMMIT" } else { "ROLLBACK" };
    conn.execute_batch(end).expect("end the transaction");
    out
}

/// A whole [`Database`] on a fresh store, closed when dropped.
pub struct TestDb {
    pub db: Arc<Database>,
    pub backend: Backend,
    location: DatabaseLocation,
    keep: Keep,
}

impl TestDb {
    /// The PostgreSQL server and schema, for a connection of the test's own.
    pub fn postgres(&self) -> Option<bakend_core::config::PostgresSettings> {
        match &self.location {
            DatabaseLocation::Postgres(cfg) => Some(cfg.clone()),
            _ => None,
        }
    }

    /// Another server on the same database (PostgreSQL only: a SQLite file has one).
    pub fn another_server(&self) -> Option<Arc<Database>> {
        match self.keep {
            Keep::Sqlite(_) => None,
            Keep::Postgres(_) => Some(Arc::new(open(&self.location))),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.db.close();
    }
}

fn open(location: &DatabaseLocation) -> Database {
    Database::open_with(location, bakend_events::LocalBus::new(), Some(64)).expect("open")
}

/// One fresh [`Database`] per store this run can reach, SQLite first.
pub fn databases(what: &str) -> Vec<TestDb> {
    let dir = tempfile::tempdir().expect("temp dir");
    let location = DatabaseLocation::File(dir.path().join("t.db"));
    let mut out = vec![TestDb {
        db: Arc::new(open(&location)),
        backend: Backend::Sqlite,
        location,
        keep: Keep::Sqlite(dir),
    }];
    if let Some(schema) = testing::postgres(what) {
        let location = DatabaseLocation::Postgres(schema.cfg.clone());
        out.push(TestDb {
            db: Arc::new(open(&location)),
            backend: Backend::Postgres,
            location,
            keep: Keep::Postgres(Box::new(schema)),
        });
    }
    out
}

/// A runtime for the async half of a test (the databases live outside it).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime")
}
