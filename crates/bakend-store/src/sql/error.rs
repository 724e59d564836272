//! The errors of either store, with the questions callers ask of them answered once.

use rusqlite::types::{FromSqlError, ValueRef};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", postgres_message(.0))]
    Postgres(#[from] postgres::Error),
    /// A query that had to return a row returned none.
    #[error("query returned no rows")]
    NoRows,
    /// PostgreSQL could not be reached or refused the connection; the URL is shown without
    /// its password.
    #[error("cannot connect to PostgreSQL at {url}: {message}")]
    Connect { url: String, message: String },
    /// Something this layer cannot do on this store (a value type with no mapping).
    #[error("{0}")]
    Unsupported(String),
}

/// The kind of constraint a write violated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Constraint {
    Unique,
    ForeignKey,
    NotNull,
    Check,
    Other,
}

impl Error {
    pub fn is_no_rows(&self) -> bool {
        matches!(
            self,
            Error::NoRows | Error::Sqlite(rusqlite::Error::QueryReturnedNoRows)
        )
    }

    /// The constraint a write violated, if that is why it failed.
    pub fn constraint(&self) -> Option<Constraint> {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Some(match f.extended_code {
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => Constraint::Unique,
                    rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => Constraint::ForeignKey,
                    rusqlite::ffi::SQLITE_CONSTRAINT_NOTNULL => Constraint::NotNull,
                    rusqlite::ffi::SQLITE_CONSTRAINT_CHECK => Constraint::Check,
                    _ => Constraint::Other,
                })
            }
            Error::Postgres(e) => {
                let code = e.code()?;
                use postgres::error::SqlState;
                Some(match code {
                    c if *c == SqlState::UNIQUE_VIOLATION => Constraint::Unique,
                    c if *c == SqlState::FOREIGN_KEY_VIOLATION => Constraint::ForeignKey,
                    c if *c == SqlState::NOT_NULL_VIOLATION => Constraint::NotNull,
                    c if *c == SqlState::CHECK_VIOLATION => Constraint::Check,
                    c if c.code().starts_with("23") => Constraint::Other,
                    _ => return None,
                })
            }
            _ => None,
        }
    }

    /// The columns of a violated UNIQUE constraint (or primary key), as far as the database
    /// names them.
    pub fn unique_columns(&self) -> Option<Vec<String>> {
        if self.constraint() != Some(Constraint::Unique) {
            return None;
        }
        match self {
            // "UNIQUE constraint failed: posts.title, posts.slug"
            Error::Sqlite(rusqlite::Error::SqliteFailure(_, Some(msg))) => {
                let cols = msg
                    .strip_prefix("UNIQUE constraint failed: ")
                    .or_else(|| msg.strip_prefix("PRIMARY KEY constraint failed: "))?;
                Some(
                    cols.split(", ")
                        .map(|c| c.rsplit('.').next().unwrap_or(c).to_string())
                        .collect(),
                )
            }
            // DETAIL: Key (title, slug)=(a, b) already exists.
            Error::Postgres(e) => {
                let detail = e.as_db_error()?.detail()?;
                let cols = detail.strip_prefix("Key (")?.split(")=(").next()?;
                Some(
                    cols.split(", ")
                        .map(|c| c.trim_matches('"').to_string())
                        .collect(),
                )
            }
            _ => None,
        }
    }

    /// The database server went away or is going away (PostgreSQL restarting, the connection
    /// cut): worth retrying later, not a bug.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Connect { .. } => true,
            Error::Postgres(e) => {
                use postgres::error::SqlState;
                e.is_closed()
                    || e.code().is_some_and(|c| {
                        *c == SqlState::ADMIN_SHUTDOWN
                            || *c == SqlState::CRASH_SHUTDOWN
                            || *c == SqlState::CANNOT_CONNECT_NOW
                            || c.code().starts_with("08")
                    })
            }
            _ => false,
        }
    }

    /// The statement was interrupted (SQLite's progress handler, PostgreSQL's
    /// `statement_timeout` or a cancel).
    pub fn is_interrupted(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.code == rusqlite::ErrorCode::OperationInterrupted
            }
            Error::Postgres(e) => e.code() == Some(&postgres::error::SqlState::QUERY_CANCELED),
            _ => false,
        }
    }

    /// The statement was refused by an authorizer or a missing privilege.
    pub fn is_denied(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.code == rusqlite::ErrorCode::AuthorizationForStatementDenied
            }
            Error::Postgres(e) => {
                e.code() == Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
            }
            _ => false,
        }
    }
}

/// PostgreSQL's own message (and detail), not the driver's "db error".
pub(super) fn postgres_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{}: {}", db.message(), d),
            None => db.message().to_string(),
        },
        // "error connecting to server" says little without its cause ("Connection refused").
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// A value that `FromSql` refused, reported as rusqlite reports it on SQLite.
pub(super) fn conversion(i: usize, v: ValueRef<'_>, e: FromSqlError) -> Error {
    Error::Sqlite(match e {
        FromSqlError::InvalidType => {
            rusqlite::Error::InvalidColumnType(i, String::new(), v.data_type())
        }
        FromSqlError::OutOfRange(n) => rusqlite::Error::IntegralValueOutOfRange(i, n),
        other => rusqlite::Error::FromSqlConversionFailure(i, v.data_type(), Box::new(other)),
    })
}

/// `.optional()` on a one-row result: no row is `None`, not an error.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_no_rows() => Ok(None),
            Err(e) => Err(e),
        }
    }
}
