//! The read connections: a few threads, each with its own connection, taking reads from one
//! queue. A read is handed over and its result comes back through a oneshot, so the async
//! side never blocks.
//!
//! Why not `spawn_blocking` over a connection pool: every read then took a blocking-pool thread
//! of its own, and with more reads in flight than connections those threads queued on the pool
//! — under 32 concurrent lists a third of the server's core went to waking and switching
//! threads. Here a fixed set of threads works through whatever is queued without sleeping in
//! between, so a busy server pays a wake-up per burst rather than per read.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use crate::sql::Conn;

use bakend_core::sync;

use crate::error::StoreError;

type Job = Box<dyn FnOnce(Result<&Conn, StoreError>) + Send>;

/// Opens a reader's connection.
pub type Opener = dyn Fn() -> Result<Conn, StoreError> + Send + Sync;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
    /// Threads waiting for work. A busy thread takes the next job without being told, so a
    /// job only wakes someone when someone sleeps (a notify is a system call even when
    /// nobody waits).
    idle: usize,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

pub struct Readers {
    shared: Arc<Shared>,
}

impl Readers {
    /// Opens `n` read connections to `path`, each on its own thread.
    pub fn spawn(path: &Path, n: usize) -> Result<Readers, StoreError> {
        let shared = Arc::new(Shared::default());
        for i in 0..n.max(1) {
            let conn = Conn::from(super::connection::open_reader(path)?);
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("bakend-reader-{i}"))
                .spawn(move || serve(&conn, &shared))?;
        }
        Ok(Readers { shared })
    }

    /// `n` threads that each open their connection with `open` when the first read reaches
    /// them (PostgreSQL: a server that reads little holds few connections), and open it again
    /// after it broke.
    pub fn spawn_lazy(n: usize, open: Arc<Opener>) -> Result<Readers, StoreError> {
        let shared = Arc::new(Shared::default());
        for i in 0..n.max(1) {
            let shared = shared.clone();
            let open = open.clone();
            std::thread::Builder::new()
                .name(format!("bakend-reader-{i}"))
                .spawn(move || serve_lazy(&*open, &shared))?;
        }
        Ok(Readers { shared })
    }

    /// Runs `f` on a read connection and hands back its result.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let wake = {
            let mut q = sync::lock(&self.shared.queue);
            if q.closed {
                return Err(StoreError::Internal("the database is closed".into()));
            }
            q.jobs
                .push_back(Box::new(move |conn: Result<&Conn, StoreError>| {
                    // The caller may have gone (a dropped request): nothing to tell.
                    let _ = tx.send(conn.and_then(f));
                }));
            q.idle > 0
        };
        if wake {
            self.shared.ready.notify_one();
        }
        rx.await
            .map_err(|_| StoreError::Internal("a read was dropped by its thread".into()))?
    }
}

impl Drop for Readers {
    /// The threads finish what is queued and end, closing their connections.
    fn drop(&mut self) {
        sync::lock(&self.shared.queue).closed = true;
        self.shared.ready.notify_all();
    }
}

fn serve(conn: &Conn, shared: &Shared) {
    while let Some(job) = next_job(shared) {
        // A panicking read must not take the thread (and its connection) with it: its caller
        // sees the dropped oneshot as an error.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(Ok(conn))));
    }
}

fn serve_lazy(open: &Opener, shared: &Shared) {
    let mut conn: Option<Conn> = None;
    while let Some(job) = next_job(shared) {
        if conn.as_ref().is_some_and(|c| !c.is_usable()) {
            conn = None;
        }
        if conn.is_none() {
            match open() {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    job(Err(e));
                    continue;
                }
            }
        }
        if let Some(c) = &conn {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(Ok(c))));
        }
    }
}

/// The next read to run; `None` once the readers are closed and the queue is empty.
fn next_job(shared: &Shared) -> Option<Job> {
    let mut q = sync::lock(&shared.queue);
    loop {
        if let Some(job) = q.jobs.pop_front() {
            return Some(job);
        }
        if q.closed {
            return None;
        }
        q.idle += 1;
        q = shared.ready.wait(q).unwrap_or_else(|e| e.into_inner());
        q.idle -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_run_concurrently_and_survive_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        super::super::connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (41);")
            .unwrap();
        let readers = Arc::new(Readers::spawn(&path, 2).unwrap());
        let mut tasks = Vec::new();
        for i in 0..50 {
            let r = readers.clone();
            tasks.push(tokio::spawn(async move {
                r.run(move |c| Ok(c.query_row("SELECT n + ?1 FROM t", [i], |r| r.get::<i64>(0))?))
                    .await
                    .unwrap()
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), 41 + i as i64);
        }
        let failed = readers
            .run(|_| -> Result<(), StoreError> { panic!("boom") })
            .await;
        assert!(failed.is_err());
        assert_eq!(
            readers
                .run(|c| Ok(c.query_row("SELECT n FROM t", (), |r| r.get::<i64>(0))?))
                .await
                .unwrap(),
            41,
            "the thread is still serving"
        );
    }
}
