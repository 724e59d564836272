//! Database plumbing: connections, the system schema, the writer thread and the reader pool.

pub mod carrier;
mod checkpointer;
mod connection;
pub mod copy;
pub mod journal;
mod lock;
pub mod migrations;
pub mod nodes;
mod readers;
pub mod sequencer;
pub mod snapshot;
mod writer;

#[cfg(test)]
mod postgres_tests;

use bakend_core::sync;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bakend_core::config::{DatabaseLocation, PostgresSettings, redact_url};
use bakend_events::EventBus;

pub use connection::open as open_connection;
pub use lock::{DbLock, Sharing};
pub use writer::{Committed, Isolation, MAX_BATCH, WriterStats};

use crate::error::StoreError;
use crate::sql::{Backend, Conn, PgConn};
use writer::{JournalLock, Writer};

const READERS: usize = 4;

/// The database: one writer thread, a pool of readers.
pub struct Database {
    writer: Writer,
    /// `None` when the event journal is off.
    journal: Option<journal::JournalInfo>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<checkpointer::Checkpointer>>,
    /// PostgreSQL: reads the events other servers on the database journal.
    follower: Mutex<Option<sequencer::Follower>>,
    sequencer: Option<Arc<sequencer::Sequencer>>,
    readers: readers::Readers,
    /// The SQLite file (`None` on PostgreSQL).
    path: Option<PathBuf>,
    /// Set for `:memory:` databases, which live in a private temporary directory.
    _temp: Option<TempDirGuard>,
}

struct TempDirGuard(PathBuf);

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A connection to the PostgreSQL store, its schema made and migrated to this build's
/// version (what a server does first; `bak backup` too).
pub fn connect_postgres(settings: &PostgresSettings) -> Result<Conn, StoreError> {
    let conn = Conn::from(PgConn::connect(settings)?);
    let schema = &settings.options.schema;
    conn.execute_batch(&format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        crate::sql::quote_ident(schema)
    ))
    .map_err(|e| {
        StoreError::Internal(format!(
            "cannot use schema \"{schema}\" in PostgreSQL at {}: {e}",
            redact_url(&settings.url)
        ))
    })?;
    migrations::migrate(&conn)?;
    Ok(conn)
}

impl Database {
    /// Opens (creating if needed) the database and brings the system schema up to date, with
    /// the event journal on. Blocking: call it before the async runtime serves requests, or on
    /// a blocking thread.
    pub fn open(
        location: &DatabaseLocation,
        bus: Arc<dyn EventBus>,
    ) -> Result<Database, StoreError> {
        Self::open_with(location, bus, Some(journal::DEFAULT_SEGMENT))
    }

    /// [`Database::open`] with the event journal off (`None`) or on; the segment size applies
    /// when the journal is created (an existing journal keeps its own).
    pub fn open_with(
        location: &DatabaseLocation,
        bus: Arc<dyn EventBus>,
        journal_segment: Option<u64>,
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
            DatabaseLocation::Postgres(settings) => {
                return Self::open_postgres(settings, bus, journal_segment);
            }
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let conn = connection::open(&path)?;
        // Checkpoints happen on their own thread (see `checkpointer`); the writer keeps a
        // larger page cache because it touches the hot end of every index on every commit.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "cache_size", -16_384)?;
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        let conn = Conn::from(conn);
        migrations::migrate(&conn)?;
        let journal_info = match journal_segment {
            Some(segment) => Some(journal::open(&conn, segment)?),
            None => None,
        };
        let checkpointer = checkpointer::Checkpointer::spawn(&path)?;
        let readers = readers::Readers::spawn(&path, READERS)?;
        let lock = journal_info.as_ref().map(|_| JournalLock::Sqlite);
        let (writer, handle) = Writer::spawn(conn, bus, lock, None, None)?;
        tracing::debug!("Database initialized at {}", path.display());
        Ok(Database {
            writer,
            journal: journal_info,
            writer_thread: Mutex::new(Some(handle)),
            checkpointer: Mutex::new(Some(checkpointer)),
            follower: Mutex::new(None),
            sequencer: None,
            readers,
            path: Some(path),
            _temp: temp,
        })
    }

