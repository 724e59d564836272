//! The realtime hub's view of the store's event journal, and its retention.

use std::sync::Arc;
use std::time::Duration;

use bakend_core::config::RealtimeConfig;
use bakend_realtime::journal::{EventFilter, ReplayFuture};
use bakend_realtime::{JournalSource, Replayed};
use bakend_store::Database;
use bakend_store::db::journal::JournalInfo;

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
                    })
                    .collect()
            }))
        })
    }
}

const TRIM_EVERY: Duration = Duration::from_secs(1);

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
        }
    }
}
