//! The suite on PostgreSQL: with `BAKEND_TEST_POSTGRES=postgres://…` (a server the harness may
//! create databases on), every project folder a test uses gets a database of its own on that
//! server — created the first time a server starts on the folder, the same one when it starts
//! again (restarts keep their data, as with a SQLite file) — and `BAKEND_DATABASE` points the
//! server there. Without it the suite runs on SQLite, as always; `BAKEND_TEST_SUITE=sqlite`
//! keeps it on SQLite while `BAKEND_TEST_POSTGRES` still names the server for the tests that
//! are about PostgreSQL itself (`scripts/test` runs the suite once each way).
//!
//! Databases are named `bak_t_<pid>_<n>` and live until the next run, which first drops those
//! of test processes that are gone (a test may hand its folder to a later server, so the
//! harness cannot tell when a database is no longer needed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

pub const ENV: &str = "BAKEND_TEST_POSTGRES";
const SUITE_ENV: &str = "BAKEND_TEST_SUITE";

static DATABASES: Mutex<Option<HashMap<PathBuf, String>>> = Mutex::new(None);
static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The server `BAKEND_TEST_POSTGRES` names (`off`: none).
fn configured() -> Option<String> {
    std::env::var(ENV).ok().filter(|s| !s.is_empty())
}

/// The PostgreSQL server the suite runs on, if any.
pub fn server_url() -> Option<String> {
    if std::env::var(SUITE_ENV).is_ok_and(|s| s == "sqlite") {
        return None;
    }
    configured().filter(|s| s != "off")
}

/// `BAKEND_DATABASE` for a server on `dir`: a database of its own on the test server (made on
/// first use); `None` on SQLite.
pub fn database_for(dir: &Path) -> Option<String> {
    let server = server_url()?;
    let mut guard = DATABASES.lock().unwrap_or_else(|e| e.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    if let Some(url) = map.get(dir) {
        return Some(url.clone());
    }
    let url = create_database(&server);
    map.insert(dir.to_path_buf(), url.clone());
    Some(url)
}

/// A new, empty database on `server` for a test that picks its store itself; its URL.
pub fn new_database(server: &str) -> String {
    create_database(server)
}

/// Creates `bak_t_<pid>_<n>` on `server` (first dropping those of finished test processes).
fn create_database(server: &str) -> String {
    static STALE_DROPPED: std::sync::Once = std::sync::Once::new();
    let mut drop_stale_first = false;
    STALE_DROPPED.call_once(|| drop_stale_first = true);
    let name = format!(
        "bak_t_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let url = with_database(server, &name);
    admin(server, move |c| {
        if drop_stale_first {
            drop_stale(c);
        }
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create a test database");
    });
    url
}

/// `server` with its database path replaced by `name`.
fn with_database(server: &str, name: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (server, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    let mut url = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// Runs `f` with a connection to the test server, on a thread of its own (the synchronous
/// client must not run inside the tests' async runtime).
fn admin(server: &str, f: impl FnOnce(&mut postgres::Client) + Send + 'static) {
    let server = server.to_string();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&server, postgres::NoTls)
            .expect("connect to BAKEND_TEST_POSTGRES");
        f(&mut c);
    })
    .join()
    .expect("test database set-up");
}

/// Drops the databases of earlier test processes that no longer run.
fn drop_stale(c: &mut postgres::Client) {
    let Ok(rows) = c.query(
        "SELECT datname::text FROM pg_database WHERE datname LIKE 'bak\\_t\\_%'",
        &[],
    ) else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// A PostgreSQL server for tests that are about PostgreSQL itself (connection errors, …):
/// `BAKEND_TEST_POSTGRES`, or this machine's local server when it answers; `None` (and a line
/// saying so) otherwise.
pub fn reachable_server(what: &str) -> Option<String> {
    if let Some(url) = configured() {
        return (url != "off").then_some(url);
    }
    let local = "postgres://postgres@127.0.0.1:5432/postgres";
    let ok = std::thread::spawn(move || {
        postgres::Config::from_str(local)
            .map(|mut c| {
                c.connect_timeout(std::time::Duration::from_secs(2));
                c.connect(postgres::NoTls).is_ok()
            })
            .unwrap_or(false)
    })
    .join()
    .unwrap_or(false);
    if ok {
        Some(local.to_string())
    } else {
        eprintln!("{what}: skipped (no PostgreSQL reachable; set {ENV})");
        None
    }
}

/// Runs SQL on the test server as its admin user (set-up and clean-up of roles, databases).
pub fn admin_sql(server: &str, sql: &str) {
    let sql = sql.to_string();
    admin(server, move |c| {
        c.batch_execute(&sql).expect("admin SQL");
    });
}

/// For a test of something SQLite has and PostgreSQL does not (`why`, as documented in
/// docs/postgres.md): `true`, and a line saying the test is skipped, when the suite runs on
/// PostgreSQL.
pub fn skip_on_postgres(test: &str, why: &str) -> bool {
    let skip = server_url().is_some();
    if skip {
        eprintln!("{test}: skipped on PostgreSQL ({why})");
    }
    skip
}