    /// PostgreSQL: the schema (created if missing) brought up to date under an advisory lock,
    /// one writer connection, and up to `poolSize - 1` reader connections opened as reads need
    /// them.
    fn open_postgres(
        settings: &PostgresSettings,
        bus: Arc<dyn EventBus>,
        journal_segment: Option<u64>,
    ) -> Result<Database, StoreError> {
        let conn = connect_postgres(settings)?;
        let schema = &settings.options.schema;
        // Servers starting together must agree on one epoch: the first sets it.
        let journal_info = migrations::with_start_up_lock(&conn, || match journal_segment {
            Some(segment) => Ok(Some(journal::open(&conn, segment)?)),
            None => Ok(None),
        })?;
        let lock = match journal_info {
            Some(_) => Some(JournalLock::Postgres(migrations::advisory_key(
                &conn,
                "bakend:journal",
            )?)),
            None => None,
        };
        let reconnect_settings = settings.clone();
        let open: Arc<readers::Opener> =
            Arc::new(move || Ok(Conn::from(PgConn::connect(&reconnect_settings)?)));
        let readers = readers::Readers::spawn_lazy(
            (settings.options.pool_size.max(2) - 1) as usize,
            open.clone(),
        )?;
        // Other servers may write the same journal: events reach this server's consumers in
        // seq order, theirs read from the journal (`sequencer`).
        let sequencer = journal_info.as_ref().map(|info| {
            sequencer::Sequencer::new(
                bus.clone(),
                info.last_seq,
                schema,
                settings.options.node_id.as_deref(),
            )
        });
        let writer_bus = match &sequencer {
            Some(s) => s.clone() as Arc<dyn EventBus>,
            None => bus,
        };
        let (writer, handle) =
            Writer::spawn(conn, writer_bus, lock, Some(open), sequencer.clone())?;
        let follower = match &sequencer {
            Some(s) => Some(sequencer::Follower::spawn(s.clone(), settings.clone())?),
            None => None,
        };
        tracing::debug!(
            "Database initialized in PostgreSQL at {} (schema {schema})",
            redact_url(&settings.url)
        );
        Ok(Database {
            writer,
            journal: journal_info,
            writer_thread: Mutex::new(Some(handle)),
            checkpointer: Mutex::new(None),
            follower: Mutex::new(follower),
            sequencer,
            readers,
            path: None,
            _temp: None,
        })
    }

    /// PostgreSQL: how writes tell the other servers on the database something (`None` on
    /// SQLite, where no other server can be).
    pub fn peers(&self) -> Option<sequencer::Peers> {
        Some(self.sequencer.as_ref()?.peers())
    }

    /// PostgreSQL: what orders this server's and the other servers' events (`None` on SQLite
    /// or without a journal). A cluster attaches its carrier to it.
    pub fn sequencer(&self) -> Option<&Arc<sequencer::Sequencer>> {
        self.sequencer.as_ref()
    }

    /// PostgreSQL: where messages from other servers go ([`sequencer::Peers::tell`]).
    pub fn on_peer_message(&self, handler: sequencer::PeerHandler) {
        if let Some(s) = &self.sequencer {
            s.on_peer_message(handler);
        }
    }

    pub fn writer_stats(&self) -> &WriterStats {
        self.writer.stats()
    }

    /// The SQLite file; `None` on PostgreSQL.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Which store this database is.
    pub fn backend(&self) -> Backend {
        match self.path {
            Some(_) => Backend::Sqlite,
            None => Backend::Postgres,
        }
    }

    /// The journal's epoch and the last seq at open; `None` when the journal is off.
    pub fn journal(&self) -> Option<&journal::JournalInfo> {
        self.journal.as_ref()
    }

    /// Journaled events after `after` up to `upto` that `wanted(type, record)` accepts (see
    /// [`journal::read_range`]).
    pub async fn read_journal(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
        wanted: journal::EventFilter,
    ) -> Result<Option<Vec<journal::JournalEntry>>, StoreError> {
        self.read(move |conn| journal::read_range(conn, after, upto, limit, &*wanted))
            .await
    }

    /// One trimming step (see [`journal::trim_segment`]), through the writer so it never
    /// contends with it for the write lock.
    pub async fn trim_journal(&self, max_events: u64, max_age_ms: i64) -> Result<u64, StoreError> {
        self.write(move |conn| {
            journal::trim_segment(conn, max_events, max_age_ms).map(Committed::new)
        })
        .await
    }

    /// Runs `f` on a read connection, on one of the reader threads (see [`readers`]).
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        self.readers.run(f).await
    }

    /// Runs `f` on the writer thread inside the current group transaction. Resolves after the
    /// commit is on disk and the write's events have been emitted.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<Committed<T>, StoreError> + Send + 'static,
    {
        self.writer.write(Isolation::Savepoint, f).await
    }

    /// Like [`Database::write`] for a write that makes at most one modifying statement (plus
    /// any number of reads). Cheaper: no savepoint.
    pub async fn write_single<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<Committed<T>, StoreError> + Send + 'static,
    {
        self.writer.write(Isolation::SingleStatement, f).await
    }

    /// Stops the writer after the queued writes and waits until it has closed the database
    /// (which checkpoints the WAL). Writes submitted afterwards fail with `WriterStopped`.
    pub fn close(&self) {
        let checkpointer = sync::lock(&self.checkpointer).take();
        if let Some(c) = checkpointer {
            c.stop();
        }
        self.writer.stop();
        let handle = sync::lock(&self.writer_thread).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        let follower = sync::lock(&self.follower).take();
        if let Some(f) = follower {
            f.stop();
        }
    }
}
