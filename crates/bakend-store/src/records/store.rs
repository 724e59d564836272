//! The record store: list, get, create, update, delete over a collection's table.
//!
//! Writes run on the writer thread (see `db::writer`); each emits its `<collection>.<action>`
//! event after its commit. Reads run on the reader pool.

use std::sync::Arc;

use bakend_core::{Event, EventSource, Origin, ids, time};
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension};
use serde_json::{Map, Value};

use super::row::{read_columns, record_json, to_json};
use super::validate::{self, FileAccess, Mode, Validated, db_checks, in_field_order};
use crate::collections::layout::RecordLayout;
use crate::collections::registry::{Collection, Registry};
use crate::collections::schema::quote;
use crate::db::{Committed, Database};
use crate::error::{FieldError, StoreError};

/// A page request for a list.
#[derive(Clone, Debug)]
pub struct ListQuery {
    /// 1-based.
    pub page: u32,
    pub per_page: u32,
    /// `(key, descending)`; keys are `id`, `createdAt`, `updatedAt` or field names. Empty means
    /// newest first.
    pub sort: Vec<(String, bool)>,
    /// Only records whose owner field (`user_id`) is this.
    pub owned_by: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Page {
    pub items: Vec<Value>,
    pub page: u32,
    pub per_page: u32,
    pub total_items: u64,
    pub total_pages: u64,
}

#[derive(Clone)]
pub struct RecordStore {
    db: Arc<Database>,
    registry: Arc<Registry>,
    /// Stamped on the events of this handle's writes.
    origin: Origin,
}

impl RecordStore {
    pub fn new(db: Arc<Database>, registry: Arc<Registry>) -> Self {
        RecordStore {
            db,
            registry,
            origin: Origin::default(),
        }
    }

