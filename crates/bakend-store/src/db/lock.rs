//! One server per database. A running server holds an exclusive advisory lock (`flock`) on
//! `<database>.lock` next to the database file; commands that must not run beside a server
//! (`bak migrate apply`, `bak backup restore`) take the same lock, so they refuse while a
//! server runs and a server refuses to start while they run. The kernel drops the lock when
//! its process dies, so a crashed server never leaves a stale lock behind. The lock file itself
//! is never removed (removing it would let two processes lock two different files).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::StoreError;

/// Held for as long as it lives.
#[derive(Debug)]
pub struct DbLock {
    _file: File,
    path: PathBuf,
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
            Ok(()) => Ok(Some(DbLock { _file: file, path })),
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
}
