//! File metadata (`_files` rows) together with their blobs, and the `storage.*` events.

use std::sync::Arc;

use bakend_core::{Event, EventSource, ids, time};
use bakend_store::sql::{Conn, OptionalExtension, Row};
use bakend_store::{Committed, Database, StoreError};
use serde_json::{Value, json};

use crate::blob::{BlobReader, BlobStore, Spooled, TempUpload};
use crate::error::StorageError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    Public,
    Protected,
}

impl Visibility {
    /// Exactly `public` or `protected`; anything else is rejected (v1 silently chose
    /// `protected`).
    pub fn parse(s: &str) -> Option<Visibility> {
        match s {
            "public" => Some(Visibility::Public),
            "protected" => Some(Visibility::Protected),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Protected => "protected",
        }
    }
}

/// A `_files` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMeta {
    pub id: String,
    pub filename: String,
    pub mime_type: String,
    pub size: u64,
    pub visibility: Visibility,
    pub user_id: String,
    pub created_at: String,
}

impl FileMeta {
    /// The spec's metadata object, keys in its order.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "filename": self.filename,
            "mimeType": self.mime_type,
            "size": self.size,
            "visibility": self.visibility.as_str(),
            "userId": self.user_id,
            "createdAt": self.created_at,
        })
    }

    fn deleted_event(&self) -> Event {
        Event::new(
            "storage.deleted",
            EventSource::Storage,
            json!({ "id": self.id, "userId": self.user_id }),
        )
        .about(Some(self.user_id.clone()))
    }
}

const COLUMNS: &str = "id, filename, mime_type, size, visibility, user_id, created_at";

fn from_row(r: Row<'_>) -> bakend_store::sql::Result<FileMeta> {
    let vis: String = r.get(4)?;
    Ok(FileMeta {
        id: r.get(0)?,
        filename: r.get(1)?,
        mime_type: r.get(2)?,
        size: r.get::<i64>(3)?.max(0) as u64,
        visibility: Visibility::parse(&vis).unwrap_or(Visibility::Protected),
        user_id: r.get(5)?,
        created_at: r.get(6)?,
    })
}

pub fn fetch(conn: &Conn, id: &str) -> Result<Option<FileMeta>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM _files WHERE id = ?1"))?
        .query_row([id], from_row)
        .optional()?)
}

/// What an upload says about itself.
#[derive(Clone, Debug)]
pub struct NewFile {
    pub filename: String,
    pub mime_type: String,
    pub visibility: Visibility,
    pub user_id: String,
}

/// The storage subsystem as handlers see it.
pub struct FileService {
    db: Arc<Database>,
    blobs: Arc<dyn BlobStore>,
    max_file_size: u64,
}

impl FileService {
    pub fn new(db: Arc<Database>, blobs: Arc<dyn BlobStore>, max_file_size: u64) -> Self {
        FileService {
            db,
            blobs,
            max_file_size,
        }
    }

    pub fn max_file_size(&self) -> u64 {
        self.max_file_size
    }

    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    /// Removes temporary files a crash left behind. Call before serving uploads.
    pub async fn clean_temp(&self) -> Result<usize, StorageError> {
        let blobs = self.blobs.clone();
        Ok(tokio::task::spawn_blocking(move || blobs.clean_temp()).await??)
    }

    /// A temporary file for an upload's bytes.
    pub async fn begin_upload(&self) -> Result<TempUpload, StorageError> {
        let blobs = self.blobs.clone();
        Ok(tokio::task::spawn_blocking(move || blobs.create_temp()).await??)
    }

