//! The realtime hub's view of the store's event journal, and its retention.

use std::sync::Arc;
use std::time::Duration;

use bakend_core::config::RealtimeConfig;
use bakend_realtime::journal::{EventFilter, ReplayFuture, SnapshotFuture};
use bakend_realtime::{JournalSource, Replayed, SnapshotSource};
use bakend_store::db::journal::JournalInfo;
use bakend_store::{Database, RecordStore, StoreError};

pub struct StoreJournal {
    pub db: Arc<Database>,
    pub info: JournalInfo,
}

impl JournalSource for StoreJournal {
    fn epoch(&self) -> &str {
        &self.info.epoch
    }

    fn last_seq(&self) -> u64 {
        self.info.last_seq
    }

    fn replay(&self, after: u64, upto: u64, limit: usize, wanted: EventFilter) -> ReplayFuture {
        let db = self.db.clone();
        Box::pin(async move {
            let rows = db
                .read_journal(after, upto, limit, wanted)
                .await
                .map_err(|e| e.to_string())?;
            Ok(rows.map(|rows| {
                rows.into_iter()
                    .map(|r| Replayed {
                        subject: r.subject,
                        envelope: r.envelope,
                        previous: r.previous,
                    })
                    .collect()
            }))
        })
    }
}

/// Records for per-record `snapshot`s.
pub struct RecordSnapshots(pub RecordStore);

impl SnapshotSource for RecordSnapshots {
    fn snapshot(&self, collection: &str, id: &str) -> SnapshotFuture {
        let store = self.0.clone();
        let (collection, id) = (collection.to_string(), id.to_string());
        Box::pin(async move {
            let c = match store.collection(&collection) {
                Ok(c) => c,
                // Not a collection: nothing to show (the channel is simply quiet).
                Err(StoreError::CollectionNotFound(_)) => return Ok((None, 0)),
                Err(e) => return Err(e.to_string()),
            };
            store
                .get_at_journal_seq(c, id)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

const TRIM_EVERY: Duration = Duration::from_secs(1);
/// Between chunks, so that a long trim interleaves with the writes it competes with.
const CHUNK_PAUSE: Duration = Duration::from_millis(5);

/// Keeps the journal within its retention, a chunk at a time so no single write is long.
pub async fn trim_forever(db: Arc<Database>, cfg: RealtimeConfig) {
    if !cfg.journal {
        return;
    }
    let max_age_ms = cfg.journal_max_age.as_millis() as i64;
    loop {
        tokio::time::sleep(TRIM_EVERY).await;
        loop {
            match db.trim_journal(cfg.journal_max_events, max_age_ms).await {
                Ok(0) => break,
                Ok(n) => tracing::debug!("Trimmed {n} journal event(s)"),
                Err(e) => {
                    tracing::warn!("Trimming the event journal failed: {e}");
                    break;
                }
            }
            tokio::time::sleep(CHUNK_PAUSE).await;
        }
    }
}
