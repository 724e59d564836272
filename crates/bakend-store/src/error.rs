//! Errors of the record store. The HTTP layer turns these into the spec's error envelope.

use serde::Serialize;

/// One failed validation rule on one field (an entry of `details`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub rule: &'static str,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Collection \"{0}\" does not exist")]
    CollectionNotFound(String),
    #[error("Record \"{0}\" not found")]
    RecordNotFound(String),
    #[error("Validation failed")]
    Validation(Vec<FieldError>),
    /// The record changed owner between the permission check and the write.
    #[error("Insufficient permissions")]
    Forbidden,
    /// A request the store cannot make sense of (bad sort key, bad page number).
    #[error("{0}")]
    BadRequest(String),
    /// A collection definition that is not valid; the message joins every problem with "; ".
    #[error("{0}")]
    Definition(String),
    /// A schema change that existing rows do not allow (without `--force`, or at all).
    #[error("{0}")]
    Blocked(crate::collections::migrate::Blocked),
    /// The database is in use by another process that must be stopped first.
    #[error("{0}")]
    Locked(String),
    #[error("database error: {0}")]
    Database(crate::sql::Error),
    /// The database server could not be reached or refused the connection (the message names
    /// it, without a password).
    #[error("{0}")]
    Connect(String),
    #[error("commit failed: {0}")]
    Commit(String),
    #[error("the database writer has stopped")]
    WriterStopped,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::sql::Error> for StoreError {
    fn from(e: crate::sql::Error) -> StoreError {
        match e {
            crate::sql::Error::Connect { .. } => StoreError::Connect(e.to_string()),
            // The server went away under a statement (a restart): unavailable, not a bug.
            e if e.is_unavailable() => {
                StoreError::Connect(format!("the database is unavailable: {e}"))
            }
            e => StoreError::Database(e),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Database(e.into())
    }
}
