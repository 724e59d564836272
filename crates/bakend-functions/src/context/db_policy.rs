//! What `ctx.db` may do, enforced by SQLite's authorizer on the functions' (and jobs')
//! connection. Every statement is checked while it is prepared, including the statements SQLite
//! runs for itself (VACUUM's internal ATTACH), so the rules cannot be dodged by spelling.
//!
//! Refused:
//! - `ATTACH`/`DETACH` and therefore `VACUUM`/`VACUUM INTO` (they would create or copy database
//!   files anywhere the server can write);
//! - any pragma that sets a value, and every pragma not known to be read-only (e.g.
//!   `writable_schema`, `foreign_keys = OFF`, `journal_mode = DELETE`);
//! - reading, writing, creating, altering or dropping any `_`-prefixed table, index, view or
//!   trigger: those are the server's own (`_users`, `_sessions`, `_files`, …) and hold password
//!   and token hashes. Collection tables never start with `_`; users and files are reached
//!   through `ctx.records` and `ctx.storage`;
//! - persistent `CREATE TRIGGER` and `CREATE VIEW`: they would later run inside the server's own
//!   connection, where this authorizer does not apply (temporary ones stay on this connection
//!   and are allowed);
//! - `load_extension()` and action codes this policy does not know.
//!
//! The statements of the server's own triggers (`_`-named, such as the row counts kept on each
//! collection table) run as written when user code's writes fire them.
//!
//! SQLite's own `sqlite_` tables stay readable (`sqlite_master` lists the schema); SQLite itself
//! refuses writes to them unless `writable_schema` is on, which is refused here.

use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};

/// The reason of the last refusal on a connection, so the error thrown to JavaScript can say
/// what was refused (SQLite itself only says "not authorized").
#[derive(Clone, Default)]
pub(crate) struct Refusals(Arc<Mutex<Option<String>>>);

impl Refusals {
    fn record(&self, reason: String) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
    }

    /// Takes the reason recorded since the last call, if any.
    pub fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// Installs the policy on `conn`; each refusal's reason is recorded in `refusals`.
pub(crate) fn install(conn: &mut Connection, refusals: Refusals) -> rusqlite::Result<()> {
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        // A statement inside one of the server's own triggers (e.g. the row counts kept on
        // every collection table): its text is the server's, and user code cannot create a
        // `_`-named trigger, so it runs as the server wrote it.
        if ctx.accessor.is_some_and(internal) {
            return Authorization::Allow;
        }
        match decide(&ctx.action) {
            Ok(()) => Authorization::Allow,
            Err(reason) => {
                refusals.record(reason);
                Authorization::Deny
            }
        }
    }))
}

/// Pragmas that only report something when given no value.
const READ_ONLY_PRAGMAS: &[&str] = &[
    "application_id",
    "auto_vacuum",
    "cache_size",
    "collation_list",
    "compile_options",
    "data_version",
    "encoding",
    "foreign_keys",
    "freelist_count",
    "function_list",
    "integrity_check",
    "journal_mode",
    "module_list",
    "page_count",
    "page_size",
    "pragma_list",
    "quick_check",
    "schema_version",
    "synchronous",
    "user_version",
];

/// Read-only pragmas whose argument names a table or an index (not a value to set).
const SCHEMA_PRAGMAS: &[&str] = &[
    "foreign_key_check",
    "foreign_key_list",
    "index_info",
    "index_list",
    "index_xinfo",
    "table_info",
    "table_list",
    "table_xinfo",
];

fn internal(name: &str) -> bool {
    name.starts_with('_')
}

fn internal_object(kind: &str, name: &str) -> Result<(), String> {
    if internal(name) {
        return Err(format!(
            "{kind} {name} is internal to the server (reach users and files through ctx.records and ctx.storage)"
        ));
    }
    Ok(())
}

