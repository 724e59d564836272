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

/// What a collection `snapshot` asks for: the page a REST list of `collection` would give
/// `ctx` with this filter, sort and page size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListRequest {
    pub collection: String,
    /// The subscription's filter source (already checked by the hub); `None`: every record.
    pub filter: Option<String>,
    /// REST's `sort` (`-createdAt,title`); `None`: newest first.
    pub sort: Option<String>,
    /// `None`: `api.defaultPerPage`; larger than `api.maxPerPage` is clamped to it.
    pub per_page: Option<u32>,
    pub ctx: bakend_auth::AuthContext,
}

/// A collection snapshot: the records as of journal position `seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage {
    /// A JSON array of the records, as REST lists them.
    pub items: String,
    /// More records match than the page holds.
    pub more: bool,
    pub seq: u64,
}

/// Why a collection snapshot was not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListError {
    /// The request cannot be served as asked (a bad sort key): the message for the client.
    Invalid(String),
    /// The connection may not list the collection.
    Refused,
    /// Reading failed (logged, not shown).
    Failed(String),
}

pub type ListFuture = Pin<Box<dyn Future<Output = Result<ListPage, ListError>> + Send>>;

/// Reads records for `snapshot`s, consistent with a journal position.
pub trait SnapshotSource: Send + Sync + 'static {
    /// One record (a per-record channel's snapshot).
    fn snapshot(&self, collection: &str, id: &str) -> SnapshotFuture;
    /// A page of a collection's records (a `<collection>.*` snapshot), selected exactly as
    /// the REST list would for `req.ctx`.
    fn list(&self, req: ListRequest) -> ListFuture;
}
