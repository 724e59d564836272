//! The single writer thread. Every write in the process goes through it.
//!
//! It takes whatever writes are queued (up to [`MAX_BATCH`]), runs each in its own savepoint
//! inside one transaction and commits once: one fsync for the whole group. A write that fails
//! rolls back its savepoint only. After the commit, each successful write's follow-up runs, its
//! events are emitted in commit order, and only then is its caller answered — so a caller never
//! hears "done" for something that is not on disk, and nobody sees an event for a rolled-back
//! write.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::sql::{Backend, Conn};
use bakend_core::Event;
use bakend_events::EventBus;
use tokio::sync::{mpsc, oneshot};

use super::readers::Opener;
use super::sequencer::Sequencer;
use crate::error::StoreError;

/// Most writes committed together.
pub const MAX_BATCH: usize = 512;
/// Writes that may wait for the writer before callers are made to wait for a slot.
pub const QUEUE_DEPTH: usize = 8192;

type AfterCommit = Box<dyn FnOnce() + Send>;

/// What a successful write hands back to the writer: the caller's value, the events to emit
/// after the commit, and an optional step to run after the commit (before the events), used to
/// update in-memory state such as the collection registry.
pub struct Committed<T> {
    pub value: T,
    pub events: Vec<Event>,
    pub after_commit: Option<AfterCommit>,
}

impl<T> Committed<T> {
    pub fn new(value: T) -> Self {
        Committed {
            value,
            events: Vec::new(),
            after_commit: None,
        }
    }

    pub fn event(mut self, e: Event) -> Self {
        self.events.push(e);
        self
    }

    pub fn then(mut self, f: impl FnOnce() + Send + 'static) -> Self {
        self.after_commit = Some(Box::new(f));
        self
    }
}

/// How a write is isolated from the others in its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// In its own savepoint: any number of statements, all undone if the write fails.
    Savepoint,
    /// The write makes at most one modifying statement, which SQLite already applies
    /// atomically; skipping the savepoint saves copying every touched page into the
    /// sub-journal.
    SingleStatement,
}

trait Job: Send {
    fn isolation(&self) -> Isolation;
    /// Runs the write; `Some` means it succeeded and should be committed.
    fn run(&mut self, conn: &Conn) -> Option<(Vec<Event>, Option<AfterCommit>)>;
    fn finish(self: Box<Self>, commit: Result<(), CommitError>);
}

/// Why a group did not commit, told to each of its writes.
#[derive(Clone, Debug)]
enum CommitError {
    Failed(String),
    /// The database server went away (PostgreSQL): the writes may be retried once it is back.
    Unavailable(String),
}

impl CommitError {
    fn of(conn: &Conn, message: String, unavailable: bool) -> CommitError {
        if unavailable || !conn.is_usable() {
            CommitError::Unavailable(message)
        } else {
            CommitError::Failed(message)
        }
    }
}

struct ClosureJob<T, F> {
    isolation: Isolation,
    f: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for ClosureJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Conn) -> Result<Committed<T>, StoreError> + Send + 'static,
{
    fn isolation(&self) -> Isolation {
        self.isolation
    }

    fn run(&mut self, conn: &Conn) -> Option<(Vec<Event>, Option<AfterCommit>)> {
        let f = self.f.take()?;
        let outcome = catch_unwind(AssertUnwindSafe(|| f(conn)))
            .unwrap_or_else(|_| Err(StoreError::Internal("a write panicked".into())));
        match outcome {
            Ok(c) => {
                self.result = Some(Ok(c.value));
                Some((c.events, c.after_commit))
            }
            Err(e) => {
                self.result = Some(Err(e));
                None
            }
        }
    }

    fn finish(self: Box<Self>, commit: Result<(), CommitError>) {
        let result = match (self.result, commit) {
            // Not committed, whether the write ran (and succeeded) or never got to run.
            (Some(Ok(_)) | None, Err(CommitError::Failed(msg))) => Err(StoreError::Commit(msg)),
            (Some(Ok(_)) | None, Err(CommitError::Unavailable(msg))) => Err(StoreError::Connect(
                format!("the database is unavailable: {msg}"),
            )),
            (Some(r), _) => r,
            (None, _) => Err(StoreError::Internal("write was not run".into())),
        };
        // The caller may have gone away (client disconnected); the write stands regardless.
        let _ = self.reply.send(result);
    }
}

