//! The realtime hub's view of the store's event journal, and its retention.

use std::sync::Arc;
use std::time::Duration;

use bakend_auth::Operation;
use bakend_auth::permissions::{Request, authorize, request_vars};
use bakend_core::config::RealtimeConfig;
use bakend_filter::Filter;
use bakend_realtime::journal::{EventFilter, ListFuture, ReplayFuture, SnapshotFuture};
use bakend_realtime::{JournalSource, ListError, ListPage, ListRequest, Replayed, SnapshotSource};
use bakend_store::db::journal::JournalInfo;
use bakend_store::{Database, ListQuery, RecordStore, StoreError};

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

/// Records for `snapshot`s: one record, or a page of a collection as its REST list.
pub struct RecordSnapshots {
    pub store: RecordStore,
    /// `api.defaultPerPage` and `api.maxPerPage`.
    pub default_per_page: u32,
    pub max_per_page: u32,
}

impl SnapshotSource for RecordSnapshots {
    fn list(&self, req: ListRequest) -> ListFuture {
        let store = self.store.clone();
        let (default_per_page, max_per_page) = (self.default_per_page, self.max_per_page);
        Box::pin(async move {
            let c = match store.collection(&req.collection) {
                Ok(c) => c,
                Err(StoreError::CollectionNotFound(_)) => {
                    return Ok(ListPage {
                        items: "[]".into(),
                        more: false,
                        seq: 0,
                    });
                }
                Err(e) => return Err(ListError::Failed(e.to_string())),
            };
            // Exactly what `GET /api/<collection>` selects for this identity (routes/records.rs
            // `list`): the read rule's decision, then the filter, sort and page size.
            let decision = authorize(
                &req.ctx,
                Request::Record {
                    rule: &c.def.permissions.read,
                    op: Operation::List,
                    owner: None,
                    record: None,
                },
            );
            let per_page = req
                .per_page
                .unwrap_or(default_per_page)
                .clamp(1, max_per_page.max(1));
            let mut q = ListQuery::first(per_page);
            if decision.is_refusal() {
                return Err(ListError::Refused);
            }
            decision.restrict_list(&mut q);
            if let Some(src) = &req.filter {
                let f = Filter::new(src, c.filter_schema())
                    .map_err(|e| ListError::Invalid(e.to_string()))?;
                q.filters.push(Arc::new(f));
            }
            if let Some(sort) = &req.sort {
                q.sort = crate::routes::records::parse_sort(sort);
            }
            q.vars = request_vars(&req.ctx);
            match store.list_at_journal_seq(c, q).await {
                Ok((page, seq)) => Ok(ListPage {
                    items: String::from_utf8_lossy(page.items_json()).into_owned(),
                    more: page.more,
                    seq,
                }),
                Err(StoreError::BadRequest(m)) => Err(ListError::Invalid(m)),
                Err(e) => Err(ListError::Failed(e.to_string())),
            }
        })
    }

    fn snapshot(&self, collection: &str, id: &str) -> SnapshotFuture {
        let store = self.store.clone();
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
