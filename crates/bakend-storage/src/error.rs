//! Errors of the storage subsystem. The HTTP layer maps them to the spec's envelope.

use bakend_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("File not found")]
    NotFound,
    /// The upload is larger than `storage.maxFileSize`; the message names the limit.
    #[error("{0}")]
    TooLarge(String),
    #[error("blob storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<tokio::task::JoinError> for StorageError {
    fn from(e: tokio::task::JoinError) -> Self {
        StorageError::Internal(format!("blocking task failed: {e}"))
    }
}