/// Handle for submitting writes.
enum Msg {
    Job(Box<dyn Job>),
    /// Finish what is queued ahead, then close the database and end the thread.
    Stop,
}

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    stats: Arc<WriterStats>,
}

/// Counters of the writer thread, readable while it runs.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed (one fsync each).
    pub commits: std::sync::atomic::AtomicU64,
    /// Writes committed.
    pub writes: std::sync::atomic::AtomicU64,
    /// Writes that failed and were rolled back alone.
    pub failed: std::sync::atomic::AtomicU64,
}

impl Writer {
    /// Starts the writer thread on `conn`. The thread ends when every `Writer` clone is dropped,
    /// and closes the connection (which checkpoints the WAL).
    pub fn spawn(
        conn: Conn,
        bus: Arc<dyn EventBus>,
        journal: Option<JournalLock>,
        reopen: Option<Arc<Opener>>,
        sequencer: Option<Arc<Sequencer>>,
    ) -> std::io::Result<(Writer, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel::<Msg>(QUEUE_DEPTH);
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let handle = std::thread::Builder::new()
            .name("bakend-writer".into())
            .spawn(move || run_writer(conn, rx, bus, journal, reopen, sequencer, &thread_stats))?;
        Ok((Writer { tx, stats }, handle))
    }

    pub async fn write<T, F>(&self, isolation: Isolation, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<Committed<T>, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(ClosureJob {
            isolation,
            f: Some(f),
            result: None,
            reply,
        });
        self.tx
            .send(Msg::Job(job))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        rx.await.map_err(|_| StoreError::WriterStopped)?
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Asks the writer to stop after the writes queued so far.
    pub fn stop(&self) {
        // `blocking_send` would panic inside a runtime; a full queue only delays the stop until
        // the queue drains, so retry briefly.
        let mut msg = Msg::Stop;
        for _ in 0..1000 {
            match self.tx.try_send(msg) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(m)) => {
                    msg = m;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        }
    }
}

fn run_writer(
    mut conn: Conn,
    mut rx: mpsc::Receiver<Msg>,
    bus: Arc<dyn EventBus>,
    journal: Option<JournalLock>,
    reopen: Option<Arc<Opener>>,
    sequencer: Option<Arc<Sequencer>>,
    stats: &WriterStats,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    // PostgreSQL: the lock each group takes first (see `run_batch`).
    let write_lock = match conn.backend() {
        Backend::Postgres => super::migrations::advisory_key(&conn, "bakend:write").ok(),
        Backend::Sqlite => None,
    };
    let mut stopping = false;
    let mut last_batch = 0;
    while !stopping {
        match rx.blocking_recv() {
            Some(Msg::Job(job)) => batch.push(job),
            Some(Msg::Stop) | None => break,
        }
        // Gather what is queued. Under load, yielding once when the queue looks empty lets
        // request threads that share this core hand over the writes they are parsing, so one
        // commit (one fsync) serves more of them. When writes arrive one at a time there is
        // nothing to wait for, and a yield would only let other work (a big realtime fan-out)
        // delay this commit, so the writer yields only after a batch of several writes.
        let mut yielded = last_batch < 2;
        while batch.len() < MAX_BATCH && !stopping {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => batch.push(job),
                Ok(Msg::Stop) => stopping = true,
                Err(_) if !yielded => {
                    yielded = true;
                    std::thread::yield_now();
                }
                Err(_) => break,
            }
        }
        last_batch = batch.len();
        // PostgreSQL: a server that restarted closed this connection; open a new one for the
        // group (or fail it as unavailable and try again with the next).
        if !conn.is_usable()
            && let Some(open) = &reopen
        {
            match open() {
                Ok(c) => conn = c,
                Err(e) => {
                    let failure = CommitError::Unavailable(e.to_string());
                    for job in batch.drain(..) {
                        job.finish(Err(failure.clone()));
                    }
                    continue;
                }
            }
        }
        run_batch(
            &mut conn,
            &mut batch,
            bus.as_ref(),
            (write_lock, journal),
            sequencer.as_deref(),
            stats,
        );
    }
    rx.close();
    if let Err(e) = conn.close() {
        tracing::error!("Closing the database failed: {e}");
    }
}

