//! Database plumbing: connections, the system schema, the writer thread and the reader pool.

mod checkpointer;
mod connection;
pub mod migrations;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bakend_core::config::DatabaseLocation;
use bakend_events::EventBus;
use rusqlite::Connection;

pub use connection::open as open_connection;
pub use writer::{Committed, Isolation, MAX_BATCH, WriterStats};

use crate::error::StoreError;
use writer::Writer;

const READERS: u32 = 4;

/// The database: one writer thread, a pool of readers.
pub struct Database {
    writer: Writer,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<checkpointer::Checkpointer>>,
    readers: r2d2::Pool<connection::ReadManager>,
    path: PathBuf,
    /// Set for `:memory:` databases, which live in a private temporary directory.
    _temp: Option<TempDirGuard>,
}

struct TempDirGuard(PathBuf);

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Database {
    /// Opens (creating if needed) the database and brings the system schema up to date.
    /// Blocking: call it before the async runtime serves requests, or on a blocking thread.
    pub fn open(
        location: &DatabaseLocation,
        bus: Arc<dyn EventBus>,
    ) -> Result<Database, StoreError> {
        let (path, temp) = match location {
            DatabaseLocation::File(p) => (p.clone(), None),
            // Readers and the writer must see the same database, which a true in-memory SQLite
            // database cannot offer across connections; a private temporary file can.
            DatabaseLocation::Memory => {
                let dir = std::env::temp_dir().join(bakend_core::ids::new_id("bakend-mem-"));
                std::fs::create_dir_all(&dir)?;
                (dir.join("memory.db"), Some(TempDirGuard(dir)))
            }
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut conn = connection::open(&path)?;
        migrations::migrate(&mut conn)?;
        // Checkpoints happen on their own thread (see `checkpointer`); the writer keeps a
        // larger page cache because it touches the hot end of every index on every commit.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "cache_size", -16_384)?;
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        let checkpointer = checkpointer::Checkpointer::spawn(&path)?;
        let readers = r2d2::Pool::builder()
            .max_size(READERS)
            .min_idle(Some(1))
            .build(connection::ReadManager { path: path.clone() })?;
        let (writer, handle) = Writer::spawn(conn, bus)?;
        tracing::debug!("Database initialized at {}", path.display());
        Ok(Database {
            writer,
            writer_thread: Mutex::new(Some(handle)),
            checkpointer: Mutex::new(Some(checkpointer)),
            readers,
            path,
            _temp: temp,
        })
    }

    pub fn writer_stats(&self) -> &WriterStats {
        self.writer.stats()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a read connection on a blocking thread.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.get()?;
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?
    }

    /// Runs `f` on the writer thread inside the current group transaction. Resolves after the
    /// commit is on disk and the write's events have been emitted.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<Committed<T>, StoreError> + Send + 'static,
    {
        self.writer.write(Isolation::Savepoint, f).await
    }

    /// Like [`Database::write`] for a write that makes at most one modifying statement (plus
    /// any number of reads). Cheaper: no savepoint.
    pub async fn write_single<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<Committed<T>, StoreError> + Send + 'static,
    {
        self.writer.write(Isolation::SingleStatement, f).await
    }

    /// Stops the writer after the queued writes and waits until it has closed the database
    /// (which checkpoints the WAL). Writes submitted afterwards fail with `WriterStopped`.
    pub fn close(&self) {
        let checkpointer = self.checkpointer.lock().ok().and_then(|mut c| c.take());
        if let Some(c) = checkpointer {
            c.stop();
        }
        self.writer.stop();
        let handle = self.writer_thread.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}
