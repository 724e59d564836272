//! One server per database. A running server holds an exclusive advisory lock (`flock`) on
//! `<database>.lock` next to the database file; commands that must not run beside a server
//! (`bak migrate apply`, `bak backup restore`) take the same lock, so they refuse while a
//! server runs and a server refuses to start while they run. The kernel drops the lock when
//! its process dies, so a crashed server never leaves a stale lock behind. The lock file itself
//! is never removed (removing it would let two processes lock two different files).
//!
//! On PostgreSQL several servers may share one database (a cluster), so the lock is a
//! PostgreSQL session-level advisory lock per schema, held on a connection of its own: each
//! server holds it *shared*, and those commands take it *exclusive* — they refuse while any
//! server runs, and servers refuse to start while one of them runs. PostgreSQL drops it when
//! the connection ends, so a crashed server leaves nothing behind either.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use bakend_core::config::{PostgresSettings, redact_url};

use crate::error::StoreError;
use crate::sql::{Conn, PgConn};

/// Held for as long as it lives.
#[derive(Debug)]
pub struct DbLock {
    hold: Hold,
    /// The lock file, or the redacted URL and schema on PostgreSQL (for messages).
    path: PathBuf,
}

#[derive(Debug)]
enum Hold {
    File(#[allow(dead_code)] File),
    Postgres(Option<Conn>),
}

impl Drop for DbLock {
    fn drop(&mut self) {
        // Ending the session releases the lock. The synchronous client must not close inside
        // an async runtime's thread, so it closes on a thread of its own (waited for: the lock
        // is free when the drop returns).
        if let Hold::Postgres(conn) = &mut self.hold
            && let Some(conn) = conn.take()
        {
            let _ = std::thread::spawn(move || drop(conn)).join();
        }
    }
}

/// How a holder shares the database with others (PostgreSQL only: a SQLite database has one
/// holder).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// A server: other servers may run beside it.
    Server,
    /// `bak migrate apply`, `bak backup restore`: nothing else may run.
    Exclusive,
}

impl DbLock {
    /// The lock file of a database file.
    pub fn path_for(database: &Path) -> PathBuf {
        let mut name = database.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the lock, or says who holds it: `Ok(None)` means another process (a running
    /// server, or another command) has it. Creates the lock file (and its folder) if needed.
    pub fn try_acquire(database: &Path) -> Result<Option<DbLock>, StoreError> {
        let path = Self::path_for(database);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(DbLock {
                hold: Hold::File(file),
                path,
            })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e.into()),
        }
    }

    /// Takes the lock or fails with a message naming what to stop.
    pub fn acquire_or(database: &Path, what: &str) -> Result<DbLock, StoreError> {
        Self::try_acquire(database)?.ok_or_else(|| {
            StoreError::Locked(format!(
                "{what}: a Bakend server (or another bak command) is using the database {}. Stop it first.",
                database.display()
            ))
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The PostgreSQL lock of `settings`' schema, shared by servers or taken alone by a
    /// command; `Ok(None)` when a holder of the other kind (or, for `Exclusive`, any holder)
    /// has it. Blocking: call it off the async threads.
    pub fn try_acquire_postgres(
        settings: &PostgresSettings,
        sharing: Sharing,
    ) -> Result<Option<DbLock>, StoreError> {
        let conn = Conn::from(PgConn::connect(settings)?);
        let key = super::migrations::advisory_key_for(&settings.options.schema, "bakend:servers");
        let sql = match sharing {
            Sharing::Server => "SELECT pg_try_advisory_lock_shared(?1)",
            Sharing::Exclusive => "SELECT pg_try_advisory_lock(?1)",
        };
        let got: bool = conn.query_row(sql, [key], |r| r.get(0))?;
        let path = PathBuf::from(format!(
            "{} (schema {})",
            redact_url(&settings.url),
            settings.options.schema
        ));
        let lock = DbLock {
            hold: Hold::Postgres(Some(conn)),
            path,
        };
        Ok(got.then_some(lock))
    }

    /// PostgreSQL: how many servers (and commands) hold the schema's lock now — this one
    /// included when it holds it.
    pub fn postgres_holders(conn: &Conn) -> Result<u64, StoreError> {
        let key = super::migrations::advisory_key(conn, "bakend:servers")?;
        // An advisory lock on a bigint key shows as classid = high half, objid = low half.
        let n: i64 = conn.query_row(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND classid::bigint = ?1 AND objid::bigint = ?2 AND objsubid = 1",
            ((key as u64 >> 32) as i64, (key as u64 & 0xffff_ffff) as i64),
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    /// [`DbLock::try_acquire_postgres`] exclusively, or fails with a message naming what to
    /// stop.
    pub fn acquire_postgres_or(
        settings: &PostgresSettings,
        what: &str,
    ) -> Result<DbLock, StoreError> {
        Self::try_acquire_postgres(settings, Sharing::Exclusive)?.ok_or_else(|| {
            StoreError::Locked(format!(
                "{what}: a Bakend server (or another bak command) is using the database {} (schema {}). Stop it first.",
                redact_url(&settings.url),
                settings.options.schema
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("bakend.db");
        let first = DbLock::try_acquire(&db).unwrap().unwrap();
        assert!(DbLock::try_acquire(&db).unwrap().is_none());
        assert!(
            DbLock::acquire_or(&db, "x")
                .unwrap_err()
                .to_string()
                .contains("Stop it first")
        );
        drop(first);
        assert!(DbLock::try_acquire(&db).unwrap().is_some());
    }

    /// Servers share the PostgreSQL lock; a command needs it alone, and a server cannot
    /// start while a command holds it.
    #[test]
    fn servers_share_the_postgres_lock_and_commands_need_it_alone() {
        let Some(schema) = crate::sql::testing::postgres("servers_share_the_postgres_lock") else {
            return;
        };
        let cfg = &schema.cfg;
        let a = DbLock::try_acquire_postgres(cfg, Sharing::Server).unwrap();
        let b = DbLock::try_acquire_postgres(cfg, Sharing::Server).unwrap();
        assert!(a.is_some() && b.is_some(), "two servers run at once");
        let refused = DbLock::acquire_postgres_or(cfg, "Cannot apply migrations").unwrap_err();
        let msg = refused.to_string();
        assert!(
            msg.contains("Stop it first") && msg.contains("(schema "),
            "{msg}"
        );
        drop((a, b));
        let cmd = DbLock::try_acquire_postgres(cfg, Sharing::Exclusive).unwrap();
        assert!(cmd.is_some(), "free once the servers are gone");
        assert!(
            DbLock::try_acquire_postgres(cfg, Sharing::Server)
                .unwrap()
                .is_none(),
            "no server starts during the command"
        );
        drop(cmd);
        assert!(
            DbLock::try_acquire_postgres(cfg, Sharing::Server)
                .unwrap()
                .is_some()
        );
    }
}