    /// Stores a completely received upload: the blob is made durable first, then the row is
    /// committed and `storage.uploaded` emitted. If the row cannot be written, the blob goes.
    pub async fn store(&self, temp: TempUpload, new: NewFile) -> Result<FileMeta, StorageError> {
        let spooled: Spooled = temp.finish().await?;
        let meta = FileMeta {
            id: ids::new_id(ids::FILE),
            filename: new.filename,
            mime_type: new.mime_type,
            size: spooled.size(),
            visibility: new.visibility,
            user_id: new.user_id,
            created_at: time::now_iso(),
        };
        let blobs = self.blobs.clone();
        let id = meta.id.clone();
        tokio::task::spawn_blocking(move || blobs.put(&id, spooled)).await??;
        let row = meta.clone();
        let written = self
            .db
            .write_single(move |conn| {
                conn.prepare_cached(&format!(
                    "INSERT INTO _files ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ))?
                .execute((
                    &row.id,
                    &row.filename,
                    &row.mime_type,
                    row.size as i64,
                    row.visibility.as_str(),
                    &row.user_id,
                    &row.created_at,
                ))?;
                let event = Event::new("storage.uploaded", EventSource::Storage, row.to_json())
                    .about(Some(row.user_id.clone()));
                Ok(Committed::new(()).event(event))
            })
            .await;
        if let Err(e) = written {
            let blobs = self.blobs.clone();
            let id = meta.id.clone();
            let _ = tokio::task::spawn_blocking(move || blobs.delete(&id)).await;
            return Err(e.into());
        }
        Ok(meta)
    }

    pub async fn get(&self, id: &str) -> Result<Option<FileMeta>, StorageError> {
        let id = id.to_string();
        Ok(self.db.read(move |conn| fetch(conn, &id)).await?)
    }

    /// A page of files, newest first, and the total count (admin listing).
    pub async fn list(
        &self,
        limit: u32,
        offset: u64,
    ) -> Result<(Vec<FileMeta>, u64), StorageError> {
        Ok(self
            .db
            .read(move |conn| {
                let _snapshot = conn.read_snapshot()?;
                let total: i64 = conn.query_row("SELECT COUNT(*) FROM _files", (), |r| r.get(0))?;
                let items = conn
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM _files ORDER BY created_at DESC, id DESC LIMIT ?1 OFFSET ?2"
                    ))?
                    .query_map((limit as i64, offset as i64), from_row)?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((items, total.max(0) as u64))
            })
            .await?)
    }

    /// The blob of a file, from `offset`; `None` if the blob is missing.
    pub async fn open(&self, id: &str, offset: u64) -> Result<Option<BlobReader>, StorageError> {
        let blobs = self.blobs.clone();
        let id = id.to_string();
        Ok(tokio::task::spawn_blocking(move || blobs.open(&id, offset)).await??)
    }

    /// The blob of a file for a read of `len` bytes from `offset` (`0`: only its length, for
    /// `HEAD`); `None` if the blob is missing. An object store then asks for just those bytes.
    pub async fn open_range(
        &self,
        id: &str,
        offset: u64,
        len: u64,
    ) -> Result<Option<BlobReader>, StorageError> {
        let blobs = self.blobs.clone();
        let id = id.to_string();
        Ok(tokio::task::spawn_blocking(move || blobs.open_range(&id, offset, len)).await??)
    }

    /// Deletes a file: the row (with `storage.deleted`) and then the blob. `None` if no such
    /// file. `required_owner`: only delete if the file (still) belongs to this user.
    pub async fn delete(
        &self,
        id: &str,
        required_owner: Option<String>,
    ) -> Result<Option<FileMeta>, StorageError> {
        let target = id.to_string();
        let deleted = self
            .db
            .write_single(move |conn| {
                let Some(meta) = fetch(conn, &target)? else {
                    return Ok(Committed::new(None));
                };
                if required_owner.is_some_and(|o| o != meta.user_id) {
                    return Err(StoreError::Forbidden);
                }
                conn.prepare_cached("DELETE FROM _files WHERE id = ?1")?
                    .execute([&target])?;
                let event = meta.deleted_event();
                Ok(Committed::new(Some(meta)).event(event))
            })
            .await?;
        if let Some(meta) = &deleted {
            self.unlink(vec![meta.id.clone()]).await;
        }
        Ok(deleted)
    }

    /// Deletes every file of a user (rows with one `storage.deleted` each, then blobs); the
    /// policy for deleted accounts. Returns the deleted ids.
    pub async fn delete_owned_by(&self, user_id: &str) -> Result<Vec<String>, StorageError> {
        let owner = user_id.to_string();
        let ids = self
            .db
            .write(move |conn| {
                let files: Vec<FileMeta> = conn
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM _files WHERE user_id = ?1 ORDER BY created_at, id"
                    ))?
                    .query_map([&owner], from_row)?
                    .collect::<Result<_, _>>()?;
                conn.prepare_cached("DELETE FROM _files WHERE user_id = ?1")?
                    .execute([&owner])?;
                let ids: Vec<String> = files.iter().map(|f| f.id.clone()).collect();
                let mut c = Committed::new(ids);
                for f in &files {
                    c = c.event(f.deleted_event());
                }
                Ok(c)
            })
            .await?;
        self.unlink(ids.clone()).await;
        Ok(ids)
    }

    /// Unlinks blobs whose rows are gone. A failure is logged: the blob is then an orphan that
    /// `bak storage prune` removes.
    pub(crate) async fn unlink(&self, ids: Vec<String>) {
        let blobs = self.blobs.clone();
        let result = tokio::task::spawn_blocking(move || {
            for id in ids {
                if let Err(e) = blobs.delete(&id) {
                    tracing::warn!("Could not remove blob {id}: {e}");
                }
            }
        })
        .await;
        if let Err(e) = result {
            tracing::warn!("Removing blobs failed: {e}");
        }
    }
}
