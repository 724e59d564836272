//! The record store: collection definitions and their validation, records over SQLite (the
//! default) or PostgreSQL behind one SQL interface (`sql`), and the database plumbing under
//! them.
//!
//! All writes go through one writer thread that commits concurrent writes together (group
//! commit) durably (`synchronous=FULL` on SQLite, a committed transaction on PostgreSQL), so a
//! write is stored before its caller hears about it, and emits the resulting events in commit
//! order after the commit. Reads run on a small set of reader threads, a connection each. No
//! database call ever runs on an async executor thread.

pub mod backup_manifest;
pub mod collections;
pub mod db;
pub mod error;
pub mod records;
pub mod sql;

pub use collections::definition::{
    CollectionDef, FieldDef, FieldType, Permission, Permissions, RuleExpression,
};
pub use collections::layout::{RecordLayout, SystemColumn};
pub use collections::registry::{Collection, Registry};
pub use db::{Committed, Database};
pub use error::{FieldError, StoreError};
pub use records::cursor::Cursor;
pub use records::store::{ListQuery, Page, Precondition, RecordStore};
pub use records::validate::FileAccess;
