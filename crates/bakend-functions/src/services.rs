//! What user code may reach outside its JS runtime. The server supplies the implementations; this
//! crate knows nothing of the record store, the file service or the permission rules, only these
//! narrow interfaces.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Opens a SQLite connection to the server's database (with the server's pragmas).
pub type OpenDatabase = Arc<dyn Fn() -> rusqlite::Result<rusqlite::Connection> + Send + Sync>;

/// A `ctx.db` whose every use throws `reason` (the store cannot offer it).
pub fn unavailable_database(reason: &'static str) -> OpenDatabase {
    Arc::new(move || Err(rusqlite::Error::UserFunctionError(reason.into())))
}

/// A failure of a service call, thrown into JS as an `Error` with `status`, `code` and
/// `details` properties (the REST error envelope's fields).
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub details: Option<Box<Value>>,
}

impl ServiceError {
    pub fn internal(message: impl Into<String>) -> Self {
        ServiceError {
            status: 500,
            code: "internal_error".into(),
            message: message.into(),
            details: None,
        }
    }
}

/// `ctx.storage`: file metadata and deletion (no bytes, as in v1).
pub trait StorageApi: Send + Sync {
    /// The file's metadata (the REST shape), or `None` when unknown.
    fn get(&self, id: String) -> BoxFuture<Result<Option<Value>, ServiceError>>;
    /// Deletes row and blob and emits `storage.deleted`; `false` when unknown.
    fn delete(&self, id: String) -> BoxFuture<Result<bool, ServiceError>>;
}

/// A page request from `ctx.records.list`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListOptions {
    pub page: Option<u32>,
    pub per_page: Option<u32>,
    /// REST syntax: `-createdAt,title`.
    pub sort: Option<String>,
    /// REST syntax (`docs/filters.md`): `done = false && project = 'p1'`. Functions act as an
    /// admin, so `@request.auth.*` is null.
    pub filter: Option<String>,
}

/// `ctx.records`: the record store with full validation and events, acting as an admin.
/// `depth` is how many function writes led here (stamped on the events so a trigger that keeps
/// re-triggering itself is stopped).
pub trait RecordsApi: Send + Sync {
    fn create(
        &self,
        collection: String,
        data: Map<String, Value>,
        depth: u8,
    ) -> BoxFuture<Result<Value, ServiceError>>;
    fn update(
        &self,
        collection: String,
        id: String,
        data: Map<String, Value>,
        depth: u8,
    ) -> BoxFuture<Result<Value, ServiceError>>;
    /// `false` when the record does not exist.
    fn delete(
        &self,
        collection: String,
        id: String,
        depth: u8,
    ) -> BoxFuture<Result<bool, ServiceError>>;
    fn get(&self, collection: String, id: String)
    -> BoxFuture<Result<Option<Value>, ServiceError>>;
    /// `{items, page, perPage, totalItems, totalPages}`.
    fn list(
        &self,
        collection: String,
        options: ListOptions,
    ) -> BoxFuture<Result<Value, ServiceError>>;
}

/// Everything a function or job context may use. Each part is optional so the engine can run
/// with less (tests, `bak functions list`); a missing part leaves that `ctx` key undefined.
#[derive(Clone, Default)]
pub struct HostServices {
    pub database: Option<OpenDatabase>,
    /// For display in errors only.
    pub database_path: Option<PathBuf>,
    pub storage: Option<Arc<dyn StorageApi>>,
    pub records: Option<Arc<dyn RecordsApi>>,
    /// The server's runtime: service futures run there, not on the JS worker's own executor.
    pub runtime: Option<tokio::runtime::Handle>,
}
