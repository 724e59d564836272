//! The services user functions and jobs may call (`ctx.db`, `ctx.storage`, `ctx.records`),
//! implemented over the record store and the file service. User code acts as an admin: full
//! validation and events, no permission rules, no automatic owner.

use std::sync::Arc;

use bakend_core::Origin;
use bakend_filter::Filter;
use bakend_functions::services::BoxFuture;
use bakend_functions::{HostServices, ListOptions, RecordsApi, ServiceError, StorageApi};
use bakend_storage::FileService;
use bakend_store::{FileAccess, ListQuery, Precondition, RecordStore, StoreError};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::routes::records::parse_sort;

fn service_error(e: impl Into<ApiError>) -> ServiceError {
    ServiceError::from(e.into())
}

pub fn host_services(
    records: RecordStore,
    files: Arc<FileService>,
    default_per_page: u32,
    max_per_page: u32,
) -> HostServices {
    let path = records.database().path().map(|p| p.to_path_buf());
    let database: bakend_functions::services::OpenDatabase = match path.clone() {
        Some(open_path) => Arc::new(move || bakend_store::db::open_connection(&open_path)),
        // `ctx.db` is SQLite's own API (bun:sqlite-style, with SQLite's authorizer as its
        // sandbox): refused with a clear message rather than half-translated.
        None => bakend_functions::services::unavailable_database(
            "ctx.db is not available when the store is PostgreSQL; use ctx.records (docs/functions.md)",
        ),
    };
    HostServices {
        database: Some(database),
        database_path: path,
        storage: Some(Arc::new(Storage(files))),
        records: Some(Arc::new(Records {
            store: records,
            default_per_page,
            max_per_page,
        })),
        runtime: tokio::runtime::Handle::try_current().ok(),
    }
}

struct Storage(Arc<FileService>);

impl StorageApi for Storage {
    fn get(&self, id: String) -> BoxFuture<Result<Option<Value>, ServiceError>> {
        let files = self.0.clone();
        Box::pin(async move {
            let meta = files.get(&id).await.map_err(service_error)?;
            Ok(meta.map(|m| m.to_json()))
        })
    }

    fn delete(&self, id: String) -> BoxFuture<Result<bool, ServiceError>> {
        let files = self.0.clone();
        Box::pin(async move {
            let deleted = files.delete(&id, None).await.map_err(service_error)?;
            Ok(deleted.is_some())
        })
    }
}

struct Records {
    store: RecordStore,
    default_per_page: u32,
    max_per_page: u32,
}

impl Records {
    /// Writes by user code have no acting user; `depth` counts the chain of function writes.
    fn writer(&self, depth: u8) -> RecordStore {
        self.store.with_origin(Origin { actor: None, depth })
    }
}

impl RecordsApi for Records {
    fn create(
        &self,
        collection: String,
        data: Map<String, Value>,
        depth: u8,
    ) -> BoxFuture<Result<Value, ServiceError>> {
        let store = self.writer(depth);
        Box::pin(async move {
            let c = store.collection(&collection).map_err(service_error)?;
            store
                .create(c, data, FileAccess::Any, Precondition::None)
                .await
                .map_err(service_error)
        })
    }

    fn update(
        &self,
        collection: String,
        id: String,
        data: Map<String, Value>,
        depth: u8,
    ) -> BoxFuture<Result<Value, ServiceError>> {
        let store = self.writer(depth);
        Box::pin(async move {
            let c = store.collection(&collection).map_err(service_error)?;
            store
                .update(c, id, data, Precondition::None, FileAccess::Any)
                .await
                .map_err(service_error)
        })
    }

    fn delete(
        &self,
        collection: String,
        id: String,
        depth: u8,
    ) -> BoxFuture<Result<bool, ServiceError>> {
        let store = self.writer(depth);
        Box::pin(async move {
            let c = store.collection(&collection).map_err(service_error)?;
            match store.delete(c, id, Precondition::None).await {
                Ok(()) => Ok(true),
                Err(StoreError::RecordNotFound(_)) => Ok(false),
                Err(e) => Err(service_error(e)),
            }
        })
    }

    fn get(
        &self,
        collection: String,
        id: String,
    ) -> BoxFuture<Result<Option<Value>, ServiceError>> {
        let store = self.store.clone();
        Box::pin(async move {
            let c = store.collection(&collection).map_err(service_error)?;
            match store.get(c, id).await {
                Ok(v) => Ok(Some(v)),
                Err(StoreError::RecordNotFound(_)) => Ok(None),
                Err(e) => Err(service_error(e)),
            }
        })
    }

    fn list(
        &self,
        collection: String,
        options: ListOptions,
    ) -> BoxFuture<Result<Value, ServiceError>> {
        let store = self.store.clone();
        let mut q = ListQuery::first(
            options
                .per_page
                .unwrap_or(self.default_per_page)
                .clamp(1, self.max_per_page),
        );
        q.page = options.page.unwrap_or(1).max(1);
        q.sort = options.sort.as_deref().map(parse_sort).unwrap_or_default();
        Box::pin(async move {
            let c = store.collection(&collection).map_err(service_error)?;
            if let Some(src) = options.filter.as_deref().filter(|s| !s.trim().is_empty()) {
                q.filters
                    .push(Arc::new(Filter::new(src, c.filter_schema()).map_err(
                        |e| service_error(ApiError::bad_request(e.to_string())),
                    )?));
            }
            let page = store.list(c, q).await.map_err(service_error)?;
            // The same shape as the REST list, bytes and all.
            serde_json::from_slice(&page.into_json())
                .map_err(|e| ServiceError::internal(format!("list serialization: {e}")))
        })
    }
}