/// `Ok` when the action is allowed, otherwise the reason it is not.
pub(crate) fn decide(action: &AuthAction<'_>) -> Result<(), String> {
    use AuthAction as A;
    match *action {
        A::Attach { .. } | A::Detach { .. } => Err(
            "ATTACH, DETACH and VACUUM are not allowed: ctx.db works on the server's database only"
                .into(),
        ),
        A::Pragma {
            pragma_name,
            pragma_value,
        } => pragma(pragma_name, pragma_value),
        A::CreateTrigger { .. } => Err(
            "CREATE TRIGGER is not allowed (it would run in the server's own writes); use CREATE TEMP TRIGGER or a function trigger".into(),
        ),
        A::CreateView { .. } => Err(
            "CREATE VIEW is not allowed (it would be read by the server's own connection); use CREATE TEMP VIEW".into(),
        ),
        A::Function { function_name } if function_name.eq_ignore_ascii_case("load_extension") => {
            Err("load_extension() is not allowed".into())
        }
        A::Read { table_name, .. }
        | A::Insert { table_name }
        | A::Update { table_name, .. }
        | A::Delete { table_name }
        | A::CreateTable { table_name }
        | A::CreateTempTable { table_name }
        | A::DropTable { table_name }
        | A::DropTempTable { table_name }
        | A::AlterTable { table_name, .. }
        | A::Analyze { table_name }
        | A::CreateVtable { table_name, .. }
        | A::DropVtable { table_name, .. } => internal_object("table", table_name),
        A::CreateIndex {
            index_name,
            table_name,
        }
        | A::CreateTempIndex {
            index_name,
            table_name,
        }
        | A::DropIndex {
            index_name,
            table_name,
        }
        | A::DropTempIndex {
            index_name,
            table_name,
        } => {
            internal_object("table", table_name)?;
            internal_object("index", index_name)
        }
        A::CreateTempTrigger {
            trigger_name,
            table_name,
        }
        | A::DropTrigger {
            trigger_name,
            table_name,
        }
        | A::DropTempTrigger {
            trigger_name,
            table_name,
        } => {
            internal_object("table", table_name)?;
            internal_object("trigger", trigger_name)
        }
        A::CreateTempView { view_name }
        | A::DropView { view_name }
        | A::DropTempView { view_name } => internal_object("view", view_name),
        A::Reindex { index_name } => internal_object("index", index_name),
        A::Select
        | A::Transaction { .. }
        | A::Savepoint { .. }
        | A::Recursive
        | A::Function { .. } => Ok(()),
        A::Unknown { code, .. } => Err(format!("SQLite action {code} is not allowed")),
        // `AuthAction` is non-exhaustive: what this policy does not know is refused.
        _ => Err("this SQLite action is not allowed".into()),
    }
}