fn run_batch(
    conn: &mut Conn,
    batch: &mut Vec<Box<dyn Job>>,
    bus: &dyn EventBus,
    (write_lock, journal): (Option<i64>, Option<JournalLock>),
    sequencer: Option<&Sequencer>,
    stats: &WriterStats,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let postgres = conn.backend() == Backend::Postgres;
    // SQLite: take the write lock now, so the group never fails half-way for want of it.
    // PostgreSQL: several servers may write at once, and a group that writes two collections
    // takes their count rows (`collections::counts`) in its own order: two groups taking them
    // in opposite orders would deadlock. A transaction-scoped lock taken first makes the
    // servers' groups take turns, as SQLite's one write lock does.
    // (One round trip for both statements.)
    let begin = match (postgres, write_lock) {
        (false, _) => std::borrow::Cow::Borrowed("BEGIN IMMEDIATE"),
        (true, None) => "BEGIN".into(),
        (true, Some(key)) => format!("BEGIN; SELECT pg_advisory_xact_lock({key})").into(),
    };
    if let Err(e) = conn.execute_batch(&begin) {
        let _ = conn.execute_batch("ROLLBACK");
        let failure = CommitError::of(conn, e.to_string(), e.is_unavailable());
        for job in batch.drain(..) {
            job.finish(Err(failure.clone()));
        }
        return;
    }
    let mut outcomes = Vec::with_capacity(batch.len());
    for job in batch.iter_mut() {
        let outcome = match job.isolation() {
            Isolation::SingleStatement if !postgres => job.run(conn),
            // On PostgreSQL a failed statement aborts the whole transaction: only a savepoint
            // lets the rest of the group commit without it.
            _ => run_in_savepoint(conn, job.as_mut()),
        };
        outcomes.push(outcome);
    }
    // Each event is journaled in the transaction of the change that caused it: no change
    // commits without its events, and no event is journaled for a rolled-back change.
    let (journaled, journal_error) = match journal {
        Some(lock) => {
            match append_to_journal(conn, lock, sequencer.map(|s| s.id.as_str()), &mut outcomes) {
                Ok(seqs) => (seqs, None),
                Err(e) => (None, Some(e)),
            }
        }
        None => (None, None),
    };
    // Other servers on the database: this group's seqs are this server's to emit, and the
    // commit wakes their followers (a notification is sent when the transaction commits; it
    // goes with the `COMMIT`, in one round trip).
    // With a connected carrier (a cluster's NATS) the events travel that way instead.
    let commit_sql = match (&journal_error, sequencer, journaled) {
        (None, Some(seq), Some((first, last))) => {
            seq.reserve(first, last);
            if seq.carrier().is_some_and(|c| c.connected()) {
                std::borrow::Cow::Borrowed("COMMIT")
            } else {
                format!("SELECT pg_notify('{}', '{}'); COMMIT", seq.channel, seq.id).into()
            }
        }
        _ => std::borrow::Cow::Borrowed("COMMIT"),
    };
    #[cfg(test)]
    tests_support::delay_commit();
    let commit = match journal_error {
        Some(e) => Err(CommitError::of(
            conn,
            format!("writing the event journal failed: {e}"),
            matches!(e, StoreError::Connect(_)),
        )),
        None => conn
            .execute_batch(&commit_sql)
            .map_err(|e| CommitError::of(conn, e.to_string(), e.is_unavailable())),
    };
    if commit.is_ok() {
        let ok = outcomes.iter().filter(|o| o.is_some()).count() as u64;
        stats.commits.fetch_add(1, Relaxed);
        stats.writes.fetch_add(ok, Relaxed);
        stats.failed.fetch_add(outcomes.len() as u64 - ok, Relaxed);
    }
    if let Err(CommitError::Failed(msg) | CommitError::Unavailable(msg)) = &commit {
        tracing::error!("Commit of {} write(s) failed: {msg}", batch.len());
        let _ = conn.execute_batch("ROLLBACK");
        if let (Some(seq), Some((first, last))) = (sequencer, journaled) {
            seq.release(first, last);
        }
    }
    if commit.is_ok()
        && journaled.is_some()
        && let Some(seq) = sequencer
    {
        seq.publish(
            outcomes
                .iter()
                .flatten()
                .flat_map(|(events, _)| events.iter()),
        );
    }
    for (job, outcome) in batch.drain(..).zip(outcomes) {
        if commit.is_ok()
            && let Some((events, after)) = outcome
        {
            if let Some(after) = after {
                after();
            }
            for e in events {
                bus.emit(e);
            }
        }
        job.finish(commit.clone());
    }
}

