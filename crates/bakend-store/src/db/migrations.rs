//! The system schema, versioned in `_bakend_meta.schema_version`. Each step runs inside one
//! transaction together with its version bump, so a crash never leaves a half-migrated database.

use crate::sql::{Backend, Conn, OptionalExtension};

use crate::error::StoreError;

/// Steps in order; step `i` brings the schema to version `i + 1`. Append, never edit.
const STEPS: &[&str] = &[
    // 1: the tables of Bakend v1 (spec collections.md §2, auth.md §9, storage.md §10).
    r#"
    CREATE TABLE IF NOT EXISTS _bakend_meta (
        key TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS _collections (
        name TEXT PRIMARY KEY NOT NULL,
        definition TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS _users (
        id TEXT PRIMARY KEY NOT NULL,
        email TEXT UNIQUE NOT NULL,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL DEFAULT 'authenticated',
        created_at TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS _sessions (
        id TEXT PRIMARY KEY NOT NULL,
        user_id TEXT NOT NULL REFERENCES _users(id) ON DELETE CASCADE,
        refresh_token_hash TEXT UNIQUE NOT NULL,
        expires_at TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS _files (
        id TEXT PRIMARY KEY NOT NULL,
        filename TEXT NOT NULL,
        mime_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        visibility TEXT NOT NULL CHECK (visibility IN ('public','protected')),
        user_id TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    "#,
    // 2: refresh-session families (reuse detection) and the lookups auth needs.
    r#"
    ALTER TABLE _sessions ADD COLUMN family_id TEXT;
    ALTER TABLE _sessions ADD COLUMN rotated_at TEXT;
    UPDATE _sessions SET family_id = id WHERE family_id IS NULL;
    CREATE INDEX IF NOT EXISTS idx_sessions_user ON _sessions(user_id);
    CREATE INDEX IF NOT EXISTS idx_sessions_family ON _sessions(family_id);
    CREATE INDEX IF NOT EXISTS idx_sessions_expires ON _sessions(expires_at);
    CREATE INDEX IF NOT EXISTS idx_users_created ON _users(created_at);
    "#,
    // 3: file lookups by owner (account deletion) and by age (prune, admin listing).
    r#"
    CREATE INDEX IF NOT EXISTS idx_files_user ON _files(user_id);
    CREATE INDEX IF NOT EXISTS idx_files_created ON _files(created_at);
    "#,
    // 4: job run history (bakend-jobs): one row per run, written when it starts (`running`)
    // and updated when it ends; capped per job by the jobs subsystem.
    r#"
    CREATE TABLE IF NOT EXISTS _job_runs (
        run_id TEXT PRIMARY KEY NOT NULL,
        job TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('running','completed','failed')),
        attempt INTEGER NOT NULL,
        trigger TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        duration_ms INTEGER,
        error TEXT
    );
    CREATE INDEX IF NOT EXISTS idx_job_runs_job ON _job_runs(job, started_at);
    CREATE INDEX IF NOT EXISTS idx_job_runs_running ON _job_runs(status) WHERE status = 'running';
    "#,
    // 5: revocable access tokens (bakend-auth): each token carries the generation it was issued
    // in; signing out everywhere increments it. Existing users (and their tokens, which carry
    // no generation) start at 0, so sessions survive the upgrade.
    r#"
    ALTER TABLE _users ADD COLUMN token_gen INTEGER NOT NULL DEFAULT 0;
    "#,
    // 6: row counts per collection (collections::counts), kept by triggers on each table;
    // start-up adds the triggers and counts the tables that exist.
    r#"
    CREATE TABLE IF NOT EXISTS _record_counts (
        collection TEXT PRIMARY KEY NOT NULL,
        n INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 7: scheduled ticks claimed by the server that runs them (bakend-jobs): with several
    // servers on one PostgreSQL database each tick runs once.
    r#"
    CREATE TABLE IF NOT EXISTS _job_ticks (
        job TEXT NOT NULL,
        tick TEXT NOT NULL,
        PRIMARY KEY (job, tick)
    ) WITHOUT ROWID;
    "#,
    // 8: the servers sharing the database (`db::nodes`): each one's last heartbeat, realtime
    // stats, and how far its events' triggers have run.
    r#"
    CREATE TABLE IF NOT EXISTS _nodes (
        id TEXT PRIMARY KEY NOT NULL,
        started_at INTEGER NOT NULL,
        seen_at INTEGER NOT NULL,
        stats TEXT NOT NULL,
        triggers_done INTEGER
    ) WITHOUT ROWID;
    "#,
    // 9: the node a job run runs on (PostgreSQL; `bakend-jobs`): a run whose node is gone is
    // recorded as failed and retried by another.
    r#"
    ALTER TABLE _job_runs ADD COLUMN node TEXT;
    "#,
];

pub const SCHEMA_VERSION: usize = STEPS.len();

/// The same system schema on PostgreSQL, as `(version reached, statements)`. A new database
/// gets the whole schema of SQLite's version 6 in one step; later steps are appended beside
/// SQLite's, with the same version numbers, so `schema_version` means the same on both.
/// Types mirror SQLite's storage classes (`BIGINT`, `DOUBLE PRECISION`, `TEXT`); text is
/// `COLLATE "C"`, compared byte by byte as SQLite compares it.
const PG_STEPS: &[(usize, &str)] = &[
    (
        6,
        r#"
    CREATE TABLE IF NOT EXISTS _bakend_meta (
        key TEXT COLLATE "C" PRIMARY KEY NOT NULL,
        value TEXT COLLATE "C" NOT NULL,
        created_at TEXT COLLATE "C" NOT NULL
    );
    CREATE TABLE IF NOT EXISTS _collections (
        name TEXT COLLATE "C" PRIMARY KEY NOT NULL,
        definition TEXT NOT NULL,
        created_at TEXT COLLATE "C" NOT NULL,
        updated_at TEXT COLLATE "C" NOT NULL
    );
    CREATE TABLE IF NOT EXISTS _users (
        id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
        email TEXT COLLATE "C" UNIQUE NOT NULL,
        password_hash TEXT NOT NULL,
        role TEXT COLLATE "C" NOT NULL DEFAULT 'authenticated',
        created_at TEXT COLLATE "C" NOT NULL,
        token_gen BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE IF NOT EXISTS _sessions (
        id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
        user_id TEXT COLLATE "C" NOT NULL REFERENCES _users(id) ON DELETE CASCADE,
        refresh_token_hash TEXT COLLATE "C" UNIQUE NOT NULL,
        expires_at TEXT COLLATE "C" NOT NULL,
        created_at TEXT COLLATE "C" NOT NULL,
        family_id TEXT COLLATE "C",
        rotated_at TEXT COLLATE "C"
    );
    CREATE INDEX IF NOT EXISTS idx_sessions_user ON _sessions(user_id);
    CREATE INDEX IF NOT EXISTS idx_sessions_family ON _sessions(family_id);
    CREATE INDEX IF NOT EXISTS idx_sessions_expires ON _sessions(expires_at);
    CREATE INDEX IF NOT EXISTS idx_users_created ON _users(created_at);
    CREATE TABLE IF NOT EXISTS _files (
        id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
        filename TEXT NOT NULL,
        mime_type TEXT NOT NULL,
        size BIGINT NOT NULL,
        visibility TEXT NOT NULL CHECK (visibility IN ('public','protected')),
        user_id TEXT COLLATE "C" NOT NULL,
        created_at TEXT COLLATE "C" NOT NULL
    );
    CREATE INDEX IF NOT EXISTS idx_files_user ON _files(user_id);
    CREATE INDEX IF NOT EXISTS idx_files_created ON _files(created_at);
    -- PostgreSQL has no rowid: a column of that name keeps insertion order, so the job
    -- history's SQL (ties on started_at broken by rowid) is one text on both stores.
    CREATE TABLE IF NOT EXISTS _job_runs (
        rowid BIGSERIAL NOT NULL,
        run_id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
        job TEXT COLLATE "C" NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('running','completed','failed')),
        attempt BIGINT NOT NULL,
        trigger TEXT NOT NULL,
        started_at TEXT COLLATE "C" NOT NULL,
        ended_at TEXT COLLATE "C",
        duration_ms BIGINT,
        error TEXT
    );
    CREATE INDEX IF NOT EXISTS idx_job_runs_job ON _job_runs(job, started_at);
    CREATE INDEX IF NOT EXISTS idx_job_runs_running ON _job_runs(status) WHERE status = 'running';
    CREATE TABLE IF NOT EXISTS _record_counts (
        collection TEXT COLLATE "C" PRIMARY KEY NOT NULL,
        n BIGINT NOT NULL
    );
    "#,
    ),
    (
        7,
        r#"
    CREATE TABLE IF NOT EXISTS _job_ticks (
        job TEXT COLLATE "C" NOT NULL,
        tick TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (job, tick)
    );
    "#,
    ),
    (
        8,
        r#"
    CREATE TABLE IF NOT EXISTS _nodes (
        id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
        started_at BIGINT NOT NULL,
        seen_at BIGINT NOT NULL,
        stats TEXT COLLATE "C" NOT NULL,
        triggers_done BIGINT
    );
    "#,
    ),
    (
        9,
        r#"
    ALTER TABLE _job_runs ADD COLUMN node TEXT COLLATE "C";
    "#,
    ),
];

pub fn current_version(conn: &Conn) -> Result<usize, StoreError> {
    let exists_sql = match conn.backend() {
        Backend::Sqlite => "SELECT 1 FROM sqlite_master WHERE type='table' AND name='_bakend_meta'",
        Backend::Postgres => {
            "SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = '_bakend_meta'"
        }
    };
    let has_meta: bool = conn
        .query_row(exists_sql, (), |_| Ok(true))
        .optional()?
        .unwrap_or(false);
    if !has_meta {
        return Ok(0);
    }
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM _bakend_meta WHERE key='schema_version'",
            (),
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Brings the system schema up to date. Refuses a database written by a newer Bakend.
pub fn migrate(conn: &Conn) -> Result<(), StoreError> {
    if conn.backend() == Backend::Postgres {
        return migrate_postgres(conn);
    }
    let from = current_version(conn)?;
    if from > SCHEMA_VERSION {
        return Err(StoreError::Internal(format!(
            "database schema version {from} is newer than this bak supports ({SCHEMA_VERSION}); upgrade bak"
        )));
    }
    for (i, step) in STEPS.iter().enumerate().skip(from) {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let applied = apply_step(conn, i, step);
        if applied.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        applied?;
    }
    Ok(())
}

/// PostgreSQL: several servers may start at once on an empty database. A session-level
/// advisory lock (per schema) makes one migrate while the others wait; each then finds the
/// schema current. (The schema exists: the store creates it before migrating.)
fn migrate_postgres(conn: &Conn) -> Result<(), StoreError> {
    with_start_up_lock(conn, || {
        let from = current_version(conn)?;
        if from > SCHEMA_VERSION {
            return Err(StoreError::Internal(format!(
                "database schema version {from} is newer than this bak supports ({SCHEMA_VERSION}); upgrade bak"
            )));
        }
        for (version, step) in PG_STEPS.iter().filter(|(v, _)| *v > from) {
            conn.execute_batch("BEGIN")?;
            let applied = apply_step(conn, version - 1, step);
            if applied.is_err() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            applied?;
        }
        // The lowercasing filters' `~` uses, as Rust's: installed at every start (a new binary
        // may bring new Unicode), under this lock (two concurrent `CREATE OR REPLACE` of one
        // function can fail).
        conn.execute_batch(bakend_filter::postgres_functions_sql())
            .map_err(|e| StoreError::Internal(format!("installing bak_lower failed: {e}")))?;
        Ok(())
    })
}

/// Runs `f` holding the schema's start-up lock (PostgreSQL; a session-level advisory lock):
/// what several servers starting at once must do one at a time — the system migrations, and
/// the journal's epoch when it is first set. On SQLite `f` just runs (one server per file).
pub fn with_start_up_lock<T>(
    conn: &Conn,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    if conn.backend() == Backend::Sqlite {
        return f();
    }
    let key = advisory_key(conn, "bakend:migrate")?;
    conn.execute("SELECT pg_advisory_lock(?1)", [key])?;
    let result = f();
    let _ = conn.execute("SELECT pg_advisory_unlock(?1)", [key]);
    result
}

/// A PostgreSQL advisory lock key for `purpose` in this connection's schema (several Bakend
/// apps may share one database in different schemas).
pub fn advisory_key(conn: &Conn, purpose: &str) -> Result<i64, StoreError> {
    let schema: String = conn.query_row("SELECT current_schema()::text", (), |r| r.get(0))?;
    Ok(advisory_key_for(&schema, purpose))
}

/// [`advisory_key`] for a schema known by name.
pub fn advisory_key_for(schema: &str, purpose: &str) -> i64 {
    // FNV-1a: stable across versions and platforms, unlike `DefaultHasher`.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in purpose.bytes().chain([0]).chain(schema.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Step `i` and its version bump, inside the caller's transaction, then the commit.
fn apply_step(conn: &Conn, i: usize, step: &str) -> Result<(), StoreError> {
    conn.execute_batch(step)?;
    conn.execute(
        "INSERT INTO _bakend_meta(key, value, created_at) VALUES('schema_version', ?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        ((i + 1).to_string(), bakend_core::time::now_iso()),
    )?;
    conn.execute_batch("COMMIT")?;
    Ok(())
}

/// Reads a `_bakend_meta` value.
pub fn meta_get(conn: &Conn, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT value FROM _bakend_meta WHERE key = ?1",
            [key],
            |r| r.get(0),
        )
        .optional()?)
}

/// Writes a `_bakend_meta` value (inside the caller's transaction).
pub fn meta_set(conn: &Conn, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO _bakend_meta(key, value, created_at) VALUES(?1, ?2, ?3)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value, bakend_core::time::now_iso()),
    )?;
    Ok(())
}