fn pragma(name: &str, value: Option<&str>) -> Result<(), String> {
    let name = name.to_ascii_lowercase();
    if SCHEMA_PRAGMAS.contains(&name.as_str()) {
        return match value {
            Some(table) => internal_object("table", table),
            None => Ok(()),
        };
    }
    if value.is_none() && READ_ONLY_PRAGMAS.contains(&name.as_str()) {
        return Ok(());
    }
    Err(match value {
        Some(_) => format!(
            "PRAGMA {name} with a value is not allowed: pragmas that change the connection or the database belong to the server"
        ),
        None => format!("PRAGMA {name} is not allowed (read-only pragmas such as table_info are)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> (tempfile::TempDir, Connection, Refusals) {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Connection::open(dir.path().join("db.sqlite")).unwrap();
        c.execute_batch(
            "CREATE TABLE _users (id TEXT, role TEXT, password_hash TEXT);
             INSERT INTO _users VALUES ('u1', 'user', 'secret');
             CREATE TABLE posts (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT);",
        )
        .unwrap();
        let r = Refusals::default();
        install(&mut c, r.clone()).unwrap();
        (dir, c, r)
    }

    fn refused(c: &Connection, r: &Refusals, sql: &str) -> String {
        let err = c.execute_batch(sql).expect_err(sql);
        // SQLite reports a refusal as SQLITE_AUTH, or as a plain error for functions.
        let denied = matches!(&err, rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::AuthorizationForStatementDenied)
            || err.to_string().contains("not authorized");
        assert!(denied, "{sql}: {err:?}");
        r.take()
            .unwrap_or_else(|| panic!("no reason recorded for {sql}"))
    }

    #[test]
    fn attach_and_vacuum_are_refused_and_create_no_file() {
        let (dir, c, r) = conn();
        let target = dir.path().join("stolen.db");
        let t = target.display();
        assert!(refused(&c, &r, &format!("ATTACH DATABASE '{t}' AS x")).contains("ATTACH"));
        assert!(refused(&c, &r, &format!("VACUUM INTO '{t}'")).contains("VACUUM"));
        assert!(refused(&c, &r, "VACUUM").contains("VACUUM"));
        assert!(!target.exists());
    }

    #[test]
    fn internal_tables_are_refused_for_every_access() {
        let (_dir, c, r) = conn();
        for sql in [
            "SELECT password_hash FROM _users",
            "SELECT count(*) FROM _users",
            "SELECT 1 FROM posts WHERE EXISTS (SELECT 1 FROM _users)",
            "UPDATE _users SET role = 'admin'",
            "INSERT INTO _users VALUES ('u2', 'admin', 'x')",
            "DELETE FROM _users",
            "DROP TABLE _users",
            "ALTER TABLE _users ADD COLUMN x TEXT",
            "CREATE TABLE _mine (x)",
            "CREATE INDEX i ON _users (role)",
            "CREATE TEMP VIEW v AS SELECT * FROM _users; SELECT * FROM v",
            "PRAGMA table_info(_users)",
        ] {
            let reason = refused(&c, &r, sql);
            assert!(reason.contains("internal to the server"), "{sql}: {reason}");
        }
        let role: String = Connection::open(c.path().unwrap())
            .unwrap()
            .query_row("SELECT role FROM _users", [], |row| row.get(0))
            .unwrap();
        assert_eq!(role, "user");
    }

    #[test]
    fn setting_pragmas_and_persistent_triggers_and_views_are_refused() {
        let (_dir, c, r) = conn();
        for sql in [
            "PRAGMA writable_schema = ON",
            "PRAGMA writable_schema",
            "PRAGMA foreign_keys = OFF",
            "PRAGMA journal_mode = DELETE",
            "PRAGMA database_list",
            "CREATE TRIGGER t AFTER INSERT ON posts BEGIN UPDATE posts SET title = 'x'; END",
            "CREATE VIEW v AS SELECT * FROM posts",
            "SELECT load_extension('x')",
        ] {
            refused(&c, &r, sql);
        }
    }

    #[test]
    fn ordinary_work_is_allowed() {
        let (_dir, c, r) = conn();
        c.execute_batch(
            "CREATE TABLE seen (x TEXT);
             CREATE INDEX seen_x ON seen (x);
             BEGIN; INSERT INTO posts (title) VALUES ('a');
             SAVEPOINT s; INSERT INTO seen VALUES ('b'); ROLLBACK TO s; RELEASE s;
             COMMIT;
             UPDATE posts SET title = upper(title);
             CREATE TEMP VIEW tv AS SELECT title FROM posts;
             CREATE TEMP TRIGGER tt AFTER INSERT ON seen BEGIN SELECT 1; END;
             INSERT INTO seen VALUES ('c');
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3) SELECT * FROM n;",
        )
        .unwrap();
        let title: String = c
            .query_row("SELECT title FROM tv", [], |row| row.get(0))
            .unwrap();
        assert_eq!(title, "A");
        let names: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = '_users'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(names, 1);
        for read in [
            "PRAGMA table_info(posts)",
            "PRAGMA user_version",
            "PRAGMA foreign_keys",
            "SELECT * FROM pragma_table_info('posts')",
        ] {
            c.prepare(read).unwrap().query([]).unwrap().next().unwrap();
        }
        assert_eq!(r.take(), None);
    }
}
