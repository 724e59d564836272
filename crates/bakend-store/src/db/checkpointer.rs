//! WAL checkpoints on their own thread. Left to SQLite, the writer would checkpoint inside a
//! commit every 1000 pages — copying pages into the database file and fsyncing it while every
//! waiting write stalls behind it. Here a separate connection copies committed frames in the
//! background (`PASSIVE`: it never blocks the writer or readers), so commits stay short.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::connection;

const INTERVAL: Duration = Duration::from_millis(100);

pub struct Checkpointer {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<()>,
}

impl Checkpointer {
    pub fn spawn(path: &Path) -> std::io::Result<Checkpointer> {
        let conn = connection::open(path).map_err(std::io::Error::other)?;
        let (stop, rx) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("bakend-sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(INTERVAL) {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", (), |_| Ok(()))
                    {
                        tracing::warn!("Background WAL checkpoint failed: {e}");
                    }
                }
            })?;
        Ok(Checkpointer { stop, handle })
    }

    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.join();
    }
}
