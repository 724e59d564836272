//! Where resumes read missed events from: the event journal the store keeps (the hub knows only
//! this interface).

use std::future::Future;
use std::pin::Pin;

/// One journaled event as stored: its envelope (with `seq`), the owner it was about and, for a
/// record update or deletion, the record before it (JSON; `None` for rows journaled before the
/// journal kept it — a filtered resume cannot replay those).
#[derive(Clone, Debug)]
pub struct Replayed {
    pub subject: Option<String>,
    pub envelope: String,
    pub previous: Option<String>,
}

/// `Ok(None)`: the range cannot be replayed (trimmed, or more than the limit).
pub type ReplayFuture = Pin<Box<dyn Future<Output = Result<Option<Vec<Replayed>>, String>> + Send>>;

/// Accepts `(event type, record id)` of the events a subscription wants.
pub type EventFilter = Box<dyn Fn(&str, Option<&str>) -> bool + Send>;

pub trait JournalSource: Send + Sync + 'static {
    /// The epoch clients must quote in `since`.
    fn epoch(&self) -> &str;
    /// The last seq journaled before the hub started.
    fn last_seq(&self) -> u64;
    /// Events with `after < seq <= upto` that `wanted` accepts, oldest first, at most `limit`.
    fn replay(&self, after: u64, upto: u64, limit: usize, wanted: EventFilter) -> ReplayFuture;
}

/// `Ok((record, seq))`: the record (if it exists) as of journal position `seq`.
pub type SnapshotFuture =
    Pin<Box<dyn Future<Output = Result<(Option<serde_json::Value>, u64), String>> + Send>>;

/// Reads one record for a per-record `snapshot`, consistent with a journal position.
pub trait SnapshotSource: Send + Sync + 'static {
    fn snapshot(&self, collection: &str, id: &str) -> SnapshotFuture;
}