/// How the journal's seqs are kept in commit order.
#[derive(Clone, Copy, Debug)]
pub enum JournalLock {
    /// SQLite: `BEGIN IMMEDIATE` already holds the database's one write lock.
    Sqlite,
    /// PostgreSQL: several servers (and connections) commit concurrently, and a sequence
    /// handed out before commit could become visible out of order. Seqs are assigned under
    /// this transaction-scoped advisory lock, taken after the group's writes and right before
    /// its commit: PostgreSQL makes a commit visible before it releases the transaction's
    /// locks, so the next holder reads the last seq only after the previous batch is visible —
    /// seqs are contiguous, in commit order, and no reader sees N+1 before N. One lock hold
    /// serves the whole group.
    Postgres(i64),
}

/// Numbers and journals the events of the group's successful writes, in order, after the
/// writes and right before the commit (see [`JournalLock`]).
/// The seqs assigned, `(first, last)`, if any.
fn append_to_journal(
    conn: &Conn,
    lock: JournalLock,
    node: Option<&str>,
    outcomes: &mut [Option<(Vec<Event>, Option<AfterCommit>)>],
) -> Result<Option<(u64, u64)>, StoreError> {
    let any = outcomes
        .iter()
        .flatten()
        .any(|(events, _)| !events.is_empty());
    if !any {
        return Ok(None);
    }
    if let JournalLock::Postgres(key) = lock {
        conn.execute("SELECT pg_advisory_xact_lock(?1)", [key])?;
    }
    // Read under the lock, so another process's writes (a CLI command, another server) are
    // accounted for.
    let mut appender = super::journal::Appender::start(conn, node)?;
    let first = appender.next();
    for (events, _) in outcomes.iter_mut().flatten() {
        for e in events.iter_mut() {
            appender.append(conn, e)?;
        }
    }
    let last = appender.next() - 1;
    appender.finish(conn, first)?;
    Ok(Some((first, last)))
}

fn run_in_savepoint(conn: &Conn, job: &mut dyn Job) -> Option<(Vec<Event>, Option<AfterCommit>)> {
    let exec = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute(()));
    if exec("SAVEPOINT w").is_err() {
        // Without a savepoint a failure could not be undone alone: fail this write.
        return None;
    }
    let outcome = job.run(conn);
    if outcome.is_none() {
        let _ = exec("ROLLBACK TO w");
    }
    let _ = exec("RELEASE w");
    outcome
}

#[cfg(test)]
pub(crate) mod tests_support {
    //! A test hook: a random pause between the journal append and the commit, so tests can
    //! widen the window in which a concurrent committer could be seen out of order.
    use std::sync::atomic::{AtomicU64, Ordering};

    /// The longest pause, in microseconds (0: none).
    pub static MAX_COMMIT_DELAY_US: AtomicU64 = AtomicU64::new(0);

    pub fn delay_commit() {
        let max = MAX_COMMIT_DELAY_US.load(Ordering::Relaxed);
        if max == 0 {
            return;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut x = u64::from(nanos) | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(std::time::Duration::from_micros(x % max));
    }
}