    /// A handle whose writes' events carry `origin` (who asked, and how deep in a chain of
    /// function writes). Cheap: two `Arc`s and the origin are cloned.
    pub fn with_origin(&self, origin: Origin) -> RecordStore {
        RecordStore {
            db: self.db.clone(),
            registry: self.registry.clone(),
            origin,
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    pub fn collection(&self, name: &str) -> Result<Arc<Collection>, StoreError> {
        self.registry
            .get(name)
            .ok_or_else(|| StoreError::CollectionNotFound(name.to_string()))
    }

    pub async fn list(&self, c: Arc<Collection>, q: ListQuery) -> Result<Page, StoreError> {
        let order = order_by(&c, &q.sort)?;
        self.db
            .read(move |conn| {
                let tx = conn.unchecked_transaction()?;
                let filter = if q.owned_by.is_some() {
                    format!(" WHERE {} = ?1", quote(RecordLayout::OWNER_FIELD))
                } else {
                    String::new()
                };
                let owner = q.owned_by.clone().map(Sql::Text);
                let params: Vec<Sql> = owner.into_iter().collect();
                let total: i64 = tx
                    .prepare_cached(&format!("SELECT COUNT(*) FROM {}{filter}", c.sql.table))?
                    .query_row(rusqlite::params_from_iter(params.iter()), |r| r.get(0))?;
                let mut all = params.clone();
                all.push(Sql::Integer(q.per_page as i64));
                all.push(Sql::Integer((q.page as i64 - 1) * q.per_page as i64));
                let n = params.len();
                let sql = format!(
                    "SELECT {} FROM {}{filter} ORDER BY {order} LIMIT ?{} OFFSET ?{}",
                    c.sql.columns,
                    c.sql.table,
                    n + 1,
                    n + 2
                );
                let mut stmt = tx.prepare_cached(&sql)?;
                let items = stmt
                    .query_map(rusqlite::params_from_iter(all.iter()), |row| {
                        read_columns(&c, row).map(|cols| record_json(&c, &cols))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                drop(stmt);
                tx.finish()?;
                let total = total.max(0) as u64;
                Ok(Page {
                    items,
                    page: q.page,
                    per_page: q.per_page,
                    total_items: total,
                    total_pages: total.div_ceil(q.per_page as u64),
                })
            })
            .await
    }

    pub async fn get(&self, c: Arc<Collection>, id: String) -> Result<Value, StoreError> {
        self.db
            .read(move |conn| {
                fetch(conn, &c, &id)?
                    .map(|cols| record_json(&c, &cols))
                    .ok_or(StoreError::RecordNotFound(id))
            })
            .await
    }

    /// The record (or `None`) together with the last journal seq, read in one transaction: the
    /// record reflects exactly the events up to that seq (a realtime `snapshot`).
    pub async fn get_at_journal_seq(
        &self,
        c: Arc<Collection>,
        id: String,
    ) -> Result<(Option<Value>, u64), StoreError> {
        self.db
            .read(move |conn| {
                conn.execute_batch("BEGIN")?;
                let read = (|| {
                    let record = fetch(conn, &c, &id)?.map(|cols| record_json(&c, &cols));
                    let seq = crate::db::journal::last_seq(conn)?;
                    Ok::<_, StoreError>((record, seq))
                })();
                let _ = conn.execute_batch("COMMIT");
                read
            })
            .await
    }

    /// Full validation for a create: checks without the database here, then — only if there
    /// are failures to report — the database checks too, so `details` is complete. `files`:
    /// which stored files the writer may reference in `file` fields.
    pub async fn create(
        &self,
        c: Arc<Collection>,
        body: Map<String, Value>,
        files: FileAccess,
    ) -> Result<Value, StoreError> {
        let v = validate::validate(&c.def, &body, Mode::Create);
        if !v.is_ok() {
            return Err(self.complete_failure(c, v, None, files).await);
        }
        let origin = self.origin.clone();
        self.db
            .write_single(move |conn| {
                let errors = db_checks(conn, &c, &v.values, None, &files)?;
                if !errors.is_empty() {
                    return Err(StoreError::Validation(in_field_order(errors)));
                }
                let id = ids::new_time_ordered_id(ids::RECORD);
                let now = time::now_iso();
                let mut cols = vec![Sql::Null; c.layout.width()];
                cols[RecordLayout::ID_COLUMN] = Sql::Text(id);
                cols[RecordLayout::CREATED_AT_COLUMN] = Sql::Text(now.clone());
                cols[RecordLayout::UPDATED_AT_COLUMN] = Sql::Text(now);
                for (i, val) in v.values {
                    cols[RecordLayout::field_column(i)] = val;
                }
                conn.prepare_cached(&c.sql.insert)?
                    .execute(rusqlite::params_from_iter(cols.iter()))
                    .map_err(|e| constraint_error(&c, e))?;
                let record = record_json(&c, &cols);
                let event = Event::new(
                    format!("{}.created", c.def.name),
                    EventSource::Collections,
                    record.clone(),
                )
                .about(c.layout.owner_in_record(&record).map(str::to_string))
                .caused_by(&origin);
                Ok(Committed::new(record).event(event))
            })
            .await
    }

    /// Partial update. `required_owner`: the write only goes ahead if the record is (still)
    /// owned by this user — the permission check happened on an earlier read.
    pub async fn update(
        &self,
        c: Arc<Collection>,
        id: String,
        body: Map<String, Value>,
        required_owner: Option<String>,
        files: FileAccess,
    ) -> Result<Value, StoreError> {
        let v = validate::validate(&c.def, &body, Mode::Update);
        if !v.is_ok() {
            return Err(self.complete_failure(c, v, Some(id), files).await);
        }
        let origin = self.origin.clone();
        self.db
            .write_single(move |conn| {
                let Some(mut cols) = fetch(conn, &c, &id)? else {
                    return Err(StoreError::RecordNotFound(id));
                };
                check_owner(&c, &cols, required_owner.as_deref())?;
                if v.values.is_empty() {
                    return Ok(Committed::new(record_json(&c, &cols)));
                }
                let errors = db_checks(conn, &c, &v.values, Some(&id), &files)?;
                if !errors.is_empty() {
                    return Err(StoreError::Validation(in_field_order(errors)));
                }
                let previous = record_json(&c, &cols);
                let now = time::now_iso();
                let mut sets = vec![format!("{} = ?1", quote(RecordLayout::UPDATED_AT.column))];
                let mut params = vec![Sql::Text(now.clone())];
                for (i, val) in &v.values {
                    params.push(val.clone());
                    sets.push(format!(
                        "{} = ?{}",
                        quote(&c.def.fields[*i].name),
                        params.len()
                    ));
                }
                params.push(Sql::Text(id.clone()));
                let sql = format!(
                    "UPDATE {} SET {} WHERE {} = ?{}",
                    c.sql.table,
                    sets.join(", "),
                    quote(RecordLayout::ID.column),
                    params.len()
                );
                conn.prepare_cached(&sql)?
                    .execute(rusqlite::params_from_iter(params.iter()))
                    .map_err(|e| constraint_error(&c, e))?;
                cols[RecordLayout::UPDATED_AT_COLUMN] = Sql::Text(now);
                for (i, val) in v.values {
                    cols[RecordLayout::field_column(i)] = val;
                }
                let record = record_json(&c, &cols);
                let event = Event::new(
                    format!("{}.updated", c.def.name),
                    EventSource::Collections,
                    record.clone(),
                )
                .about(c.layout.owner_in_record(&record).map(str::to_string))
                .caused_by(&origin)
                .with_previous(previous);
                Ok(Committed::new(record).event(event))
            })
            .await
    }

    pub async fn delete(
        &self,
        c: Arc<Collection>,
        id: String,
        required_owner: Option<String>,
    ) -> Result<(), StoreError> {
        let origin = self.origin.clone();
        self.db
            .write_single(move |conn| {
                let Some(cols) = fetch(conn, &c, &id)? else {
                    return Err(StoreError::RecordNotFound(id));
                };
                check_owner(&c, &cols, required_owner.as_deref())?;
                let owner = c.layout.owner_in_row(&cols).map(str::to_string);
                conn.prepare_cached(&format!(
                    "DELETE FROM {} WHERE {} = ?1",
                    c.sql.table,
                    quote(RecordLayout::ID.column)
                ))?
                .execute([&id])?;
                let event = Event::new(
                    format!("{}.deleted", c.def.name),
                    EventSource::Collections,
                    serde_json::json!({ "id": id }),
                )
                .about(owner)
                .caused_by(&origin)
                .with_previous(record_json(&c, &cols));
                Ok(Committed::new(()).event(event))
            })
            .await
    }

    /// Adds the database checks of fields that passed the pure checks, so a 400 lists every
    /// failing field. Runs on a reader: nothing is written.
    async fn complete_failure(
        &self,
        c: Arc<Collection>,
        v: Validated,
        exclude: Option<String>,
        files: FileAccess,
    ) -> StoreError {
        let Validated { values, mut errors } = v;
        let more = self
            .db
            .read(move |conn| Ok(db_checks(conn, &c, &values, exclude.as_deref(), &files)?))
            .await;
        match more {
            Ok(more) => {
                errors.extend(more);
                StoreError::Validation(in_field_order(errors))
            }
            Err(e) => e,
        }
    }
}

fn fetch(conn: &Connection, c: &Collection, id: &str) -> Result<Option<Vec<Sql>>, StoreError> {
    let sql = format!(
        "SELECT {} FROM {} WHERE {} = ?1",
        c.sql.columns,
        c.sql.table,
        quote(RecordLayout::ID.column)
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], |row| read_columns(c, row))
        .optional()?)
}

fn check_owner(c: &Collection, cols: &[Sql], required: Option<&str>) -> Result<(), StoreError> {
    let Some(required) = required else {
        return Ok(());
    };
    if c.layout.owner_in_row(cols) == Some(required) {
        Ok(())
    } else {
        Err(StoreError::Forbidden)
    }
}

/// A UNIQUE violation that slipped past the pre-check is still a validation error, never a 500.
fn constraint_error(c: &Collection, e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, Some(msg)) = &e
        && f.code == rusqlite::ErrorCode::ConstraintViolation
        && let Some(cols) = msg.strip_prefix("UNIQUE constraint failed: ")
    {
        let errors: Vec<FieldError> = c
            .def
            .fields
            .iter()
            .filter(|f| {
                cols.split(", ")
                    .any(|col| col.rsplit('.').next() == Some(f.name.as_str()))
            })
            .map(validate::unique_error)
            .collect();
        if !errors.is_empty() {
            return StoreError::Validation(errors);
        }
    }
    StoreError::Sqlite(e)
}

fn order_by(c: &Collection, sort: &[(String, bool)]) -> Result<String, StoreError> {
    let id = quote(RecordLayout::ID.column);
    if sort.is_empty() {
        return Ok(format!(
            "{} DESC, {id} DESC",
            quote(RecordLayout::CREATED_AT.column)
        ));
    }
    let mut parts = Vec::new();
    let mut has_id = false;
    for (key, desc) in sort {
        let col = match RecordLayout::system_by_json(key) {
            Some(system) => {
                has_id |= system == RecordLayout::ID;
                system.column
            }
            None if c.def.field(key).is_some() => key.as_str(),
            None => {
                return Err(StoreError::BadRequest(format!(
                    "Cannot sort by \"{key}\": not a field of collection \"{}\"",
                    c.def.name
                )));
            }
        };
        parts.push(format!(
            "{} {}",
            quote(col),
            if *desc { "DESC" } else { "ASC" }
        ));
    }
    if !has_id {
        // A total order keeps pages stable when sort values tie.
        parts.push(format!("{id} DESC"));
    }
    Ok(parts.join(", "))
}

/// Serializes a stored value for a field (used by callers that hold raw values).
pub fn field_json(c: &Collection, index: usize, v: &Sql) -> Value {
    to_json(c.def.fields[index].kind, v)
}
